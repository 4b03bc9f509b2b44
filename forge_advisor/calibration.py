"""Per-device calibration from measured trials (``recommend --measure``).

Stored as JSON in the user cache (``$FORGE_ADVISOR_CACHE`` or ``$XDG_CACHE_HOME/forge-advisor``
or ``~/.cache/forge-advisor``), one entry per device (GPU name and memory). An entry holds the
median ratio measured/estimated for tokens/s and for peak reserved memory over its trials;
later estimates on that device scale their speed by the first and their allocator reserve by
the second, and say that they are calibrated. Written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forge_advisor.errors import ForgeError

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU

__all__ = ["Calibration", "Sample", "cache_dir", "device_key", "load_calibration", "record_samples"]


@dataclass(frozen=True)
class Sample:
    """One measured trial next to what the estimator predicted for the same plan."""

    estimated_tokens_per_second: float
    measured_tokens_per_second: float
    estimated_peak_allocated_bytes: int
    measured_peak_allocated_bytes: int
    estimated_peak_reserved_bytes: int
    measured_peak_reserved_bytes: int


@dataclass(frozen=True)
class Calibration:
    device: str
    speed_factor: float  # measured / estimated tokens per second (median)
    reserve_factor: float  # measured / estimated (reserved − allocated) (median)
    samples: int
    updated: str
    version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cache_dir() -> Path:
    root = os.environ.get("FORGE_ADVISOR_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "forge-advisor"


def _path() -> Path:
    return cache_dir() / "calibration.json"


def device_key(gpu: GPU) -> str:
    return f"{gpu.name}|{gpu.memory_bytes}"


def _read() -> dict[str, Any]:
    path = _path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}  # a damaged cache is ignored, never fatal
    return data if isinstance(data, dict) else {}


_LOADED: dict[str, Any] | None = None


def load_calibration(gpu: GPU | None) -> Calibration | None:
    """The device's calibration, read once per process (re-read after `record_samples`)."""
    global _LOADED
    if gpu is None:
        return None
    if _LOADED is None:
        _LOADED = _read()
    entry = _LOADED.get(device_key(gpu))
    if not isinstance(entry, dict):
        return None
    try:
        return Calibration(**entry)
    except TypeError:
        return None


def record_samples(gpu: GPU, samples: list[Sample]) -> Calibration:
    """Fold measured trials into the device's calibration and save it atomically."""
    from forge_advisor import __version__

    if not samples:
        raise ForgeError("no measured trial to calibrate from")
    speed = [s.measured_tokens_per_second / s.estimated_tokens_per_second for s in samples if s.estimated_tokens_per_second > 0]
    reserve = []
    for s in samples:
        est = s.estimated_peak_reserved_bytes - s.estimated_peak_allocated_bytes
        got = s.measured_peak_reserved_bytes - s.measured_peak_allocated_bytes
        if est > 0 and got >= 0:
            reserve.append(got / est)
    cal = Calibration(
        device=device_key(gpu),
        speed_factor=statistics.median(speed) if speed else 1.0,
        reserve_factor=statistics.median(reserve) if reserve else 1.0,
        samples=len(samples),
        updated=time.strftime("%Y-%m-%dT%H:%M:%S"),
        version=__version__,
    )
    data = _read()
    data[cal.device] = cal.to_dict()
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    global _LOADED
    _LOADED = None
    return cal
