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

The vision tower and projector go into ``ModelShape.vision`` (families/vlm.py,
rust/src/vision.rs): 896² images become 4096 SigLIP patches, pooled to
``mm_tokens_per_image`` (256) language-model tokens.
"""

from __future__ import annotations

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.vlm import SIGLIP_VISION_DEFAULTS, _with_vision, clip_like_tower, language_model
from forge_advisor.shapes.model import ImageRule, Linear, ModelShape, Projector
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
@register_architecture("gemma3")
def build_gemma3(c: ConfigReader, name: str) -> ModelShape:
    text_raw = c.data.get("text_config") or {}
    vision_raw = c.data.get("vision_config") or {}
    if not isinstance(text_raw, dict) or not isinstance(vision_raw, dict):
        raise ForgeError(f"{c.source}: fields 'text_config' and 'vision_config' must be objects")
    text_cfg = {**GEMMA3_TEXT_DEFAULTS, **text_raw, "model_type": "gemma3_text"}
    tie = c.bool("tie_word_embeddings", default=True)
    text = language_model(c, text_cfg, name, tie)
    vision = ConfigReader({**SIGLIP_VISION_DEFAULTS, **vision_raw}, f"{c.source} [vision_config]")
    hv, h = vision.int("hidden_size"), text.hidden_size
    # Gemma3MultiModalProjector: mm_soft_emb_norm (Gemma RMSNorm [Hv]) over the pooled tokens,
    # then `mm_input_projection_weight [Hv, H]` (an nn.Parameter matmul, not an nn.Linear)
    projector = Projector(
        (Linear("multi_modal_projector.mm_input_projection_weight", hv, h, False, "other", lora_targetable=False),),
        other_parameters=hv, norm_width=hv, pooled=True,
    )
    # Gemma3ImageProcessor resizes to image_size² (896² in gemma-3-4b+: 4096 SigLIP patches);
    # the projector's AvgPool2d pools them to mm_tokens_per_image (256) tokens
    patches = (vision.int("image_size") // vision.int("patch_size")) ** 2
    images = ImageRule("fixed", patches=patches, tokens=c.int("mm_tokens_per_image", default=256))
    tower = clip_like_tower(vision, "siglip", projector, images)
    return _with_vision(text, c, "gemma3", tower)
