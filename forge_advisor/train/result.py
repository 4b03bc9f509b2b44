"""What a training run returns and leaves as ``train_summary.json``. Torch-free."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge_advisor.train.saving import atomic_write_text

__all__ = ["TrainResult", "read_summary", "result_summary_path", "write_summary"]


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
    ema_updates: int | None = None
    monitor: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        d["frozen_layers"] = list(self.frozen_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainResult:
        paths = ("output_dir", "adapter_dir", "ema_dir", "checkpoint")
        known: dict[str, Any] = {k: (Path(v) if k in paths and v is not None else v)
                                 for k, v in d.items() if k in cls.__dataclass_fields__}
        known["frozen_layers"] = tuple(known.get("frozen_layers") or ())
        return cls(**known)


def result_summary_path(out: Path) -> Path:
    return Path(out) / "train_summary.json"


def write_summary(result: TrainResult) -> None:
    """Written last of a run's files, whole (temp file + rename)."""
    atomic_write_text(result_summary_path(result.output_dir), json.dumps(result.to_dict(), indent=2) + "\n")


def read_summary(out: Path) -> TrainResult | None:
    """The summary of an earlier run in ``out``; None when absent or unreadable."""
    try:
        doc = json.loads(result_summary_path(out).read_text(encoding="utf-8"))
        return TrainResult.from_dict(doc) if isinstance(doc, dict) else None
    except (OSError, ValueError, TypeError):
        return None
