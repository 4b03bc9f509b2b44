"""``qlora``: LoRA on a 4-bit NF4 base with double quantization, computing in bf16."""

from __future__ import annotations

from dataclasses import dataclass

from forge_advisor.presets.lora import LoRAPreset
from forge_advisor.presets.registry import register_preset


@register_preset
@dataclass
class QLoRAPreset(LoRAPreset):
    name = "qlora"
    description = "LoRA on a 4-bit NF4 base (double quantization, bf16 compute)"

    method: str = "qlora"
    load_in_4bit: bool = True
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: str = "bfloat16"
