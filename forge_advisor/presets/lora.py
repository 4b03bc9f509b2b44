"""``lora``: LoRA adapters on the attention projections, base weights frozen in half precision."""

from __future__ import annotations

from dataclasses import dataclass

from forge_advisor.presets.base import BasePreset
from forge_advisor.presets.registry import register_preset


@register_preset
@dataclass
class LoRAPreset(BasePreset):
    name = "lora"
    description = "LoRA r 16, alpha 32 on q/k/v/o: lr 2e-4 (adapters learn ~10× faster than full weights)"

    method: str = "lora"
    learning_rate: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_bias: str = "none"
