"""The TUI's messages: dataclasses, posted by widgets and workers, handled by screens.

Workers run in threads and talk to the UI only through these (``post_message`` is
thread-safe), so no widget is touched off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU, Probe
    from forge_advisor.shapes import ModelShape
    from forge_advisor.train.events import Event
    from forge_advisor.tui.widgets.knob import Knob

__all__ = [
    "AdviseFinished",
    "AdviseProgress",
    "DataPlanned",
    "GpuChoice",
    "KnobChanged",
    "ProbeFinished",
    "ShapeLoaded",
    "TrainFinished",
    "TrainOutput",
]


@dataclass
class KnobChanged(Message):
    """A knob was turned or typed into; ``value`` may be invalid (the Plan says why)."""

    knob: Knob
    field: str
    value: Any

    @property
    def control(self) -> Knob:
        return self.knob


@dataclass
class ShapeLoaded(Message):
    """A model finished loading (in a worker): ``shape`` or the ForgeError's ``error``."""

    spec: str
    shape: ModelShape | None
    error: str | None = None


@dataclass
class ProbeFinished(Message):
    probe: Probe


@dataclass
class GpuChoice:
    """What the GPU picker returns: ``gpu`` None means "no GPU, memory only"."""

    gpu: GPU | None
    source: str = "catalog"  # catalog | probe | none


@dataclass
class AdviseProgress(Message):
    done: int
    total: int


@dataclass
class AdviseFinished(Message):
    recommendation: Any = None
    error: str | None = None
    unavailable: bool = False


@dataclass
class DataPlanned(Message):
    """The data screen's worker finished: ``advice`` (forge_advisor.dataplan.advise.data_advice)
    or the ForgeError's one line."""

    path: str
    advice: dict[str, Any] | None
    error: str | None = None
    report: Any = None  # the LengthReport (the advisor ranks batching modes on its lengths)


@dataclass
class TrainOutput(Message):
    line: str
    event: Event | None


@dataclass
class TrainFinished(Message):
    returncode: int
    checkpoints: tuple[str, ...] = ()
