"""`PreflightCallback`: the first optimizer step(s) run on the longest batch (the runtime's
sampler puts it first, :mod:`forge_advisor.train.trainer`); after them it reports the
measured peak allocated and reserved GPU memory against the estimate, as a ``preflight``
event and a measured-vs-estimated record (:mod:`forge_advisor.train.records`).

On a CPU there is no device allocator to read: it says so and what it did check (the
longest batch ran). An OOM during these steps is caught by the session, which names the
nearest plan that fits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback

from forge_advisor.train.events import Event, Preflight

__all__ = ["PreflightCallback"]

GIB = 1 << 30


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


class PreflightCallback(TrainerCallback):
    def __init__(self, emit: Callable[[Event], None], *, steps: int, longest_tokens: int | None, samples: int,
                 batch: int, predicted_peak_bytes: int | None,
                 record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.emit = emit
        self.steps = max(1, steps)
        self.longest_tokens = longest_tokens
        self.samples = samples
        self.batch = batch
        self.predicted = predicted_peak_bytes
        self.record = record
        self.start_step = 0
        self.resumed = False
        self.done = False
        self.result: Preflight | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.start_step = state.global_step
        self.resumed = state.global_step > 0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.done or state.global_step < self.start_step + self.steps:
            return
        self.done = True
        if state.is_world_process_zero:
            self.result = self.measure()
            self.emit(self.result)
            if self.record is not None:
                self.record({"peak_allocated_bytes": self.result.peak_allocated_bytes,
                             "peak_reserved_bytes": self.result.peak_reserved_bytes,
                             "device_total_bytes": self.result.device_total_bytes,
                             "longest_tokens": self.longest_tokens, "steps": self.steps})

    def what_ran(self) -> str:
        n = "1 optimizer step" if self.steps == 1 else f"{self.steps} optimizer steps"
        if self.resumed:
            return f"{n} after resuming (the longest batch ran in the first session)"
        if self.samples <= 1:
            return f"{n} on the only sample ({self.longest_tokens} tokens): the whole dataset, nothing longer can come"
        if self.samples <= self.batch * self.steps:
            return f"{n} covering all {self.samples} samples (longest {self.longest_tokens} tokens)"
        return f"{n} on the longest samples first ({self.longest_tokens} tokens the longest)"

    def measure(self) -> Preflight:
        ran = self.what_ran()
        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            pred = f"; the estimate ({_gib(self.predicted)}) is not checked" if self.predicted else ""
            return Preflight("unmeasured", f"{ran} ran; on a CPU device memory cannot be measured{pred}",
                             self.steps, self.longest_tokens, self.samples, predicted_peak_bytes=self.predicted)
        alloc = int(torch.cuda.max_memory_allocated())
        reserved = int(torch.cuda.max_memory_reserved())
        total = int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
        text = f"{ran}: peak allocated {_gib(alloc)}, reserved {_gib(reserved)} of {_gib(total)}"
        if self.predicted:
            # e.g. 10.4 GiB measured / 11.0 GiB estimated = 0.95
            text += f"; estimated {_gib(self.predicted)} (measured allocated/estimated = {alloc / self.predicted:.2f})"
        return Preflight("fits", text, self.steps, self.longest_tokens, self.samples, alloc, reserved,
                         self.predicted, total)
