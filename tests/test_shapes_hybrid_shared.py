"""Zamba 2 (a transformer block tied across layers, with per-invocation adapters), LFM2-MoE
and OLMo-Hybrid (forge_advisor/shapes/families/hybrid_shared.py). Golden: the meta-device
model transformers builds from the same config (benches/arch_sweep.py `compare`: total,
per-layer counts with each tied tensor owned by the first layer holding it, the nn.Linear
inventory and the fused expert tensors), and peft's adapters on that model."""

from __future__ import annotations

from typing import Any

import pytest

from benches.arch_sweep import compare, meta_model
from forge_advisor.errors import ForgeError
from forge_advisor.shapes import shape_from_config

T = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
         max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
Z2 = dict(T, model_type="zamba2", mamba_d_state=16, n_mamba_heads=4, mamba_ngroups=2, chunk_size=32, adapter_rank=8)
# two shared blocks over four hybrid layers: layers 0 and 2 own blocks 0 and 1, layers 3 and 5 tie to them
Z2_PATTERN = ["hybrid", "mamba", "hybrid", "hybrid", "mamba", "hybrid"]

CASES: dict[str, dict[str, Any]] = {
    "zamba2-two-blocks-attention-adapters": dict(Z2, num_hidden_layers=6, layers_block_type=Z2_PATTERN, num_mem_blocks=2,
                                                 use_shared_attention_adapter=True),
    "zamba2-one-block-biases-untied": dict(Z2, num_hidden_layers=4, layers_block_type=["mamba", "hybrid", "hybrid", "hybrid"],
                                           num_mem_blocks=1, add_bias_linear=True, tie_word_embeddings=False, num_key_value_heads=4),
    "zamba2-no-hybrid": dict(Z2, num_hidden_layers=2, layers_block_type=["mamba", "mamba"]),
    "zamba-one-block-three-invocations": dict(T, model_type="zamba", num_hidden_layers=5,
                                              layers_block_type=["mamba", "hybrid", "mamba", "hybrid", "hybrid"],
                                              n_mamba_heads=2, mamba_d_state=8, mamba_dt_rank=8, mamba_proj_bias=True),
    "zamba-default-pattern-one-head": dict(T, model_type="zamba", num_hidden_layers=6, attn_layer_period=2, attn_layer_offset=0,
                                           n_mamba_heads=1, mamba_d_state=8, mamba_conv_bias=False),
    "zamba-untied": dict(T, model_type="zamba", num_hidden_layers=3, layers_block_type=["hybrid", "mamba", "hybrid"],
                         n_mamba_heads=4, mamba_d_state=8, tie_word_embeddings=False),
    "lfm2_moe-dense-then-experts": dict(T, model_type="lfm2_moe", num_hidden_layers=4, layer_types=["conv", "full_attention", "conv", "full_attention"],
                                        num_dense_layers=1, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32),
    "lfm2_moe-conv-bias-untied": dict(T, model_type="lfm2_moe", num_hidden_layers=3, layer_types=["conv", "conv", "full_attention"],
                                      num_dense_layers=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                      conv_bias=True, tie_word_embeddings=False),
    "olmo_hybrid-defaults": dict(T, model_type="olmo_hybrid", num_hidden_layers=4, layer_types=None),
    "olmo_hybrid-own-widths-bias": dict(T, model_type="olmo_hybrid", num_hidden_layers=3,
                                        layer_types=["linear_attention", "full_attention", "linear_attention"], attention_bias=True,
                                        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=8),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_layer_kind_matches_meta(name: str) -> None:
    config = dict(CASES[name])
    shape = shape_from_config(dict(config), name)
    assert compare(shape, meta_model(config)) is None


def test_a_tied_block_counts_once_and_runs_everywhere() -> None:
    config = CASES["zamba2-two-blocks-attention-adapters"]
    shape = shape_from_config(dict(config), "z")
    model = meta_model(dict(config))
    layers = model.model.layers
    # transformers ties the weights, not the modules (modeling_zamba2.py `_tied_weights_keys`)
    assert layers[0].shared_transformer.self_attn.q_proj.weight is layers[3].shared_transformer.self_attn.q_proj.weight
    assert layers[0].shared_transformer.self_attn.q_proj is not layers[3].shared_transformer.self_attn.q_proj
    owner, sharer = (shape.layer_types[shape.layers[i]] for i in (0, 3))
    q = {lin.name: lin for lin in sharer.linears}["shared_transformer.self_attn.q_proj"]
    assert q.shared and not q.idle
    assert not {lin.name: lin for lin in owner.linears}["shared_transformer.self_attn.q_proj"].shared
    # layer 3 is the block's second invocation (slot 2): it runs that adapter, not slot 0's
    run = {lin.name.split(".")[3] for lin in sharer.linears if "adapter_list" in lin.name and not lin.idle}
    assert run == {"2"}
    # full fine-tuning trains each tensor once: the trainable count is the model's
    from forge_advisor import estimate

    full = estimate(shape, "sft", max_length=32, gradient_checkpointing=False)
    assert full.native.trainable_parameters == sum(p.numel() for p in model.parameters())


def test_lora_on_a_tied_block_adapts_every_invocation() -> None:
    # peft wraps modules, and each hybrid layer holds its own module objects around the tied
    # weights: one adapter per invocation (measured with peft on the meta model)
    import peft

    from forge_advisor import estimate

    config = CASES["zamba2-two-blocks-attention-adapters"]
    shape = shape_from_config(dict(config), "z")
    targets = ["q_proj", "v_proj", "down_proj", "in_proj", "linear"]
    model = peft.get_peft_model(meta_model(dict(config)), peft.LoraConfig(r=4, target_modules=targets))
    adapters = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    est = estimate(shape, "lora", lora_r=4, lora_target_modules=targets, max_length=32, gradient_checkpointing=False)
    assert est.native.trainable_parameters == adapters


def test_zamba_ties_one_block_and_keeps_per_head_mamba_weights_out_of_peft() -> None:
    shape = shape_from_config(dict(CASES["zamba-one-block-three-invocations"]), "z")
    hybrid = [shape.layer_types[t] for t in shape.layers if shape.layer_types[t].attention]
    assert [any(lin.shared for lin in lt.linears) for lt in hybrid] == [False, True, True]
    # x_proj_weight / dt_proj_weight are nn.Parameters: no LoRA target, no bitsandbytes
    assert "x_proj_weight" not in shape.linear_names() and "in_proj" in shape.linear_names()


def test_shared_blocks_are_priced_per_invocation() -> None:
    # the same weights run four times cost four layers' activations, stored once
    from forge_advisor import estimate

    config = CASES["zamba2-two-blocks-attention-adapters"]
    shared = shape_from_config(dict(config), "z")
    untied = dict(config, num_mem_blocks=4)  # four blocks: every hybrid layer owns its own
    own = shape_from_config(untied, "u")
    assert own.num_parameters > shared.num_parameters
    a = estimate(shared, "sft", max_length=64, gradient_checkpointing=False).native
    b = estimate(own, "sft", max_length=64, gradient_checkpointing=False).native
    assert a.breakdown.activations == b.breakdown.activations
    assert a.flops_per_token == b.flops_per_token
    assert a.breakdown.weights < b.breakdown.weights and a.breakdown.optimizer_states < b.breakdown.optimizer_states


@pytest.mark.parametrize("config, field", [
    (dict(Z2, num_hidden_layers=2, layers_block_type=["mamba", "attention"]), "layers_block_type"),
    (dict(Z2, num_hidden_layers=2, layers_block_type=None), "layers_block_type"),
    (dict(Z2, num_hidden_layers=2, layers_block_type=["hybrid", "mamba"], mamba_expand="two"), "mamba_expand"),
    (dict(T, model_type="zamba", num_hidden_layers=2, layers_block_type=["hybrid", "hybrid"], n_mamba_heads=3), "n_mamba_heads"),
    (dict(T, model_type="zamba", num_hidden_layers=2, layers_block_type="hybrid"), "layers_block_type"),
    (dict(T, model_type="lfm2_moe", num_hidden_layers=2, layer_types=None, num_experts=4, moe_intermediate_size=32), "layer_types"),
    (dict(T, model_type="olmo_hybrid", num_hidden_layers=2, layer_types=["conv", "full_attention"]), "layer_types"),
])
def test_bad_configs_name_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ForgeError, match=field):
        shape_from_config(config, "bad")
