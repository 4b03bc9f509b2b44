"""``sft``: full fine-tuning, every weight trained (BasePreset's defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from forge_advisor.presets.base import BasePreset
from forge_advisor.presets.registry import register_preset


@register_preset
@dataclass
class SFTPreset(BasePreset):
    name = "sft"
    description = "full fine-tuning: lr 2e-5, 3 epochs, batch 4 × 4 accumulation, 10% warmup"

    method: str = "full"
