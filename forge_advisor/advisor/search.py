"""The analytic search: build the space → rank it in the core (exactly, in one call) → the
plans to show.

The core (rust/src/search.rs ``Estimator::rank``) prices every plan of the space — every
outer choice (method, rank, targets, freeze ratio, optimizer, sharding) with its best
per-device batch, accumulation and checkpointing — and returns the top N per objective, the
Pareto front and, when nothing fits, the leanest plan. This module only builds the space
from the request and turns the few plans it shows into :class:`Evaluated` values. It
imports no Optuna: ``--storage`` lives in :mod:`forge_advisor.advisor.study`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from forge_advisor import core
from forge_advisor.advisor.request import BATCHES, FREEZE_RATIOS, RANKS, SEARCH_OPTIMIZERS, SearchRequest
from forge_advisor.calibration import Calibration, load_calibration
from forge_advisor.estimate import EstimateResult, native_estimator
from forge_advisor.levers import SEARCH_AXES
from forge_advisor.plan import Plan

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU
    from forge_advisor.shapes import ModelShape

__all__ = ["Evaluated", "SearchOutcome", "build_space", "lever_axes", "rank_space", "run_search", "usable_bytes"]


@dataclass(frozen=True)
class Evaluated:
    """One ranked plan: the preset it starts from, the plan, its estimate and its value."""

    preset: str
    plan: Plan
    estimate: EstimateResult
    value: float
    fits: bool

    @property
    def quality(self) -> float:
        return self.estimate.quality


@dataclass(frozen=True)
class SearchOutcome:
    top: list[Evaluated]  # the best distinct alternatives for the request's objective
    pareto: list[Evaluated]  # tokens/s against quality, fastest first
    fitting: int  # fitting outer choices (each with its best batch and checkpointing)
    outer_space: int  # outer choices in the space
    plans_priced: int  # outer × batch × checkpointing
    seconds: float  # the core's ranking time
    best_full: Evaluated | None  # the best fitting full fine-tune
    full_min_bytes: int | None  # the least any full fine-tune of the space needs, when none fits
    best_tokens_per_second: float
    leanest: Evaluated | None  # nothing fits: the leanest plan of the space
    space: dict[str, Any]


def usable_bytes(gpu: GPU, headroom: float) -> int:
    """GPU memory minus the headroom: 80 GiB × (1 − 0.02) = 78.4 GiB usable (core.usable_bytes)."""
    return core.usable_bytes(gpu.memory_bytes, headroom)


def _base_plan(shape: ModelShape, gpu: GPU, req: SearchRequest) -> Plan:
    half = "bf16" if gpu.bf16 else "fp16"
    fields: dict[str, Any] = {
        "trainer": req.trainer,
        "dtype": half,
        "max_length": req.seq_len,
        "num_gpus": req.num_gpus,
        "distributed": "ddp" if req.num_gpus > 1 else "none",
        "attn_implementation": "eager" if shape.hints.get("eager_only") else "sdpa",
        "lora_dropout": 0.05,
    }
    fields.update({k: v for k, v in req.fixed.items() if k != "method"})
    return Plan(**fields)


def build_space(shape: ModelShape, gpu: GPU, req: SearchRequest, calibration: Calibration | None = None) -> dict[str, Any]:
    """The discrete space as the core's ``Space`` reads it (rust/src/search.rs). Every field
    the request fixes is a one-value axis; the methods are those of the allowed presets."""
    base = _base_plan(shape, gpu, req)
    fixed = req.fixed
    ranks = [r for r in RANKS if r >= (req.min_lora_r or 1)] or [max(RANKS)]
    freeze = [f for f in FREEZE_RATIOS if req.max_freeze_ratio is None or f <= req.max_freeze_ratio]
    base_d = base.to_dict()

    def axis(name: str, default: list[Any]) -> list[Any]:
        return [base_d[name]] if name in fixed else default

    return {
        "base": base_d,
        "methods": list(req.method_presets),
        "lora_r": axis("lora_r", ranks),
        "targets": axis("lora_target_modules", [None, "all-linear"]),
        "batch": axis("per_device_train_batch_size", list(BATCHES)),
        "freeze": axis("freeze_ratio", freeze),
        "gradient_checkpointing": axis("gradient_checkpointing", [False, True]),
        "optim": axis("optim", list(SEARCH_OPTIMIZERS)),
        "attn": [base.attn_implementation],
        "distributed": [base.distributed] if req.num_gpus == 1 or "distributed" in fixed else ["ddp", "fsdp", "zero2", "zero3"],
        "global_batch": req.global_batch,
        "usable_bytes": usable_bytes(gpu, req.headroom),
        "objective": req.objective,
        "reserve_factor": 1.0 if calibration is None else calibration.reserve_factor,
        **lever_axes(req),
        **batching_axes(req),
    }


def batching_axes(req: SearchRequest) -> dict[str, Any]:
    """The batching mode as an outer knob when the request carries the data's real-token
    fractions (one per mode and batch), unless the mode is fixed; without data, the base's."""
    if not req.real_token_fraction:
        return {}
    modes = list(dict.fromkeys(m for m, _, _ in req.real_token_fraction))
    return {"batching": [] if "batching" in req.fixed else modes,
            "real_token_fraction": [list(t) for t in req.real_token_fraction]}


def lever_axes(req: SearchRequest) -> dict[str, Any]:
    """The memory levers as inner knobs of the core's search (forge_advisor/levers.py states
    their quality and speed cost): fused CE and activation offloading everywhere, the CPU
    offloads only with several GPUs (each tried only under a sharding that can do it); a
    pinned lever is one value. ``shard_quantized``: QLoRA under fsdp/zero3 stores its 4-bit
    weights in the compute dtype (FSDP-QLoRA) unless the storage is pinned."""
    multi = req.num_gpus > 1
    axes: dict[str, Any] = {}
    for name, values in SEARCH_AXES.items():
        if name == "bnb_4bit_quant_storage":
            continue
        searched = multi or name in ("use_liger_kernel", "activation_offloading")
        axes[name] = [] if name in req.fixed or not searched else list(values)
    axes["shard_quantized"] = "bnb_4bit_quant_storage" not in req.fixed
    return axes


def rank_space(shape: ModelShape, gpu: GPU, space: dict[str, Any], top: int) -> core.Ranking:
    """One call into the core: the exact ranking of ``space``."""
    return core.call(native_estimator(shape, gpu).rank, json.dumps(space), top)


def plan_of(native: core.NativePlan) -> Plan:
    """The user-facing :class:`Plan` of a plan the core returned."""
    return Plan(**{name: getattr(native, name) for name in Plan.field_names()})


def preset_alpha(plan: Plan, preset: str, fixed: dict[str, Any]) -> int | None:
    """The α :func:`with_preset_alpha` gives ``plan``, or None where it keeps the plan (no
    adapters, α pinned, or the preset's α/r already gives the plan's α)."""
    if not plan.uses_lora or "lora_alpha" in fixed:
        return None
    from forge_advisor.presets.planning import scaled_alpha
    from forge_advisor.presets.registry import get_preset_class

    alpha, r = _preset_alpha_r(preset, get_preset_class(preset))
    new = scaled_alpha(alpha, r, plan.lora_r)
    return None if new == plan.lora_alpha else new


def with_preset_alpha(plan: Plan, preset: str, fixed: dict[str, Any]) -> Plan:
    """The core varies ``lora_r`` alone; the plan keeps its preset's α/r unless α is pinned
    (presets/planning.py ``scaled_alpha``: r 128 on the lora preset's 32/16 -> α 256).
    α changes neither memory nor speed, so the core's estimate stands."""
    alpha = preset_alpha(plan, preset, fixed)
    # (`replace`, not `Plan.with_`: lora_alpha is a field, no name to check)
    return plan if alpha is None else dataclasses.replace(plan, lora_alpha=alpha)


@functools.lru_cache(maxsize=64)
def _preset_alpha_r(preset: str, cls: type) -> tuple[int, int]:
    """``(lora_alpha, lora_r)`` of the registered preset ``preset``: built once per preset
    class (``cls`` keys the cache, so a preset registered again is read again), not once
    per plan a search shows."""
    from forge_advisor.presets import get_preset

    base = get_preset(preset)
    return base.lora_alpha, base.lora_r


def check_fixed(shape: ModelShape, gpu: GPU, req: SearchRequest, space: dict[str, Any]) -> None:
    """A pinned value the model cannot take (``--fix lora_target_modules=foo``) is an error
    that names it, not a space where every plan of a method silently drops out."""
    if not req.fixed:
        return
    from forge_advisor.errors import ForgeError

    from forge_advisor.levers import LEVER_FIELDS, refuse_lever_problem

    est = native_estimator(shape, gpu)
    base = Plan(**space["base"])
    for method in space["methods"]:
        plan = base.with_(method=method)
        try:
            core.call(est.estimate, plan)
        except ForgeError as exc:
            if exc.field in req.fixed:
                raise
        if any(name in req.fixed for name in LEVER_FIELDS):
            # a pinned lever the plan cannot run (FSDP-QLoRA with uint8 storage): the one line, as estimate says it
            refuse_lever_problem(plan, training=False)


def run_search(shape: ModelShape, gpu: GPU, req: SearchRequest) -> SearchOutcome:
    """Build the space, rank it, and turn what is shown into :class:`Evaluated` plans."""
    calibration = load_calibration(gpu)
    space = build_space(shape, gpu, req, calibration)
    check_fixed(shape, gpu, req, space)
    ranking = rank_space(shape, gpu, space, req.top)
    fitting = ranking.fitting

    def evaluated(r: core.Ranked) -> Evaluated:
        plan = plan_of(r.plan)
        plan = with_preset_alpha(plan, req.method_presets[plan.method], req.fixed)
        est = EstimateResult(shape.name, gpu, plan, r.estimate, req.dataset_tokens, calibration, req.headroom,
                             real_token_fraction=r.real_fraction)
        return Evaluated(req.method_presets[plan.method], plan, est, r.value(req.objective), r.fits)

    top = [evaluated(fitting[i]) for i in ranking.top(req.objective)]
    pareto = [evaluated(fitting[i]) for i in ranking.pareto]
    fulls = [r for r in fitting if r.plan.method == "full"]
    best_full = evaluated(max(fulls, key=lambda r: r.value(req.objective))) if fulls else None
    full_min = None
    if best_full is None and "full" in space["methods"]:
        # the least a full fine-tune of this space needs: the leanest plan of its full-only part
        lean = rank_space(shape, gpu, {**space, "methods": ["full"]}, 1).nothing_fits
        full_min = lean.leanest.reserved_bytes if lean is not None and lean.leanest is not None else None
    shortfall = ranking.nothing_fits
    leanest = evaluated(shortfall.leanest) if shortfall is not None and shortfall.leanest is not None else None
    return SearchOutcome(
        top=top,
        pareto=pareto,
        fitting=len(fitting),
        outer_space=ranking.outer,
        plans_priced=ranking.evaluated,
        seconds=ranking.seconds,
        best_full=best_full,
        full_min_bytes=full_min,
        best_tokens_per_second=max((r.tokens_per_second or 0.0 for r in fitting), default=0.0),
        leanest=leanest,
        space=space,
    )
