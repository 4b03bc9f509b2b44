"""Fuyu (``fuyu``): a Persimmon decoder whose image patches enter as tokens through one
linear projection, no vision tower.

Transcribes transformers 5's modeling_fuyu.py: ``FuyuModel`` holds
``language_model = AutoModel.from_config(text_config)`` (a Persimmon decoder, parsed by
decoder.py's ``persimmon`` spec and renamed under ``model.language_model``) and
``vision_embed_tokens = nn.Linear(patch_size² · num_channels, hidden_size)`` (with bias);
``FuyuForCausalLM.lm_head`` maps to the text vocabulary, tied to the embeddings when the
top-level ``tie_word_embeddings`` says so (``_tied_weights_keys``). Hub configs may keep
the text fields at the top level (configuration_fuyu.py ``__post_init__`` pops them into
``text_config``, defaults ``sub_configs_defaults``).

Activations: the language model's rules (decoder.py's Persimmon: LayerNorm q/k norms,
partial rotary, relu²). Each 30 × 30 patch is one language-model token, so image patches
are priced as the sequence positions they occupy (count them in ``max_length``); the patch
projection is a parameter outside the layers (``model.vision_embed_tokens``), and what it
keeps when it trains, its input (patch_size² · channels per image token), is not priced:
the estimate under-states a full fine-tune on images by that (≈ 5.3 KB per image token in
bf16; README "Architecture coverage").
"""

from __future__ import annotations

from dataclasses import replace

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.vlm import language_model
from forge_advisor.shapes.model import ModelShape, Param
from forge_advisor.shapes.registry import register_architecture

__all__: list[str] = []

# configuration_fuyu.py FuyuConfig.sub_configs_defaults["text_config"].init_kwargs
FUYU_TEXT_DEFAULTS = {"model_type": "persimmon", "vocab_size": 262_144, "max_position_embeddings": 16_384, "hidden_size": 4096,
                      "intermediate_size": 16_384, "num_hidden_layers": 36, "num_attention_heads": 64, "hidden_act": "relu2",
                      "layer_norm_eps": 1e-5, "qk_layernorm": True, "hidden_dropout": 0.0, "attention_dropout": 0.0}


@register_architecture("fuyu")
def build_fuyu(c: ConfigReader, name: str) -> ModelShape:
    raw = c.data.get("text_config")
    if raw is None:  # a flat Hub config: the text fields at the top level
        raw = {k: c.data[k] for k in FUYU_TEXT_DEFAULTS if k in c.data and k != "model_type"}
    if not isinstance(raw, dict):
        raise ForgeError(f"{c.source}: field 'text_config' must be an object")
    text_cfg = {**FUYU_TEXT_DEFAULTS, **raw}
    if text_cfg["model_type"] != "persimmon":
        raise ForgeError(f"{c.source}: fuyu's text_config model_type must be 'persimmon', got {text_cfg['model_type']!r}")
    text = language_model(c, text_cfg, name, c.bool("tie_word_embeddings", default=False))
    patch, channels = c.int("patch_size", default=30), c.int("num_channels", default=3)
    # vision_embed_tokens: Linear(patch² · channels, H) with bias
    embed = Param("model.vision_embed_tokens", (patch * patch * channels + 1) * text.hidden_size, "other")
    return replace(text, model_type="fuyu", params=(*text.params, embed))
