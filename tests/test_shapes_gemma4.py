"""Gemma 4 inventories against transformers itself (meta device): per-layer head widths,
KV sharing, K=V full-attention layers, double-wide MLPs, per-layer embeddings, the MoE block
beside the dense MLP, and the vision and audio towers, each switch flipped in a small config
written as a published config.json writes it (``global_head_dim``,
``num_global_key_value_heads``) or as ``to_dict`` does (``per_layer_config``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
import transformers

from benches.arch_sweep import compare
from forge_advisor.shapes import shape_from_config

transformers.logging.set_verbosity_error()

PATTERN = ["sliding_attention"] * 2 + ["full_attention"]
TEXT = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, global_head_dim=32, vocab_size=300, vocab_size_per_layer_input=200, hidden_size_per_layer_input=8,
            layer_types=PATTERN * 2)

CASES: dict[str, dict[str, Any]] = {
    "plain": dict(TEXT, hidden_size_per_layer_input=0),
    "ple": dict(TEXT),
    "kv-shared-double-wide": dict(TEXT, num_kv_shared_layers=3, use_double_wide_mlp=True),
    "k-eq-v-global-kv": dict(TEXT, attention_k_eq_v=True, num_global_key_value_heads=1, tie_word_embeddings=False),
    "moe": dict(TEXT, hidden_size_per_layer_input=0, enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=24),
    "default-layer-types": {k: v for k, v in dict(TEXT, num_hidden_layers=7).items() if k != "layer_types"},
    "per-layer-config": dict({k: v for k, v in TEXT.items() if k != "global_head_dim"},
                             per_layer_config={"02": {"head_dim": 24, "num_key_value_heads": 4}, "05": {"head_dim": 24, "num_key_value_heads": 4}}),
}


def meta(config: dict[str, Any], auto: Any) -> Any:
    fields = json.loads(json.dumps(config))
    cfg = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        return auto.from_config(cfg)


def numel(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


# gemma4_unified_text has no per-layer embeddings or MoE block (its config lacks the fields)
@pytest.mark.parametrize("case, model_type", [(c, "gemma4_text") for c in sorted(CASES)]
                         + [(c, "gemma4_unified_text") for c in sorted(CASES) if c not in ("ple", "moe")])
def test_text_model_is_counted_exactly(case: str, model_type: str) -> None:
    config = {**CASES[case], "model_type": model_type}
    if model_type == "gemma4_unified_text":
        config.pop("vocab_size_per_layer_input")
        config.pop("hidden_size_per_layer_input")
    model = meta(config, transformers.AutoModelForCausalLM)
    shape = shape_from_config(config, name=case)
    assert compare(shape, model) is None, compare(shape, model)


def test_the_mechanisms_show_in_the_inventory() -> None:
    shared = shape_from_config({**CASES["kv-shared-double-wide"], "model_type": "gemma4_text"}, name="g4")
    # a layer reusing K/V keeps no k_proj / v_proj, and its MLP is twice as wide
    last = shared.layer_types[shared.layers[-1]]
    assert {lin.leaf for lin in last.linears} >= {"q_proj", "o_proj"}
    assert not {"k_proj", "v_proj"} & {lin.leaf for lin in last.linears}
    assert next(lin for lin in last.linears if lin.leaf == "down_proj").in_features == 2 * 96
    keqv = shape_from_config({**CASES["k-eq-v-global-kv"], "model_type": "gemma4_text"}, name="g4")
    full = keqv.layer_types[keqv.layers[2]]
    assert next(lin for lin in full.linears if lin.leaf == "q_proj").out_features == 4 * 32
    assert next(lin for lin in full.linears if lin.leaf == "k_proj").out_features == 1 * 32
    assert "v_proj" not in {lin.leaf for lin in full.linears}


VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
              head_dim=8, patch_size=4, pooling_kernel_size=2, position_embedding_size=64)
AUDIO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, subsampling_conv_channels=[16, 8], output_proj_dims=48)


@pytest.mark.parametrize("towers", [{"vision_config": VISION}, {"vision_config": dict(VISION, use_clipped_linears=True), "audio_config": AUDIO},
                                    {"audio_config": AUDIO, "tie_word_embeddings": False}])
def test_multimodal_model_is_counted_exactly(towers: dict[str, Any]) -> None:
    config = {"model_type": "gemma4", "text_config": dict(TEXT, num_kv_shared_layers=3), "vision_soft_tokens_per_image": 16, **towers}
    model = meta(config, transformers.AutoModelForImageTextToText)
    shape = shape_from_config(config, name="g4")
    assert shape.num_parameters == numel(model)
    assert shape.layer_parameters == [numel(layer) for layer in model.model.language_model.layers]
    if "vision_config" in towers:
        assert shape.vision is not None
        assert shape.vision.num_parameters == numel(model.model.vision_tower) + numel(model.model.embed_vision)
        blocks = model.model.vision_tower.encoder.layers
        assert [shape.vision.layer_types[0].num_parameters] * len(blocks) == [numel(b) for b in blocks]
        assert shape.vision.images.per_image(None) == (16 * 2 * 2, 16)
    else:
        assert shape.vision is None
    if "audio_config" in towers:
        audio = next(p.numel for p in shape.params if p.name == "model.audio_tower")
        assert audio == numel(model.model.audio_tower) + numel(model.model.embed_audio)


@pytest.mark.parametrize("model_type, extra", [("gemma4_assistant", {"use_ordered_embeddings": True, "num_centroids": 10}),
                                               ("gemma4_unified_assistant", {})])
def test_assistant_is_counted_exactly(model_type: str, extra: dict[str, Any]) -> None:
    # the drafter validates that it has no per-layer embeddings (configuration_gemma4_assistant.py)
    text = dict(TEXT, hidden_size_per_layer_input=0, vocab_size_per_layer_input=0)
    config = {"model_type": model_type, "backbone_hidden_size": 40, "text_config": text, **extra}
    model = meta(config, transformers.AutoModelForCausalLM)
    shape = shape_from_config(config, name="drafter")
    assert compare(shape, model) is None, compare(shape, model)
    # every layer reuses the target's K/V: no k_proj anywhere
    assert not any(lin.leaf == "k_proj" for lt in shape.layer_types for lin in lt.linears)
