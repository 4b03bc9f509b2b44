"""Human-readable units. Bytes use binary prefixes (GiB = 2**30), as torch and nvidia-smi do."""

from __future__ import annotations

import math

__all__ = ["GiB", "MiB", "fmt_bytes", "fmt_count", "fmt_duration"]

MiB = 1 << 20
GiB = 1 << 30


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= size:
            return f"{sign}{n / size:.2f} {unit}"
    return f"{sign}{int(n)} B"


def fmt_count(n: float) -> str:
    """1_234_567_890 -> '1.23B' (decimal, as model cards write parameter counts)."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def fmt_duration(seconds: float | None) -> str:
    """42 s, 3 min 05 s, 2 h 10 min, 3.5 days; an em dash when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400 * 2:
        return f"{s // 3600} h {(s % 3600) // 60:02d} min"
    return f"{seconds / 86400:.1f} days"
