"""The Optuna study over the Rust estimator.

1. **Screen** (Rust batch): each (method, optimizer) at its leanest settings — batch 1,
   checkpointing on, the most freezing allowed, the smallest rank — is priced; pairs that
   cannot fit even so are dropped from the study's choices.
2. **Study** (Optuna, seeded): the outer knobs — method, LoRA rank and targets, freeze
   ratio, optimizer, attention, sharding — are searched with two objectives, tokens/s and
   the quality score (rust/src/objective.rs), under ``constraints_func`` (peak reserved ≤
   usable memory). NSGA-II, or BruteForce when the outer space has no more points than
   the trial budget.
3. **Inner solve** (Rust, exact): for each trial, every per-device batch that divides the
   global batch × checkpointing on/off is priced in one native call; the best fitting one
   is the trial's value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from forge_advisor.advisor.request import BATCHES, FREEZE_RATIOS, RANKS, SEARCH_OPTIMIZERS, SearchRequest
from forge_advisor.calibration import load_calibration
from forge_advisor.errors import ForgeError
from forge_advisor.estimate import EstimateResult, native_estimator
from forge_advisor.plan import Plan

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU
    from forge_advisor.shapes import ModelShape

__all__ = ["Evaluated", "SearchOutcome", "build_space", "run_search", "usable_bytes"]

DEFAULT_TRIALS = 256


@dataclass(frozen=True)
class Evaluated:
    plan: Plan
    estimate: EstimateResult
    value: float
    fits: bool

    @property
    def quality(self) -> float:
        return float(self.estimate.raw["quality"])


@dataclass(frozen=True)
class SearchOutcome:
    evaluated: list[Evaluated]  # unique outer choices, each with its best inner plan
    pareto: list[Evaluated]
    n_trials: int
    sampler: str
    outer_space: int
    screened_out: list[str]


def usable_bytes(gpu: GPU, headroom: float) -> int:
    """GPU memory minus the headroom: 80 GiB × (1 − 0.08) = 73.6 GiB usable."""
    return int(gpu.memory_bytes * (1.0 - headroom))


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
    fixed = {k: v for k, v in req.fixed.items() if k not in ("method",)}
    fields.update(fixed)
    return Plan(**fields)


def build_space(shape: ModelShape, gpu: GPU, req: SearchRequest) -> dict[str, Any]:
    """The discrete space as the Rust ``Space`` reads it (rust/src/search.rs)."""
    base = _base_plan(shape, gpu, req)
    fixed = req.fixed
    ranks = [r for r in RANKS if r >= (req.min_lora_r or 1)] or [max(RANKS)]
    freeze = [f for f in FREEZE_RATIOS if req.max_freeze_ratio is None or f <= req.max_freeze_ratio]
    space = {
        "base": base.to_dict(),
        "methods": req.methods,
        "lora_r": [fixed["lora_r"]] if "lora_r" in fixed else ranks,
        "targets": [None, "all-linear"] if "lora_target_modules" not in fixed else [base.to_dict()["lora_target_modules"]],
        "batch": [fixed["per_device_train_batch_size"]] if "per_device_train_batch_size" in fixed else list(BATCHES),
        "freeze": [fixed["freeze_ratio"]] if "freeze_ratio" in fixed else freeze,
        "gradient_checkpointing": [fixed["gradient_checkpointing"]] if "gradient_checkpointing" in fixed else [False, True],
        "optim": [fixed["optim"]] if "optim" in fixed else list(SEARCH_OPTIMIZERS),
        "attn": [base.attn_implementation],
        "distributed": [base.distributed] if req.num_gpus == 1 or "distributed" in fixed else ["ddp", "fsdp", "zero2", "zero3"],
        "global_batch": req.global_batch,
        "usable_bytes": usable_bytes(gpu, req.headroom),
        "objective": req.objective,
    }
    return space


def run_search(
    shape: ModelShape,
    gpu: GPU,
    req: SearchRequest,
    storage: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SearchOutcome:
    import optuna

    from forge_advisor import _native

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = build_space(shape, gpu, req)
    est = native_estimator(shape, gpu)
    try:
        search = _native.Search(est, json.dumps(space))
    except ValueError as exc:
        raise ForgeError(str(exc)) from None

    cache: dict[str, Evaluated | None] = {}
    calibration = load_calibration(gpu)

    def inner(outer: dict[str, Any]) -> Evaluated | None:
        key = json.dumps(outer, sort_keys=True)
        if key not in cache:
            try:
                res = search.inner(json.dumps(outer))
            except ValueError as exc:
                raise ForgeError(str(exc)) from None
            if res is None:
                cache[key] = None
            else:
                plan = Plan.from_dict(_plan_fields(json.loads(res["plan_json"])))
                est = EstimateResult(shape.name, gpu, plan, res["estimate"], req.dataset_tokens, calibration)
                # with a calibration the reserve is the device's measured one: judge fit on that
                fits = res["fits"] if calibration is None else est.peak_reserved_bytes <= space["usable_bytes"]
                cache[key] = Evaluated(plan, est, res["value"], fits)
        return cache[key]

    # 1. screen: leanest settings per (method, optimizer)
    base = dict(space["base"])
    screened_out: list[str] = []
    choices: dict[str, list[Any]] = {}
    for method in space["methods"]:
        ok_optims = []
        for optim in space["optim"]:
            lean = {**base, "method": method, "optim": optim, "freeze_ratio": max(space["freeze"]),
                    "lora_r": min(space["lora_r"]), "lora_target_modules": space["targets"][0],
                    "distributed": space["distributed"][-1]}
            ev = inner(lean)
            if ev is not None and ev.fits:
                ok_optims.append(optim)
        if ok_optims:
            choices[method] = ok_optims
        else:
            screened_out.append(method)
    n_outer = sum(
        len(opts) * len(space["freeze"]) * len(space["distributed"]) * (1 if m == "full" else len(space["lora_r"]) * len(space["targets"]))
        for m, opts in choices.items()
    )
    if not choices:
        return SearchOutcome(_unique(cache), [], 0, "none", 0, screened_out)

    # 2. the study
    budget = req.n_trials or DEFAULT_TRIALS
    brute = n_outer <= budget
    usable = space["usable_bytes"]

    # memory must fit: Optuna ≥ 5 takes the constraint from the trial (`set_constraint`),
    # Optuna 4 from the sampler's `constraints_func`
    per_trial_constraint = hasattr(optuna.trial.Trial, "set_constraint")

    def constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
        return [float(trial.user_attrs.get("violation", 1.0))]

    if brute:
        sampler: optuna.samplers.BaseSampler = optuna.samplers.BruteForceSampler(seed=req.seed)
        sampler_name = "BruteForce"
    else:
        kwargs: dict[str, Any] = {} if per_trial_constraint else {"constraints_func": constraints}
        sampler = optuna.samplers.NSGAIISampler(seed=req.seed, population_size=32, **kwargs)
        sampler_name = "NSGA-II"
    study_name = f"forge-advisor:{shape.name}:{gpu.name}:{req.objective}:{req.seq_len}:{req.global_batch}:{req.seed}"
    try:
        study = optuna.create_study(
            directions=["maximize", "maximize"],
            sampler=sampler,
            storage=_storage(storage),
            study_name=study_name if storage else None,
            load_if_exists=bool(storage),
        )
    except ForgeError:
        raise
    except Exception as exc:  # a bad database URL, a locked or foreign file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ForgeError(f"--storage {storage}: {first}") from None
    methods = list(choices)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        method = trial.suggest_categorical("method", methods)
        outer = {**base, "method": method}
        if method != "full":
            outer["lora_r"] = trial.suggest_categorical("lora_r", space["lora_r"])
            t = trial.suggest_categorical("lora_target_modules", [json.dumps(t) for t in space["targets"]])
            outer["lora_target_modules"] = json.loads(t)
        outer["freeze_ratio"] = trial.suggest_categorical("freeze_ratio", space["freeze"])
        outer["optim"] = trial.suggest_categorical(f"optim[{method}]", choices[method])
        if len(space["distributed"]) > 1:
            outer["distributed"] = trial.suggest_categorical("distributed", space["distributed"])
        ev = inner(outer)
        if ev is None:
            trial.set_user_attr("violation", 1.0)
            raise optuna.TrialPruned()
        over = float(max(1, ev.estimate.peak_reserved_bytes - usable)) if not ev.fits else 0.0
        trial.set_user_attr("violation", over)
        if per_trial_constraint:
            trial.set_constraint("memory_over_bytes", over)
        trial.set_user_attr("peak_reserved_bytes", ev.estimate.peak_reserved_bytes)
        trial.set_user_attr("plan", ev.plan.to_dict())
        return float(ev.estimate.tokens_per_second or 0.0), ev.quality

    n_trials = min(budget, n_outer) if brute else budget
    done = [0]

    def tick(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], n_trials)

    def params_of(method: str, r: Any, t: Any, f: Any, o: str, d: Any) -> dict[str, Any]:
        p: dict[str, Any] = {"method": method, "freeze_ratio": f, f"optim[{method}]": o}
        if method != "full":
            p["lora_r"], p["lora_target_modules"] = r, json.dumps(t)
        if len(space["distributed"]) > 1:
            p["distributed"] = d
        return p

    if not brute:
        # seed the corners: each method at its most faithful and at its fastest settings
        for m, opts in choices.items():
            study.enqueue_trial(params_of(m, max(space["lora_r"]), space["targets"][-1], min(space["freeze"]), opts[0], space["distributed"][0]))
            study.enqueue_trial(params_of(m, min(space["lora_r"]), space["targets"][0], max(space["freeze"]), opts[0], space["distributed"][-1]))
    study.optimize(objective, n_trials=n_trials, callbacks=[tick], catch=())

    if not brute:
        # polish: coordinate moves from the incumbent, one knob at a time, as further trials
        axes = {"lora_r": space["lora_r"], "lora_target_modules": space["targets"], "freeze_ratio": space["freeze"],
                "optim": None, "distributed": space["distributed"]}
        for _ in range(6):
            incumbent = max((e for e in _unique(cache) if e.fits), key=lambda e: e.value, default=None)
            if incumbent is None:
                break
            p = incumbent.plan
            cur = {"lora_r": p.lora_r, "lora_target_modules": p.to_dict()["lora_target_modules"], "freeze_ratio": p.freeze_ratio,
                   "optim": p.optim, "distributed": p.distributed}
            queued = 0
            moves: list[tuple[str, dict[str, Any]]] = []
            for method in choices:
                for axis, values in axes.items():
                    if method == "full" and axis in ("lora_r", "lora_target_modules"):
                        continue
                    for v in values if values is not None else choices[method]:
                        moves.append((method, {axis: v}))
                # pairs of the knobs that trade memory against each other: optimizer,
                # freeze ratio and rank
                for o in choices[method]:
                    for f in space["freeze"]:
                        moves.append((method, {"optim": o, "freeze_ratio": f}))
                    if method != "full":
                        for r in space["lora_r"]:
                            moves.append((method, {"optim": o, "lora_r": r}))
                if method != "full":
                    for r in space["lora_r"]:
                        for f in space["freeze"]:
                            moves.append((method, {"lora_r": r, "freeze_ratio": f}))
            for method, change in moves:
                if True:
                    if True:
                        trial_vals = {**cur, **change}
                        if trial_vals["optim"] not in choices[method]:
                            trial_vals["optim"] = choices[method][0]
                        outer = {**base, "method": method, "freeze_ratio": trial_vals["freeze_ratio"], "optim": trial_vals["optim"],
                                 "distributed": trial_vals["distributed"]}
                        if method != "full":
                            outer["lora_r"], outer["lora_target_modules"] = trial_vals["lora_r"], trial_vals["lora_target_modules"]
                        if json.dumps(outer, sort_keys=True) in cache:
                            continue
                        study.enqueue_trial(params_of(method, trial_vals["lora_r"], trial_vals["lora_target_modules"],
                                                      trial_vals["freeze_ratio"], trial_vals["optim"], trial_vals["distributed"]))
                        queued += 1
            if not queued:
                break
            n_trials += queued
            study.optimize(objective, n_trials=queued, callbacks=[tick], catch=())
            after = max((e for e in _unique(cache) if e.fits), key=lambda e: e.value, default=None)
            if after is incumbent:
                break
    evaluated = _unique(cache)
    feasible = [e for e in evaluated if e.fits]
    return SearchOutcome(evaluated, _pareto(feasible), n_trials, sampler_name, n_outer, screened_out)


def _storage(storage: str | None) -> Any:
    if not storage:
        return None
    if "://" in storage:
        return storage  # sqlite:///study.db and other RDB URLs (optuna-dashboard reads them)
    from pathlib import Path

    folder = Path(storage).expanduser().resolve().parent
    if not folder.is_dir():
        raise ForgeError(f"--storage {storage}: folder {folder} does not exist")
    import optuna

    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # optuna < 4
        from optuna.storages import JournalFileStorage as JournalFileBackend  # type: ignore[no-redef]
    return optuna.storages.JournalStorage(JournalFileBackend(storage))


def _plan_fields(d: dict[str, Any]) -> dict[str, Any]:
    t = d.get("lora_target_modules")
    if isinstance(t, list):
        d["lora_target_modules"] = tuple(t)
    return d


def _unique(cache: dict[str, Evaluated | None]) -> list[Evaluated]:
    seen: dict[str, Evaluated] = {}
    for ev in cache.values():
        if ev is not None:
            seen.setdefault(json.dumps(ev.plan.to_dict(), sort_keys=True), ev)
    return list(seen.values())


def _pareto(cands: list[Evaluated]) -> list[Evaluated]:
    """Plans no other plan beats on both tokens/s and quality."""
    def tps(e: Evaluated) -> float:
        return e.estimate.tokens_per_second or 0.0

    front = [
        e for e in cands
        if not any((tps(o) >= tps(e) and o.quality >= e.quality) and (tps(o) > tps(e) or o.quality > e.quality) for o in cands)
    ]
    # one plan per point: ties (e.g. two optimizers at the same speed and score) keep the leaner
    points: dict[tuple[float, float], Evaluated] = {}
    for e in sorted(front, key=lambda e: e.estimate.peak_reserved_bytes):
        points.setdefault((round(tps(e), 3), round(e.quality, 6)), e)
    return sorted(points.values(), key=lambda e: -tps(e))


def _finite(x: float) -> bool:
    return math.isfinite(x)
