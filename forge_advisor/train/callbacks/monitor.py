"""`MonitorCallback`: gradient norms, NaN/Inf guard, loss spikes, peak memory, tokens/s.

Per optimizer step it measures the global gradient norm and the norm per layer
(``…layers.7``; the largest ``top_k`` are logged), BEFORE gradient clipping when the runtime's
Trainer calls :meth:`MonitorCallback.inspect_gradients` from its clipping hook (after clipping
the norm reads ``max_grad_norm``, 1, whatever the gradients were); under a plain Trainer it
falls back to ``on_pre_optimizer_step`` and to the Trainer's own pre-clip ``grad_norm`` log. A
NaN/Inf in the loss or a gradient stops training with a one-line reason (or, with
``on_nonfinite="skip"``, drops that step's gradients so the optimizer leaves the weights
alone). At each log it flags loss spikes (loss > ``spike_factor`` × median of the last
``spike_window`` logged losses), and reports peak GPU memory — torch's allocator peak and
NVML's per-process figure, both absent on CPU — and tokens/s. Given the estimator's
``predicted_peak_bytes`` for the running plan it reports measured / predicted at the end.

Everything it reports is a typed event (:mod:`forge_advisor.train.events`): given ``emit``
the events go there (the runtime's event stream); otherwise each is rendered as one line to
``log`` (default: print).
"""

from __future__ import annotations

import logging
import math
import os
import re
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import torch
from transformers import TrainerCallback

from forge_advisor.errors import ForgeError
from forge_advisor.train.events import Alert, End, Event, Step, render

__all__ = ["MonitorCallback", "TrainingDiverged"]

logger = logging.getLogger(__name__)
_LAYER = re.compile(r"(?:^|\.)((?:layers|h|blocks|layer)\.\d+)\.")
GIB = 1 << 30


class TrainingDiverged(ForgeError):
    """Training stopped by the monitor (NaN/Inf); exit code 3, distinct from bad input (2)."""

    exit_code = 3


def _layer_of(name: str) -> str:
    # "base_model.model.model.layers.7.self_attn.q_proj.lora_A.default.weight" -> "layers.7"
    m = _LAYER.search(name)
    return m.group(1) if m else name.removeprefix("module.").rsplit(".", 1)[0]


class _NVML:
    """This process's GPU memory via NVML; every method is a no-op without a GPU/driver."""

    def __init__(self, device_index: int) -> None:
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            ids = [v.strip() for v in visible.split(",") if v.strip()]
            index = int(ids[device_index]) if ids and ids[device_index].isdigit() else device_index
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = pynvml
        except Exception:
            self.handle = None

    def process_bytes(self) -> int | None:
        if self.handle is None:
            return None
        try:
            pid = os.getpid()
            for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                if proc.pid == pid and proc.usedGpuMemory:
                    return int(proc.usedGpuMemory)
            return int(self._nvml.nvmlDeviceGetMemoryInfo(self.handle).used)  # containers hide pids
        except Exception:
            return None


class MonitorCallback(TrainerCallback):
    def __init__(
        self,
        check_gradients: bool = True,
        *,
        top_k: int = 3,
        on_nonfinite: Literal["stop", "skip"] = "stop",
        max_skipped_steps: int = 10,
        spike_factor: float = 3.0,
        spike_window: int = 20,
        predicted_peak_bytes: int | None = None,
        log: Callable[[str], None] | None = None,
        emit: Callable[[Event], None] | None = None,
    ) -> None:
        if on_nonfinite not in ("stop", "skip"):
            raise ForgeError(f"on_nonfinite={on_nonfinite!r} is not one of stop, skip")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ForgeError(f"top_k={top_k!r} must be an integer >= 0")
        if not isinstance(spike_factor, (int, float)) or spike_factor <= 1.0:
            raise ForgeError(f"spike_factor={spike_factor!r} must be a number > 1")
        if predicted_peak_bytes is not None and (not isinstance(predicted_peak_bytes, int) or predicted_peak_bytes <= 0):
            raise ForgeError(f"predicted_peak_bytes={predicted_peak_bytes!r} must be a positive integer")
        self.check_gradients = check_gradients
        self.top_k = top_k
        self.on_nonfinite = on_nonfinite
        self.max_skipped_steps = max_skipped_steps
        self.spike_factor = float(spike_factor)
        self.predicted_peak_bytes = predicted_peak_bytes
        self._log = log
        self._emit_to = emit
        self._pre_clip_step: int | None = None  # the step whose gradients were seen before clipping
        self.max_steps: int | None = None
        self._losses: deque[float] = deque(maxlen=spike_window)
        self.stop_reason: str | None = None
        self.skipped_steps: list[int] = []
        self.spikes: list[tuple[int, float, float]] = []  # (step, loss, median before)
        self.history: list[dict[str, Any]] = []
        self.last_grad_norm: float | None = None
        self.last_top_layers: list[tuple[str, float]] = []
        self.peak_torch_bytes: int | None = None
        self.peak_nvml_bytes: int | None = None
        self.peak_reserved_bytes: int | None = None
        self.tokens_per_second: float | None = None
        self._nvml: _NVML | None = None
        self._t0 = self._t_last = 0.0
        self._tokens_last = 0
        self._consecutive_skips = 0
        self._main = True

    def emit(self, event: Event) -> None:
        if not self._main:
            return
        if self._emit_to is not None:
            self._emit_to(event)
            return
        text = render(event)
        if text is None:
            return
        if self._log is not None:
            self._log(text)
        else:
            print(text, flush=True)

    # -- gradients --------------------------------------------------------------------------------
    @torch.no_grad()
    def _grad_norms(self, model: torch.nn.Module) -> tuple[float, dict[str, float], str | None]:
        names, grads = [], []
        for name, p in model.named_parameters():
            if p.grad is not None:
                names.append(name)
                grads.append(p.grad)
        if not grads:
            return 0.0, {}, None
        # one norm per tensor, gathered in one transfer
        norms = torch.stack([torch.linalg.vector_norm(g.detach().float()).to("cpu") for g in grads]).tolist()
        per_layer: dict[str, float] = {}
        bad = None
        for name, n in zip(names, norms):
            if not math.isfinite(n) and bad is None:
                bad = name
            layer = _layer_of(name)
            per_layer[layer] = per_layer.get(layer, 0.0) + n * n
        total = math.sqrt(sum(per_layer.values()))
        return total, {k: math.sqrt(v) for k, v in per_layer.items()}, bad

    def _drop_grads(self, model: torch.nn.Module) -> None:
        # grad None: torch optimizers skip the tensor entirely (no momentum or weight-decay update)
        for p in model.parameters():
            p.grad = None

    def inspect_gradients(self, model: Any, state: Any, control: Any) -> None:
        """The check on this step's gradients; the runtime's Trainer calls it before clipping."""
        if not self.check_gradients or model is None:
            return
        self._pre_clip_step = state.global_step
        self._check(model, state, control)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if not self.check_gradients or model is None or self._pre_clip_step == state.global_step:
            return
        self._check(model, state, control)

    def _check(self, model: Any, state: Any, control: Any) -> None:
        total, per_layer, bad = self._grad_norms(model)
        step = state.global_step + 1  # the step this optimizer update will complete
        if bad is not None or not math.isfinite(total):
            self._drop_grads(model)
            if self.on_nonfinite == "skip":
                self.skipped_steps.append(step)
                self._consecutive_skips += 1
                self.emit(Alert(step, "nonfinite_skipped", f"step {step}: non-finite gradient in '{bad}', step skipped"))
                if self._consecutive_skips > self.max_skipped_steps:
                    self._stop(control, f"{self._consecutive_skips} consecutive steps had NaN/Inf gradients (last in '{bad}')", step)
                return
            self._stop(control, f"gradient of '{bad}' is NaN/Inf", step)
            return
        self._consecutive_skips = 0
        self.last_grad_norm = total
        self.last_top_layers = sorted(per_layer.items(), key=lambda kv: -kv[1])[: self.top_k]

    def _stop(self, control: Any, what: str, step: int) -> None:
        if self.stop_reason is None:
            self.stop_reason = (
                f"training stopped at step {step}: {what}; lower learning_rate, check the data, "
                "or skip such steps with MonitorCallback(on_nonfinite='skip')"
            )
            self.emit(Alert(step, "diverged", self.stop_reason))
        control.should_training_stop = True
        control.should_save = False

    # -- memory and throughput ----------------------------------------------------------------------
    def _sample_memory(self) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            peak = int(torch.cuda.max_memory_allocated())
            self.peak_torch_bytes = max(self.peak_torch_bytes or 0, peak)
            self.peak_reserved_bytes = max(self.peak_reserved_bytes or 0, int(torch.cuda.max_memory_reserved()))
        if self._nvml is not None:
            used = self._nvml.process_bytes()
            if used is not None:
                self.peak_nvml_bytes = max(self.peak_nvml_bytes or 0, used)

    # -- Trainer events ---------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._main = bool(state.is_world_process_zero)
        self._t0 = self._t_last = time.perf_counter()
        self._tokens_last = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self.max_steps = getattr(state, "max_steps", None) or None
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            self._nvml = _NVML(torch.cuda.current_device())

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._sample_memory()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        logs = logs or {}
        loss = logs.get("loss")
        step = state.global_step
        if isinstance(loss, (int, float)):
            if not math.isfinite(loss):
                window = getattr(args, "logging_steps", 1) or 1
                # in skip mode a NaN loss from a step already skipped is no news; others stop training
                if not (self.on_nonfinite == "skip" and self.skipped_steps and self.skipped_steps[-1] > step - window):
                    self._stop(control, f"loss is {loss}", step)
            else:
                if len(self._losses) >= 3:
                    med = statistics.median(self._losses)
                    if med > 0 and loss > self.spike_factor * med:
                        self.spikes.append((step, float(loss), med))
                        self.emit(Alert(step, "loss_spike", f"step {step}: loss spike {loss:.4g} > "
                                                            f"{self.spike_factor:g} × median {med:.4g}"))
                self._losses.append(float(loss))
        now = time.perf_counter()
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        if tokens > self._tokens_last and now > self._t_last:
            self.tokens_per_second = (tokens - self._tokens_last) / (now - self._t_last)
        self._t_last, self._tokens_last = now, tokens
        self._sample_memory()
        if self._pre_clip_step is None and isinstance(logs.get("grad_norm"), (int, float)):
            # a plain Trainer: its logged grad_norm is the pre-clip norm (clip_grad_norm_'s return)
            self.last_grad_norm = float(logs["grad_norm"])
        allocated = reserved = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            allocated, reserved = int(torch.cuda.memory_allocated()), int(torch.cuda.memory_reserved())
        record = {
            "step": step,
            "loss": loss,
            "grad_norm": self.last_grad_norm,
            "top_layers": list(self.last_top_layers),
            "tokens_per_second": self.tokens_per_second,
            "peak_torch_bytes": self.peak_torch_bytes,
            "peak_nvml_bytes": self.peak_nvml_bytes,
        }
        self.history.append(record)
        if isinstance(loss, (int, float)):
            lr = logs.get("learning_rate")
            self.emit(Step(step, float(loss), float(lr) if isinstance(lr, (int, float)) else None, self.last_grad_norm,
                           self.tokens_per_second, allocated, reserved, self.peak_torch_bytes, self.max_steps,
                           list(self.last_top_layers)))

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._sample_memory()
        if self._main and self._emit_to is None and (s := self.peak_summary()):
            self.emit(End("completed", state.global_step, message=s))

    def peak_summary(self) -> str | None:
        measured = self.peak_torch_bytes or self.peak_nvml_bytes
        if measured is None:
            return None if self.predicted_peak_bytes is None else "peak memory: not measurable on this device"
        text = f"peak GPU memory {measured / GIB:.2f} GiB (torch)"
        if self.peak_nvml_bytes:
            text += f", {self.peak_nvml_bytes / GIB:.2f} GiB (NVML, process incl. CUDA context)"
        if self.predicted_peak_bytes:
            # e.g. 10.4 GiB measured / 11.0 GiB predicted = 0.95
            ratio = measured / self.predicted_peak_bytes
            text += f"; predicted {self.predicted_peak_bytes / GIB:.2f} GiB, measured/predicted = {ratio:.2f}"
        return text

    def summary(self) -> dict[str, Any]:
        return {
            "stop_reason": self.stop_reason,
            "skipped_steps": list(self.skipped_steps),
            "loss_spikes": [{"step": s, "loss": loss, "median": m} for s, loss, m in self.spikes],
            "last_grad_norm": self.last_grad_norm,
            "top_layers": [{"layer": k, "grad_norm": v} for k, v in self.last_top_layers],
            "tokens_per_second": self.tokens_per_second,
            "peak_torch_bytes": self.peak_torch_bytes,
            "peak_nvml_bytes": self.peak_nvml_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes,
            "predicted_peak_bytes": self.predicted_peak_bytes,
        }
