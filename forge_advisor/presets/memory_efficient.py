"""``memory_efficient``: the smallest footprint that still trains well.

4-bit base, gradient checkpointing, per-device batch 1 with accumulation 16 (the same
16 sequences per step as 4 × 4), and the paged 8-bit AdamW (optimizer state in 8 bits,
paged to CPU under memory pressure).
"""

from __future__ import annotations

from dataclasses import dataclass

from forge_advisor.presets.qlora import QLoRAPreset
from forge_advisor.presets.registry import register_preset


@register_preset
@dataclass
class MemoryEfficientPreset(QLoRAPreset):
    name = "memory_efficient"
    description = "4-bit base, checkpointing, batch 1 × 16 accumulation, paged 8-bit AdamW"

    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 16
    gradient_checkpointing: bool = True
    optim: str = "paged_adamw_8bit"
