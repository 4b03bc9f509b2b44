"""Follow a ``forge-advisor train --events -`` run: typed events in, monitor state out.

The runtime writes its event stream (:mod:`forge_advisor.train.events`, torch-free) as JSON
lines on stdout and its human lines on stderr. :func:`event_of` decodes a stdout line;
:class:`MonitorState` accumulates the events the monitor shows. Nothing here parses printed
text, except that a stderr line ``error: …`` (a bad input found before the run started, when
no event exists yet) is kept as the run's error.

Output arrives in chunks, with ``\\r`` (tqdm) and ``\\n``; :class:`LineSplitter` cuts on both.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from forge_advisor.train.events import (
    Alert,
    CheckpointSaved,
    End,
    Event,
    Interrupt,
    Preflight,
    Start,
    Step,
    decode,
)

__all__ = ["LineSplitter", "MonitorState", "clean_line", "error_of", "event_of"]

_BAR = re.compile(r"\d+%\|")
_TAG = re.compile(r"\[(?:monitor|train|preflight|interrupt)\]|interrupt:")  # the runtime's human lines


def event_of(line: str) -> Event | None:
    """The event on one stdout line of ``train --events -`` (None: not an event)."""
    return decode(line)


def error_of(line: str) -> str | None:
    """A stderr line that is the run's one-line error (``error: …`` / ``internal error: …``)."""
    s = line.strip()
    return s if s.startswith(("error:", "internal error:")) else None


def clean_line(line: str) -> str | None:
    """A stderr line as the log shows it: a line glued to a progress bar loses the bar;
    progress bars themselves (the Trainer's, datasets' ``Map: 100%|…``) are dropped."""
    m = _TAG.search(line)
    if m is not None and m.start() > 0 and _BAR.search(line[: m.start()]):
        return line[m.start():]
    if m is None and _BAR.search(line):
        return None
    return line


class LineSplitter:
    """Feed raw bytes, get complete lines back (``\\r`` and ``\\n`` both end a line)."""

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, chunk: bytes | str) -> list[str]:
        text = chunk.decode("utf-8", errors="replace") if isinstance(chunk, bytes) else chunk
        self._buf += text
        parts = re.split(r"[\r\n]", self._buf)
        self._buf = parts.pop()
        return [p for p in parts if p.strip()]

    def flush(self) -> list[str]:
        rest, self._buf = self._buf, ""
        return [rest] if rest.strip() else []


@dataclass
class MonitorState:
    """What the monitor shows, accumulated from events."""

    ema_decay: float = 0.999
    predicted_peak_bytes: int | None = None
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    tokens_per_second: float | None = None
    peak_bytes: int | None = None
    measured_over_predicted: float | None = None
    step: int = 0
    total_steps: int | None = None
    alerts: list[str] = field(default_factory=list)
    ema_updates: int = 0
    ema_checkpoint: str | None = None
    status: str = "idle"  # idle | running | done | stopped | failed
    demo: bool = False  # the runtime's tiny model: the estimate is for another model
    last_error: str | None = None
    top_layers: str | None = None
    preflight: str | None = None
    nan_alert: bool = False

    def apply(self, ev: Event) -> None:
        handler = getattr(self, f"_on_{ev.kind}", None)
        if handler is not None:
            handler(ev)

    def _on_start(self, ev: Start) -> None:
        self.status = "running"
        self.total_steps = ev.max_steps
        self.step = ev.resumed_from_step
        if ev.predicted_peak_bytes:  # the runtime's estimate for the model it trains (the demo's own, too)
            self.predicted_peak_bytes = ev.predicted_peak_bytes

    def _on_step(self, ev: Step) -> None:
        self.step = max(self.step, ev.step)
        # the EMA updates once per optimizer step (forge_advisor.train.callbacks.ema); checkpoint
        # events carry the exact count
        self.ema_updates = max(self.ema_updates, ev.step)
        if ev.max_steps:
            self.total_steps = ev.max_steps
        if ev.loss is not None:
            self.steps.append(ev.step)
            self.losses.append(ev.loss)
            if not math.isfinite(ev.loss):
                self.alerts.append(f"step {ev.step}: loss is {ev.loss}")
                self.nan_alert = True
        if ev.grad_norm is not None:
            self.grad_norms.append(ev.grad_norm)
        if ev.tokens_per_second:
            self.tokens_per_second = ev.tokens_per_second
        if ev.peak_allocated_bytes:
            self.peak_bytes = max(self.peak_bytes or 0, ev.peak_allocated_bytes)
        if ev.top_layers:
            self.top_layers = ", ".join(f"{k} {v:.2g}" for k, v in ev.top_layers)

    def _on_alert(self, ev: Alert) -> None:
        self.alerts.append(ev.message)
        if ev.reason in ("nonfinite_skipped", "diverged"):
            self.nan_alert = True
        if ev.reason == "diverged":
            self.status = "stopped"

    def _on_checkpoint(self, ev: CheckpointSaved) -> None:
        self.ema_checkpoint = ev.path.rsplit("/", 1)[-1]
        if ev.ema_updates is not None:
            self.ema_updates = ev.ema_updates

    def _on_preflight(self, ev: Preflight) -> None:
        self.preflight = ev.message
        if ev.peak_allocated_bytes:
            self.peak_bytes = max(self.peak_bytes or 0, ev.peak_allocated_bytes)
        if ev.verdict == "oom":
            self.alerts.append(ev.message)

    def _on_interrupt(self, ev: Interrupt) -> None:
        self.alerts.append(ev.message)

    def _on_end(self, ev: End) -> None:
        if ev.peak_allocated_bytes:
            self.peak_bytes = max(self.peak_bytes or 0, ev.peak_allocated_bytes)
        if ev.predicted_peak_bytes:
            self.predicted_peak_bytes = ev.predicted_peak_bytes
        if self.peak_bytes and self.predicted_peak_bytes:
            # e.g. 3.5 GiB measured / 4.0 GiB estimated = 0.88
            self.measured_over_predicted = round(self.peak_bytes / self.predicted_peak_bytes, 2)
        if ev.status == "completed" and self.status in ("running", "idle"):
            self.status = "done"
        elif ev.status in ("interrupted", "diverged"):
            self.status = "stopped"
