"""``dpo``: direct preference optimisation with trl, LoRA by default.

LoRA by default because then the frozen base, with the adapters switched off, *is* the
reference model: no second copy of the weights (trl does this for a PeftModel). Set
``method="full"`` for full-weight DPO (trl then keeps a frozen reference copy).
The learning rate is trl's customary 5e-7 for DPO; raise it (e.g. 5e-6) for small adapters.
"""

from __future__ import annotations

from dataclasses import dataclass

from forge_advisor.presets.lora import LoRAPreset
from forge_advisor.presets.registry import register_preset


@register_preset
@dataclass
class DPOPreset(LoRAPreset):
    name = "dpo"
    description = "DPO (trl): beta 0.1, lr 5e-7, max_length 1024, prompts ≤ 512 tokens, LoRA adapters"

    trainer: str = "dpo"
    beta: float = 0.1
    learning_rate: float = 5e-7
    max_length: int = 1024
    max_prompt_length: int = 512
