"""Our parameter inventories against transformers itself.

The golden number is always ``sum(p.numel() for p in model.parameters())`` of the model
that ``AutoModelForCausalLM`` / ``AutoModelForSeq2SeqLM.from_config`` builds on the meta
device from the same config (no weights, no memory). Besides the total, every layer's
count and layer 0's linear modules (names, in/out features, bias) must match the real
module tree, since LoRA target names come from that inventory.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import torch  # noqa: E402
import transformers  # noqa: E402

from benches.arch_sweep import small_config  # noqa: E402
from forge_advisor.errors import ForgeError  # noqa: E402
from forge_advisor.shapes import shape_from_config  # noqa: E402
from forge_advisor.shapes.catalog import catalog_models  # noqa: E402
from forge_advisor.shapes.families.llama import VARIANTS  # noqa: E402
from forge_advisor.shapes.model import ModelShape  # noqa: E402
from forge_advisor.shapes.registry import UnsupportedArchitecture, build_shape  # noqa: E402

transformers.logging.set_verbosity_error()


def meta_model(config: dict[str, Any], whole_vlm: bool = False) -> Any:
    """The model transformers builds from ``config`` on the meta device; ``whole_vlm``: the
    whole vision-language model (``AutoModelForImageTextToText``) even where the causal-LM
    class is the language model alone (MllamaForCausalLM)."""
    fields = dict(config)
    model_type = fields.pop("model_type")
    cfg = transformers.AutoConfig.for_model(model_type, **fields)
    auto = transformers.AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else transformers.AutoModelForCausalLM
    if getattr(cfg, "vision_config", None) is not None and (whole_vlm or type(cfg) not in auto._model_mapping):
        auto = transformers.AutoModelForImageTextToText  # vision-language models outside the causal-LM mapping
    with torch.device("meta"):
        return auto.from_config(cfg)


def numel(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def stacks(model: Any, shape: ModelShape) -> dict[str, Any]:
    """The layer lists of the real model: ``encoder.block``/``decoder.block`` for T5, else
    the ``ModuleList`` of ``num_hidden_layers`` blocks holding the most parameters."""
    if shape.is_encoder_decoder:
        return {"encoder": model.encoder.block, "decoder": model.decoder.block}
    lists = [
        m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == shape.num_hidden_layers
    ]
    assert lists, "no ModuleList with num_hidden_layers blocks"
    return {"decoder": max(lists, key=numel)}


def real_linears(block: Any) -> set[tuple[str, int, int, bool]]:
    found = set()
    for name, mod in block.named_modules():
        if isinstance(mod, torch.nn.Linear):
            found.add((name, mod.in_features, mod.out_features, mod.bias is not None))
        elif type(mod).__name__ == "Conv1D":  # transformers.pytorch_utils.Conv1D: weight [in, out]
            found.add((name, mod.weight.shape[0], mod.weight.shape[1], mod.bias is not None))
    return found


def real_expert_tensors(block: Any) -> set[tuple[str, tuple[int, ...]]]:
    # a depthwise nn.Conv1d weight [channels, 1, kernel] (Mamba, Gated DeltaNet) is 3-d too
    import torch

    convs = {f"{n}.weight" for n, m in block.named_modules() if isinstance(m, torch.nn.Conv1d)}
    return {(n, tuple(p.shape)) for n, p in block.named_parameters() if p.dim() == 3 and n not in convs}


def assert_same_as_meta(shape: ModelShape, model: Any) -> None:
    golden = numel(model)
    assert shape.num_parameters == golden, f"{shape.name}: {shape.num_parameters:,} != meta {golden:,}"
    real = stacks(model, shape)
    per_layer = shape.layer_parameters
    order = ["encoder", "decoder"] if shape.is_encoder_decoder else ["decoder"]
    real_counts = [numel(block) for stack in order for block in real[stack]]
    assert per_layer == real_counts, f"{shape.name}: per-layer counts differ"
    first = 0
    for stack in order:
        block = real[stack][0]
        lt = shape.layer_types[shape.layers[first]]
        assert lt.stack == stack
        ours = {(lin.name, lin.in_features, lin.out_features, lin.bias) for lin in lt.linears if lin.lora_targetable}
        assert ours == real_linears(block), f"{shape.name}: {stack} layer 0 linear modules differ"
        # fused expert tensors are [E, out, in] (Mixtral, Qwen3-MoE) or [E, in, out] (gpt-oss, Llama 4)
        experts = {(lin.name, (lin.count, *sorted((lin.out_features, lin.in_features)))) for lin in lt.linears if lin.role == "expert"}
        assert experts == {(n, (s[0], *sorted(s[1:]))) for n, s in real_expert_tensors(block)}
        for lin in lt.linears:  # every non-LoRA entry is a real tensor of that shape
            if not lin.lora_targetable and lin.role != "expert":
                assert tuple(block.get_submodule(lin.name).weight.shape) == (lin.out_features, lin.in_features)
        first += len(real[stack])
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    assert shape.tie_word_embeddings == (out is not None and out.weight is emb)


CATALOG = catalog_models()


@pytest.mark.parametrize("entry", CATALOG, ids=[m.id for m in CATALOG])
def test_catalog_model_matches_meta_instantiation(entry: Any) -> None:
    shape = shape_from_config(dict(entry.config), entry.id)
    # a shape with a tower is the whole vision-language model (Llama 4's catalog entry is its
    # text model, as AutoModelForCausalLM builds it)
    assert_same_as_meta(shape, meta_model(entry.config, whole_vlm=shape.vision is not None))


# -- tiny configs: every registered family, with the switches that change the inventory --------

TINY = dict(
    hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, vocab_size=128, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
MOE = dict(num_local_experts=4, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48)
# default tie / biases; tied; all biases on; all biases off; MHA with a wider head
LLAMA_CASES = [
    {},
    {"tie_word_embeddings": True},
    {"tie_word_embeddings": False, "attention_bias": True, "mlp_bias": True},
    {"attention_bias": False, "mlp_bias": False},
    {"tie_word_embeddings": False, "num_key_value_heads": 4, "head_dim": 32},
]


@pytest.mark.parametrize("case", range(len(LLAMA_CASES)))
@pytest.mark.parametrize("model_type", sorted(VARIANTS))
def test_llama_like_variant_matches_meta(model_type: str, case: int) -> None:
    """Every llama-like type, the originals and those found by sweeping transformers'
    causal-LM mapping (granite, smollm3, ministral, ...), counts exactly."""
    config = {**TINY, **(MOE if VARIANTS[model_type].moe else {}), **LLAMA_CASES[case], "model_type": model_type}
    if model_type == "qwen3_moe":
        config["mlp_only_layers"] = [1]  # one dense layer among sparse ones
    if model_type == "qwen2_moe":
        config["decoder_sparse_step"] = 2
    assert_same_as_meta(shape_from_config(dict(config), model_type), meta_model(config))


FAMILY_CASES = {
    "gpt2-untied-inner": dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, n_inner=80, vocab_size=100, n_positions=32, tie_word_embeddings=False),
    "gpt2-cross": dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=32, add_cross_attention=True),
    "opt-proj": dict(model_type="opt", hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100, max_position_embeddings=40, word_embed_proj_dim=32, do_layer_norm_before=False),
    "opt-nobias-noaffine": dict(model_type="opt", hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100, enable_bias=False, layer_norm_elementwise_affine=False, tie_word_embeddings=False),
    "opt-removed-final-ln": dict(model_type="opt", hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100, _remove_final_layer_norm=True),
    "falcon-mha-sequential": dict(model_type="falcon", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=100, multi_query=False, parallel_attn=False, bias=True),
    "falcon-new-arch": dict(model_type="falcon", hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_kv_heads=2, new_decoder_architecture=True, vocab_size=100, ffn_hidden_size=96, tie_word_embeddings=False),
    "falcon-new-arch-1ln": dict(model_type="falcon", hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_kv_heads=2, new_decoder_architecture=True, num_ln_in_parallel_attn=1, vocab_size=100),
    "gpt_neox-sequential-tied": dict(model_type="gpt_neox", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100, use_parallel_residual=False, attention_bias=False, tie_word_embeddings=True),
    "phi-qk-norm-tied": dict(model_type="phi", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=100, qk_layernorm=True, tie_word_embeddings=True),
    "t5-relu-asym": dict(model_type="t5", d_model=64, d_kv=8, d_ff=96, num_heads=4, num_layers=3, num_decoder_layers=2, vocab_size=100, relative_attention_num_buckets=16),
    "mt5-gated": dict(model_type="mt5", d_model=64, d_kv=16, d_ff=96, num_heads=4, num_layers=2, vocab_size=100, tie_word_embeddings=False),
    "gemma3-vision-head-untied": dict(
        model_type="gemma3", tie_word_embeddings=False, mm_tokens_per_image=4,
        text_config=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=300),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14, vision_use_head=True),
    ),
    # encoder layouts built as causal LMs (bert.py), with their switches flipped
    "roformer-projected-untied": dict(model_type="roformer", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100, embedding_size=32, max_position_embeddings=40, tie_word_embeddings=False),
    "xmod-two-languages-adapter-ln": dict(model_type="xmod", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100, languages=["en_XX", "de_DE"], adapter_layer_norm=True, adapter_reduction_factor=4),
    "roc_bert-no-shape": dict(model_type="roc_bert", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100, enable_shape=False, shape_vocab_size=50, pronunciation_vocab_size=30, pronunciation_embed_dim=24),
    "rembert-sizes": dict(model_type="rembert", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100, input_embedding_size=32, output_embedding_size=48),
    "megatron-bert-untied": dict(model_type="megatron-bert", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100, tie_word_embeddings=False),
}


@pytest.mark.parametrize("name", sorted(FAMILY_CASES))
def test_family_switches_match_meta(name: str) -> None:
    config = FAMILY_CASES[name]
    assert_same_as_meta(shape_from_config(json.loads(json.dumps(config)), name), meta_model(config))


def test_parallel_and_norm_facts() -> None:
    facts = {m.id: shape_from_config(dict(m.config), m.id) for m in CATALOG}
    assert facts["tiiuae/falcon-7b"].parallel_attn and facts["microsoft/phi-2"].parallel_attn
    assert facts["EleutherAI/pythia-160m"].parallel_attn and not facts["openai-community/gpt2"].parallel_attn
    assert facts["openai-community/gpt2"].norm == "layer_norm" and not facts["openai-community/gpt2"].gated_mlp
    assert facts["google/flan-t5-base"].gated_mlp and not facts["google-t5/t5-base"].gated_mlp
    assert facts["google/flan-t5-base"].is_encoder_decoder and facts["google/flan-t5-base"].num_encoder_layers == 12
    assert facts["mistralai/Mixtral-8x7B-v0.1"].active_parameters < facts["mistralai/Mixtral-8x7B-v0.1"].num_parameters
    names = facts["openai-community/gpt2"].linear_names()
    assert names == ["c_attn", "c_proj", "c_fc"]
    assert facts["tiiuae/falcon-7b"].attention_linear_names() == ["query_key_value", "dense"]
    enc, dec = (facts["google/flan-t5-base"].layer_types[facts["google/flan-t5-base"].layers[i]] for i in (0, 12))
    assert enc.stack == "encoder" and dec.stack == "decoder" and dec.cross_attention and not enc.cross_attention


# -- the meta-device fallback for model types without a parser ----------------------------------

# types no torch-free parser reads (Moshi's audio codebook streams; BART's whole
# encoder-decoder), as the architecture sweep builds them
FALLBACK = {
    "moshi": small_config("moshi"),
    "bart": dict(model_type="bart", d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=96, decoder_ffn_dim=96, vocab_size=100, max_position_embeddings=32),
}


@pytest.mark.parametrize("model_type", sorted(FALLBACK))
def test_meta_fallback_counts_unparsed_model_types(model_type: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = FALLBACK[model_type]
    with pytest.raises(UnsupportedArchitecture):  # no torch-free parser claims this config
        build_shape(dict(config), model_type)
    shape = shape_from_config(dict(config), model_type)
    assert capsys.readouterr() == ("", "")  # prints nothing
    model = meta_model(config)
    assert shape.model_type == model_type
    assert shape.num_parameters == numel(model)
    real = stacks(model, shape) if not shape.is_encoder_decoder else {"encoder": model.model.encoder.layers, "decoder": model.model.decoder.layers}
    block = real["decoder"][0]
    lt = shape.layer_types[shape.layers[shape.num_encoder_layers]]
    assert {(lin.name, lin.in_features, lin.out_features, lin.bias) for lin in lt.linears if lin.lora_targetable} == real_linears(block)
    if model_type == "bart":
        assert shape.is_encoder_decoder and shape.num_encoder_layers == 2 and lt.cross_attention


def test_meta_fallback_reads_experts_as_the_parser_does() -> None:
    # Inkling's sparse MLP (fused routed experts, bmm shared experts) through the meta
    # fallback, as a model type without a parser would go, against its torch-free parser
    from forge_advisor.shapes.meta import shape_from_meta

    config = small_config("inkling_text")
    shape = shape_from_meta(dict(config), "inkling", UnsupportedArchitecture("inkling_text", "inkling"))
    lt = shape.layer_types[shape.layers[0]]
    assert shape.num_experts == 4 and any(not lin.lora_targetable for lin in lt.linears)
    assert shape.active_parameters < shape.num_parameters == build_shape(dict(config), "inkling").num_parameters


def test_meta_fallback_errors_are_one_line() -> None:
    with pytest.raises(ForgeError, match="unknown to forge-advisor and to transformers") as exc:
        shape_from_config({"model_type": "no-such-architecture", "hidden_size": 8}, "x")
    assert "\n" not in str(exc.value)
    with pytest.raises(ForgeError, match="absurdly large") as exc:
        shape_from_config(dict(TINY, model_type="mamba", num_hidden_layers=10**6), "x")
    assert "\n" not in str(exc.value)
    with pytest.raises(ForgeError) as exc:  # transformers' own validation, wrapped
        shape_from_config(dict(TINY, model_type="mamba", hidden_size="big"), "x")
    assert "\n" not in str(exc.value)
