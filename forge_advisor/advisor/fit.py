"""``fit``: for each preset, the least memory it needs (batch 1, checkpointing on, the
preset's other defaults) and whether that fits — plus what would fit when nothing does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from forge_advisor import core
from forge_advisor.errors import ForgeError
from forge_advisor.estimate import DEFAULT_HEADROOM, EstimateResult, estimate
from forge_advisor.units import fmt_bytes

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU
    from forge_advisor.plan import Plan
    from forge_advisor.shapes import ModelShape

__all__ = ["FitReport", "MethodFit", "fit", "levers_that_fit", "COMMON_GPUS", "LEVER_LABELS"]

# what `fit` compares against when no GPU is named or present: 24 GB consumer, A100s, H100
COMMON_GPUS = ("RTX 4090", "A100 40GB SXM", "A100 80GB SXM", "H100 SXM")


@dataclass(frozen=True)
class MethodFit:
    """One preset: its least memory at its own defaults (batch 1, checkpointing), and the
    least of any plan of the advisor's space for it (every optimizer, freeze ratio, rank…) —
    the one minimum ``recommend`` and ``estimate`` agree with. ``fits``: that least fits."""

    preset: str
    estimate: EstimateResult
    fits: bool | None
    least_bytes: int | None = None
    least_plan: Plan | None = None
    # the defaults do not fit: the fewest memory levers that make them fit (None: none do, or they fit)
    levers: tuple[str, ...] | None = None

    def levers_line(self, gpu: GPU) -> str | None:
        """"lora fits a 24 GB card with fused CE and activation offload"."""
        if not self.levers:
            return None
        names = [LEVER_LABELS[n] for n in self.levers]
        said = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"{self.preset} fits a {round(gpu.memory_bytes / 2**30)} GB card ({gpu.name}) with {said}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "min_peak_reserved_bytes": self.estimate.peak_reserved_bytes,
            "min_peak_allocated_bytes": self.estimate.peak_allocated_bytes,
            "fits": self.fits,
            "plan": self.estimate.plan.to_dict(),
            "least_peak_reserved_bytes": self.least_bytes,
            "least_plan": None if self.least_plan is None else self.least_plan.to_dict(),
            "levers": None if self.levers is None else list(self.levers),
        }


@dataclass(frozen=True)
class FitReport:
    model: str
    gpu: GPU | None
    usable_bytes: int | None
    methods: list[MethodFit]
    suggestion: str | None
    table: dict[str, dict[str, bool]] | None = None  # preset -> common GPU -> fits (no GPU given)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": self.model,
            "gpu": None if self.gpu is None else self.gpu.name,
            "usable_bytes": self.usable_bytes,
            "methods": [m.to_dict() for m in self.methods],
            "suggestion": self.suggestion,
        }
        if self.table is not None:
            d["common_gpus"] = self.table
        return d


def _leanest(shape: ModelShape, preset: str, gpu: GPU | None, seq_len: int, num_gpus: int, headroom: float = DEFAULT_HEADROOM,
             **extra: Any) -> EstimateResult:
    return estimate(
        shape, preset, gpu=gpu, per_device_train_batch_size=1, gradient_accumulation_steps=1,
        gradient_checkpointing=True, max_length=seq_len, num_gpus=num_gpus, headroom=headroom, **extra,
    )


def _least(shape: ModelShape, preset: str, gpu: GPU, seq_len: int, num_gpus: int, headroom: float,
           pinned: dict[str, Any]) -> tuple[int | None, Plan | None]:
    """The leanest plan of the advisor's space for ``preset`` (rust/src/search.rs ``rank``
    with nothing usable: its shortfall is the leanest plan) and its fit bound — the peak
    reserved bytes raised by the measured error band, what the one fit rule judges."""
    from forge_advisor.advisor.request import SearchRequest
    from forge_advisor.advisor.search import build_space, plan_of, rank_space
    from forge_advisor.presets import get_preset

    req = SearchRequest(num_gpus=num_gpus, seq_len=seq_len, global_batch=-(-16 // num_gpus) * num_gpus, headroom=headroom,
                        trainer=get_preset(preset).trainer,  # type: ignore[arg-type]
                        allowed_presets=(preset,), fixed=dict(pinned))
    shortfall = rank_space(shape, gpu, {**build_space(shape, gpu, req), "usable_bytes": 0}, 1).nothing_fits
    if shortfall is None or shortfall.leanest is None:
        return None, None
    return shortfall.leanest.reserved_bytes, plan_of(shortfall.leanest.plan)


# how fit names each lever (forge_advisor/levers.py)
LEVER_LABELS = {
    "use_liger_kernel": "fused CE (use_liger_kernel)",
    "activation_offloading": "activation offload (activation_offloading)",
    "offload_optimizer": "optimizer offload (offload_optimizer)",
    "offload_params": "parameter offload (offload_params)",
}


def levers_that_fit(shape: ModelShape, preset: str, gpu: GPU, seq_len: int, num_gpus: int, headroom: float,
                    pinned: dict[str, Any]) -> tuple[str, ...] | None:
    """The fewest levers (first of equals in LEVER_LABELS order) that make ``preset``'s defaults
    (batch 1, checkpointing) fit ``gpu``; None when they fit without or no set does. Only levers
    the request did not pin, and the offloads only under a sharding that does them."""
    import itertools

    from forge_advisor.plan import Plan

    base = _leanest(shape, preset, gpu, seq_len, num_gpus, headroom, **pinned)
    usable = _usable(gpu, headroom)
    if core.fits(base.peak_reserved_upper_bytes, usable):
        return None
    free = [n for n in LEVER_LABELS if n not in pinned and not getattr(base.plan, n)]
    for k in range(1, len(free) + 1):
        for combo in itertools.combinations(free, k):
            try:
                plan: Plan = base.plan.with_(**dict.fromkeys(combo, True))
            except ForgeError:
                continue  # an offload this sharding cannot do
            if core.fits(estimate(shape, plan, gpu=gpu, headroom=headroom).peak_reserved_upper_bytes, usable):
                return combo
    return None


def _usable(gpu: GPU, headroom: float) -> int:
    return core.usable_bytes(gpu.memory_bytes, headroom)


def suggest(shape: ModelShape, methods: list[MethodFit], gpu: GPU, headroom: float, seq_len: int) -> str:
    """What would fit: the smallest catalog GPU for the leanest method, or N GPUs with FSDP."""
    from forge_advisor.gpus import gpu_catalog

    leanest = min(methods, key=lambda m: m.least_bytes or m.estimate.peak_reserved_upper_bytes)
    need = leanest.least_bytes or leanest.estimate.peak_reserved_upper_bytes
    bigger = sorted((g for g in gpu_catalog() if _usable(g, headroom) >= need), key=lambda g: (g.memory_bytes, g.name))
    parts = [f"{leanest.preset} needs at least {fmt_bytes(need)}, {gpu.name} has {fmt_bytes(_usable(gpu, headroom))} usable"]
    if bigger:
        parts.append(f"the smallest catalog GPU that fits it is the {bigger[0].name} ({bigger[0].memory_label})")
    for n in (2, 4, 8):  # one node at most: beyond it the advice is a bigger GPU
        sharded = _leanest(shape, "sft", gpu, seq_len, n, headroom, distributed="fsdp")
        if core.fits(sharded.peak_reserved_upper_bytes, _usable(gpu, headroom)):
            parts.append(f"full fine-tuning fits on {n} × {gpu.name} with FSDP full-shard ({fmt_bytes(sharded.peak_reserved_bytes)} each)")
            break
    return "; ".join(parts)


def fit(
    model: str | ModelShape,
    gpu: str | GPU | None = None,
    *,
    seq_len: int | None = None,
    num_gpus: int = 1,
    headroom: float = DEFAULT_HEADROOM,
    distributed: str | None = None,
    batching: str | None = None,
    **levers: Any,
) -> FitReport:
    """The least memory each registered preset needs (batch 1, checkpointing, its other
    defaults, ``seq_len`` tokens, ``num_gpus`` with ``distributed`` sharding) and whether
    it fits the GPU by the one fit rule. ``levers``: memory levers pinned by name
    (``use_liger_kernel=True``…, forge_advisor/levers.py), a vision-language model's image
    fields (``max_pixels``, ``images_per_sample``, ``freeze_vision_tower``) and ``batching``: the
    batching mode (DPO presets keep padding: their batches cannot be flattened)."""
    from forge_advisor.gpus import find_gpu, probe, resolve_gpu
    from forge_advisor.presets import get_preset, list_presets
    from forge_advisor.shapes import load_shape

    if not 0.0 <= headroom < 0.9:
        raise ForgeError(f"headroom={headroom} is out of range: allowed [0, 0.9)")
    lo, hi = core.PLAN_INT_RANGES["num_gpus"]
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or not lo <= num_gpus <= hi:
        raise ForgeError(f"num_gpus={num_gpus!r} is out of range: allowed [{lo}, {hi}]",
                         field="num_gpus", value=str(num_gpus), allowed=f"[{lo}, {hi}]")
    shape = model if not isinstance(model, str) else load_shape(model)
    from forge_advisor.levers import LEVER_FIELDS

    from forge_advisor.plan import VISION_FIELDS

    known = (*LEVER_FIELDS, *VISION_FIELDS)
    unknown = [k for k in levers if k not in known]
    if unknown:
        raise ForgeError(f"fit() got an unknown lever '{unknown[0]}': one of {', '.join(known)}")
    shape.check_vision_fields(levers)
    if seq_len is None:
        seq_len = shape.default_length(levers)
    else:
        shape.check_length(seq_len)
    common = {**({} if distributed is None else {"distributed": distributed}), **levers}
    from forge_advisor.dataplan.batching import FLATTENED, check_mode

    def extra_for(preset: str) -> dict[str, Any]:
        if batching is None or (batching in FLATTENED and get_preset(preset).trainer == "dpo"):
            return common
        return {**common, "batching": check_mode(batching)}

    if isinstance(gpu, str):
        gpu = resolve_gpu(gpu)
    elif gpu is None:
        found = probe()
        gpu = found.devices[0].gpu if found.devices else None
    if gpu is None:
        methods = []
        table: dict[str, dict[str, bool]] = {}
        for p in list_presets():
            table[p] = {}
            extra = extra_for(p)
            for name in COMMON_GPUS:
                g = find_gpu(name)
                least, _ = _least(shape, p, g, seq_len, num_gpus, headroom, extra)
                table[p][g.name] = least is not None and core.fits(least, _usable(g, headroom))
            ref = find_gpu(COMMON_GPUS[-1])
            least, plan = _least(shape, p, ref, seq_len, num_gpus, headroom, extra)
            methods.append(MethodFit(p, _leanest(shape, p, None, seq_len, num_gpus, headroom, **extra), None, least, plan))
        return FitReport(shape.name, None, None, methods, None, table)
    methods = []
    for p in list_presets():
        extra = extra_for(p)
        least, plan = _least(shape, p, gpu, seq_len, num_gpus, headroom, extra)
        fits = least is not None and core.fits(least, _usable(gpu, headroom))
        levers = levers_that_fit(shape, p, gpu, seq_len, num_gpus, headroom, extra)
        methods.append(MethodFit(p, _leanest(shape, p, gpu, seq_len, num_gpus, headroom, **extra), fits, least, plan, levers))
    suggestion = None if any(m.fits for m in methods) else suggest(shape, methods, gpu, headroom, seq_len)
    return FitReport(shape.name, gpu, _usable(gpu, headroom), methods, suggestion)
