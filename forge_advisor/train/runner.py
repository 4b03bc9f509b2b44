"""The training runner: preset + model + data -> adapter (or model) and EMA weights.

Order matters: every check that can fail on user input (preset, overrides, model config,
LoRA rank, data fields, output folder) runs before torch is imported or anything is
written. Then: load (4-/8-bit where the preset says), ``prepare_model_for_kbit_training``,
LoRA, layer freezing, callbacks (EMA, monitor, Ctrl-C), ``Trainer`` or trl's
``DPOTrainer``, and atomic saves of the results.

Works unchanged under ``accelerate launch`` (DDP): the Trainer reads the launcher's
environment; only rank 0 writes the final folders.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge_advisor.errors import ForgeError
from forge_advisor.presets import BasePreset, get_preset
from forge_advisor.train.checks import check_lora_rank, check_model, check_output_dir
from forge_advisor.train.data import inspect_data

__all__ = ["TrainResult", "run"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    status: str  # "completed" | "interrupted"
    output_dir: Path
    global_step: int
    adapter_dir: Path | None = None
    ema_dir: Path | None = None
    checkpoint: Path | None = None
    trainable_parameters: int = 0
    total_parameters: int = 0
    frozen_layers: tuple[int, ...] = ()
    final_loss: float | None = None
    monitor: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        d["frozen_layers"] = list(self.frozen_layers)
        return d


def _resolve_preset(preset: str | BasePreset, overrides: dict[str, Any], model: str | None = None, gpu: str | None = None) -> BasePreset:
    if isinstance(preset, BasePreset):
        return preset.replace(**overrides) if overrides else preset
    if not isinstance(preset, str):
        raise ForgeError(f"preset={preset!r} must be a preset name or a BasePreset")
    if preset == "auto":
        # the advisor's best plan for this model on this GPU (NVML) or the one named
        from forge_advisor.advisor import auto_preset

        if model is None:
            raise ForgeError("--preset auto needs --model (the advisor plans for a named model)")
        chosen = auto_preset(model, gpu or "auto")
        return chosen.replace(**overrides) if overrides else chosen
    return get_preset(preset, **overrides)


def _predicted_peak(cfg: BasePreset, shape: Any) -> int | None:
    """The estimator's peak for the plan being run, for the monitor to compare against."""
    from forge_advisor.estimate import estimate

    try:
        return estimate(shape, cfg.to_plan()).peak_allocated_bytes
    except ForgeError:
        return None


class _Interrupt:
    """First Ctrl-C: finish the step, save a resumable checkpoint, stop. Second: abort."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _Interrupt:
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._old = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to abort without saving)", flush=True)


def _interrupt_callback(flag: _Interrupt) -> Any:
    from transformers import TrainerCallback

    class InterruptCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if flag.requested:
                control.should_save = True
                control.should_training_stop = True

    return InterruptCallback()


def run(
    model: str | None = None,
    data: str | Path | None = None,
    preset: str | BasePreset = "lora",
    output_dir: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    demo: bool = False,
    ema_decay: float = 0.999,
    ema_cpu_offload: bool = False,
    on_nonfinite: str = "stop",
    predicted_peak_bytes: int | None = None,
    callbacks: list[Any] | tuple[Any, ...] = (),
    quiet: bool = False,
    gpu: str | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on ``data`` with ``preset`` (+ HF-named ``overrides``).

    ``demo=True`` builds a tiny random Llama and uses the shipped demo text (model/data may be
    omitted). Raises :class:`ForgeError` on bad input, before any heavy work, and
    :class:`~forge_advisor.train.callbacks.TrainingDiverged` if the monitor stops on NaN/Inf.
    """
    overrides = dict(overrides or {})
    if demo:
        from forge_advisor.train.demo import DEMO_OVERRIDES

        overrides = {**DEMO_OVERRIDES, **overrides}
    if preset == "auto" and demo:
        raise ForgeError("--preset auto plans for a real model on a GPU; the demo uses a fixed tiny preset")
    cfg = _resolve_preset(preset, overrides, model, gpu)
    out = check_output_dir(output_dir, resume)
    if demo:
        model, data = _prepare_demo(cfg, out, model, data)
    info = check_model(model)  # type: ignore[arg-type]
    targets = check_lora_rank(cfg, info.shape) if cfg.uses_lora else None
    data_info = inspect_data(data, cfg.trainer)  # type: ignore[arg-type]
    if predicted_peak_bytes is None and info.shape is not None:
        predicted_peak_bytes = _predicted_peak(cfg, info.shape)
    from forge_advisor.train.session import TrainingSession

    session = TrainingSession(cfg, info, data_info, out, targets=targets, resume=resume,
                              ema_decay=ema_decay, ema_cpu_offload=ema_cpu_offload, on_nonfinite=on_nonfinite,
                              predicted_peak_bytes=predicted_peak_bytes, extra_callbacks=list(callbacks), quiet=quiet)
    return session.train()


def _prepare_demo(cfg: BasePreset, out: Path, model: str | None, data: str | Path | None) -> tuple[str, str]:
    from forge_advisor.train.demo import build_demo_model, demo_data_path, write_demo_dpo

    work = out / "demo-inputs"
    if model is None:
        model_dir = work / "model"
        if not (model_dir / "config.json").is_file():
            build_demo_model(model_dir, seed=cfg.seed)
        model = str(model_dir)
    if data is None:
        if cfg.trainer == "dpo":
            data = work / "demo-dpo.jsonl"
            if not data.is_file():
                work.mkdir(parents=True, exist_ok=True)
                write_demo_dpo(data, seed=cfg.seed)
        else:
            data = demo_data_path()
    return str(model), str(data)


def result_summary_path(out: Path) -> Path:
    return out / "train_summary.json"


def write_summary(result: TrainResult) -> None:
    # one file: temp + rename, like the folders in forge_advisor.train.saving
    path = result_summary_path(result.output_dir)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)

