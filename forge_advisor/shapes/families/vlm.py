"""Vision-language models: a vision encoder (its own widths and blocks), a projector, and a
decoder-only language model parsed by the existing families.

Each builder counts what transformers 5's ``AutoModelForImageTextToText`` builds (checked
on the meta device in tests/test_shapes_vlm.py); the language model is the text family's
shape with its tensors renamed under ``model.language_model``, and the tower goes into
``ModelShape.vision`` (rust/src/vision.rs prices it at its own sequence: the patches).

* ``qwen2_vl`` / ``qwen2_5_vl`` / ``qwen3_vl`` (``models/qwen2_vl``, ``qwen2_5_vl``,
  ``qwen3_vl``/``modeling_*.py``): ``model.visual`` = ``patch_embed.proj`` (``Conv3d(C, Hv,
  (T, p, p))``, bias only in Qwen3-VL), Qwen3-VL's learned ``pos_embed``, ``blocks`` (``attn.qkv
  [3Hv, Hv]`` and ``attn.proj`` with bias; MLP ``fc1/fc2`` (2-VL, quick_gelu, width
  ``Hv·mlp_ratio``), gated ``gate/up/down_proj`` with bias (2.5-VL) or ``linear_fc1/fc2``
  (3-VL); RMSNorm ×2 in 2.5-VL, LayerNorm ×2 otherwise) and the ``merger`` (a norm over
  ``Hv``, then ``Linear(4Hv, 4Hv)``, GELU, ``Linear(4Hv, H)``; Qwen3-VL adds one
  ``deepstack_merger_list`` entry per ``deepstack_visual_indexes``, normed after the shuffle
  over ``4Hv``). Text: a Qwen2 decoder (2-VL, 2.5-VL: q/k/v bias) or Qwen3 (q/k norms).
  Hub configs keep the text fields at the top level (``Qwen2_5_VLConfig.__post_init__`` pops
  them into ``text_config``); ``tie_word_embeddings`` is the top-level flag.
* ``llava``: ``model.vision_tower`` (CLIP or SigLIP vision model), ``model.multi_modal_projector``
  (``linear_1 [Hv·n_layers → H]``, GELU, ``linear_2 [H → H]``, bias per
  ``multimodal_projector_bias``), ``model.language_model`` from ``text_config`` (any parsed
  decoder type; default llama).
* ``gemma3``: see gemma3.py (same tower type, SigLIP).

Image tokens per image are the processors' arithmetic (``ImageRule``): Qwen's
``smart_resize`` (image_processing_qwen2_vl.py) within the processor's
``[min_pixels, max_pixels]``; LLaVA's CLIP resize to ``image_size`` (576 tokens at
336 / 14, the class token dropped by ``vision_feature_select_strategy="default"``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import layer_norm
from forge_advisor.shapes.model import ImageRule, LayerType, Linear, ModelShape, Param, Projector, VideoRule, VisionTower
from forge_advisor.shapes.registry import builder_for, register_architecture

# image_processing_qwen2_vl.py `Qwen2VLImageProcessor.size`: shortest_edge 56·56 = 3136 px,
# longest_edge 28·28·1280 = 1,003,520 px (1280 tokens). Hub preprocessor configs may raise it
# (Qwen2.5-VL's ships 12,845,056): pass max_pixels for those.
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 1280

# configuration_qwen2_vl.py / configuration_qwen2_5_vl.py / configuration_qwen3_vl.py field defaults
QWEN_TEXT_DEFAULTS = {
    "qwen2_vl": {"vocab_size": 152_064, "hidden_size": 8192, "intermediate_size": 29_568, "num_hidden_layers": 80,
                 "num_attention_heads": 64, "num_key_value_heads": 8, "max_position_embeddings": 32_768},
    "qwen3_vl": {"vocab_size": 151_936, "hidden_size": 4096, "intermediate_size": 22_016, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128, "max_position_embeddings": 128_000},
}
QWEN_TEXT_DEFAULTS["qwen2_5_vl"] = QWEN_TEXT_DEFAULTS["qwen2_vl"]
QWEN_VISION_DEFAULTS = {
    "qwen2_vl": {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "hidden_act": "quick_gelu", "mlp_ratio": 4,
                 "num_heads": 16, "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
    "qwen2_5_vl": {"depth": 32, "hidden_size": 1280, "hidden_act": "silu", "intermediate_size": 3420, "num_heads": 16,
                   "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                   "out_hidden_size": 3584, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
    "qwen3_vl": {"depth": 27, "hidden_size": 1152, "hidden_act": "gelu_pytorch_tanh", "intermediate_size": 4304,
                 "num_heads": 16, "in_channels": 3, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                 "out_hidden_size": 3584, "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24]},
}
# configuration_clip.py CLIPVisionConfig / configuration_siglip.py SiglipVisionConfig field defaults
CLIP_VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                        "num_channels": 3, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu"}
SIGLIP_VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                          "num_channels": 3, "image_size": 224, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh",
                          "vision_use_head": True}
# configuration_llama.py LlamaConfig field defaults: LLaVA-1.5's text_config names only the
# fields that differ (llava-hf/llava-1.5-7b-hf: vocab 32064, 4096 positions)
LLAMA_TEXT_DEFAULTS = {"vocab_size": 32_000, "hidden_size": 4096, "intermediate_size": 11_008, "num_hidden_layers": 32,
                       "num_attention_heads": 32, "max_position_embeddings": 2048}
# LlavaConfig: a missing vision_config is CLIP ViT-L/14-336 (configuration_llava.py)
LLAVA_DEFAULT_VISION = {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                        "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
                        "projection_dim": 768}


def _lin(i: int, o: int) -> int:
    return i * o + o  # nn.Linear with bias


def sub_config(c: ConfigReader, field: str, defaults: dict[str, Any]) -> ConfigReader:
    raw = c.data.get(field) or {}
    if not isinstance(raw, dict):
        raise ForgeError(f"{c.source}: field '{field}' must be an object")
    return ConfigReader({**defaults, **raw}, f"{c.source} [{field}]")


def language_model(c: ConfigReader, text: dict[str, Any], name: str, tie: bool) -> ModelShape:
    """The decoder of ``text`` parsed by its own family, its tensors renamed under
    ``model.language_model`` and tied as the top-level flag says."""
    cfg = {**text, "tie_word_embeddings": tie}
    builder = builder_for(str(cfg.get("model_type", "")))
    if builder is None:
        raise ForgeError(f"{c.source}: text_config model_type {cfg.get('model_type')!r} has no torch-free parser")
    shape = builder(ConfigReader(cfg, f"{c.source} [text_config]"), name)
    params = tuple(
        p if p.role == "lm_head" else replace(p, name=p.name.replace("model.", "model.language_model.", 1))
        for p in shape.params
    )
    return replace(shape, params=params)


def vision_block(hv: int, inter: int, heads: int, *, names: tuple[str, ...], gated: bool, fused_qkv: bool,
                 norms: int) -> LayerType:
    """One encoder block: attention (fused ``qkv`` or ``q/k/v_proj`` + output) and MLP, all
    with bias, and ``norms`` norm parameters."""
    del heads
    if fused_qkv:
        attn = [Linear("attn.qkv", hv, 3 * hv, True, "attention"), Linear("attn.proj", hv, hv, True, "attention")]
    else:
        attn = [Linear(f"self_attn.{n}", hv, hv, True, "attention") for n in ("q_proj", "k_proj", "v_proj", "out_proj")]
    if gated:
        mlp = [Linear(f"mlp.{names[0]}", hv, inter, True, "mlp"), Linear(f"mlp.{names[1]}", hv, inter, True, "mlp"),
               Linear(f"mlp.{names[2]}", inter, hv, True, "mlp")]
    else:
        mlp = [Linear(f"mlp.{names[0]}", hv, inter, True, "mlp"), Linear(f"mlp.{names[1]}", inter, hv, True, "mlp")]
    return LayerType("encoder", tuple(attn + mlp), other_parameters=norms)


def _with_vision(text: ModelShape, c: ConfigReader, model_type: str, tower: VisionTower) -> ModelShape:
    archs = c.data.get("architectures")
    return replace(
        text,
        model_type=model_type,
        vision=tower,
        torch_dtype=c.str("dtype", "torch_dtype", default="") or text.torch_dtype,
        architectures=tuple(a for a in archs if isinstance(a, str)) if isinstance(archs, list) else (),
    )


# -- Qwen2-VL, Qwen2.5-VL, Qwen3-VL ------------------------------------------------------------


def qwen_tower(v: ConfigReader, model_type: str, lm_hidden: int) -> VisionTower:
    depth = v.layers("depth", "num_hidden_layers")
    heads = v.int("num_heads", "num_attention_heads")
    patch, merge, temporal = v.int("patch_size"), v.int("spatial_merge_size"), v.int("temporal_patch_size")
    channels = v.int("in_channels")
    if model_type == "qwen2_vl":
        hv = v.int("embed_dim")
        inter = hv * v.int("mlp_ratio")
        out = v.int("hidden_size")
        block = vision_block(hv, inter, heads, names=("fc1", "fc2"), gated=False, fused_qkv=True, norms=2 * layer_norm(hv))
        norm, gated = "layer_norm", False
    else:
        hv, inter, out = v.int("hidden_size"), v.int("intermediate_size"), v.int("out_hidden_size", default=lm_hidden)
        if model_type == "qwen2_5_vl":
            block = vision_block(hv, inter, heads, names=("gate_proj", "up_proj", "down_proj"), gated=True, fused_qkv=True, norms=2 * hv)
            norm, gated = "rms_norm", True
        else:
            block = vision_block(hv, inter, heads, names=("linear_fc1", "linear_fc2"), gated=False, fused_qkv=True, norms=2 * layer_norm(hv))
            norm, gated = "layer_norm", False
    conv = hv * channels * temporal * patch * patch
    params = [Param("model.visual.patch_embed.proj.weight", conv, "other")]
    wide = hv * merge * merge
    if model_type == "qwen3_vl":
        params[0] = Param("model.visual.patch_embed.proj", conv + hv, "other")  # Conv3d with bias
        params.append(Param("model.visual.pos_embed.weight", v.int("num_position_embeddings") * hv, "other"))
    linears = [Linear("merger.mlp.0", wide, wide, True, "other"), Linear("merger.mlp.2", wide, out, True, "other")]
    # ln_q: RMSNorm(Hv) in 2.5-VL, LayerNorm(Hv) in 2-VL and 3-VL (norm before the 2×2 shuffle)
    merger_norm = hv if model_type == "qwen2_5_vl" else layer_norm(hv)
    other = merger_norm
    if model_type == "qwen3_vl":
        deep = len(v.int_list("deepstack_visual_indexes"))
        if deep:
            # Qwen3VLVisionPatchMerger(use_postshuffle_norm=True): LayerNorm(4Hv) + the two linears
            linears += [Linear("deepstack_merger_list.linear_fc1", wide, wide, True, "other", count=deep),
                        Linear("deepstack_merger_list.linear_fc2", wide, out, True, "other", count=deep)]
            other += deep * layer_norm(wide)
    window = full = ()
    if model_type == "qwen2_5_vl":
        # get_window_index: windows of window_size px = (112 / 14)² = 64 patches, except the
        # fullatt_block_indexes blocks, which attend over the whole image
        window = ((v.int("window_size") // patch) ** 2,)
        full = tuple(i for i in v.int_list("fullatt_block_indexes") if 0 <= i < depth)
    return VisionTower(
        window_patches=window[0] if window else 0, full_attention_blocks=full,
        # Qwen3VLVisionModel sets no `_input_embed_layer`: enable_input_require_grads skips it
        input_hook="none" if model_type == "qwen3_vl" else "patch",
        hidden_size=hv, num_attention_heads=heads, head_dim=hv // heads, intermediate_size=inter, norm=norm,  # type: ignore[arg-type]
        gated_mlp=gated, hidden_act=v.str("hidden_act"), layer_types=(block,), layers=(0,) * depth, params=tuple(params),
        projector=Projector(tuple(linears), other_parameters=other, norm_width=hv * merge * merge),
        images=ImageRule("dynamic", patch_size=patch, merge_size=merge, min_pixels=QWEN_MIN_PIXELS, max_pixels=QWEN_MAX_PIXELS),
        videos=qwen_videos(model_type, patch * merge, temporal),
    )


def qwen_videos(model_type: str, factor: int, temporal: int) -> VideoRule:
    """The video processor's pixel range, ``size = {"shortest_edge": 128·f², "longest_edge":
    768·f²}`` with f = patch · merge (video_processing_qwen2_vl.py: 128·28·28 and 28·28·768;
    video_processing_qwen3_vl.py: 128·32·32 and 32·32·768, a budget over all frames of a video
    in Qwen3-VL's ``smart_resize(num_frames, …)``), and Qwen3-VL's per-group timestamps at its
    sampling ``fps = 2`` (processing_qwen3_vl.py ``replace_video_token``)."""
    qwen3 = model_type == "qwen3_vl"
    return VideoRule(temporal, min_pixels=128 * factor * factor, max_pixels=768 * factor * factor,
                     pixels_span_frames=qwen3, timestamp_fps=2 if qwen3 else 0)


@register_architecture("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
def build_qwen_vl(c: ConfigReader, name: str) -> ModelShape:
    model_type = c.str("model_type")
    text_raw = c.data.get("text_config")
    if text_raw is None:  # Hub configs: the text fields at the top level
        text_raw = {k: val for k, val in c.data.items() if k not in ("vision_config", "model_type", "architectures")}
    if not isinstance(text_raw, dict):
        raise ForgeError(f"{c.source}: field 'text_config' must be an object")
    text_type = "qwen3" if model_type == "qwen3_vl" else "qwen2"
    text_cfg = {**QWEN_TEXT_DEFAULTS[model_type], **text_raw, "model_type": text_type}
    tie = c.bool("tie_word_embeddings", default=False)
    text = language_model(c, text_cfg, name, tie)
    vision = sub_config(c, "vision_config", QWEN_VISION_DEFAULTS[model_type])
    return _with_vision(text, c, model_type, qwen_tower(vision, model_type, text.hidden_size))


# -- CLIP / SigLIP towers (LLaVA, Gemma 3) -------------------------------------------------------


def clip_like_tower(v: ConfigReader, kind: str, projector: Projector, images: ImageRule, *, head: bool = True) -> VisionTower:
    """A CLIP (``clip_vision_model``) or SigLIP (``siglip_vision_model``) vision transformer:
    ``embeddings.patch_embedding`` (Conv2d; bias in SigLIP), position embedding (CLIP: + the
    class embedding and its position), CLIP's ``pre_layrnorm``, blocks of ``self_attn.{q,k,v,
    out}_proj`` + ``mlp.fc1/fc2`` (bias) + two LayerNorms, ``post_layernorm``, SigLIP's pooling
    ``head`` when ``vision_use_head`` (models/clip, models/siglip ``modeling_*.py``)."""
    hv, inter = v.int("hidden_size"), v.int("intermediate_size")
    heads = v.int("num_attention_heads")
    depth = v.layers("num_hidden_layers")
    channels, image, patch = v.int("num_channels"), v.int("image_size"), v.int("patch_size")
    if patch > image:
        raise ForgeError(f"{v.source}: patch_size={patch} is larger than image_size={image}")
    grid = (image // patch) ** 2
    block = vision_block(hv, inter, heads, names=("fc1", "fc2"), gated=False, fused_qkv=False, norms=2 * layer_norm(hv))
    if kind == "clip":
        params = [Param("embeddings.class_embedding", hv, "other"),
                  Param("embeddings.patch_embedding.weight", hv * channels * patch * patch, "other"),
                  Param("embeddings.position_embedding.weight", (grid + 1) * hv, "other"),
                  Param("pre_layrnorm", layer_norm(hv), "other")]
    else:
        params = [Param("embeddings.patch_embedding", hv * channels * patch * patch + hv, "other"),
                  Param("embeddings.position_embedding.weight", grid * hv, "other")]
    params.append(Param("post_layernorm", layer_norm(hv), "other"))
    if kind == "siglip" and head and v.bool("vision_use_head", default=True):
        # SiglipMultiheadAttentionPoolingHead: probe [1,1,H], nn.MultiheadAttention (in_proj
        # [3H,H]+[3H], out_proj Linear(H,H)), layernorm, SiglipMLP
        head = hv + _lin(hv, 3 * hv) + _lin(hv, hv) + layer_norm(hv) + _lin(hv, inter) + _lin(inter, hv)
        params.append(Param("head", head, "other"))
    return VisionTower(
        hidden_size=hv, num_attention_heads=heads, head_dim=hv // heads, intermediate_size=inter, norm="layer_norm",
        gated_mlp=False, hidden_act=v.str("hidden_act"), layer_types=(block,), layers=(0,) * depth,
        params=tuple(params), projector=projector, images=images, post_norm=True,
    )


def tower_kind(vision_type: str, source: str) -> str:
    if vision_type in ("clip_vision_model", "clip"):
        return "clip"
    if vision_type in ("siglip_vision_model", "siglip"):
        return "siglip"
    raise ForgeError(f"{source}: vision_config model_type {vision_type!r} is not parsed without torch (CLIP and SigLIP are)")


@register_architecture("llava")
def build_llava(c: ConfigReader, name: str) -> ModelShape:
    text_raw = c.data.get("text_config") or {"model_type": "llama"}
    vision_raw = c.data.get("vision_config") or LLAVA_DEFAULT_VISION
    if not isinstance(text_raw, dict) or not isinstance(vision_raw, dict):
        raise ForgeError(f"{c.source}: fields 'text_config' and 'vision_config' must be objects")
    text_cfg = {"model_type": "llama", **text_raw}
    if text_cfg["model_type"] == "llama":
        text_cfg = {**LLAMA_TEXT_DEFAULTS, **text_cfg}
    text = language_model(c, text_cfg, name, c.bool("tie_word_embeddings", default=False))
    kind = tower_kind(str(vision_raw.get("model_type", "clip_vision_model")), c.source)
    defaults = CLIP_VISION_DEFAULTS if kind == "clip" else SIGLIP_VISION_DEFAULTS
    v = ConfigReader({**defaults, **vision_raw}, f"{c.source} [vision_config]")
    hv, h = v.int("hidden_size"), text.hidden_size
    layer = c.data.get("vision_feature_layer", -2)
    n_feat = len(layer) if isinstance(layer, list) else 1  # a list of layers is concatenated
    bias = c.bool("multimodal_projector_bias", default=True)
    projector = Projector((Linear("multi_modal_projector.linear_1", hv * n_feat, h, bias, "other"),
                           Linear("multi_modal_projector.linear_2", h, h, bias, "other")))
    # the processor resizes every image to image_size² (image_processing_clip.py); CLIP
    # adds a class position that "default" feature selection drops (modeling_llava.py)
    grid = (v.int("image_size") // v.int("patch_size")) ** 2
    cls = 1 if kind == "clip" else 0
    full = c.str("vision_feature_select_strategy", default="default") == "full"
    images = ImageRule("fixed", patches=grid + cls, tokens=grid + (cls if full else 0))
    tower = clip_like_tower(v, kind, projector, images)
    return _with_vision(text, c, "llava", tower)


# -- Idefics3, SmolVLM ---------------------------------------------------------------------------

# configuration_idefics3.py Idefics3VisionConfig field defaults (SmolVLM's are the same)
IDEFICS3_VISION_DEFAULTS = {"hidden_size": 1152, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 16,
                            "num_channels": 3, "image_size": 224, "patch_size": 32, "hidden_act": "gelu_pytorch_tanh"}
# image_processing_smolvlm.py / image_processing_idefics3.py: `size = {"longest_edge": 4 * 364}`,
# `max_image_size = {"longest_edge": 364}` — an image is resized to 4 tiles on its long side and
# split into tiles of the encoder's size, plus the whole image resized to one tile: at most
# 4 × 4 + 1 = 17 encoder images
TILES_PER_SIDE = 4


@register_architecture("idefics3", "smolvlm")
def build_idefics3(c: ConfigReader, name: str) -> ModelShape:
    """``model.vision_model`` (a SigLIP-style encoder without pooling head:
    modeling_idefics3.py ``Idefics3VisionTransformer``), ``model.connector.modality_projection.proj``
    (``Linear(Hv · scale², H)`` without bias, after the pixel shuffle that folds scale × scale
    patches into one token) and ``model.text_model`` (``text_config``, default llama)."""
    text_raw = c.data.get("text_config") or {"model_type": "llama"}
    vision_raw = c.data.get("vision_config") or {}
    if not isinstance(text_raw, dict) or not isinstance(vision_raw, dict):
        raise ForgeError(f"{c.source}: fields 'text_config' and 'vision_config' must be objects")
    text_cfg = {"model_type": "llama", **text_raw}
    if text_cfg["model_type"] == "llama":
        text_cfg = {**LLAMA_TEXT_DEFAULTS, **text_cfg}
    text = language_model(c, text_cfg, name, c.bool("tie_word_embeddings", default=False))
    v = ConfigReader({**IDEFICS3_VISION_DEFAULTS, **vision_raw}, f"{c.source} [vision_config]")
    scale = c.int("scale_factor", default=2)
    hv = v.int("hidden_size")
    projector = Projector((Linear("connector.modality_projection.proj", hv * scale * scale, text.hidden_size, False, "other"),))
    per_tile = (v.int("image_size") // v.int("patch_size")) ** 2
    tiles = TILES_PER_SIDE * TILES_PER_SIDE + 1
    images = ImageRule("fixed", patches=tiles * per_tile, tokens=tiles * (per_tile // (scale * scale)), tiles=tiles)
    # Idefics3VisionTransformer.get_input_embeddings returns `self.embeddings` (its output is
    # the first block's input)
    tower = replace(clip_like_tower(v, "siglip", projector, images, head=False), input_hook="embeddings")
    return _with_vision(text, c, c.str("model_type"), tower)
