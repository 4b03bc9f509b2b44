"""Fallback for architectures without a built-in parser: instantiate the model with
transformers on the meta device (no memory, no weights) and read the inventory from
the real module tree. Needs the ``[train]`` extra; never runs remote code."""

from __future__ import annotations

from typing import Any

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.model import ModelShape

__all__ = ["shape_from_meta"]


def shape_from_meta(config: dict[str, Any], name: str, reason: ForgeError) -> ModelShape:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise reason from None
    raise reason  # replaced by the meta-device walker
