"""``dpo``: direct preference optimisation with trl, LoRA by default.

LoRA by default because then the frozen base, with the adapters switched off, *is* the
reference model: no second copy of the weights (trl does this for a PeftModel). Set
``method="full"`` for full-weight DPO (trl then keeps a frozen reference copy).
The learning rate is 5e-6, LoRA DPO's (the alignment-handbook's zephyr-7b-beta
dpo/config_qlora.yaml); full-weight DPO takes 5e-7 (its dpo/config_full.yaml), which
``get_preset("dpo", method="full")`` picks (presets/planning.py ``LEARNING_RATES``).
"""

from __future__ import annotations

from dataclasses import dataclass

from forge_advisor.presets.lora import LoRAPreset
from forge_advisor.presets.registry import register_preset


@register_preset
@dataclass
class DPOPreset(LoRAPreset):
    name = "dpo"
    description = "DPO (trl): beta 0.1, lr 5e-6 (LoRA), max_length 1024, prompts ≤ 512 tokens, LoRA adapters"

    trainer: str = "dpo"
    beta: float = 0.1
    learning_rate: float = 5e-6
    max_length: int = 1024
    max_prompt_length: int = 512
