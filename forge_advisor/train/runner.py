"""The training runner: preset + model + data -> adapter (or model) and EMA weights.

Order matters: every check that can fail on user input (preset, overrides, model config,
LoRA rank, data fields, output folder, hardware) runs before torch is imported or anything
is written. Then the output folder is locked (one run per folder), leftovers of a killed run
are removed, and :class:`~forge_advisor.train.session.TrainingSession` does the heavy part:
load (4-/8-bit where the preset says), LoRA, layer freezing, callbacks (EMA, monitor,
preflight, Ctrl-C), ``Trainer`` or trl's ``DPOTrainer``, and atomic saves of the results.

Works unchanged under ``accelerate launch`` (DDP): the Trainer reads the launcher's
environment; only rank 0 locks the folder and writes the final folders.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from forge_advisor.errors import ForgeError
from forge_advisor.presets import BasePreset
from forge_advisor.train.checks import check_hardware, check_lora_rank, check_model, check_output_dir
from forge_advisor.train.data import inspect_data
from forge_advisor.train.events import EventStream, check_events_target, render
from forge_advisor.train.resolve import AUTO, resolve_preset
from forge_advisor.train.result import TrainResult, result_summary_path, write_summary

__all__ = ["TrainResult", "resolve_preset", "result_summary_path", "run", "write_summary"]

logger = logging.getLogger(__name__)


def _predicted_peak(cfg: BasePreset, shape: Any) -> int | None:
    """The estimator's peak for the plan being run, for the monitor to compare against."""
    from forge_advisor.estimate import estimate

    try:
        return estimate(shape, cfg.to_plan()).peak_allocated_bytes
    except ForgeError:
        return None


def check_ema_decay(ema_decay: Any) -> float:
    if isinstance(ema_decay, bool) or not isinstance(ema_decay, (int, float)) or not 0.0 < ema_decay < 1.0:
        raise ForgeError(f"ema_decay={ema_decay!r} is out of range: allowed (0, 1), e.g. 0.999")
    return float(ema_decay)


def check_predicted_peak(predicted_peak_bytes: Any) -> int | None:
    if predicted_peak_bytes is None:
        return None
    if isinstance(predicted_peak_bytes, bool) or not isinstance(predicted_peak_bytes, int) or predicted_peak_bytes <= 0:
        raise ForgeError(f"predicted_peak_bytes={predicted_peak_bytes!r} must be a positive integer")
    return predicted_peak_bytes


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("0", "")


def _printer(stream_name: str) -> Any:
    import sys

    def show(event: Any) -> None:
        text = render(event)
        if text is not None:
            print(text, file=getattr(sys, stream_name), flush=True)

    return show


def run(
    model: str | None = None,
    data: str | Path | None = None,
    preset: str | BasePreset | Path = "lora",
    output_dir: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    demo: bool = False,
    ema_decay: float = 0.999,
    ema_cpu_offload: bool = False,
    on_nonfinite: str = "stop",
    predicted_peak_bytes: int | None = None,
    callbacks: list[Any] | tuple[Any, ...] = (),
    quiet: bool = False,
    gpu: str | None = None,
    events: str | Path | None = None,
    preflight_steps: int = 1,
    hold_interrupt: bool = False,
) -> TrainResult:
    """Fine-tune ``model`` on ``data`` with ``preset`` (+ HF-named ``overrides``).

    ``demo=True`` builds a tiny random Llama and uses the shipped demo text (model/data may be
    omitted); a preset given by name gets the demo's small step counts under ``overrides``. ``events`` writes the typed event stream as JSON lines to a file (``"-"``:
    stdout, and the human lines go to stderr). Raises :class:`ForgeError` on bad input, before
    any heavy work, and :class:`~forge_advisor.train.callbacks.TrainingDiverged` if the monitor
    stops on NaN/Inf. ``hold_interrupt`` is for a process that exits after the run (the CLI):
    see :class:`~forge_advisor.train.interrupt.InterruptFlag`.
    """
    overrides = dict(overrides or {})
    if demo:
        from forge_advisor.train.demo import DEMO_OVERRIDES

        if isinstance(preset, str) and preset == AUTO:
            raise ForgeError("--preset auto plans for a real model on a GPU; the demo uses a fixed tiny preset")
        if not isinstance(preset, BasePreset):  # a BasePreset trains exactly as given
            overrides = {**DEMO_OVERRIDES, **overrides}
    ema_decay = check_ema_decay(ema_decay)
    predicted_peak_bytes = check_predicted_peak(predicted_peak_bytes)
    check_events_target(None if events is None else str(events))
    cfg = resolve_preset(preset, overrides, model, gpu)
    check_hardware(cfg)
    out = check_output_dir(output_dir, resume, overwrite)
    info = check_model(model) if model is not None or not demo else None  # type: ignore[arg-type]
    data_info = inspect_data(data, cfg.trainer) if data is not None or not demo else None  # type: ignore[arg-type]
    if info is not None and cfg.uses_lora:
        check_lora_rank(cfg, info.shape)
    if info is not None and data_info is not None:
        from forge_advisor.train.vision import check_vision_inputs

        data_info = check_vision_inputs(data_info, info.config, info.name, info.local, cfg)
    from forge_advisor.train.lock import OutputLock

    lock = OutputLock(out) if _is_rank_zero() else None
    if lock is not None:
        lock.acquire()
    try:
        with warnings.catch_warnings():  # the library warnings silenced for this run only
            return _run_locked(out, cfg, model, data, info, data_info, demo=demo, resume=resume, overwrite=overwrite,
                               quiet=quiet, events=events, predicted_peak_bytes=predicted_peak_bytes,
                               session_kwargs=dict(ema_decay=ema_decay, ema_cpu_offload=ema_cpu_offload,
                                                   on_nonfinite=on_nonfinite, extra_callbacks=list(callbacks),
                                                   preflight_steps=preflight_steps, gpu=gpu,
                                                   hold_interrupt=hold_interrupt))
    finally:
        if lock is not None:
            lock.release()


def _run_locked(out: Path, cfg: BasePreset, model: str | None, data: Any, info: Any, data_info: Any, *, demo: bool,
                resume: bool, overwrite: bool, quiet: bool, events: Any, predicted_peak_bytes: int | None,
                session_kwargs: dict[str, Any]) -> TrainResult:
    """The part under the output lock: leftovers cleaned, demo inputs built, the session run."""
    _take_folder(out, resume, overwrite)
    from forge_advisor.train.session import TrainingSession, quiet_libraries

    quiet_libraries()
    if demo:
        model, data = _prepare_demo(cfg, out, model, data)
        info = info or check_model(model)
        data_info = data_info or inspect_data(data, cfg.trainer)
    assert info is not None and data_info is not None
    targets = check_lora_rank(cfg, info.shape) if cfg.uses_lora else None
    if predicted_peak_bytes is None and info.shape is not None:
        predicted_peak_bytes = _predicted_peak(cfg, info.shape)
    human = [] if quiet else [_printer("stderr" if str(events) == "-" else "stdout")]
    stream = EventStream(events, listeners=human, enabled=_is_rank_zero())

    session = TrainingSession(cfg, info, data_info, out, targets=targets, resume=resume,
                              predicted_peak_bytes=predicted_peak_bytes, quiet=quiet, events=stream,
                              **session_kwargs)
    return session.train()


def _take_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """With the lock held: remove a killed run's leftovers; with ``overwrite``, the earlier run."""
    from forge_advisor.train.lock import LOCK_NAME
    from forge_advisor.train.saving import clean_leftovers, remove_dir

    if not _is_rank_zero():
        return
    clean_leftovers(out)
    if overwrite and not resume:
        for p in out.iterdir():
            if p.name == LOCK_NAME:
                continue
            if p.is_dir() and not p.is_symlink():
                remove_dir(p)
            else:
                p.unlink()


def _prepare_demo(cfg: BasePreset, out: Path, model: str | None, data: str | Path | None) -> tuple[str, str]:
    from forge_advisor.train.demo import build_demo_model, demo_data_path, write_demo_dpo
    from forge_advisor.train.saving import atomic_dir

    work = out / "demo-inputs"
    if model is None:
        model_dir = work / "model"
        if not (model_dir / "config.json").is_file():
            atomic_dir(model_dir, lambda tmp: build_demo_model(tmp, seed=cfg.seed))
        model = str(model_dir)
    if data is None:
        if cfg.trainer == "dpo":
            data = work / "demo-dpo.jsonl"
            if not data.is_file():
                work.mkdir(parents=True, exist_ok=True)
                tmp = work / f".demo-dpo.jsonl.tmp-{os.getpid()}"
                write_demo_dpo(tmp, seed=cfg.seed)
                os.replace(tmp, data)  # whole or absent, like every file of the run
        else:
            data = demo_data_path()
    return str(model), str(data)
