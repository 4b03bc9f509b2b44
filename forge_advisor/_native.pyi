"""Type stubs for the Rust extension (rust/src/python.rs). Every error is a ValueError with
a one-line message; nothing panics across the boundary."""

from typing import Any

__version__: str

class Shape:
    """A validated model shape held natively."""

    @staticmethod
    def from_json(text: str) -> Shape:
        """Parse and validate a `ModelShape.to_json()` document."""
    def to_json(self) -> str: ...
    @property
    def name(self) -> str: ...
    def num_parameters(self) -> int: ...
    def active_parameters(self) -> int: ...
    def embedding_parameters(self) -> int: ...
    def non_layer_parameters(self) -> int: ...
    def layer_parameters(self) -> list[int]: ...

class Estimator:
    """Peak memory and speed of training plans for one model (and optionally one GPU)."""

    def __init__(self, shape_json: str, gpu_json: str | None = None) -> None: ...
    def estimate(self, plan_json: str) -> dict[str, Any]:
        """One plan (`Plan.to_dict()` as JSON): peak_allocated_bytes, peak_reserved_bytes,
        peak_reserved_upper_bytes (the fit bound), default_headroom,
        peak_phase, breakdown, device, total/trainable parameters, frozen_layers,
        flops_per_token, tokens_per_step, tokens_per_second, step_seconds, mfu, quality."""
    def estimate_batch(self, plans_json: list[str]) -> list[tuple[int, int, float | None] | str]:
        """Many plans: (peak allocated, peak reserved, tokens/s) or the error message, per plan.
        Consecutive plans that differ only in per-device batch and accumulation share one
        preparation of their structure (Rust `Estimator::evaluate_many`)."""

class Search:
    """A discrete search space (rust/src/search.rs `Space`) bound to an estimator."""

    def __init__(self, estimator: Estimator, space_json: str) -> None: ...
    def outer_count(self) -> int: ...
    def inner(self, outer_json: str) -> dict[str, Any] | None:
        """Best fitting batch × accumulation × checkpointing for one outer plan:
        {"plan_json", "estimate", "value", "fits"}, or None if no batch divides the global batch."""
    def brute_force(self) -> tuple[dict[str, Any] | None, int, float]:
        """Exhaustive search: (best or None, plans evaluated, seconds)."""
