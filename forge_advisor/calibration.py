"""Per-device calibration from measured trials (``recommend --measure``).

Stored as JSON in the user cache (``$FORGE_ADVISOR_CACHE`` or ``$XDG_CACHE_HOME/forge-advisor``
or ``~/.cache/forge-advisor``), one entry per device (GPU name and memory). An entry holds the
median ratio measured/estimated for tokens/s and for peak reserved memory over its trials;
later estimates on that device scale their speed by the first and their allocator reserve by
the second, and say that they are calibrated. Written atomically (temp file + rename).

A file that cannot be read as such a mapping, or an entry written by another version of
forge-advisor (its factors were measured against another estimator), is ignored with one
warning line on stderr (once per process), never an error.

The library stack the estimator assumes is one named stack, ``ASSUMED_STACK``: its memory
paths are those of these versions (e.g. transformers 5 pads and shifts the labels, where 4.x
before 4.46 upcast and copied the full logits before the shift). ``stack_differences()``
reads the installed versions from package metadata (``importlib.metadata``, nothing is
imported) and names the packages whose major version differs.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from importlib import metadata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forge_advisor.errors import ForgeError
from forge_advisor.fileio import atomic_write_text

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU

__all__ = [
    "ASSUMED_STACK",
    "Calibration",
    "Sample",
    "cache_dir",
    "device_key",
    "load_calibration",
    "record_samples",
    "stack_differences",
]

# The stack whose memory paths the estimator models (major versions): transformers 5
# (`ForCausalLMLoss` upcasts the logits to fp32 and shifts the labels), torch 2 (caching
# allocator, cuBLAS workspace sizes of CublasHandlePool.cpp), peft 0.x (fp32 adapters via
# autocast_adapter_dtype), trl 1.x (DPO's fused LM head).
ASSUMED_STACK: dict[str, int] = {"transformers": 5, "torch": 2, "peft": 0, "trl": 1}


def stack_differences(installed: dict[str, str | None] | None = None) -> list[str]:
    """Packages whose installed major version differs from ``ASSUMED_STACK`` (read from
    package metadata; a package that is not installed is not a difference)."""
    if installed is None:
        installed = {}
        for name in ASSUMED_STACK:
            try:
                installed[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                installed[name] = None
    out = []
    for name, major in ASSUMED_STACK.items():
        version = installed.get(name)
        if version is None:
            continue
        head = version.split(".", 1)[0]
        if not head.isdigit() or int(head) != major:
            out.append(f"{name} {version} is installed; the estimate models {name} {major}.x")
    return out


_WARNED = False


def _warn(message: str) -> None:
    """One warning line per process for an unusable calibration file."""
    global _WARNED
    if not _WARNED:
        _WARNED = True
        print(f"warning: {message}", file=sys.stderr)


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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _warn(f"ignoring the calibration file {path}: unreadable ({type(exc).__name__})")
        return {}  # a damaged cache is ignored, never fatal
    if not isinstance(data, dict):
        _warn(f"ignoring the calibration file {path}: not a mapping of devices")
        return {}
    return data


_LOADED: dict[str, Any] | None = None


def load_calibration(gpu: GPU | None) -> Calibration | None:
    """The device's calibration, read once per process (re-read after `record_samples`)."""
    global _LOADED
    if gpu is None:
        return None
    if _LOADED is None:
        _LOADED = _read()
    entry = _LOADED.get(device_key(gpu))
    if entry is None:
        return None
    from forge_advisor import __version__

    try:
        cal = Calibration(**entry)
        factors_ok = all(isinstance(f, (int, float)) and 0 < f < float("inf") for f in (cal.speed_factor, cal.reserve_factor))
    except TypeError:
        cal, factors_ok = None, False
    if cal is None or not factors_ok:
        _warn(f"ignoring the calibration of {device_key(gpu)} in {_path()}: not a calibration entry")
        return None
    if cal.version != __version__:
        _warn(f"ignoring the calibration of {device_key(gpu)} in {_path()}: written by forge-advisor {cal.version}, "
              f"this is {__version__} (run `recommend --measure` again)")
        return None
    return cal


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
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    global _LOADED
    _LOADED = None
    return cal
