"""Gemma 3 multimodal (``model_type: gemma3``: gemma-3-4b/12b/27b).

transformers 5 maps ``gemma3`` to ``Gemma3ForConditionalGeneration`` in
``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` (``models/auto/modeling_auto.py``), so
``AutoModelForCausalLM`` builds the whole model, vision tower included; this parser counts
exactly that (``models/gemma3/modeling_gemma3.py``):

* ``model.language_model``: a ``Gemma3TextModel`` (the ``gemma3_text`` variant of the
  llama-like parser). ``text_config`` fields that the published config.json omits take
  ``Gemma3TextConfig``'s defaults (``configuration_gemma3.py``: vocab 262208, heads 8,
  kv heads 4, head_dim 256, ...).
* ``model.vision_tower``: a SigLIP vision encoder (``models/siglip/modeling_siglip.py``):
  ``patch_embedding = Conv2d(C, Hv, p, p)`` with bias, ``position_embedding`` of
  ``(image_size // p)**2`` rows, per layer ``layer_norm1``/``layer_norm2`` (LayerNorm) +
  ``self_attn.{q,k,v,out}_proj = Linear(Hv, Hv)`` + ``mlp.fc1/fc2`` (with bias),
  ``post_layernorm``, and the attention-pooling ``head`` when ``vision_use_head``.
* ``model.multi_modal_projector``: ``mm_input_projection_weight [Hv, H]`` and
  ``mm_soft_emb_norm`` (Gemma RMSNorm, ``[Hv]``).
* ``lm_head`` tied to the text embeddings unless the top-level ``tie_word_embeddings`` is
  false (the text config's own flag is not what decides).

The vision tower and projector are listed as non-layer tensors (role ``other``): the
estimator treats them as frozen weights, and LoRA targets are the language model's.
"""

from __future__ import annotations

from dataclasses import replace

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import layer_norm
from forge_advisor.shapes.families.llama import build_llama_like
from forge_advisor.shapes.model import ModelShape, Param
from forge_advisor.shapes.registry import register_architecture

# configuration_gemma3.py, Gemma3TextConfig field defaults (the 4B config.json relies on them)
GEMMA3_TEXT_DEFAULTS = {
    "model_type": "gemma3_text",
    "vocab_size": 262_208,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131_072,
    "attention_bias": False,
}
# configuration_siglip.py, SiglipVisionConfig field defaults
SIGLIP_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "vision_use_head": True,
}


def siglip_vision_parameters(v: ConfigReader) -> int:
    """Every parameter of ``SiglipVisionTransformer`` (see the module docstring)."""
    d = SIGLIP_VISION_DEFAULTS
    hidden = v.int("hidden_size", default=d["hidden_size"])
    inter = v.int("intermediate_size", default=d["intermediate_size"])
    n_layers = v.layers("num_hidden_layers", default=d["num_hidden_layers"])
    channels = v.int("num_channels", default=d["num_channels"])
    image = v.int("image_size", default=d["image_size"])
    patch = v.int("patch_size", default=d["patch_size"])
    if patch > image:
        raise ForgeError(f"{v.source}: patch_size={patch} is larger than image_size={image}")
    linear = lambda i, o: i * o + o  # noqa: E731  (nn.Linear with bias)
    per_layer = 4 * linear(hidden, hidden) + linear(hidden, inter) + linear(inter, hidden) + 2 * layer_norm(hidden)
    embeddings = hidden * channels * patch * patch + hidden + (image // patch) ** 2 * hidden
    total = embeddings + n_layers * per_layer + layer_norm(hidden)  # post_layernorm
    if v.bool("vision_use_head", default=d["vision_use_head"]):
        # SiglipMultiheadAttentionPoolingHead: probe [1,1,H], nn.MultiheadAttention
        # (in_proj [3H,H]+[3H], out_proj Linear(H,H)), layernorm, SiglipMLP
        total += hidden + linear(hidden, 3 * hidden) + linear(hidden, hidden) + layer_norm(hidden)
        total += linear(hidden, inter) + linear(inter, hidden)
    return total


@register_architecture("gemma3")
def build_gemma3(c: ConfigReader, name: str) -> ModelShape:
    text_raw = c.data.get("text_config") or {}
    vision_raw = c.data.get("vision_config") or {}
    if not isinstance(text_raw, dict) or not isinstance(vision_raw, dict):
        raise ForgeError(f"{c.source}: fields 'text_config' and 'vision_config' must be objects")
    text_cfg = {**GEMMA3_TEXT_DEFAULTS, **text_raw, "model_type": "gemma3_text", "tie_word_embeddings": True}
    text = build_llama_like(ConfigReader(text_cfg, f"{c.source} [text_config]"), name)
    vision = ConfigReader(vision_raw, f"{c.source} [vision_config]")
    v_hidden = vision.int("hidden_size", default=SIGLIP_VISION_DEFAULTS["hidden_size"])
    tie = c.bool("tie_word_embeddings", default=True)
    h, vocab = text.hidden_size, text.vocab_size
    params = [
        Param("model.language_model.embed_tokens.weight", vocab * h, "embedding"),
        Param("model.language_model.norm.weight", h, "norm"),
        Param("model.vision_tower", siglip_vision_parameters(vision), "other"),
        Param("model.multi_modal_projector", v_hidden * h + v_hidden, "other"),
    ]
    if not tie:
        params.append(Param("lm_head.weight", vocab * h, "lm_head"))
    return replace(
        text,
        model_type="gemma3",
        tie_word_embeddings=tie,
        params=tuple(params),
        torch_dtype=c.str("dtype", "torch_dtype", default="") or text.torch_dtype,
        architectures=tuple(a for a in c.data.get("architectures") or () if isinstance(a, str))
        if isinstance(c.data.get("architectures"), list)
        else (),
    )
