"""``recommend``: rank training plans for a model on a GPU; ``auto_preset`` for scripts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forge_advisor.advisor.explain import why
from forge_advisor.advisor.export import preset_and_overrides, python_snippet, train_command
from forge_advisor.advisor.fit import MethodFit, suggest
from forge_advisor.advisor.request import DEFAULT_HEADROOM, SearchRequest
from forge_advisor.advisor.search import Evaluated, run_search, usable_bytes
from forge_advisor.errors import ForgeError
from forge_advisor.estimate import EstimateResult

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU
    from forge_advisor.plan import Plan
    from forge_advisor.presets.base import BasePreset
    from forge_advisor.shapes import ModelShape

__all__ = ["Candidate", "Recommendation", "recommend", "auto_preset"]


@dataclass(frozen=True)
class Candidate:
    preset: str
    overrides: dict[str, Any]
    plan: Plan
    estimate: EstimateResult
    why: str
    quality: float
    objective_value: float

    def command(self, model: str) -> str:
        return train_command(model, self.plan, self.estimate.gpu)

    def python(self, model: str) -> str:
        return python_snippet(model, self.plan, self.estimate.gpu)

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


def _candidate(ev: Evaluated, best_full: Evaluated | None, leanest_full: int | None, usable: int, best_tps: float) -> Candidate:
    preset, overrides = preset_and_overrides(ev.plan, ev.estimate.gpu)
    return Candidate(preset, overrides, ev.plan, ev.estimate, why(ev, best_full, leanest_full, usable, best_tps), ev.quality, ev.value)


def _distinct_top(ranked: list[Evaluated], top: int) -> list[Evaluated]:
    """Best plan per (method, rank, targets, freeze): the list shows real alternatives."""
    seen: set[tuple[Any, ...]] = set()
    out: list[Evaluated] = []
    for ev in ranked:
        p = ev.plan
        key = (p.method, p.lora_r if p.uses_lora else None, p.lora_target_modules if p.uses_lora else None, p.freeze_ratio)
        if key in seen:
            continue
        seen.add(key)
        out.append(ev)
        if len(out) == top:
            break
    return out


def recommend(
    model: str | ModelShape,
    gpu: str | GPU | None = None,
    *,
    num_gpus: int = 1,
    objective: str = "balanced",
    seq_len: int = 2048,
    global_batch: int | None = None,
    global_batch_tokens: int | None = None,
    dataset_tokens: int | None = None,
    headroom: float = DEFAULT_HEADROOM,
    trainer: str = "sft",
    allowed_presets: list[str] | tuple[str, ...] | None = None,
    min_lora_r: int | None = None,
    max_freeze_ratio: float | None = None,
    fixed: dict[str, Any] | None = None,
    n_trials: int | None = None,
    seed: int = 0,
    top: int = 5,
    storage: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    measure: bool = False,
    measure_top: int = 3,
    measure_steps: int = 3,
) -> Recommendation:
    """Search plans for ``model`` on ``gpu`` (catalog name, ``"auto"`` or None = NVML probe).

    ``measure=True`` then runs the best ``measure_top`` plans for ``measure_steps`` real steps
    on this GPU, drops those that run out of memory, re-ranks by measured speed and stores a
    calibration for the device."""
    from forge_advisor.gpus import resolve_gpu
    from forge_advisor.shapes import load_shape

    if measure:
        from forge_advisor.advisor.measure import require_cuda

        require_cuda()
    t0 = time.perf_counter()
    shape = model if not isinstance(model, str) else load_shape(model)
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
        min_lora_r=min_lora_r, max_freeze_ratio=max_freeze_ratio, fixed=dict(fixed or {}),
        n_trials=n_trials, seed=seed, top=top,
    )
    outcome = run_search(shape, gpu, req, storage=storage, progress=progress)  # type: ignore[arg-type]
    usable = usable_bytes(gpu, headroom)  # type: ignore[arg-type]
    feasible = sorted((e for e in outcome.evaluated if e.fits), key=lambda e: -e.value)
    fulls = [e for e in outcome.evaluated if e.plan.method == "full"]
    best_full = max((e for e in fulls if e.fits), key=lambda e: e.value, default=None)
    leanest_full = min((e.estimate.peak_reserved_bytes for e in fulls), default=None)
    best_tps = max((e.estimate.tokens_per_second or 0.0 for e in feasible), default=0.0)
    chosen = _distinct_top(feasible, req.top)
    cands = [_candidate(e, best_full, leanest_full, usable, best_tps) for e in chosen]
    pareto = [_candidate(e, best_full, leanest_full, usable, best_tps) for e in outcome.pareto]
    suggestion = None
    if not cands:
        suggestion = _nothing_fits(shape, gpu, req, outcome)  # type: ignore[arg-type]
    search = {
        "sampler": outcome.sampler,
        "trials": outcome.n_trials,
        "outer_space": outcome.outer_space,
        "plans_priced": len(outcome.evaluated),
        "screened_out": outcome.screened_out,
        "seconds": round(time.perf_counter() - t0, 4),
        "seed": seed,
    }
    rec = Recommendation(shape.name, gpu, req, usable, cands, pareto, suggestion, search)  # type: ignore[arg-type]
    if measure and cands:
        rec = _measured(rec, model, measure_top, measure_steps, progress)
    return rec


def _measured(rec: Recommendation, model: Any, top: int, steps: int, progress: Any) -> Recommendation:
    """Run the best candidates for real, drop those that OOM, rank by measured speed."""
    import dataclasses

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


def _nothing_fits(shape: ModelShape, gpu: GPU, req: SearchRequest, outcome: Any) -> str:
    from forge_advisor.advisor.fit import _leanest
    from forge_advisor.advisor.request import PRESETS

    allowed = req.allowed_presets or PRESETS
    everything = [MethodFit(p, _leanest(shape, p, gpu, req.seq_len, req.num_gpus), None) for p in PRESETS]
    usable = usable_bytes(gpu, req.headroom)
    others = [m for m in everything if m.preset not in allowed and m.estimate.peak_reserved_bytes <= usable]
    if others:
        names = ", ".join(m.preset for m in others)
        return f"nothing fits with presets {', '.join(allowed)} on {gpu.name}; allowing {names} would fit (e.g. {others[0].preset} needs {others[0].estimate.peak_reserved_bytes / 2**30:.1f} GiB)"
    return suggest(shape, everything, gpu, req.headroom, req.seq_len)


def auto_preset(model: str | ModelShape, gpu: str | GPU | None = None, **constraints: Any) -> BasePreset:
    """The best plan as a ready preset (deterministic: seeded search). Raises ForgeError
    with a suggestion when nothing fits."""
    from forge_advisor.presets.planning import preset_from_plan

    rec = recommend(model, gpu, top=1, **constraints)
    if not rec.recommendations:
        raise ForgeError(rec.suggestion or "nothing fits")
    return preset_from_plan(rec.recommendations[0].plan)
