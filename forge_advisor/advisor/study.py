"""``recommend --storage``: the exact ranking recorded as an Optuna study.

Every ranked plan (each fitting outer choice with its best batch, accumulation and
checkpointing) becomes a COMPLETE trial with two values, tokens/s and quality, so
optuna-dashboard shows the whole space and its Pareto front. The study's name covers every
input that defines the space: the model, the GPU and a digest of the space itself (base plan,
every axis, global batch, usable bytes, objective, calibration). A later run with the same
inputs — ``--measure`` included — finds the study complete and reads its plans back instead
of ranking again. Two runs that start together both succeed: each records only when the
study is not complete yet, and a writer that loses the race reads the winner's plans.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forge_advisor.advisor.search import Evaluated, SearchOutcome, build_space, plan_of, rank_space, run_search, with_preset_alpha
from forge_advisor.calibration import load_calibration
from forge_advisor.errors import ForgeError
from forge_advisor.estimate import EstimateResult, native_estimator
from forge_advisor.plan import Plan

if TYPE_CHECKING:
    import optuna

    from forge_advisor.advisor.request import SearchRequest
    from forge_advisor.gpus import GPU
    from forge_advisor.shapes import ModelShape

__all__ = ["ranked_study", "study_name", "storage_backend"]

# what the study records per trial as parameters: the outer knobs (the inner choice the core
# made is in the trial's "ranked" attribute with the whole plan; every parameter and
# attribute is a row Optuna writes one by one, so the trial carries no more than it needs)
_PARAMS = ("method", "lora_r", "lora_target_modules", "freeze_ratio", "optim", "distributed")


def study_name(shape: ModelShape, gpu: GPU, space: dict[str, Any], top: int) -> str:
    """``forge-advisor:<model>:<GPU>:<objective>:<digest of every input of the space>``."""
    digest = hashlib.sha256(json.dumps({"space": space, "top": top}, sort_keys=True).encode()).hexdigest()[:16]
    return f"forge-advisor:{shape.name}:{gpu.name}:{space['objective']}:{digest}"


def storage_backend(storage: str) -> Any:
    """An RDB URL (``sqlite:///study.db``, what optuna-dashboard reads) or a journal file."""
    import optuna

    if "://" in storage:
        sqlite = storage.startswith("sqlite")
        kwargs = {"connect_args": {"timeout": 60}} if sqlite else {}
        for attempt in range(5):
            try:
                rdb = optuna.storages.RDBStorage(storage, engine_kwargs=kwargs)
                break
            except Exception as exc:  # a bad URL, a missing folder, a foreign database
                racing = "already exists" in str(exc) or "UNIQUE constraint failed: alembic_version" in str(exc)
                if racing and attempt < 4:
                    time.sleep(0.3 * (attempt + 1))  # a concurrent run is creating the schema: use it once it is there
                    continue
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ForgeError(f"--storage {storage}: {first}") from None
        if sqlite:
            _fast_sqlite(rdb)
        return rdb
    folder = Path(storage).expanduser().resolve().parent
    if not folder.is_dir():
        raise ForgeError(f"--storage {storage}: folder {folder} does not exist")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(storage))


def _fast_sqlite(rdb: Any) -> None:
    """Write-ahead logging and no fsync per commit: the study's ~1,000 trials are written in
    well under a second instead of one disk flush per trial (still crash-consistent: WAL)."""
    from sqlalchemy import event

    def pragmas(conn: Any, _record: Any) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(rdb.engine, "connect", pragmas)
    rdb.engine.dispose()  # connections opened before the listener get it on reconnect


def _distributions(space: dict[str, Any]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution

    return {
        "method": CategoricalDistribution(space["methods"]),
        "lora_r": CategoricalDistribution(sorted({*space["lora_r"], space["base"]["lora_r"]})),
        "lora_target_modules": CategoricalDistribution(sorted({json.dumps(t) for t in space["targets"]} | {"null"})),
        "freeze_ratio": CategoricalDistribution(space["freeze"]),
        "optim": CategoricalDistribution(space["optim"]),
        "distributed": CategoricalDistribution(space["distributed"]),
    }


def _record(study: optuna.Study, space: dict[str, Any], ranking: Any, req: SearchRequest) -> None:
    import optuna

    dists = _distributions(space)
    run = uuid.uuid4().hex  # trials of concurrent writers may interleave: find ours by run and index
    trials = []
    objective = req.objective
    for index, r in enumerate(ranking.fitting):
        plan = plan_of(r.plan)
        plan = with_preset_alpha(plan, req.method_presets[plan.method], req.fixed)  # as run_search shows it
        d = {name: getattr(plan, name) for name in Plan.field_names()}
        if isinstance(d["lora_target_modules"], tuple):
            d["lora_target_modules"] = list(d["lora_target_modules"])
        params = {k: d[k] for k in _PARAMS}
        params["lora_target_modules"] = json.dumps(d["lora_target_modules"])
        trials.append(optuna.trial.create_trial(
            params=params, distributions=dists,
            values=[float(r.tokens_per_second or 0.0), float(r.quality)],
            user_attrs={"ranked": {"plan": d, "peak_reserved_bytes": r.reserved_bytes, "value": r.value(objective),
                                   "run": run, "index": index, "real_fraction": r.real_fraction}},
        ))
    _add_trials(study, trials)
    number = {t.user_attrs["ranked"]["index"]: t.number for t in study.get_trials(deepcopy=False)
              if t.user_attrs.get("ranked", {}).get("run") == run}
    study.set_user_attr("top", [number[i] for i in ranking.top(objective)])
    study.set_user_attr("pareto", [number[i] for i in ranking.pareto])
    study.set_user_attr("space", space)
    study.set_user_attr("complete", True)  # last: a reader that sees it sees every trial


def _add_trials(study: optuna.Study, trials: list[Any]) -> None:
    """``study.add_trials(trials)``, in one transaction on an RDB storage.

    Optuna writes a trial's parameters, values and attributes row by row, each with its
    own queries (~10 ms a trial on sqlite: 9 s for a 870-plan space). Here the same rows
    (Optuna's own models, values through its own conversions) are added in one session
    and one commit; the trial numbers are counted once the session holds the write lock,
    so a concurrent writer numbers after ours. Any surprise (another Optuna, another
    backend) falls back to ``study.add_trials``."""
    storage = getattr(study, "_storage", None)
    backend = getattr(storage, "_backend", storage)
    import optuna

    if not isinstance(backend, optuna.storages.RDBStorage) or not trials:
        study.add_trials(trials)
        return
    try:
        from optuna.distributions import distribution_to_json
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import TrialState
    except ImportError:
        study.add_trials(trials)
        return
    study_id = study._study_id
    try:
        with _create_scoped_session(backend.scoped_session) as session:
            rows = []
            for t in trials:
                row = models.TrialModel(study_id=study_id, number=None, state=TrialState.COMPLETE,
                                        datetime_start=t.datetime_start, datetime_complete=t.datetime_complete)
                for objective, value in enumerate(t.values):
                    stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                    row.values.append(models.TrialValueModel(objective=objective, value=stored, value_type=kind))
                for name, value in t.params.items():
                    dist = t.distributions[name]
                    row.params.append(models.TrialParamModel(param_name=name, param_value=dist.to_internal_repr(value),
                                                             distribution_json=distribution_to_json(dist)))
                for key, value in t.user_attrs.items():
                    row.user_attributes.append(models.TrialUserAttributeModel(key=key, value_json=json.dumps(value)))
                rows.append(row)
            session.add(rows[0])
            session.flush()  # the first write: the session now holds the database's write lock
            first = rows[0].count_past_trials(session)
            for i, row in enumerate(rows):
                row.number = first + i
            session.add_all(rows[1:])
    except Exception:  # noqa: BLE001 - nothing was committed: the public API writes it instead
        study.add_trials(trials)


def _read_back(study: optuna.Study, shape: ModelShape, gpu: GPU, req: SearchRequest, space: dict[str, Any]) -> SearchOutcome:
    """The stored ranking as a :class:`SearchOutcome`, without ranking again: the shown plans
    are estimated anew (one estimate each), the rest is what the study recorded."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    calibration = load_calibration(gpu)
    est = native_estimator(shape, gpu)

    def evaluated(number: int) -> Evaluated:
        ranked = by_number[number].user_attrs["ranked"]
        plan = Plan.from_dict(ranked["plan"])
        plan = with_preset_alpha(plan, req.method_presets[plan.method], req.fixed)  # as run_search shows it
        native = est.estimate(plan)
        result = EstimateResult(shape.name, gpu, plan, native, req.dataset_tokens, calibration, req.headroom,
                                real_token_fraction=float(ranked.get("real_fraction", 1.0)))
        return Evaluated(req.method_presets[plan.method], plan, result, float(ranked["value"]), True)

    top = [evaluated(n) for n in study.user_attrs["top"]]
    pareto = [evaluated(n) for n in study.user_attrs["pareto"]]
    run = by_number[study.user_attrs["top"][0]].user_attrs["ranked"]["run"] if study.user_attrs["top"] else None
    recorded = [t for t in by_number.values() if t.user_attrs.get("ranked", {}).get("run") == run]
    fulls = [t for t in recorded if t.user_attrs["ranked"]["plan"]["method"] == "full"]
    best_full = evaluated(max(fulls, key=lambda t: t.user_attrs["ranked"]["value"]).number) if fulls else None
    return SearchOutcome(
        top=top, pareto=pareto, fitting=len(recorded), outer_space=0, plans_priced=0, seconds=0.0,
        best_full=best_full, full_min_bytes=None,
        best_tokens_per_second=max((t.values[0] for t in recorded if t.values), default=0.0),
        leanest=None, space=space,
    )


def ranked_study(shape: ModelShape, gpu: GPU, req: SearchRequest, storage: str) -> tuple[SearchOutcome, dict[str, Any]]:
    """The outcome of ``req`` with its ranking kept in ``storage``: read back from a complete
    study of the same inputs, else ranked and recorded."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = storage_backend(storage)
    space = build_space(shape, gpu, req, load_calibration(gpu))
    name = study_name(shape, gpu, space, req.top)
    try:
        study = optuna.create_study(storage=backend, study_name=name, directions=["maximize", "maximize"], load_if_exists=True)
    except optuna.exceptions.DuplicatedStudyError:  # created by a concurrent run between its check and ours
        study = optuna.load_study(study_name=name, storage=backend)
    except Exception as exc:  # a locked or foreign database
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ForgeError(f"--storage {storage}: {first}") from None
    info = {"name": name, "storage": storage, "resumed": bool(study.user_attrs.get("complete"))}
    if info["resumed"]:
        return _read_back(study, shape, gpu, req, space), info
    outcome = run_search(shape, gpu, req)
    if outcome.fitting:
        _record(study, space, rank_space(shape, gpu, space, req.top), req)
    info["trials"] = outcome.fitting
    return outcome, info
