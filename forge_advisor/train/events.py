"""The training event stream: typed events, one JSON object per line.

``forge-advisor train --events PATH`` (or ``-`` for stdout) writes every event the runtime
emits; the CLI renders the same events for people (:func:`render`) and the TUI decodes them
(:func:`decode`), so nothing scrapes printed text. Torch-free: the TUI imports this module.

Each line is ``{"event": KIND, "v": 1, ...fields}``; a reader skips lines of a later ``v``
or an unknown kind. Kinds, in the order a run emits them::

    start       plan, model, max_steps, predicted peak (estimate), resumed_from_step
    preflight   the first optimizer step on the longest batch: measured peak allocated and
                reserved (GPU) against the estimate, or what could not be measured (CPU)
    step        step, loss, learning_rate, grad_norm (before clipping), tokens/s,
                allocated/reserved bytes now and the peak allocated so far
    alert       a loss spike, a skipped non-finite step, or the stop on NaN/Inf
    checkpoint  a complete checkpoint-N folder, with the EMA's update count
    interrupt   the first Ctrl-C was seen: a checkpoint follows at the end of this step
    end         completed | interrupted | diverged, final step and loss, saved folders
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, ClassVar

__all__ = [
    "EVENT_TYPES",
    "EVENTS_VERSION",
    "Alert",
    "CheckpointSaved",
    "End",
    "Event",
    "EventStream",
    "Interrupt",
    "Preflight",
    "Start",
    "Step",
    "decode",
    "encode",
    "render",
]

EVENTS_VERSION = 1
GIB = 1 << 30


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = ""


@dataclass(frozen=True)
class Start(Event):
    kind: ClassVar[str] = "start"
    model: str
    preset: str
    plan: dict[str, Any]
    max_steps: int | None
    predicted_peak_bytes: int | None = None
    resumed_from_step: int = 0
    device: str = "cpu"
    # vision-language runs: images, images per record, image tokens, max_pixels, tower frozen or trained
    vision: dict[str, Any] | None = None


@dataclass(frozen=True)
class Step(Event):
    kind: ClassVar[str] = "step"
    step: int
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None  # global L2 norm of the gradients before clipping
    tokens_per_second: float | None = None
    allocated_bytes: int | None = None
    reserved_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    max_steps: int | None = None
    top_layers: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Alert(Event):
    kind: ClassVar[str] = "alert"
    step: int | None
    reason: str  # loss_spike | nonfinite_skipped | diverged
    message: str


@dataclass(frozen=True)
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str
    ema_updates: int | None = None


@dataclass(frozen=True)
class Preflight(Event):
    kind: ClassVar[str] = "preflight"
    verdict: str  # fits | oom | unmeasured
    message: str
    steps: int = 0
    longest_tokens: int | None = None
    samples: int | None = None
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    predicted_peak_bytes: int | None = None
    device_total_bytes: int | None = None


@dataclass(frozen=True)
class Interrupt(Event):
    kind: ClassVar[str] = "interrupt"
    step: int
    message: str


@dataclass(frozen=True)
class End(Event):
    kind: ClassVar[str] = "end"
    status: str  # completed | interrupted | diverged
    global_step: int
    final_loss: float | None = None
    adapter_dir: str | None = None
    ema_dir: str | None = None
    checkpoint: str | None = None
    message: str = ""
    peak_allocated_bytes: int | None = None
    predicted_peak_bytes: int | None = None


# the registry every reader uses: kind -> class
EVENT_TYPES: dict[str, type[Event]] = {c.kind: c for c in (Start, Step, Alert, CheckpointSaved, Preflight, Interrupt, End)}


def _finite(v: Any) -> Any:
    # JSON has no NaN/Inf: they travel as strings "nan"/"inf" and come back as floats
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def encode(event: Event) -> str:
    """One JSON line (no newline) for ``event``."""
    body = {k: _finite(v) for k, v in asdict(event).items()}
    return json.dumps({"event": event.kind, "v": EVENTS_VERSION, **body}, separators=(",", ":"))


def decode(line: str) -> Event | None:
    """The event on ``line``, or None for anything else (text, a later version, an unknown kind)."""
    s = line.strip()
    i = s.find('{"event":')
    if i < 0:
        return None
    try:
        doc = json.loads(s[i:])
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("v") != EVENTS_VERSION:
        return None
    cls = EVENT_TYPES.get(doc.get("event"))  # type: ignore[arg-type]
    if cls is None:
        return None
    names = {f.name: f for f in fields(cls)}
    kwargs = {}
    for k, v in doc.items():
        if k in names:
            if isinstance(v, str) and v in ("nan", "inf", "-inf") and "float" in str(names[k].type):
                v = float(v)
            if k == "top_layers" and isinstance(v, list):
                v = [(str(a), float(b)) for a, b in v]
            kwargs[k] = v
    try:
        return cls(**kwargs)
    except TypeError:
        return None


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.2f} GiB"


def render(event: Event) -> str | None:
    """The line a person reads for ``event`` (None: nothing to show)."""
    if isinstance(event, Step):
        if event.loss is None:
            return None
        parts = [f"step {event.step}", f"loss {event.loss:.4f}"]
        if event.grad_norm is not None:
            parts.append(f"grad-norm {event.grad_norm:.3g}")
        if event.top_layers:
            parts.append("top " + ", ".join(f"{k} {v:.2g}" for k, v in event.top_layers))
        if event.tokens_per_second:
            parts.append(f"{event.tokens_per_second:,.0f} tok/s")
        if event.peak_allocated_bytes:
            parts.append(f"peak {_gib(event.peak_allocated_bytes)}")
        return "[monitor] " + " | ".join(parts)
    if isinstance(event, Start):
        text = f"[train] {event.preset} on {event.model}, {event.max_steps or '?'} steps on {event.device}"
        if event.resumed_from_step:
            text += f", resuming at step {event.resumed_from_step}"
        if event.predicted_peak_bytes:
            text += f"; estimated peak {_gib(event.predicted_peak_bytes)}"
        return text
    if isinstance(event, Alert):
        return f"[monitor] {event.message}"
    if isinstance(event, CheckpointSaved):
        ema = f" (EMA {event.ema_updates} updates)" if event.ema_updates is not None else ""
        return f"[train] checkpoint {event.path}{ema}"
    if isinstance(event, (Preflight, Interrupt)):
        return f"[{event.kind}] {event.message}"
    if isinstance(event, End):
        return f"[monitor] {event.message}" if event.message else None
    return None


class EventStream:
    """Where events go: JSON lines to a file or stdout (``--events``), and each event to the
    listeners (the CLI's renderer, tests). Rank 0 only under DDP (``enabled=False`` elsewhere)."""

    def __init__(self, target: str | Path | None = None, *, listeners: list[Any] | None = None,
                 enabled: bool = True) -> None:
        self.listeners = list(listeners or [])
        self.enabled = enabled
        self._fh: IO[str] | None = None
        self._own = False
        self.target = target
        self.events: list[Event] = []

    def open(self) -> EventStream:
        if self.target is None or not self.enabled or self._fh is not None:
            return self
        if str(self.target) == "-":
            self._fh = sys.stdout
        else:
            path = Path(self.target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("a", encoding="utf-8")
            self._own = True
        return self

    def emit(self, event: Event) -> None:
        if not self.enabled:
            return
        self.events.append(event)
        if self._fh is not None:
            self._fh.write(encode(event) + "\n")
            self._fh.flush()
        for listener in self.listeners:
            listener(event)

    def close(self) -> None:
        if self._own and self._fh is not None:
            self._fh.close()
        self._fh = None

    def __enter__(self) -> EventStream:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_events_target(target: str | None) -> None:
    """``--events PATH``: its folder must exist and be writable (checked before any heavy work)."""
    from forge_advisor.errors import ForgeError

    if target is None or target == "-":
        return
    path = Path(target).expanduser()
    if path.is_dir():
        raise ForgeError(f"{path}: --events names a folder; give a file path (or - for stdout)")
    parent = path.parent
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent  # a folder still to be created (e.g. inside --output)
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ForgeError(f"{path}: --events cannot be written ({parent} is not a writable folder)")
