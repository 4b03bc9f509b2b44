"""The decoders of forge_advisor/shapes/families/hybrid_extra.py (MiniMax-01, Lara-mini, Kimi
Linear, Bailing hybrid, MiniMax-M3's text decoder) with every layer kind present: the sweep's 2-layer default configs
see only the first kinds of each pattern. Golden: the meta-device model transformers builds
from the same config (benches/arch_sweep.py `compare`: total, per-layer counts, the
nn.Linear inventory and the fused expert tensors)."""

from __future__ import annotations

from typing import Any

import pytest

from benches.arch_sweep import compare, meta_model
from forge_advisor.errors import ForgeError
from forge_advisor.shapes import shape_from_config, supported_model_types

T = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
         max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
MLA = dict(kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, num_key_value_heads=4,
           moe_intermediate_size=32, num_experts_per_tok=2, n_group=1, topk_group=1)

CASES: dict[str, dict[str, Any]] = {
    "minimax-both-kinds-untied": dict(T, model_type="minimax", num_hidden_layers=3, head_dim=16, num_local_experts=4,
                                      num_experts_per_tok=2, block_size=32),
    "minimax-listed-kinds-tied": dict(T, model_type="minimax", num_hidden_layers=2, head_dim=8, num_local_experts=4,
                                      num_experts_per_tok=2, layer_types=["linear_attention", "full_attention"],
                                      tie_word_embeddings=True),
    "lara_mini-period": dict(T, model_type="lara_mini", num_hidden_layers=5, head_dim=16, linear_num_key_heads=2,
                             linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=8, num_experts=4,
                             num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                             attention_bias=True, tie_word_embeddings=False),
    "kimi_linear-mla-every-4th": dict(T, **MLA, model_type="kimi_linear", num_hidden_layers=5, q_lora_rank=None,
                                      num_local_experts=4, n_shared_experts=2, linear_num_heads=2, linear_head_dim=16),
    "kimi_linear-checkpoint-spelling": dict(T, **MLA, model_type="kimi_linear", num_hidden_layers=3, q_lora_rank=32,
                                            num_local_experts=4, first_k_dense_replace=2,
                                            linear_attn_config=dict(head_dim=16, num_heads=2, short_conv_kernel_size=3,
                                                                    full_attn_layers=[2], kda_layers=[1, 3])),
    "bailing_hybrid-group": dict(T, **MLA, model_type="bailing_hybrid", num_hidden_layers=4, q_lora_rank=None, head_dim=16,
                                 num_local_experts=4, n_shared_experts=1, layer_group_size=2, first_k_dense_replace=1),
    "bailing_hybrid-q-lora-listed": dict(T, **MLA, model_type="bailing_hybrid", num_hidden_layers=3, q_lora_rank=32, head_dim=8,
                                         num_local_experts=4, layer_types=["full_attention", "linear_attention", "linear_attention"],
                                         mlp_layer_types=["sparse", "dense", "sparse"], short_conv_kernel_size=3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_layer_kind_matches_meta(name: str) -> None:
    config = {k: v for k, v in CASES[name].items() if v is not None}
    shape = shape_from_config(dict(config), name)
    assert shape.model_type in supported_model_types()  # parsed, not the meta fallback
    diff = compare(shape, meta_model(config))
    assert diff is None, diff
    kinds = {(shape.layer_types[i].attention, shape.layer_types[i].mixer is not None) for i in shape.layers}
    assert kinds == {(True, False), (False, True)}  # both softmax and linear-attention layers


def test_linear_attention_layers_carry_an_approximating_mixer() -> None:
    # no rule of their own: the Gated DeltaNet rule with the layer's widths (README)
    shape = shape_from_config(dict(CASES["minimax-both-kinds-untied"]), "m")
    mixer = next(shape.layer_types[i].mixer for i in shape.layers if shape.layer_types[i].mixer)
    assert (mixer.kind, mixer.heads, mixer.head_dim, mixer.conv_dim, mixer.chunk_size) == ("gated_delta_net", 4, 16, 3 * 64, 32)
    kimi = shape_from_config({k: v for k, v in CASES["kimi_linear-checkpoint-spelling"].items() if v is not None}, "k")
    kda = next(kimi.layer_types[i].mixer for i in kimi.layers if kimi.layer_types[i].mixer)
    assert (kda.heads, kda.head_dim, kda.conv_dim, kda.conv_kernel) == (2, 16, 3 * 32, 3)
    # the q/k/v and output projections are default LoRA targets, the gate projections are not
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "kv_a_proj_with_mqa"} <= set(kimi.attention_linear_names())
    assert not {"b_proj", "f_a_proj", "g_b_proj"} & set(kimi.attention_linear_names())
    assert {"b_proj", "f_a_proj", "g_b_proj"} <= set(kimi.linear_names())


@pytest.mark.parametrize("name", ["minimax-both-kinds-untied", "bailing_hybrid-group"])
def test_estimates_price_the_linear_attention_scan(name: str) -> None:
    # the same widths with and without the mixer: the linear-attention layers keep the
    # approximating rule's fp32 chunk matrices and states beyond their projections
    import dataclasses

    from forge_advisor.estimate import estimate

    shape = shape_from_config({k: v for k, v in CASES[name].items() if v is not None}, name)
    plain = dataclasses.replace(shape, layer_types=tuple(dataclasses.replace(lt, mixer=None) for lt in shape.layer_types))
    kept = [estimate(s, "lora", max_length=64, gradient_checkpointing=False, gpu="H100 SXM").raw["breakdown"]["activations"]
            for s in (shape, plain)]
    assert kept[0] > kept[1]


M3 = dict(T, model_type="minimax_m3_vl_text", num_hidden_layers=3, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
          intermediate_size=32, dense_intermediate_size=80, shared_intermediate_size=48, index_n_heads=2, index_head_dim=8)
M3_CASES: dict[str, dict[str, Any]] = {
    "listed-kinds": dict(M3, layer_types=["minimax_m3_sparse", "full_attention", "minimax_m3_sparse"],
                         mlp_layer_types=["dense", "sparse", "sparse"]),
    # the checkpoint's spellings (configuration_minimax_m3_vl.py __post_init__)
    "checkpoint-spelling-tied": dict(M3, sparse_attention_config=dict(sparse_attention_freq=[0, 1, 1], sparse_index_dim=16),
                                     moe_layer_freq=[1, 0, 1], tie_word_embeddings=True),
}


@pytest.mark.parametrize("name", sorted(M3_CASES))
def test_minimax_m3_text_matches_meta(name: str) -> None:
    config = {k: v for k, v in M3_CASES[name].items() if v is not None}
    shape = shape_from_config(dict(config), name)
    diff = compare(shape, meta_model(config))
    assert diff is None, diff
    assert len({(lt.moe, len(lt.linears)) for lt in shape.layer_types}) == 3  # dense, sparse, sparse + indexer


@pytest.mark.parametrize(("config", "field"), [
    (dict(CASES["minimax-both-kinds-untied"], layer_types=["linear_attention", "lightning", "full_attention"]), "layer_types"),
    (dict(CASES["kimi_linear-mla-every-4th"], mlp_layer_types=["dense"]), "mlp_layer_types"),
    (dict(CASES["kimi_linear-checkpoint-spelling"], linear_attn_config=dict(full_attn_layers=[2], kda_layers=[1])), "kda_layers"),
    (dict(M3, moe_layer_freq=[1, 0]), "moe_layer_freq"),
])
def test_bad_configs_name_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ForgeError, match=field):
        shape_from_config({k: v for k, v in config.items() if v is not None}, "bad")


QWEN4 = dict(T, model_type="qwen4_exp_text", num_hidden_layers=4, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
             linear_key_head_dim=16, linear_value_head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
             shared_expert_intermediate_size=48, hc_count=2, hc_lowrank=16, indexer_n_heads=2, indexer_kv_heads=1,
             indexer_head_dim=16, indexer_budget=64, indexer_compress_ratio=4, ple_layer_ids=[1, 3], ple_embed_dim=32,
             heads_per_ngram=2, ngram_vocab_size_base=1000, make_ngram_vocab_size_divisible_by=8,
             layer_types=["linear_attention", "full_attention", "linear_attention", "indexed_attention"])
QWEN4_CASES: dict[str, dict[str, Any]] = {
    "text-every-kind": QWEN4,
    "nested-interval": dict(model_type="qwen4_exp", tie_word_embeddings=True,
                            text_config={k: v for k, v in QWEN4.items() if k not in ("model_type", "layer_types")}),
}


@pytest.mark.parametrize("name", sorted(QWEN4_CASES))
def test_qwen4_exp_matches_meta(name: str) -> None:
    # Gated DeltaNet and indexed attention inside gated hyper-connections, n-gram PLE layers
    # (whose tables are sized by the primes at or above ngram_vocab_size_base)
    config = QWEN4_CASES[name]
    shape = shape_from_config(dict(config), name)
    diff = compare(shape, meta_model(config))
    assert diff is None, diff
    assert shape.hints["hyper_connection_streams"] == 2


def test_qwen4_exp_ple_only_on_linear_layers() -> None:
    with pytest.raises(ForgeError, match="ple_layer_ids"):
        shape_from_config(dict(QWEN4, ple_layer_ids=[2]), "bad")
