"""Helpers shared by the family parsers (no registrations here)."""

from __future__ import annotations

from typing import Any

from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.model import Linear


def python_facts(
    c: ConfigReader, *, act: tuple[str, ...] = ("hidden_act",), act_default: str = "silu", positions: int | None = None
) -> dict[str, Any]:
    """The Python-only ``ModelShape`` fields: activation, context length, dtype, architectures."""
    if positions is None:
        positions = c.int("max_position_embeddings", default=0, minimum=0) or None
    archs = c.data.get("architectures")
    return {
        "hidden_act": c.str(*act, default=act_default) if act else act_default,
        "max_position_embeddings": positions,
        "torch_dtype": c.str("dtype", "torch_dtype", default="") or None,
        "architectures": tuple(a for a in archs if isinstance(a, str)) if isinstance(archs, list) else (),
    }


def layer_norm(dim: int, affine: bool = True, bias: bool = True) -> int:
    """Parameters of ``nn.LayerNorm(dim, elementwise_affine=affine, bias=bias)`` (torch docs:
    weight and bias of shape ``[dim]`` when affine)."""
    return (dim + (dim if bias else 0)) if affine else 0


def fused_experts(prefix: str, hidden: int, inter: int, count: int, bias: bool = False) -> list[Linear]:
    """transformers 5's fused expert tensors under ``prefix`` (``mlp.experts``…):
    ``gate_up_proj [E, 2I, H]`` and ``down_proj [E, H, I]`` (integrations/moe.py; 3-d
    Parameters, not nn.Linear: peft reaches them only through ``target_parameters``)."""
    return [
        Linear(f"{prefix}.gate_up_proj", hidden, 2 * inter, bias, "expert", count=count, lora_targetable=False),
        Linear(f"{prefix}.down_proj", inter, hidden, bias, "expert", count=count, lora_targetable=False),
    ]
