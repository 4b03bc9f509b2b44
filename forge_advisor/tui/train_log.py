"""Read ``forge-advisor train``'s output into monitor events (no textual, no torch).

The runtime does not write a machine-readable log yet, so this parses what it prints (see
``forge_advisor/train/callbacks/monitor.py`` and ``cli/train.py``):

* ``[monitor] step 20 | loss 5.2072 | grad-norm 0.148 | top layers.1 0.14 | 1,494 tok/s | peak 3.21 GiB``
* ``[monitor] step 7: non-finite gradient in 'x', step skipped`` / ``… training stopped at …`` /
  ``… loss spike …`` (alerts)
* ``[monitor] peak GPU memory 10.40 GiB (torch), …; predicted 11.00 GiB, measured/predicted = 0.95``
* the Trainer's ``{'loss': '5.207', 'grad_norm': '0.1482', …}`` dicts (fallback for loss/grad-norm)
* tqdm's ``20/30 [00:11<…]`` (progress), ``done: 30 steps, final loss …``, ``error: …``.

Output arrives with ``\\r`` (tqdm) and ``\\n`` interleaved; :class:`LineSplitter` cuts on both.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LineSplitter", "MonitorState", "TrainEvent", "clean_line", "parse_line"]

GIB = 1 << 30

_MONITOR = re.compile(r"\[monitor\]\s*(.*)$")
_STEP = re.compile(r"^step (\d+) \| (.*)$")
_ALERT = re.compile(r"^step (\d+): (.*)$")
_PROGRESS = re.compile(r"^\s*\d+%\|[^|]*\|\s*(\d+)/(\d+) \[")  # the Trainer's bar, not "Map: 100%|…"
_BAR = re.compile(r"\d+%\|")
_DICT = re.compile(r"(\{'.*\})")
_PEAK = re.compile(r"peak GPU memory ([0-9.]+) GiB \(torch\)")
_PRED = re.compile(r"predicted ([0-9.]+) GiB, measured/predicted = ([0-9.]+)")
_DONE = re.compile(r"^done: (\d+) steps")
_EMA = re.compile(r"EMA restored from (\S+) \((\d+) updates\)")


@dataclass(frozen=True)
class TrainEvent:
    """kind: metrics | log | alert | stopped | peak | progress | done | error | ema | ema_saved | text."""

    kind: str
    step: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    text: str = ""


def _num(text: str) -> float | None:
    try:
        v = float(text.replace(",", ""))
    except ValueError:
        return None
    return v


def _metrics(step: int, body: str) -> TrainEvent:
    data: dict[str, Any] = {}
    for part in (p.strip() for p in body.split("|")):
        if part.startswith("loss "):
            data["loss"] = _num(part[5:])
        elif part.startswith("grad-norm "):
            data["grad_norm"] = _num(part[10:])
        elif part.startswith("top "):
            data["top_layers"] = part[4:]
        elif part.endswith(" tok/s"):
            data["tokens_per_second"] = _num(part[:-6])
        elif part.startswith("peak ") and part.endswith(" GiB"):
            v = _num(part[5:-4])
            data["peak_bytes"] = None if v is None else int(v * GIB)
    return TrainEvent("metrics", step, data)


def parse_line(line: str) -> TrainEvent | None:
    """One line of output -> an event, or None for noise (warnings, blank lines)."""
    s = line.strip()
    if not s:
        return None
    m = _MONITOR.search(s)
    if m:
        body = m.group(1).strip()
        if mm := _STEP.match(body):
            return _metrics(int(mm.group(1)), mm.group(2))
        if mm := _ALERT.match(body):
            return TrainEvent("alert", int(mm.group(1)), {}, mm.group(2))
        if body.startswith("training stopped"):
            step = re.search(r"at step (\d+)", body)
            return TrainEvent("stopped", int(step.group(1)) if step else None, {}, body)
        if body.startswith("peak"):
            data: dict[str, Any] = {}
            if pm := _PEAK.search(body):
                data["measured_bytes"] = int(float(pm.group(1)) * GIB)
            if pr := _PRED.search(body):
                data["predicted_bytes"] = int(float(pr.group(1)) * GIB)
                data["ratio"] = float(pr.group(2))
            return TrainEvent("peak", None, data, body)
        return TrainEvent("text", None, {}, body)
    if m := _DICT.search(s):
        try:
            d = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            d = None
        if isinstance(d, dict) and "loss" in d:
            data = {k: _num(str(d[k])) for k in ("loss", "grad_norm", "learning_rate", "epoch") if k in d}
            return TrainEvent("log", None, data)
        if isinstance(d, dict):
            return None
    if m := _EMA.search(s):
        return TrainEvent("ema", None, {"checkpoint": m.group(1), "updates": int(m.group(2))}, s)
    if m := _DONE.match(s):
        return TrainEvent("done", int(m.group(1)), {}, s)
    if s.startswith("error:") or s.startswith("internal error:"):
        return TrainEvent("error", None, {}, s)
    if s.startswith("interrupted at step"):
        return TrainEvent("done", None, {"interrupted": True}, s)
    if m := _PROGRESS.match(s):
        return TrainEvent("progress", int(m.group(1)), {"total": int(m.group(2))})
    if s.startswith(("saved ", "trainable ", "interrupt")):
        return TrainEvent("text", None, {}, s)
    return None


def clean_line(line: str) -> str | None:
    """The line as the log shows it: a monitor line without the progress bar glued in front
    of it; progress bars themselves (the Trainer's, datasets' ``Map: 100%|…``) dropped."""
    i = line.find("[monitor]")
    if i > 0:
        return line[i:]
    if i < 0 and _BAR.search(line):
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

    @property
    def nan_alert(self) -> bool:
        return any("NaN" in a or "non-finite" in a or "nan" in a.split() for a in self.alerts)

    def apply(self, ev: TrainEvent) -> None:
        if ev.kind == "metrics":
            d = ev.data
            if ev.step is not None:
                self.step = max(self.step, ev.step)
                self.ema_updates = max(self.ema_updates, ev.step)  # the EMA updates once per optimizer step
            loss = d.get("loss")
            if isinstance(loss, float):
                self.steps.append(ev.step or 0)
                self.losses.append(loss)
                if not math.isfinite(loss):
                    self.alerts.append(f"step {ev.step}: loss is {loss}")
            if isinstance(d.get("grad_norm"), float):
                self.grad_norms.append(d["grad_norm"])
            if d.get("tokens_per_second"):
                self.tokens_per_second = d["tokens_per_second"]
            if d.get("peak_bytes"):
                self.peak_bytes = max(self.peak_bytes or 0, d["peak_bytes"])
            if d.get("top_layers"):
                self.top_layers = d["top_layers"]
        elif ev.kind == "log":
            # the Trainer's own dict: use it only when the monitor line did not come first
            loss = ev.data.get("loss")
            if isinstance(loss, float) and not self.losses:
                self.losses.append(loss)
                self.steps.append(self.step)
        elif ev.kind == "alert":
            self.alerts.append(f"step {ev.step}: {ev.text}")
        elif ev.kind == "stopped":
            self.alerts.append(ev.text)
            self.status = "stopped"
        elif ev.kind == "peak":
            if ev.data.get("measured_bytes"):
                self.peak_bytes = max(self.peak_bytes or 0, ev.data["measured_bytes"])
            if ev.data.get("predicted_bytes"):
                self.predicted_peak_bytes = ev.data["predicted_bytes"]
            if ev.data.get("ratio"):
                self.measured_over_predicted = ev.data["ratio"]
        elif ev.kind == "progress":
            if ev.step is not None:
                self.step = max(self.step, ev.step)
            self.total_steps = ev.data.get("total", self.total_steps)
        elif ev.kind == "ema":
            self.ema_updates = ev.data["updates"]
            self.ema_checkpoint = ev.data["checkpoint"]
        elif ev.kind == "ema_saved":
            self.ema_checkpoint = ev.data.get("checkpoint")
        elif ev.kind == "done":
            if self.status == "running":
                self.status = "done"
        elif ev.kind == "error":
            self.last_error = ev.text
            self.status = "failed"
