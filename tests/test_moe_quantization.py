"""QLoRA on transformers 5 MoE models: what bitsandbytes quantises and what it leaves.

transformers 5 stores routed experts as fused 3-D ``nn.Parameter``s
(``mlp.experts.gate_up_proj [E, 2I, H]``); ``replace_with_bnb_linear`` swaps only
``nn.Linear`` / ``Conv1D`` modules for ``Linear4bit``, so the experts and the router stay in
the compute dtype, and peft's ``prepare_model_for_kbit_training`` casts every non-4-bit half
parameter to fp32. Golden: the real ``replace_with_bnb_linear`` on the meta-device model.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import BitsAndBytesConfig
from transformers.integrations import replace_with_bnb_linear

from forge_advisor.estimate import estimate
from forge_advisor.plan import Plan
from forge_advisor.shapes import shape_from_config

MOE = {
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32),
    "gpt_oss": dict(num_local_experts=4, num_experts_per_tok=2),
    "deepseek_v3": dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1, n_group=1,
                        topk_group=1, first_k_dense_replace=1, q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8,
                        qk_nope_head_dim=8, v_head_dim=16),
    "llama4_text": dict(num_local_experts=4, num_experts_per_tok=1, intermediate_size_mlp=80),
}
BASE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=128, tie_word_embeddings=False)


def bnb_split(config: dict) -> tuple[int, int]:
    """(weights bitsandbytes turns into 4-bit, every other parameter) on the real model."""
    fields = dict(config)
    c = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(c, dtype=torch.bfloat16)
    model = replace_with_bnb_linear(model, modules_to_not_convert=["lm_head"], quantization_config=BitsAndBytesConfig(load_in_4bit=True))
    four_bit = sum(m.weight.numel() for m in model.modules() if type(m).__name__ == "Linear4bit")
    return four_bit, sum(p.numel() for p in model.parameters()) - four_bit


@pytest.mark.parametrize("model_type", sorted(MOE))
def test_qlora_weights_quantise_only_linear_modules(model_type: str) -> None:
    config = {**BASE, **MOE[model_type], "model_type": model_type}
    four_bit, rest = bnb_split(config)
    shape = shape_from_config(dict(config), model_type)
    assert four_bit + rest == shape.num_parameters
    est = estimate(shape, Plan.from_dict({"method": "qlora"}))
    # nf4 packs two weights per byte; everything else is fp32 after prepare_model_for_kbit_training
    golden = (four_bit + 1) // 2 + 4 * rest
    if model_type == "llama4_text":
        # Llama4Router subclasses nn.Linear: peft wraps it (isinstance), bitsandbytes does not
        # (`type(module) is nn.Linear`); the estimate counts its [E, H] weight as 4-bit
        router = BASE["num_hidden_layers"] * MOE[model_type]["num_local_experts"] * BASE["hidden_size"]
        golden -= router * 4 - router // 2
    assert est.raw["breakdown"]["weights"] == golden


def test_catalog_moe_qlora_keeps_experts_in_fp32() -> None:
    """Qwen3-30B-A3B: 48 layers x 128 experts x 3 x 2048 x 768 expert weights (29.0 B) stay
    out of 4-bit, so QLoRA needs ~116 GB of fp32 experts: no 24 GB card fits it."""
    from forge_advisor.shapes import load_shape

    shape = load_shape("Qwen/Qwen3-30B-A3B")
    experts = 48 * 128 * 3 * 2048 * 768
    est = estimate(shape, Plan.from_dict({"method": "qlora", "per_device_train_batch_size": 1, "max_length": 512}))
    assert est.raw["breakdown"]["weights"] > 4 * experts
