"""Linear-attention, state-space and short-convolution decoders
(forge_advisor/shapes/families/hybrid.py) with every layer kind present: the sweep's
2-layer default configs see only the first kinds of each pattern. Golden: the meta-device
model transformers builds from the same config (benches/arch_sweep.py `compare`: total,
per-layer counts, the nn.Linear inventory and the fused expert tensors)."""

from __future__ import annotations

from typing import Any

import pytest

from benches.arch_sweep import compare, meta_model
from forge_advisor.errors import ForgeError
from forge_advisor.shapes import shape_from_config, supported_model_types

T = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=128,
         max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
GDN = dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=8, linear_conv_kernel_dim=4)
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48)
MIXED = ["linear_attention", "linear_attention", "full_attention", "linear_attention"]
MAMBA2 = dict(mamba_n_heads=8, mamba_d_head=16, mamba_d_ssm=128, mamba_n_groups=2, mamba_d_state=16, mamba_chunk_size=32)

CASES: dict[str, dict[str, Any]] = {
    "qwen3_next-mixed-dense-layer": dict(T, **GDN, **MOE, model_type="qwen3_next", num_hidden_layers=4, layer_types=MIXED, mlp_only_layers=[1]),
    "qwen3_next-interval-tied": dict(T, **GDN, **MOE, model_type="qwen3_next", num_hidden_layers=4, layer_types=None,
                                     full_attention_interval=2, tie_word_embeddings=True, attention_bias=True),
    "qwen3_5_text-mixed": dict(T, **GDN, model_type="qwen3_5_text", num_hidden_layers=4, layer_types=MIXED),
    "qwen3_5-nested": dict(model_type="qwen3_5", text_config=dict(T, **GDN, num_hidden_layers=4, layer_types=MIXED), tie_word_embeddings=False),
    "qwen3_5_moe_text-mixed": dict(T, **GDN, **MOE, model_type="qwen3_5_moe_text", num_hidden_layers=4, layer_types=MIXED),
    "lfm2-conv-and-attention": dict(T, model_type="lfm2", num_hidden_layers=4, full_attn_idxs=[1, 3], layer_types=None, head_dim=None),
    "lfm2-conv-bias-untied-plain-ff": dict(T, model_type="lfm2", num_hidden_layers=3, layer_types=["conv", "full_attention", "conv"],
                                           conv_bias=True, tie_word_embeddings=False, block_auto_adjust_ff_dim=False, head_dim=None),
    "lfm3-every-kind": dict(T, model_type="lfm3", num_hidden_layers=4, layer_types=None, attention_bias=True),
    "lfm3-no-gate-no-sandwich-untied": dict(T, model_type="lfm3", num_hidden_layers=3, layer_types=["conv", "sliding_attention", "full_attention"],
                                            use_attention_gate=False, use_sandwich_norm=False, tie_word_embeddings=False, conv_bias=True),
    "mamba-auto-rank-bias": dict(model_type="mamba", hidden_size=64, num_hidden_layers=2, vocab_size=128, state_size=8,
                                 time_step_rank="auto", use_bias=True, use_conv_bias=False, expand=2),
    "falcon_mamba-untied": dict(model_type="falcon_mamba", hidden_size=64, num_hidden_layers=2, vocab_size=128, state_size=8,
                                time_step_rank=8, tie_word_embeddings=False, intermediate_size=96),
    "jamba-attention-and-experts": dict(T, model_type="jamba", num_hidden_layers=4, attn_layer_period=2, attn_layer_offset=1,
                                        expert_layer_period=2, expert_layer_offset=0, num_experts=4, num_experts_per_tok=2,
                                        mamba_d_state=8, mamba_dt_rank=8, head_dim=None),
    "falcon_h1-norm-biases": dict(T, **MAMBA2, model_type="falcon_h1", num_hidden_layers=2, mamba_rms_norm=True, attention_bias=True,
                                  mlp_bias=True, projectors_bias=True, mamba_proj_bias=True),
    "mamba2-bias-untied": dict(model_type="mamba2", hidden_size=64, num_hidden_layers=2, vocab_size=128, num_heads=8, head_dim=16,
                               n_groups=2, state_size=16, use_bias=True, use_conv_bias=False, tie_word_embeddings=False),
    "bamba-attention-layer": dict(T, model_type="bamba", num_hidden_layers=3, attn_layer_indices=[1], mamba_n_heads=4, mamba_d_head="auto",
                                  mamba_n_groups=2, mamba_d_state=16, mamba_proj_bias=True, head_dim=None),
    "granitemoehybrid-experts": dict(T, model_type="granitemoehybrid", num_hidden_layers=3, layer_types=["mamba", "attention", "mamba"],
                                     mamba_n_heads=2, num_local_experts=4, num_experts_per_tok=2, shared_intermediate_size=80, head_dim=None),
    "granitemoehybrid-dense": dict(T, model_type="granitemoehybrid", num_hidden_layers=2, layer_types=["full_attention", "linear_attention"],
                                   mamba_n_heads=4, mamba_d_head=32, num_local_experts=0, shared_intermediate_size=80, head_dim=None,
                                   tie_word_embeddings=True),
    "nemotron_h-every-kind": dict(T, model_type="nemotron_h", layers_block_type=["linear_attention", "mlp", "full_attention", "moe"],
                                  mamba_num_heads=8, mamba_head_dim=16, n_groups=2, ssm_state_size=16, chunk_size=32,
                                  n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, moe_shared_expert_intermediate_size=48),
    "nemotron_h-pattern-latent": dict(T, model_type="nemotron_h", hybrid_override_pattern="M*E-", mamba_num_heads=8, mamba_head_dim=16,
                                      n_groups=2, ssm_state_size=16, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                      moe_shared_expert_intermediate_size=48, moe_latent_size=32, mlp_bias=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_layer_kind_matches_meta(name: str) -> None:
    config = {k: v for k, v in CASES[name].items() if v is not None}
    shape = shape_from_config(dict(config), name)
    assert shape.model_type in supported_model_types()  # parsed, not the meta fallback
    diff = compare(shape, meta_model(config))
    assert diff is None, diff


def test_layers_carry_their_mixer() -> None:
    shape = shape_from_config(dict(CASES["qwen3_next-mixed-dense-layer"]), "q")
    kinds = [(shape.layer_types[i].attention, shape.layer_types[i].mixer.kind if shape.layer_types[i].mixer else None) for i in shape.layers]
    assert kinds == [(False, "gated_delta_net"), (False, "gated_delta_net"), (True, None), (False, "gated_delta_net")]
    gdn = shape.layer_types[shape.layers[0]].mixer
    # value heads × head_dim; q, k and v go through the convolution
    assert (gdn.d_inner, gdn.conv_dim, gdn.heads, gdn.key_heads) == (4 * 8, 2 * 2 * 16 + 4 * 8, 4, 2)
    h1 = shape_from_config(dict(CASES["falcon_h1-norm-biases"]), "h")
    lt = h1.layer_types[0]
    assert lt.attention and lt.mixer is not None and lt.mixer.kind == "mamba2"  # side by side
    # the wide mixer projections are default LoRA targets, the narrow gate projections are not
    q35 = shape_from_config(dict(CASES["qwen3_5_text-mixed"]), "q")
    assert {"in_proj_qkv", "in_proj_z", "out_proj", "q_proj", "o_proj"} <= set(q35.attention_linear_names())
    assert not {"in_proj_a", "in_proj_b"} & set(q35.attention_linear_names())
    assert {"in_proj_a", "in_proj_b"} <= set(q35.linear_names())


@pytest.mark.parametrize(("config", "field"), [
    (dict(T, **GDN, model_type="qwen3_5_text", num_hidden_layers=2, layer_types=["linear_attention", "softmax"]), "layer_types"),
    (dict(T, **{**GDN, "linear_num_key_heads": 3}, model_type="qwen3_5_text", num_hidden_layers=2), "linear_num_key_heads"),
    (dict(T, model_type="nemotron_h", hybrid_override_pattern="MX", mamba_num_heads=8, mamba_head_dim=16), "layers_block_type"),
    (dict(T, model_type="lfm2", num_hidden_layers=2, block_ffn_dim_multiplier="big"), "block_ffn_dim_multiplier"),
])
def test_bad_configs_name_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ForgeError, match=field):
        shape_from_config(config, "bad")


# Full-size published configs against their checkpoints' tensor totals (the Hub's safetensors
# metadata, as transcribed with the config in the modelsheet_cli project's catalog-parameter tests):
# Qwen3-Coder-Next (qwen3_next, https://huggingface.co/Qwen/Qwen3-Coder-Next/blob/main/config.json):
# 79,674,391,296 in total, 3,874,929,408 active (total less the inactive experts' tensors);
# NVIDIA-Nemotron-3-Super-120B-A12B (nemotron_h with latent experts): BF16 tensors
# 123,611,012,096 less the multi-token-prediction layers' 2,942,324,736 (not part of
# NemotronHForCausalLM), 12,770,216,960 active.
QWEN3_CODER_NEXT = dict(model_type="qwen3_next", hidden_size=2048, num_hidden_layers=48, vocab_size=151936, head_dim=256,
                        num_attention_heads=16, num_key_value_heads=2, num_experts=512, num_experts_per_tok=10,
                        moe_intermediate_size=512, shared_expert_intermediate_size=512, linear_num_key_heads=16,
                        linear_key_head_dim=128, linear_num_value_heads=32, linear_value_head_dim=128,
                        linear_conv_kernel_dim=4, full_attention_interval=4, tie_word_embeddings=False)
NEMOTRON_3_SUPER = dict(model_type="nemotron_h", hidden_size=4096, vocab_size=131072,
                        hybrid_override_pattern="MEMEMEM*EMEMEMEM*EMEMEMEM*EMEMEMEMEM*EMEMEMEMEM*EMEMEMEMEM*EMEMEMEMEM*EMEMEMEM*EMEMEMEME",
                        mamba_num_heads=128, mamba_head_dim=64, n_groups=8, ssm_state_size=128, conv_kernel=4,
                        num_attention_heads=32, num_key_value_heads=2, head_dim=128, n_routed_experts=512, n_shared_experts=1,
                        num_experts_per_tok=22, moe_latent_size=1024, moe_intermediate_size=2688,
                        moe_shared_expert_intermediate_size=5376, mlp_hidden_act="relu2", num_nextn_predict_layers=1,
                        tie_word_embeddings=False, intermediate_size=5376)


@pytest.mark.parametrize(("config", "total", "active"), [
    (QWEN3_CODER_NEXT, 79_674_391_296, 3_874_929_408),
    (NEMOTRON_3_SUPER, 123_611_012_096 - 2_942_324_736, 12_770_216_960),
])
def test_published_checkpoints_count_exactly(config: dict[str, Any], total: int, active: int) -> None:
    shape = shape_from_config(dict(config), "published")
    assert (shape.num_parameters, shape.active_parameters) == (total, active)


def test_peft_refuses_out_proj_of_mamba_models() -> None:
    # peft/tuners/tuners_utils.py `_check_lora_target_modules_mamba` raises for out_proj in
    # falcon_h1, mamba, mamba2, falcon_mamba and nemotron_h: it is no default target, all-linear
    # leaves it out (the runtime names the others), and asking for it is a clear error
    from forge_advisor import estimate
    from forge_advisor.presets.convert import target_modules_for
    from forge_advisor.presets import get_preset

    h1 = shape_from_config(dict(CASES["falcon_h1-norm-biases"]), "h1")
    assert "out_proj" not in h1.attention_linear_names() and "out_proj" not in h1.linear_names()
    assert {"in_proj", "q_proj", "o_proj"} <= set(h1.attention_linear_names())
    targets = target_modules_for(get_preset("lora", lora_target_modules="all-linear"), h1)
    assert isinstance(targets, list) and "out_proj" not in targets and "in_proj" in targets
    with pytest.raises(ForgeError, match="out_proj"):
        estimate(h1, "lora", lora_target_modules=["in_proj", "out_proj"], max_length=32)
    jamba = shape_from_config(dict(CASES["jamba-attention-and-experts"]), "j")  # not in peft's list
    assert "out_proj" in jamba.attention_linear_names()


def _flops_and_activations(shape: Any, length: int) -> tuple[float, int]:
    from forge_advisor.estimate import estimate

    r = estimate(shape, "lora", max_length=length, gradient_checkpointing=False, gpu="H100 SXM")
    return r.raw["flops_per_token"], r.raw["breakdown"]["activations"]


@pytest.mark.parametrize("name", ["mamba2-bias-untied", "lfm2-conv-bias-untied-plain-ff", "qwen3_5_text-mixed"])
def test_mixers_have_no_quadratic_term(name: str) -> None:
    # a scan's FLOPs and saved tensors per token do not grow with the context (chunked
    # recurrences and convolutions); only softmax-attention layers add a term per context token
    config = {k: v for k, v in CASES[name].items() if v is not None}
    config["max_position_embeddings"] = 1 << 16
    shape = shape_from_config(config, name)
    f1, a1 = _flops_and_activations(shape, 1024)
    f2, a2 = _flops_and_activations(shape, 4096)
    attention_layers = sum(shape.layer_types[i].attention for i in shape.layers)
    # causal attention: 4·heads·head_dim·ctx/2 forward and 2.5× that backward per layer (throughput.rs)
    quadratic = attention_layers * 4 * shape.num_attention_heads * shape.head_dim * 0.5 * 3.5 * (4096 - 1024)
    assert f2 - f1 == pytest.approx(quadratic)
    assert a2 == 4 * a1  # activations linear in tokens (SDPA keeps no score matrix)


def test_mixer_kinds_reach_the_estimator() -> None:
    # the same widths with and without the mixer's scan: the Gated DeltaNet layers keep more
    # than their projections alone (fp32 chunk matrices and states, counted in activations.rs)
    import dataclasses

    shape = shape_from_config({k: v for k, v in CASES["qwen3_5_text-mixed"].items() if v is not None}, "q")
    plain = dataclasses.replace(shape, layer_types=tuple(dataclasses.replace(lt, mixer=None) for lt in shape.layer_types))
    _, with_mixer = _flops_and_activations(shape, 64)
    _, without = _flops_and_activations(plain, 64)
    assert with_mixer > without


def test_a_mixer_without_its_widths_is_refused_with_the_field() -> None:
    import dataclasses

    shape = shape_from_config({k: v for k, v in CASES["mamba2-bias-untied"].items()}, "m")
    bad = dataclasses.replace(shape, layer_types=tuple(
        dataclasses.replace(lt, mixer=dataclasses.replace(lt.mixer, chunk_size=0)) for lt in shape.layer_types))
    with pytest.raises(ForgeError, match="mixer.chunk_size=0"):
        bad.num_parameters  # noqa: B018 (validated by the Rust core)
