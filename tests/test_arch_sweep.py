"""The architecture sweep (benches/arch_sweep.py): every causal-LM model type of the
installed transformers, built from its shrunk default config on the meta device, is either
counted exactly by the torch-free parser or refused with the mechanism it lacks."""

from __future__ import annotations

from typing import Any

import pytest

from benches.arch_sweep import run, shrink
from forge_advisor.shapes.unsupported import REASONS


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return run()


def test_no_type_is_miscounted(report: dict[str, Any]) -> None:
    bad = [f"{r['model_type']}: {r['detail']}" for r in report["rows"] if r["status"] == "mismatch"]
    assert not bad, "\n".join(bad)


def test_every_buildable_type_is_exact_or_refused_with_a_reason(report: dict[str, Any]) -> None:
    for r in report["rows"]:
        assert r["status"] in ("exact", "unsupported", "not buildable"), r
        if r["status"] == "unsupported":
            assert r["model_type"] in REASONS, f"{r['model_type']}: refused without a named mechanism"
            assert r["detail"] == REASONS[r["model_type"]]


def test_most_buildable_types_are_exact(report: dict[str, Any]) -> None:
    # the widely fine-tuned families, whatever else the installed transformers ships
    exact = {r["model_type"] for r in report["rows"] if r["status"] == "exact"}
    for mt in ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "gemma2", "gemma3_text", "phi3", "starcoder2",
               "olmo2", "stablelm", "gpt_oss", "llama4_text", "deepseek_v3", "glm4_moe", "smollm3", "granite",
               # popular 2025-26 types whose default configs needed the sweep's fill-ins, and the
               # mechanisms added for them: gated attention output, DSA indexer, hyper-connections
               "ministral", "nemotron", "hunyuan_v1_dense", "hunyuan_v1_moe", "deepseek_v32", "glm_moe_dsa",
               "afmoe", "beam", "laguna", "hy_v4", "mimo_v2_flash", "jetmoe",
               # encoder and legacy layouts built as causal LMs
               "megatron-bert", "roberta-prelayernorm", "xlm-roberta-xl", "rembert", "roformer", "roc_bert", "xmod",
               "ctrl", "gpt_neox_japanese", "modernbert-decoder", "cohere_compass_text"):
        assert mt in exact, mt
    # linear-attention, state-space and short-convolution decoders (shapes/families/hybrid.py)
    for mt in ("qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "lfm2", "lfm3", "mamba",
               "falcon_mamba", "mamba2", "jamba", "falcon_h1", "nemotron_h", "bamba", "granitemoehybrid",
               # shapes/families/hybrid_extra.py and the others added for issue #15
               "minimax", "lara_mini", "kimi_linear", "bailing_hybrid", "minimax_m3_vl_text", "qwen4_exp", "qwen4_exp_text"):
        assert mt in exact, mt
    # layouts of their own (shapes/families/own_layout.py)
    for mt in ("dbrx", "xlm", "cpmant", "prophetnet", "doge", "zaya", "recurrent_gemma", "rwkv", "axk2", "longcat_flash", "xlstm", "deepseek_v4"):
        assert mt in exact, mt
    # short convolutions around attention, a patch projection, recurrent stacks, a text
    # decoder after a CLIP encoder (shapes/families/inkling.py, fuyu.py, hrm.py, git.py)
    for mt in ("inkling_text", "inkling2_text", "inkling2_loop_text", "fuyu", "hrm_text", "git"):
        assert mt in exact, mt
    assert report["exact"] >= 0.85 * report["buildable"]  # see benches/results/arch_sweep.md


def test_shrink_cuts_depth_and_per_layer_lists() -> None:
    cfg = {"num_hidden_layers": 40, "hidden_size": 4096, "layer_types": ["full"] * 40, "vocab_size": 150_000,
           "eos_token_id": 149_999, "text_config": {"num_hidden_layers": 30, "head_dim": 128}, "other": [1, 2, 3]}
    small = shrink(cfg)
    assert small["num_hidden_layers"] == 2 and small["hidden_size"] == 64 and small["layer_types"] == ["full", "full"]
    assert small["vocab_size"] == 256 and small["eos_token_id"] == 1 and small["other"] == [1, 2, 3]
    assert small["text_config"] == {"num_hidden_layers": 2, "head_dim": 16}


def test_shrink_keeps_one_period_of_the_layer_pattern() -> None:
    # Gemma 4: 5 sliding + 1 full; per_layer_config keys must lie in the new depth, their
    # overrides scaled with the base (head_dim 512 over 256 -> 32 over 16)
    g4 = {"num_hidden_layers": 30, "head_dim": 256, "layer_types": (["s"] * 5 + ["f"]) * 5,
          "per_layer_config": {str(i): {"head_dim": 512} for i in range(5, 30, 6)}}
    small = shrink(g4)
    assert small["num_hidden_layers"] == 6 and small["layer_types"] == ["s"] * 5 + ["f"]
    assert small["per_layer_config"] == {"5": {"head_dim": 32}}
    # KV sharing: a producer of every kind before the consumers (two periods, half shared)
    g3n = {"num_hidden_layers": 35, "layer_types": (["s"] * 4 + ["f"]) * 7, "num_kv_shared_layers": 15}
    assert (shrink(g3n)["num_hidden_layers"], shrink(g3n)["num_kv_shared_layers"]) == (10, 5)
    # a pattern whose period is longer than its first layer of each kind (Dory's paired
    # blocks), and stages that must sum to the depth, kept paired
    dory = {"num_hidden_layers": 72, "layer_types": (["s", "mlp"] * 3 + ["f", "mlp"]) * 9,
            "n_input_layers": 16, "n_recurrent_layers": 40, "n_output_layers": 16}
    small = shrink(dory)
    assert small["num_hidden_layers"] == 8 and len(small["layer_types"]) == 8
    assert (small["n_input_layers"], small["n_recurrent_layers"], small["n_output_layers"]) == (2, 4, 2)
    # without a pattern, or when asked not to cover it, 2 layers as before
    assert shrink(g4, cover=False)["num_hidden_layers"] == 2 and shrink(g4, cover=False)["per_layer_config"] == {}


def test_shrink_fills_fields_transformers_defaults_leave_unreadable() -> None:
    # ministral/hunyuan: head_dim None; nemotron: num_key_value_heads None (their modeling
    # cannot read either); dbrx: attn_config without rope_theta; cohere_compass: rope_parameters {}
    small = shrink({"num_hidden_layers": 8, "hidden_size": 4096, "num_attention_heads": 32, "head_dim": None, "num_key_value_heads": None})
    assert small["head_dim"] == 64 // 4 and small["num_key_value_heads"] == 4
    assert "head_dim" not in shrink({"hidden_size": 64, "num_attention_heads": 4})  # absent stays absent
    assert shrink({"attn_config": {"kv_n_heads": 8}})["attn_config"] == {"rope_theta": 10000.0, "kv_n_heads": 8}
    rope = shrink({"rope_parameters": {}, "layer_types": ["full_attention", "sliding_attention"]})["rope_parameters"]
    assert set(rope) == {"full_attention", "sliding_attention"}


@pytest.mark.parametrize("model_type, flips", [
    ("xlm", {"n_langs": 3, "gelu_activation": False, "tie_word_embeddings": False}),
    ("cpmant", {"segment_types": 5, "prompt_length": 3}),
    ("prophetnet", {"tie_word_embeddings": False, "add_cross_attention": False, "ngram": 3}),
    ("doge", {"attention_bias": True, "tie_word_embeddings": True}),
    ("zaya", {"attention_bias": True, "tie_word_embeddings": False, "lm_head_bias": True, "cca_time0": 3}),
    ("recurrent_gemma", {"num_hidden_layers": 4, "attention_bias": True, "lru_width": 32, "tie_word_embeddings": False}),
    ("rwkv", {"attention_hidden_size": 32, "intermediate_size": 48, "tie_word_embeddings": True}),
    ("axk2", {"attention_bias": True, "tie_word_embeddings": True, "n_shared_experts": 2, "mlp_layer_types": ["sparse", "dense"]}),
    ("longcat_flash", {"attention_bias": True, "tie_word_embeddings": True, "zero_expert_num": 8, "router_bias": True}),
    ("xlstm", {"num_blocks": 2, "weight_mode": "fused", "use_bias": True, "add_out_norm": False, "qk_dim_factor": 0.25}),
    ("deepseek_v4", {"layer_types": ["compressed_sparse_attention", "sliding_attention"], "tie_word_embeddings": True, "hc_mult": 2}),
])
def test_own_layouts_with_switches_flipped(model_type: str, flips: dict[str, Any]) -> None:
    # golden: the same config instantiated by transformers on the meta device
    from benches.arch_sweep import compare, meta_model, small_config
    from forge_advisor.shapes.registry import build_shape

    # (the flips are written for the 2-layer cut, not one period of the layer pattern)
    cfg = {**small_config(model_type, cover=False), **flips}
    assert compare(build_shape(cfg, model_type), meta_model(cfg)) is None
