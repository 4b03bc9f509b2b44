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


def test_the_24gb_question_gets_a_plain_answer():
    """unsloth #3162: Qwen3-30B-A3B / gpt-oss-20b on one 24 GB card. On the Hugging Face stack
    nothing fits (61 GB of bf16 weights; 4-bit leaves the fused experts in half precision), and
    the answer says why and what would fit, naming the levers the multi-GPU plan needs."""
    from forge_advisor import recommend

    for model, share, mxfp4 in (("Qwen/Qwen3-30B-A3B", "95%", False), ("openai/gpt-oss-20b", "91%", True)):
        rec = recommend(model, "RTX 4090")
        assert not rec.recommendations
        assert f"fused expert tensors ({share} of the parameters" in rec.suggestion
        assert ("MXFP4 checkpoint is dequantised to bf16" in rec.suggestion) is mxfp4
        assert "2 × RTX 4090 fit" in rec.suggestion and "+ offload_params" in rec.suggestion
    # a dense model gets no such note
    assert "fused expert" not in (recommend("meta-llama/Llama-3.1-70B", "RTX 4090").suggestion or "")


def test_router_logits_kept_for_the_load_balancing_loss():
    """`output_router_logits=True` records every router's logits for the aux loss. Golden: the
    fake-tensor harness on Qwen3-30B-A3B at 2 layers, batch 2 × 512, measured twice differing
    only in that flag: +524,288 B at the peak with and without checkpointing (= 2 layers ×
    1,024 tokens × 128 experts × 2 bytes; cases q3moe-lora-aux* in benches/cases_accuracy.json)."""
    import json as _json
    from pathlib import Path

    from benches.truth.faketensor import config_at_depth

    cases = _json.loads((Path(__file__).resolve().parents[1] / "benches" / "cases_accuracy.json").read_text())
    aux = next(c for c in cases if c["name"] == "q3moe-lora-aux")["config"]
    plain = {k: v for k, v in aux.items() if k != "output_router_logits"}
    for gc in (True, False):
        plan = Plan.from_dict({"per_device_train_batch_size": 2, "max_length": 512, "gradient_checkpointing": gc})
        with_aux = estimate(shape_from_config(config_at_depth(aux, 2), "q3"), plan).peak_allocated_bytes
        without = estimate(shape_from_config(config_at_depth(plain, 2), "q3"), plan).peak_allocated_bytes
        assert with_aux - without == 524_288


def test_train_refuses_unknown_target_parameters(tmp_path, capsys):
    """peft itself only warns "no parameter was matched" and trains without the experts: the
    runtime refuses first, in one line, before loading anything, and writes nothing."""
    from forge_advisor.cli.main import main

    model_dir, _ = _model_dir(tmp_path, "qwen3_moe")
    out = tmp_path / "out"
    capsys.readouterr()  # the model folder's own save messages
    code = main(["train", "--model", str(model_dir), "--demo", "--preset", "lora", "--output", str(out),
                 "--lora-target-parameters", "experts.up_proj", "--lora-dropout", "0", "--max-length", "64"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("error: ")
    assert "experts.gate_up_proj, experts.down_proj" in err and not out.exists()
