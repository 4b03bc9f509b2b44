"""The one module that imports the Rust extension (``forge_advisor._native``).

Everything else reaches the core through here: the estimator and the exact ranking, the one
fit rule, the value ranges and choices of a plan (Rust is their authority), and the
translation of the core's typed ``PlanError`` into :class:`~forge_advisor.errors.ForgeError`
with the same ``field``, ``value`` and ``allowed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from forge_advisor import _native
from forge_advisor._native import Estimate, Estimator, Plan as NativePlan, PlanError, Ranked, Ranking, Shape, Shortfall
from forge_advisor.errors import ForgeError

__all__ = [
    "Estimate",
    "Estimator",
    "NativePlan",
    "OBJECTIVES",
    "PLAN_CHOICES",
    "VARLEN_ATTENTION",
    "PLAN_FLOAT_RANGES",
    "PLAN_INT_RANGES",
    "PlanError",
    "Ranked",
    "Ranking",
    "Shape",
    "Shortfall",
    "DEFAULT_HEADROOM",
    "RESERVED_ERROR_BAND",
    "VERSION",
    "call",
    "fits",
    "forge_error",
    "objective_value",
    "unsupported",
    "reserved_upper",
    "usable_bytes",
]

VERSION: str = _native.__version__
# Fraction of GPU memory kept free on top of the fit bound (rust/src/device.rs): what the
# estimate cannot see (a desktop, another process). The estimate's measured error band is
# already inside the bound (Estimate.peak_reserved_upper_bytes).
DEFAULT_HEADROOM: float = _native.DEFAULT_HEADROOM
RESERVED_ERROR_BAND: float = _native.RESERVED_ERROR_BAND
PLAN_CHOICES: dict[str, tuple[str, ...]] = dict(_native.PLAN_CHOICES)
PLAN_INT_RANGES: dict[str, tuple[int, int]] = dict(_native.PLAN_INT_RANGES)
PLAN_FLOAT_RANGES: dict[str, tuple[float, float]] = dict(_native.PLAN_FLOAT_RANGES)
OBJECTIVES: tuple[str, ...] = tuple(_native.OBJECTIVES)
# attention implementations that keep a flattened row's records apart without a mask
# (rust/src/plan.rs `Attention::varlen`)
VARLEN_ATTENTION: tuple[str, ...] = tuple(_native.VARLEN_ATTENTION)

T = TypeVar("T")


def forge_error(exc: ValueError, prefix: str = "") -> ForgeError:
    """The core's error as the one user-facing error type, keeping a PlanError's field."""
    message = f"{prefix}{exc}"
    if isinstance(exc, PlanError):
        return ForgeError(message, field=exc.field, value=exc.value, allowed=exc.allowed)
    return ForgeError(message)


def call(fn: Callable[..., T], *args: Any, prefix: str = "") -> T:
    """``fn(*args)`` with the core's ValueError turned into a ForgeError."""
    try:
        return fn(*args)
    except ValueError as exc:
        raise forge_error(exc, prefix) from None


def fits(reserved: int, usable: int) -> bool:
    """The one fit rule (rust/src/search.rs ``fits``): the fit bound (peak reserved raised by
    the measured error band) ≤ usable bytes."""
    return bool(_native.fits(reserved, usable))


def reserved_upper(peak_reserved: int, cuda_context: int) -> int:
    """The fit bound of a reserved figure (rust/src/device.rs ``reserved_upper``)."""
    return int(_native.reserved_upper(peak_reserved, cuda_context))


def usable_bytes(memory_bytes: int, headroom: float) -> int:
    """GPU memory minus the headroom: 24 GiB × (1 − 0.02) = 23.52 GiB (whole bytes)."""
    return int(call(_native.usable_bytes, memory_bytes, headroom))


def objective_value(objective: str, tokens_per_second: float | None, quality: float) -> float:
    """The scalar ``objective`` maximises (rust/src/objective.rs)."""
    return float(call(_native.objective_value, objective, tokens_per_second, quality))


def unsupported(plan: Any) -> str | None:
    """Why the training runtime cannot run ``plan``, or None (rust/src/plan.rs)."""
    return call(_native.unsupported, plan)
