"""The mechanism-driven decoder parser (forge_advisor/shapes/families/decoder.py) with the
config switches flipped that the sweep's default configs leave off: biases, Q/K norms,
parallel residual, MLA without a q LoRA, dense-first MoE layers, interleaved MoE, shared
experts, sinks. Golden: the meta-device model transformers builds from the same config."""

from __future__ import annotations

from typing import Any

import pytest

from benches.arch_sweep import compare, meta_model
from forge_advisor.shapes import shape_from_config, supported_model_types

T = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
         head_dim=16, vocab_size=128, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
MLA = dict(q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16)
DS_MOE = dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=2, n_group=1, topk_group=1)

CASES: dict[str, dict[str, Any]] = {
    "starcoder2-no-bias-untied": dict(T, model_type="starcoder2", use_bias=False, tie_word_embeddings=False),
    "stablelm-qkv-bias-qk-norm": dict(T, model_type="stablelm", use_qkv_bias=True, qk_layernorm=True),
    "stablelm-parallel-residual": dict(T, model_type="stablelm", use_parallel_residual=True, tie_word_embeddings=True),
    "olmo2-bias-tied": dict(T, model_type="olmo2", attention_bias=True, tie_word_embeddings=True),
    "olmo-bias": dict(T, model_type="olmo", attention_bias=True),
    "gpt_oss-no-attention-bias": dict(T, model_type="gpt_oss", attention_bias=False, num_local_experts=4, num_experts_per_tok=2),
    "llama4-interleaved": dict(T, model_type="llama4_text", num_local_experts=4, num_experts_per_tok=1, interleave_moe_layer_step=2, intermediate_size_mlp=80),
    "deepseek_v3-dense-first": dict(**T, **MLA, **DS_MOE, model_type="deepseek_v3", first_k_dense_replace=1),
    "deepseek_v3-no-q-lora-bias": dict(**T, **DS_MOE, **{**MLA, "q_lora_rank": None}, model_type="deepseek_v3", attention_bias=True, first_k_dense_replace=2),
    "deepseek_v2-all-sparse": dict(**T, **MLA, **DS_MOE, model_type="deepseek_v2", first_k_dense_replace=0),
    "glm4_moe-qk-norm-bias": dict(**T, **DS_MOE, model_type="glm4_moe", use_qk_norm=True, attention_bias=True, first_k_dense_replace=1),
    "ernie4_5_moe-bias-interval": dict(T, model_type="ernie4_5_moe", use_bias=True, moe_num_experts=4, moe_k=2, moe_intermediate_size=32, moe_num_shared_experts=1, moe_layer_start_index=1, moe_layer_interval=1),
    "granitemoeshared-shared": dict(T, model_type="granitemoeshared", num_local_experts=4, num_experts_per_tok=2, shared_intermediate_size=48),
    "cohere2_moe-shared": dict(T, model_type="cohere2_moe", num_experts=4, num_experts_per_tok=2, num_shared_experts=1, layer_types=None, mlp_layer_types=None),
    "cohere-qk-norm": dict(T, model_type="cohere", use_qk_norm=True),
    "exaone4-tied": dict(T, model_type="exaone4", tie_word_embeddings=True),
    "persimmon-no-qk-norm": dict(T, model_type="persimmon", qk_layernorm=False, num_key_value_heads=4),
    "jais2-no-bias": dict(T, model_type="jais2", attention_bias=False, mlp_bias=False),
    "minicpm3-untied": dict(**T, **MLA, model_type="minicpm3", tie_word_embeddings=False),
}
# fairseq-style decoders (forge_advisor/shapes/families/fairseq.py)
F = dict(is_encoder_decoder=False, d_model=64, decoder_ffn_dim=96, decoder_layers=2, decoder_attention_heads=4, encoder_layers=1, encoder_ffn_dim=96,
         encoder_attention_heads=4, vocab_size=128, max_position_embeddings=40, pad_token_id=1, bos_token_id=0, eos_token_id=2,
         decoder_start_token_id=2)
CASES.update({
    "bart-untied": dict(F, model_type="bart", tie_word_embeddings=False),
    "mbart": dict(F, model_type="mbart"),
    "bigbird_pegasus-bias": dict(F, model_type="bigbird_pegasus", use_bias=True),
    "marian-decoder-vocab": dict(F, model_type="marian", decoder_vocab_size=100),
    "trocr-sinusoidal-no-embedding-norm": dict(F, model_type="trocr", use_learned_position_embeddings=False, layernorm_embedding=False),
    "whisper-targets": dict(F, model_type="whisper", max_target_positions=48, max_source_positions=30, num_mel_bins=8),
    "xglm-cross": dict(model_type="xglm", d_model=64, ffn_dim=96, num_layers=2, attention_heads=4, vocab_size=128, add_cross_attention=True),
    "biogpt-untied": dict(T, model_type="biogpt", num_key_value_heads=None, head_dim=None, tie_word_embeddings=False),
})
# GPT-era decoders (forge_advisor/shapes/families/gpt_era.py)
G = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=48)
CASES.update({
    "gpt_bigcode-mha-inner": dict(G, model_type="gpt_bigcode", multi_query=False, n_inner=80),
    "gptj-inner-tied": dict(G, model_type="gptj", n_inner=80, rotary_dim=8, tie_word_embeddings=True),
    "codegen": dict(G, model_type="codegen", rotary_dim=8),
    "openai-gpt": dict(G, model_type="openai-gpt"),
    "bloom-untied": dict(model_type="bloom", hidden_size=64, n_layer=2, n_head=4, vocab_size=128, tie_word_embeddings=False),
    "gpt_neo-inner": dict(model_type="gpt_neo", hidden_size=64, num_layers=2, num_heads=4, vocab_size=128, intermediate_size=80,
                          max_position_embeddings=48, attention_types=[[["global", "local"], 1]]),
    "mpt-ratio": dict(model_type="mpt", d_model=64, n_layers=2, n_heads=4, vocab_size=128, expansion_ratio=2),
})
# BERT-style causal LMs (forge_advisor/shapes/families/bert.py)
B = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=128,
         max_position_embeddings=40, is_decoder=True)
CASES.update({
    "bert-cross-attention": dict(B, model_type="bert", add_cross_attention=True, type_vocab_size=3),
    "roberta-untied": dict(B, model_type="roberta", tie_word_embeddings=False, pad_token_id=1),
    "electra-same-width": dict(B, model_type="electra", embedding_size=64),
    "big_bird": dict(B, model_type="big_bird", attention_type="original_full"),
    "bert-generation": dict(B, model_type="bert-generation"),
    "bert-untied": dict(B, model_type="bert", tie_word_embeddings=False),
    "electra-untied": dict(B, model_type="electra", tie_word_embeddings=False),
    "electra-default-embedding-size": dict(B, model_type="electra"),
    "bert-generation-untied": dict(B, model_type="bert-generation", tie_word_embeddings=False),
})


@pytest.mark.parametrize("name", sorted(CASES))
def test_switch_matches_meta(name: str) -> None:
    # None drops a field (the class default applies); q_lora_rank=None is DeepSeek's "no q LoRA"
    config = {k: v for k, v in CASES[name].items() if v is not None or k == "q_lora_rank"}
    shape = shape_from_config(dict(config), name)
    assert shape.model_type in supported_model_types()  # parsed, not the meta fallback
    diff = compare(shape, meta_model(config))
    assert diff is None, diff


def test_qk_norm_is_a_hint_for_the_activation_model() -> None:
    on = shape_from_config(dict(T, model_type="olmo2"), "o")
    off = shape_from_config(dict(T, model_type="starcoder2"), "s")
    assert on.hints.get("qk_norm") and not off.hints.get("qk_norm")
    assert shape_from_config(dict(T, model_type="cohere", use_qk_norm=True), "c").hints.get("qk_norm")
    assert not shape_from_config(dict(T, model_type="cohere"), "c").hints.get("qk_norm")


def test_attention_sinks_mean_eager_attention() -> None:
    """Models with sink logits declare `_supports_sdpa = False`; the estimate prices eager."""
    import transformers

    for mt, cls in (("gpt_oss", "GptOssPreTrainedModel"), ("flint", "FlintPreTrainedModel")):
        module = __import__(f"transformers.models.{mt}.modeling_{mt}", fromlist=[cls])
        assert getattr(module, cls)._supports_sdpa is False
    shape = shape_from_config(dict(T, model_type="gpt_oss", num_local_experts=4, num_experts_per_tok=2), "g")
    assert shape.hints.get("eager_only")
    assert not shape_from_config(dict(T, model_type="olmo2"), "o").hints.get("eager_only")
    assert transformers.__version__.startswith("5.")


def test_residual_dropout_is_a_hidden_dropout() -> None:
    shape = shape_from_config(dict(T, model_type="starcoder2", residual_dropout=0.1, attention_dropout=0.05), "s")
    assert shape.hints["hidden_dropout"] == 0.1 and shape.hints["attention_dropout"] == 0.05


# -- bad input: one line each ---------------------------------------------------------------------


def _inspect(tmp_path, config: dict, env: dict | None = None):  # type: ignore[no-untyped-def]
    import json
    import os
    import subprocess
    import sys

    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run([sys.executable, "-m", "forge_advisor.cli.main", "inspect", "--model", str(path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def _one_line(res, *fragments: str) -> str:  # type: ignore[no-untyped-def]
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def test_remote_code_is_never_executed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    remote = {"model_type": "chatglm", "auto_map": {"AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration"},
              "hidden_size": 64, "num_layers": 2}
    _one_line(_inspect(tmp_path, remote), "remote code", "never executes", "chatglm")
    # a remote-code config whose model_type transformers ships is counted with the built-in class
    builtin = {**dict(T, model_type="mamba"), "auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}
    res = _inspect(tmp_path, builtin)
    assert res.returncode == 0, res.stderr


def test_unknown_and_unsupported_types_say_why(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _one_line(_inspect(tmp_path, {"model_type": "no-such-arch", "hidden_size": 8}), "unknown to forge-advisor and to transformers")
    with pytest.raises(Exception) as exc:
        from forge_advisor.shapes.registry import build_shape

        build_shape({"model_type": "blt", "hidden_size": 8}, "r")
    assert "unsupported without torch: byte-latent patching" in str(exc.value)
    with pytest.raises(Exception) as exc:
        build_shape({"model_type": "chatglm", "auto_map": {"AutoModel": "m.M"}}, "c")
    assert "never executes" in str(exc.value) and "\n" not in str(exc.value)


def test_seq2seq_checkpoints_are_not_read_as_their_decoder() -> None:
    """A BART config (is_encoder_decoder by default) is the whole encoder-decoder: the
    torch-free parser refuses it and the meta fallback counts encoder and decoder."""
    from forge_advisor.shapes.registry import UnsupportedArchitecture, build_shape

    cfg = {k: v for k, v in F.items() if k != "is_encoder_decoder"}
    with pytest.raises(UnsupportedArchitecture, match="encoder-decoder"):
        build_shape(dict(cfg, model_type="bart"), "b")
    full = shape_from_config(dict(cfg, model_type="bart"), "b")  # meta fallback: seq2seq
    decoder = shape_from_config(dict(cfg, model_type="bart", is_encoder_decoder=False), "b")
    assert full.is_encoder_decoder and full.num_parameters > decoder.num_parameters
