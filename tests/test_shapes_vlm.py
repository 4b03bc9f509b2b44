"""Vision-language inventories against transformers itself (meta device).

The golden numbers are the real ``AutoModelForImageTextToText.from_config`` model's: its total
``numel``, its vision tower's and projector's, every decoder layer's and every tower block's
count, and the ``nn.Linear`` modules of the first block of each stack.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
import transformers

from forge_advisor.shapes import shape_from_config
from forge_advisor.shapes.model import ModelShape

transformers.logging.set_verbosity_error()

TEXT = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=300)

CASES: dict[str, dict[str, Any]] = {
    "qwen2_5_vl-flat-tied": dict(model_type="qwen2_5_vl", **TEXT, tie_word_embeddings=True,
                                 vision_config=dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=64, fullatt_block_indexes=[1])),
    "qwen2_5_vl-text_config": dict(model_type="qwen2_5_vl", text_config=dict(TEXT),
                                   vision_config=dict(depth=2, hidden_size=48, intermediate_size=40, num_heads=4, out_hidden_size=64, fullatt_block_indexes=[1])),
    "qwen2_vl": dict(model_type="qwen2_vl", **TEXT, vision_config=dict(depth=3, embed_dim=32, mlp_ratio=2, num_heads=4, hidden_size=64)),
    "qwen3_vl": dict(model_type="qwen3_vl", text_config=dict(TEXT, head_dim=16),
                     vision_config=dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=64, deepstack_visual_indexes=[0, 1], num_position_embeddings=16)),
    "llava-clip": dict(model_type="llava", text_config=dict(TEXT, model_type="llama"),
                       vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, image_size=56, patch_size=14, projection_dim=16)),
    "llava-siglip-mistral-nobias": dict(model_type="llava", multimodal_projector_bias=False, vision_feature_layer=[-2, -1],
                                        text_config=dict(TEXT, model_type="mistral", tie_word_embeddings=False),
                                        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14)),
    "idefics3": dict(model_type="idefics3", scale_factor=2, text_config=dict(TEXT, model_type="llama"),
                     vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14)),
    "smolvlm-tied": dict(model_type="smolvlm", scale_factor=4, tie_word_embeddings=True, text_config=dict(TEXT, model_type="llama", tie_word_embeddings=True),
                         vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, image_size=112, patch_size=14)),
    "gemma3": dict(model_type="gemma3", mm_tokens_per_image=4,
                   text_config=dict(TEXT, head_dim=16),
                   vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14, vision_use_head=False)),
    # Llama 3.2 Vision: cross-attention layers at 1 and 3 of 5 (in place of self-attention
    # layers), 4 local + 2 gated global tower blocks, two intermediate layers concatenated
    "mllama": dict(model_type="mllama", image_token_index=299,
                   text_config=dict(TEXT, num_hidden_layers=5, cross_attention_layers=[1, 3], pad_token_id=0, bos_token_id=1, eos_token_id=2),
                   vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_global_layers=2, attention_heads=4,
                                      image_size=56, patch_size=14, vision_output_dim=96, intermediate_layers_indices=[0, 2])),
    "mllama-3-tiles-no-global": dict(model_type="mllama", image_token_index=299,
                                     text_config=dict(TEXT, num_hidden_layers=3, cross_attention_layers=[0, 7], pad_token_id=0, bos_token_id=1, eos_token_id=2),
                                     vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_global_layers=0, attention_heads=4,
                                                        image_size=56, patch_size=14, vision_output_dim=64, intermediate_layers_indices=[1],
                                                        max_num_tiles=3, supported_aspect_ratios=[[1, 1], [1, 2], [2, 1], [1, 3], [3, 1]])),
}


def meta_vlm(config: dict[str, Any]) -> Any:
    fields = json.loads(json.dumps(config))
    cfg = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        return transformers.AutoModelForImageTextToText.from_config(cfg)


def numel(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def linears(block: Any) -> set[tuple[str, int, int, bool]]:
    return {(n, m.in_features, m.out_features, m.bias is not None) for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}


def parts(model: Any) -> tuple[Any, Any, Any]:
    """(tower without projector's modules, projector, text decoder layers) of the real model."""
    inner = model.model
    if hasattr(inner, "visual"):
        visual = inner.visual
        projector = [visual.merger] + list(getattr(visual, "deepstack_merger_list", []))
        return visual, projector, inner.language_model.layers
    if hasattr(inner, "connector"):  # Idefics3, SmolVLM
        return inner.vision_model, [inner.connector], inner.text_model.layers
    if hasattr(inner, "vision_model"):  # Mllama
        return inner.vision_model, [inner.multi_modal_projector], inner.language_model.layers
    return inner.vision_tower, [inner.multi_modal_projector], inner.language_model.layers


def tower_blocks(tower: Any) -> Any:
    if hasattr(tower, "global_transformer"):  # Mllama: the local stack, then the global one
        return list(tower.transformer.layers) + list(tower.global_transformer.layers)
    if hasattr(tower, "blocks"):
        return tower.blocks
    return tower.vision_model.encoder.layers if hasattr(tower, "vision_model") else tower.encoder.layers


@pytest.mark.parametrize("name", sorted(CASES))
def test_vlm_inventory_matches_meta(name: str) -> None:
    config = CASES[name]
    shape: ModelShape = shape_from_config(json.loads(json.dumps(config)), name)
    model = meta_vlm(config)
    assert shape.num_parameters == numel(model)
    assert shape.vision is not None
    tower, projector, layers = parts(model)
    proj_numel = sum(numel(p) for p in projector)
    assert shape.vision.projector.num_parameters == proj_numel
    assert shape.vision.num_parameters - shape.vision.projector.num_parameters == numel(tower) - (proj_numel if hasattr(model.model, "visual") else 0)
    blocks = tower_blocks(tower)
    assert [shape.vision.layer_types[i].num_parameters for i in shape.vision.layers] == [numel(b) for b in blocks]
    vt = shape.vision.layer_types[shape.vision.layers[0]]
    assert {(lin.name, lin.in_features, lin.out_features, lin.bias) for lin in vt.linears} == linears(blocks[0])
    assert shape.layer_parameters == [numel(b) for b in layers]
    lt = shape.layer_types[shape.layers[0]]
    assert {(lin.name, lin.in_features, lin.out_features, lin.bias) for lin in lt.linears if lin.lora_targetable} == linears(layers[0])
    out = model.get_output_embeddings()
    assert shape.tie_word_embeddings == (out.weight is model.get_input_embeddings().weight)


def test_image_rules_follow_the_processors() -> None:
    """Qwen2-VL's processor default (image_processing_qwen2_vl.py: 28·28·1280 px) is 1280
    tokens of 4 patches; LLaVA-1.5 at 336/14 is 576 tokens (577 positions with CLIP's class
    token); Gemma 3 at 896/14 is 4096 patches pooled to 256."""
    qwen = shape_from_config(dict(model_type="qwen2_5_vl", **TEXT, vision_config=dict(depth=1, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=64)), "q")
    assert qwen.vision is not None and qwen.vision.images.per_image(None) == (5120, 1280)
    assert qwen.vision.images.per_image(448 * 448) == (1024, 256)
    llava = shape_from_config(dict(model_type="llava", text_config=dict(TEXT), vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4, image_size=336, patch_size=14)), "l")
    assert llava.vision is not None and llava.vision.images.per_image(10**6) == (577, 576)
    gemma = shape_from_config(dict(model_type="gemma3", text_config=dict(TEXT, head_dim=16), vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4, image_size=896, patch_size=14)), "g")
    assert gemma.vision is not None and gemma.vision.images.per_image(None) == (4096, 256)


@pytest.mark.parametrize("name", ["mllama", "mllama-3-tiles-no-global"])
def test_mllama_cross_attention_layers_and_text_only_model(name: str) -> None:
    """Every decoder layer's linears (self- and cross-attention layers) and the gated global
    blocks; `AutoModelForCausalLM` builds `MllamaForCausalLM`, the language model alone."""
    config = CASES[name]
    shape = shape_from_config(json.loads(json.dumps(config)), name)
    model = meta_vlm(config)
    _, _, layers = parts(model)
    for i, layer in enumerate(layers):
        lt = shape.layer_types[shape.layers[i]]
        assert lt.cross_attention == (type(layer).__name__ == "MllamaCrossAttentionDecoderLayer")
        assert {(lin.name, lin.in_features, lin.out_features, lin.bias) for lin in lt.linears} == linears(layer)
    assert shape.vision is not None
    blocks = tower_blocks(model.model.vision_model)
    for i, block in enumerate(blocks):
        vt = shape.vision.layer_types[shape.vision.layers[i]]
        assert {(lin.name, lin.in_features, lin.out_features, lin.bias) for lin in vt.linears} == linears(block)
    fields = json.loads(json.dumps(config))
    cfg = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        text_lm = transformers.AutoModelForCausalLM.from_config(cfg)
    assert type(text_lm).__name__ == "MllamaForCausalLM"
    assert shape.text_only().num_parameters == numel(text_lm)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_input_hook_is_what_transformers_hooks(name: str) -> None:
    """`enable_input_require_grads` (called under checkpointing) hooks the input embedding of
    every sub-model that names one: the tower is in the graph when frozen exactly when its
    `input_hook` says so; `embeddings` means the hooked output is the first block's input."""
    config = CASES[name]
    shape = shape_from_config(json.loads(json.dumps(config)), name)
    model = meta_vlm(config)
    model.enable_input_require_grads()
    tower, _, _ = parts(model)
    hooked = [m for m in tower.modules() if m._forward_hooks]
    assert shape.vision is not None
    assert bool(hooked) == (shape.vision.input_hook != "none")
    if hooked:
        first_block = tower_blocks(tower)[0]
        whole_embeddings = hooked[0] is getattr(tower, "embeddings", None)
        assert whole_embeddings == (shape.vision.input_hook == "embeddings")
        assert first_block not in hooked
