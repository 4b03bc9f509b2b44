"""Measured mode (``recommend --measure``): the best candidates run real steps on this GPU,
each in its own process (an out-of-memory error ends only its trial), as the trials of an
Optuna study: every candidate first runs a few steps; one that runs out of memory is pruned;
Optuna's successive-halving pruner keeps the faster half (of those measured so far) and
those survivors run ``LONG``× as many steps, whose measurement replaces the short one. What
they measure calibrates the estimator for this device (forge_advisor/calibration.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forge_advisor.calibration import Calibration, Sample, record_samples
from forge_advisor.errors import ForgeError

if TYPE_CHECKING:
    from forge_advisor.advisor.recommend import Candidate
    from forge_advisor.gpus import GPU

__all__ = ["LONG", "Measured", "measure_candidates", "require_cuda"]

# survivors of the first rung run this many times the first rung's steps
LONG = 4


@dataclass(frozen=True)
class Measured:
    candidate: Candidate
    result: dict[str, Any] | None  # None: pruned (out of memory)
    steps: int = 0  # optimizer steps of the measurement in ``result``

    @property
    def oom(self) -> bool:
        return self.result is None

    def to_dict(self) -> dict[str, Any]:
        return {"oom": self.oom, "steps": self.steps, **(self.result or {})}


def require_cuda() -> None:
    """Measured trials need a CUDA GPU and the [train] extra; say so before any work."""
    from forge_advisor.gpus import probe

    found = probe()
    if not found.devices:
        raise ForgeError(f"--measure runs real training steps and needs a CUDA GPU: {found.reason}")
    from importlib.util import find_spec

    if find_spec("torch") is None or find_spec("transformers") is None:
        raise ForgeError('--measure needs the training runtime: pip install "forge-advisor[train]"')


def _run(config: dict[str, Any], plan: dict[str, Any], steps: int, timeout: float) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory(prefix="forge-measure-") as tmp:
        cfg, pl = Path(tmp) / "config.json", Path(tmp) / "plan.json"
        cfg.write_text(json.dumps(config))
        pl.write_text(json.dumps(plan))
        proc = subprocess.run([sys.executable, "-m", "forge_advisor.train.trial", str(cfg), str(pl), str(steps)],
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode == 3:
        return None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["trial failed"])[-1]
        raise ForgeError(f"measured trial failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_candidates(
    config: dict[str, Any],
    candidates: list[Candidate],
    gpu: GPU,
    *,
    steps: int = 3,
    timeout: float = 900.0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Measured], Calibration | None]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # rung 0 at `steps` steps; a trial in the better half of its rung goes on (reduction 2)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=steps, reduction_factor=2, min_early_stopping_rate=0)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.BruteForceSampler(seed=seed), pruner=pruner)
    for i in range(len(candidates)):
        study.enqueue_trial({"candidate": i})
    measured: dict[int, Measured] = {}

    def objective(trial: optuna.Trial) -> float:
        i = trial.suggest_categorical("candidate", list(range(len(candidates))))
        cand = candidates[i]
        result = _run(config, cand.plan.to_dict(), steps, timeout)
        measured[i] = Measured(cand, result, steps)
        if result is None:
            raise optuna.TrialPruned()  # out of memory: the plan does not fit after all
        trial.report(float(result["tokens_per_second"]), steps)
        if not trial.should_prune():  # a survivor: measure it again, longer
            longer = _run(config, cand.plan.to_dict(), steps * LONG, timeout)
            measured[i] = Measured(cand, longer, steps * LONG)
            if longer is None:
                raise optuna.TrialPruned()
            result = longer
        if progress is not None:
            progress(len(measured), len(candidates))
        return float(result["tokens_per_second"])

    study.optimize(objective, n_trials=len(candidates), catch=())
    ordered = [measured[i] for i in sorted(measured)]
    samples = [
        Sample(
            estimated_tokens_per_second=m.candidate.estimate.tokens_per_second or 0.0,
            measured_tokens_per_second=m.result["tokens_per_second"],
            estimated_peak_allocated_bytes=m.candidate.estimate.peak_allocated_bytes,
            measured_peak_allocated_bytes=m.result["peak_allocated_bytes"],
            estimated_peak_reserved_bytes=m.candidate.estimate.peak_reserved_bytes,
            measured_peak_reserved_bytes=m.result["peak_reserved_bytes"],
        )
        for m in ordered
        if m.result is not None and m.result.get("peak_allocated_bytes") is not None
    ]
    calibration = record_samples(gpu, samples) if samples else None
    return ordered, calibration
