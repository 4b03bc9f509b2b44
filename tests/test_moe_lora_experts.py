"""LoRA on fused MoE experts (peft ``target_parameters``) end to end on CPU.

transformers 5 stores routed experts as fused 3-D ``nn.Parameter``s; peft adapts them through
``LoraConfig(target_parameters=...)`` (its ``ParamWrapper``). A tiny random Qwen3-MoE and
gpt-oss (whose expert tensors are stored transposed, ``[E, in, out]``) train a few steps
through the runtime with ``lora_target_parameters="experts"``; the expert adapters must
learn (peft initialises ``lora_B`` to zero: only a gradient moves it), and the trainable
count must be peft's formula for a ``[E, ·, ·]`` tensor, ``r · E · (in + out)`` (lora_A =
Linear(in, r·E), lora_B = Linear(r·E, out), peft/tuners/lora/layer.py ParamWrapper), which
the estimator must price the same.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from forge_advisor.errors import ForgeError
from forge_advisor.estimate import estimate
from forge_advisor.plan import Plan
from forge_advisor.shapes import shape_from_config
from forge_advisor.train import run
from forge_advisor.train.demo import build_tokenizer

H, I, E, K, R, LAYERS = 64, 32, 4, 2, 8, 2
BASE = dict(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            vocab_size=512, tie_word_embeddings=False, max_position_embeddings=512)
MOE = {
    # Qwen3MoeExperts: gate_up_proj [E, 2I, H], down_proj [E, H, I]
    "qwen3_moe": dict(num_experts=E, num_experts_per_tok=K, moe_intermediate_size=I, intermediate_size=96),
    # GptOssExperts (is_transposed): gate_up_proj [E, H, 2I], down_proj [E, I, H]
    "gpt_oss": dict(num_local_experts=E, num_experts_per_tok=K, intermediate_size=I, layer_types=["full_attention"] * LAYERS),
}
FAST = {"max_steps": 2, "logging_steps": 1, "save_steps": 100, "lora_r": R, "lora_alpha": 2 * R, "lora_dropout": 0.0,
        "lora_target_parameters": "experts", "per_device_train_batch_size": 2, "max_length": 64}


def _model_dir(tmp_path, model_type: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **BASE, **MOE[model_type])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    out = tmp_path / model_type
    model.save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    return out, config.to_dict()


@pytest.mark.parametrize("model_type", sorted(MOE))
def test_expert_adapters_train(model_type, tmp_path):
    model_dir, config = _model_dir(tmp_path, model_type)
    r = run(str(model_dir), None, "lora", tmp_path / "out", demo=True, overrides=FAST, quiet=True)
    assert r.status == "completed" and r.global_step == 2
    # peft's count: experts r·E·(H + 2I) + r·E·(I + H) per layer; q/k/v/o r·(in + out)
    q, kv = 4 * 16, 2 * 16
    attn = R * ((H + q) + 2 * (H + kv) + (q + H))
    experts = R * E * (H + 2 * I) + R * E * (I + H)
    assert r.trainable_parameters == LAYERS * (attn + experts)
    shape = shape_from_config(config, model_type)
    plan = Plan.from_dict({"lora_r": R, "lora_alpha": 2 * R, "lora_dropout": 0.0, "lora_target_parameters": "experts", "max_length": 64})
    assert estimate(shape, plan).raw["trainable_parameters"] == r.trainable_parameters
    # the expert adapters learned: lora_B starts at zero and only a gradient moves it
    state = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    expert_b = {k: v for k, v in state.items() if ".experts." in k and "lora_B" in k}
    assert len(expert_b) == 2 * LAYERS, sorted(state)  # gate_up and down in every layer
    assert all(v.abs().sum() > 0 for v in expert_b.values())
    cfg = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert sorted(cfg["target_parameters"]) == ["experts.down_proj", "experts.gate_up_proj"]


def test_target_parameters_refuse_dropout_and_dense_models():
    with pytest.raises(ForgeError, match="lora_dropout"):
        Plan.from_dict({"lora_target_parameters": "experts"})  # the lora preset's 0.05 dropout
    dense = shape_from_config({**BASE, "model_type": "qwen3", "intermediate_size": 96}, "qwen3")
    with pytest.raises(ForgeError, match="lora_target_parameters"):
        estimate(dense, Plan.from_dict({"lora_target_parameters": "experts", "lora_dropout": 0.0, "max_length": 64}))
    moe = shape_from_config({**BASE, **MOE["qwen3_moe"], "model_type": "qwen3_moe"}, "qwen3_moe")
    with pytest.raises(ForgeError, match="experts.gate_up_proj"):
        estimate(moe, Plan.from_dict({"lora_target_parameters": ["gate"], "lora_dropout": 0.0, "max_length": 64}))
    # one fused tensor by name next to one module, at the default rank 16:
    # q_proj 16·(64 + 64) and experts.down_proj [E, H, I] 16·E·(I + H) per layer
    plan = Plan.from_dict({"lora_target_parameters": ["experts.down_proj"], "lora_dropout": 0.0, "lora_target_modules": ["q_proj"],
                           "max_length": 64})
    assert estimate(moe, plan).raw["trainable_parameters"] == LAYERS * (16 * (H + 64) + 16 * E * (I + H))


def test_expert_weight_gradient_flops():
    """With the merged expert weight requiring grad, each routed token (top-k experts) costs the
    weight gradient's 2·in·out per adapted tensor: 2·K·(H·2I + I·H) per layer (Kaplan et al.)."""
    moe = shape_from_config({**BASE, **MOE["qwen3_moe"], "model_type": "qwen3_moe"}, "qwen3_moe")
    base = {"lora_dropout": 0.0, "max_length": 64}
    without = estimate(moe, Plan.from_dict(base)).raw["flops_per_token"]
    with_experts = estimate(moe, Plan.from_dict({**base, "lora_target_parameters": "experts"})).raw["flops_per_token"]
    assert with_experts - without == LAYERS * 2 * K * (H * 2 * I + I * H)
