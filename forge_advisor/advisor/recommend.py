"""``recommend``: rank training plans for a model on a GPU; ``auto_preset`` for scripts."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from forge_advisor.advisor.explain import why
from forge_advisor.advisor.request import DEFAULT_HEADROOM, SearchRequest
from forge_advisor.advisor.search import Evaluated, SearchOutcome, run_search, usable_bytes
from forge_advisor import core
from forge_advisor.errors import ForgeError
from forge_advisor.estimate import EstimateResult
from forge_advisor.export import launch_command, preset_overrides, preset_snippet, train_argv
from forge_advisor.levers import LEVER_FIELDS

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU
    from forge_advisor.plan import Plan
    from forge_advisor.presets.base import BasePreset
    from forge_advisor.shapes import ModelShape

__all__ = ["Candidate", "Recommendation", "recommend", "auto_preset"]


@dataclass(frozen=True)
class Candidate:
    """A recommended plan with the preset it starts from: ``(preset, plan)``, diffed once
    against the preset wherever it is written out (``overrides``, the command, the snippet)."""

    preset: str
    plan: Plan
    estimate: EstimateResult
    why: str
    quality: float
    objective_value: float

    @cached_property
    def overrides(self) -> dict[str, Any]:
        """The ``get_preset(preset, **overrides)`` keyword arguments that give this plan."""
        return preset_overrides(self.preset, self.plan, self.estimate.gpu)

    def command(self, model: str, data: str = "DATA.jsonl", output: str = "out") -> str:
        argv = train_argv(model, self.preset, self.plan, gpu=self.estimate.gpu, data=data, output=output)
        return launch_command(argv, self.plan.num_gpus)

    def python(self, model: str) -> str:
        return preset_snippet(model, self.preset, self.plan, gpu=self.estimate.gpu)

    def to_preset(self) -> BasePreset:
        """The ready preset: the base preset with every knob of the plan."""
        from forge_advisor.presets import get_preset

        return get_preset(self.preset, **self.overrides)

    def to_dict(self, model: str) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "overrides": self.overrides,
            "estimate": self.estimate.to_dict(),
            "why": self.why,
            "quality": self.quality,
            "objective_value": self.objective_value,
            "command": self.command(model),
            "python": self.python(model),
        }


@dataclass(frozen=True)
class Recommendation:
    model: str
    gpu: GPU
    request: SearchRequest
    usable_bytes: int
    recommendations: list[Candidate]
    pareto: list[Candidate]
    suggestion: str | None
    search: dict[str, Any] = field(default_factory=dict)
    measured: list[dict[str, Any]] | None = None  # --measure: one entry per trial
    calibration: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "gpu": self.gpu.name,
            "num_gpus": self.request.num_gpus,
            "objective": self.request.objective,
            "headroom": self.request.headroom,
            "usable_bytes": self.usable_bytes,
            "seq_len": self.request.seq_len,
            "global_batch": self.request.global_batch,
            "recommendations": [c.to_dict(self.model) for c in self.recommendations],
            "pareto": [
                {
                    "preset": c.preset,
                    "overrides": c.overrides,
                    "tokens_per_second": c.estimate.tokens_per_second,
                    "quality": c.quality,
                    "peak_reserved_bytes": c.estimate.peak_reserved_bytes,
                }
                for c in self.pareto
            ],
            "suggestion": self.suggestion,
            "search": self.search,
            "measured": self.measured,
            "calibration": self.calibration,
        }


def _candidate(ev: Evaluated, out: SearchOutcome, usable: int) -> Candidate:
    text = why(ev, out.best_full, out.full_min_bytes, usable, out.best_tokens_per_second)
    return Candidate(ev.preset, ev.plan, ev.estimate, text, ev.quality, ev.value)


def recommend(
    model: str | ModelShape,
    gpu: str | GPU | None = None,
    *,
    num_gpus: int = 1,
    objective: str = "balanced",
    seq_len: int | None = None,
    global_batch: int | None = None,
    global_batch_tokens: int | None = None,
    dataset_tokens: int | None = None,
    headroom: float = DEFAULT_HEADROOM,
    trainer: str = "sft",
    allowed_presets: list[str] | tuple[str, ...] | None = None,
    min_lora_r: int | None = None,
    max_freeze_ratio: float | None = None,
    fixed: dict[str, Any] | None = None,
    seed: int = 0,
    top: int = 5,
    storage: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    measure: bool = False,
    measure_top: int = 3,
    measure_steps: int = 3,
    real_token_fraction: tuple[tuple[str, int, float], ...] = (),
) -> Recommendation:
    """Search plans for ``model`` on ``gpu`` (catalog name, ``"auto"`` or None = NVML probe).

    ``measure=True`` then runs the best ``measure_top`` plans for ``measure_steps`` real steps
    on this GPU, drops those that run out of memory, re-ranks by measured speed and stores a
    calibration for the device. ``seq_len`` None: 2048 tokens, or the model's position limit
    when shorter; a longer one than that limit is refused. ``real_token_fraction``: the
    data's (batching mode, batch, real/processed tokens) triples
    (forge_advisor.dataplan.advise.real_token_fractions): the batching mode becomes a knob."""
    from forge_advisor.gpus import resolve_gpu
    from forge_advisor.shapes import load_shape

    if measure:
        from forge_advisor.advisor.measure import require_cuda

        require_cuda()
    t0 = time.perf_counter()
    fixed = dict(fixed or {})
    # the length and the GPU count are the request's own: a pinned one is that, and the
    # header, the global batch and the suggestions all say it
    seq_len = fixed.pop("max_length", seq_len)
    num_gpus = fixed.pop("num_gpus", num_gpus)
    shape = model if not isinstance(model, str) else load_shape(model)
    shape.check_vision_fields(fixed)
    if seq_len is None:
        seq_len = shape.default_length(fixed)
    else:
        shape.check_length(seq_len)
    gpu = resolve_gpu(gpu or "auto") if not hasattr(gpu, "memory_bytes") else gpu  # type: ignore[arg-type]
    if global_batch is None:
        if global_batch_tokens is not None:
            if isinstance(global_batch_tokens, bool) or not isinstance(global_batch_tokens, int) or global_batch_tokens < 1:
                raise ForgeError(f"global_batch_tokens={global_batch_tokens!r} must be a positive integer")
            # 32 seqs × 2048 tokens = 65,536 tokens per optimizer step
            global_batch = max(num_gpus, round(global_batch_tokens / seq_len / num_gpus) * num_gpus)
        else:
            global_batch = 16
    req = SearchRequest(
        num_gpus=num_gpus, objective=objective, seq_len=seq_len, global_batch=global_batch,  # type: ignore[arg-type]
        dataset_tokens=dataset_tokens, headroom=headroom, trainer=trainer,  # type: ignore[arg-type]
        allowed_presets=tuple(allowed_presets) if allowed_presets is not None else None,
        min_lora_r=min_lora_r, max_freeze_ratio=max_freeze_ratio, fixed=fixed,
        seed=seed, top=top, real_token_fraction=tuple(real_token_fraction),
    )
    if storage:
        from forge_advisor.advisor.study import ranked_study

        outcome, study = ranked_study(shape, gpu, req, storage)
    else:
        outcome, study = run_search(shape, gpu, req), None
    if progress is not None:
        progress(1, 1)
    usable = usable_bytes(gpu, headroom)  # type: ignore[arg-type]
    cands = [_candidate(e, outcome, usable) for e in outcome.top]
    pareto = [_candidate(e, outcome, usable) for e in outcome.pareto]
    suggestion = None if cands else _nothing_fits(shape, gpu, req, outcome)  # type: ignore[arg-type]
    search = {
        "method": "exhaustive ranking in the core",
        "outer_space": outcome.outer_space,
        "plans_priced": outcome.plans_priced,
        "fitting": outcome.fitting,
        "rank_seconds": round(outcome.seconds, 6),
        "seconds": round(time.perf_counter() - t0, 4),
        "study": study,
    }
    rec = Recommendation(shape.name, gpu, req, usable, cands, pareto, suggestion, search)  # type: ignore[arg-type]
    if measure and cands:
        rec = _measured(rec, model, measure_top, measure_steps, progress)
    return rec


def _measured(rec: Recommendation, model: Any, top: int, steps: int, progress: Any) -> Recommendation:
    """Run the best candidates for real, drop those that OOM, rank by measured speed."""
    from forge_advisor.advisor.measure import measure_candidates
    from forge_advisor.shapes import load_config

    if not isinstance(model, str):
        raise ForgeError("--measure needs the model's config.json: pass the model id or path, not a shape")
    config, _, _ = load_config(model)
    trials, calibration = measure_candidates(config, rec.recommendations[:top], rec.gpu, steps=steps, seed=rec.request.seed, progress=progress)
    by_plan = {id(t.candidate): t for t in trials}
    kept: list[tuple[float, Candidate]] = []
    for cand in rec.recommendations:
        t = by_plan.get(id(cand))
        if t is not None and t.oom:
            continue  # does not fit after all
        value = cand.objective_value
        est_tps = cand.estimate.tokens_per_second
        if t is not None and est_tps and rec.request.objective != "quality":
            value *= t.result["tokens_per_second"] / est_tps  # type: ignore[index]
        kept.append((value, cand))
    ranked = [c for _, c in sorted(kept, key=lambda vc: -vc[0])]
    measured = [{"preset": t.candidate.preset, "overrides": t.candidate.overrides, **t.to_dict()} for t in trials]
    return dataclasses.replace(rec, recommendations=ranked, measured=measured,
                               calibration=None if calibration is None else calibration.to_dict())


def _fits_with(shape: ModelShape, gpu: GPU, req: SearchRequest, **changes: Any) -> Evaluated | None:
    """The best plan of the request's space changed by ``changes``, or None if none fits."""
    try:
        top = run_search(shape, gpu, dataclasses.replace(req, top=1, **changes)).top
    except ForgeError:
        return None
    return top[0] if top else None


def _nothing_fits(shape: ModelShape, gpu: GPU, req: SearchRequest, outcome: SearchOutcome) -> str:
    """Why nothing fits — the leanest plan of the space and how far over it is — and what
    would: the presets left out, a shorter sequence, a bigger catalog GPU, up to 8 GPUs."""
    from forge_advisor.advisor.explain import describe
    from forge_advisor.advisor.search import _base_plan
    from forge_advisor.estimate import estimate
    from forge_advisor.gpus import gpu_catalog
    from forge_advisor.units import fmt_bytes

    lean = outcome.leanest
    if lean is None:
        # no plan of the space could be priced: pricing its base plan names the bad field
        estimate(shape, _base_plan(shape, gpu, req), gpu=gpu, headroom=req.headroom)
        return (f"no plan can be priced: no per-device batch of the space divides the global batch "
                f"{req.global_batch} over {req.num_gpus} GPU(s)")
    # the fit bound (peak reserved raised by the measured band): what the one fit rule judges,
    # and what `fit` reports as the least of the space
    need = lean.estimate.peak_reserved_upper_bytes
    usable = usable_bytes(gpu, req.headroom)
    where = f"{req.num_gpus} × {gpu.name}" if req.num_gpus > 1 else gpu.name
    parts = [f"the leanest plan ({describe(lean)}, {req.seq_len} tokens) needs at least {fmt_bytes(need)} per GPU, "
             f"{where} has {fmt_bytes(usable)} usable ({fmt_bytes(need - usable)} over)"]
    if req.allowed_presets is not None:
        other = _fits_with(shape, gpu, req, allowed_presets=None)
        if other is not None:
            parts.append(f"allowing {other.preset} would fit ({fmt_bytes(other.estimate.peak_reserved_bytes)})")
    length = req.seq_len // 2
    while length >= 128:
        shorter = _fits_with(shape, gpu, req, seq_len=length)
        if shorter is not None:
            parts.append(f"--seq-len {length} fits ({describe(shorter)}, {fmt_bytes(shorter.estimate.peak_reserved_bytes)})")
            break
        length //= 2
    bigger = sorted((g for g in gpu_catalog() if g.memory_bytes > gpu.memory_bytes and core.fits(need, usable_bytes(g, req.headroom))),
                    key=lambda g: (g.memory_bytes, g.name))
    if bigger:
        parts.append(f"the smallest catalog GPU that fits it is the {bigger[0].name} ({bigger[0].memory_label})")
    for n in (2, 4, 8):
        if n <= req.num_gpus:
            continue
        per_step = -(-req.global_batch // n) * n  # the global batch rounded up to a multiple of n
        more = _fits_with(shape, gpu, req, num_gpus=n, global_batch=per_step)
        if more is not None:
            levers = "".join(f" + {f}" for f in LEVER_FIELDS if getattr(more.plan, f) is True)
            parts.append(f"{n} × {gpu.name} fit ({describe(more)}, {more.plan.distributed}{levers}, "
                         f"{fmt_bytes(more.estimate.peak_reserved_bytes)} each)")
            break
    return "; ".join(parts + moe_weight_notes(shape))


def moe_weight_notes(shape: ModelShape) -> list[str]:
    """Why 4-bit does not shrink a mixture-of-experts model on the Hugging Face stack, when
    it does not: transformers 5's ``replace_with_bnb_linear`` quantises ``nn.Linear`` modules
    only, so fused expert tensors (``nn.Parameter [E, out, in]``) stay in the compute dtype
    and peft's ``prepare_model_for_kbit_training`` upcasts them to fp32 (tests/test_moe_quantization.py
    checks this on the real classes); an MXFP4 checkpoint (gpt-oss) is dequantised to bf16 to
    train (transformers ``Mxfp4Config(dequantize=True)``; its kernels have no backward)."""
    from forge_advisor.units import fmt_bytes

    notes = []
    experts = shape.fused_expert_parameters()
    if experts * 2 > shape.num_parameters:
        notes.append(f"QLoRA does not shrink {shape.name}: bitsandbytes quantises nn.Linear modules only, and its fused "
                     f"expert tensors ({experts / shape.num_parameters:.0%} of the parameters, {fmt_bytes(2 * experts)} "
                     "in bf16) stay in bf16, then fp32 after prepare_model_for_kbit_training")
    if shape.checkpoint_quantization == "mxfp4":
        notes.append(f"its MXFP4 checkpoint is dequantised to bf16 to train ({fmt_bytes(2 * shape.num_parameters)} of weights; "
                     "transformers' MXFP4 kernels have no backward)")
    return notes


def auto_preset(model: str | ModelShape, gpu: str | GPU | None = None, **constraints: Any) -> BasePreset:
    """The best plan as a ready preset (the first of ``recommend``'s exact ranking). Raises
    ForgeError with what would fit when nothing does."""
    rec = recommend(model, gpu, top=1, **constraints)
    if not rec.recommendations:
        raise ForgeError(rec.suggestion or "nothing fits")
    return rec.recommendations[0].to_preset()
