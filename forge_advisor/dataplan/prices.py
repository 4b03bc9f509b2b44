"""On-demand GPU prices (``forge_advisor/catalog/gpu_prices.json``), keyed by the GPU catalog's names."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from forge_advisor.errors import ForgeError

__all__ = ["GpuPrice", "gpu_prices", "parse_price_overrides"]


@dataclass(frozen=True)
class GpuPrice:
    gpu: str  # a GPU catalog name
    usd_per_hour: float  # per GPU, on demand
    provider: str
    source: str
    date: str

    def __post_init__(self) -> None:
        if not isinstance(self.usd_per_hour, (int, float)) or not self.usd_per_hour > 0:
            raise ForgeError(f"price of {self.gpu}: usd_per_hour={self.usd_per_hour!r} must be a positive number")


@lru_cache(maxsize=1)
def _shipped() -> dict[str, GpuPrice]:
    raw = json.loads((resources.files("forge_advisor") / "catalog" / "gpu_prices.json").read_text(encoding="utf-8"))
    return {name: GpuPrice(name, **row) for name, row in raw["prices"].items()}


def gpu_prices(overrides: dict[str, float] | None = None) -> dict[str, GpuPrice]:
    """The shipped table, with ``overrides`` (catalog name -> $/GPU-hour) from the user."""
    table = dict(_shipped())
    for name, usd in (overrides or {}).items():
        table[name] = GpuPrice(name, usd, "user", "--price", "given")
    return table


def parse_price_overrides(items: list[str]) -> dict[str, float]:
    """``["H100 SXM=2.5", ...]`` -> {"H100 SXM": 2.5}; names resolved through the GPU catalog."""
    from forge_advisor.gpus import find_gpu

    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name.strip():
            raise ForgeError(f"--price {item!r}: expected GPU=USD_PER_HOUR, e.g. 'H100 SXM=2.49'")
        gpu = find_gpu(name.strip())  # raises on unknown or ambiguous names, with suggestions
        try:
            usd = float(value)
        except ValueError:
            raise ForgeError(f"--price {item!r}: {value!r} is not a number of dollars per hour") from None
        if not usd > 0:
            raise ForgeError(f"--price {item!r}: the price must be positive")
        out[gpu.name] = usd
    return out
