"""Llama 3.2 Vision (``model_type: mllama``): a tiled vision encoder whose states the text
decoder reads through cross-attention layers, not through image tokens in its sequence.

What transformers 5 builds (``models/mllama/modeling_mllama.py``; counted here without torch
and checked against ``AutoModelForImageTextToText.from_config`` on the meta device in
tests/test_shapes_vlm.py):

* ``model.vision_model`` (``MllamaVisionModel``): ``patch_embedding`` = ``Conv2d(C, Hv, p, p,
  bias=False)``; ``class_embedding [Hv]``; ``gated_positional_embedding`` (``gate [1]``,
  ``embedding [P, Hv]`` with ``P = (image_size // p)² + 1`` positions per tile, the class
  token included, and ``tile_embedding = Embedding(A + 1, max_num_tiles · P · Hv)``);
  ``pre_tile_positional_embedding`` and ``post_tile_positional_embedding``
  (``Embedding(A + 1, max_num_tiles · Hv)`` + ``gate [1]``), ``A`` =
  ``len(supported_aspect_ratios)``; ``layernorm_pre`` / ``layernorm_post`` (LayerNorm(Hv));
  ``transformer``: ``num_hidden_layers`` local blocks, ``global_transformer``:
  ``num_global_layers`` gated blocks (``gate_attn``, ``gate_ffn``: 2 more parameters). A
  block is ``self_attn.{q,k,v,o}_proj`` (``Linear(Hv, Hv)``, no bias), ``mlp.fc1/fc2`` (with
  bias), ``input_layernorm`` and ``post_attention_layernorm`` (LayerNorm).
* ``model.multi_modal_projector`` = ``Linear(vision_output_dim, H)`` with bias; its input is
  the global stack's output concatenated with the local stack's outputs at
  ``intermediate_layers_indices`` (``Hv · (1 + 5)`` = 7680 in the 11B/90B).
* ``model.language_model`` (``MllamaTextModel``): ``embed_tokens = Embedding(vocab + 8, H)``
  (``vocab_size + 8``: the image token and 7 spare rows), ``num_hidden_layers`` layers of which
  those at ``cross_attention_layers`` are ``MllamaCrossAttentionDecoderLayer`` *in place of*
  a self-attention layer (``for layer_idx in range(num_hidden_layers): if layer_idx in
  cross_attention_layers``: the 11B's 40 layers are 32 self + 8 cross). A cross layer is
  ``cross_attn.{q,k,v,o}_proj`` (k/v read the vision states), ``cross_attn.q_norm`` /
  ``k_norm`` (RMSNorm over ``head_dim``), two RMSNorms, ``cross_attn_attn_gate`` and
  ``cross_attn_mlp_gate`` (``[1]`` each) and the gated MLP. Head width is ``H // heads``
  in both attentions. ``lm_head`` is never tied (``_tied_weights_keys`` is commented out).

``AutoModelForCausalLM`` maps ``mllama`` to ``MllamaForCausalLM``, which builds only
``config.get_text_config()``: the language model above without tower and projector (the
architecture sweep compares that part: ``ModelShape.text_only``).

Images (``ImageRule`` kind ``cross``): ``MllamaImageProcessor`` fits an image to a canvas of
at most ``max_image_tiles`` tiles of ``image_size²`` and ``pad_batches_and_tiles`` pads every
image to ``max_image_tiles`` tiles; the model requires that count (the aspect-ratio
embeddings are reshaped to ``max_num_tiles``). So every image costs the tower
``max_num_tiles`` tiles whatever its size, and ``max_pixels`` changes nothing (the estimate
says so). Per tile the tower runs ``P`` positions padded to a multiple of 8
(``num_padding_patches = (8 - P % 8) % 8``: 1025 → 1032), local and global blocks alike
attending over all tiles of the image (``hidden_states.view(B · media, -1, dim)``); the
cross-attention layers read ``tiles · P`` vision states per image (the padding sliced off),
and the text holds one ``<|image|>`` token per image.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import layer_norm
from forge_advisor.shapes.families.vlm import _with_vision, language_model
from forge_advisor.shapes.model import ImageRule, LayerType, Linear, ModelShape, Param, Projector, VisionTower
from forge_advisor.shapes.registry import register_architecture

# configuration_mllama.py MllamaTextConfig / MllamaVisionConfig field defaults
MLLAMA_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 128_256, "hidden_size": 4096, "hidden_act": "silu", "num_hidden_layers": 40, "num_attention_heads": 32,
    "num_key_value_heads": 8, "intermediate_size": 14_336, "max_position_embeddings": 131_072, "dropout": 0.0,
    "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
}
MLLAMA_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1280, "hidden_act": "gelu", "num_hidden_layers": 32, "num_global_layers": 8, "attention_heads": 16,
    "num_channels": 3, "intermediate_size": 5120, "vision_output_dim": 7680, "image_size": 448, "patch_size": 14,
    "max_num_tiles": 4, "intermediate_layers_indices": [3, 7, 15, 23, 30],
    "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
}
# modeling_mllama.py MllamaVisionModel.forward: `num_padding_patches = (8 - (n % 8)) % 8`
PAD_MULTIPLE = 8


def cross_layers(c: ConfigReader, n_layers: int) -> list[int]:
    raw = c.data.get("cross_attention_layers")
    if not isinstance(raw, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
        raise ForgeError(f"{c.source}: cross_attention_layers must be a list of layer indices, got {raw!r}")
    return [i for i in range(n_layers) if i in raw]


def text_shape(c: ConfigReader, text_raw: dict[str, Any], name: str) -> tuple[ModelShape, int]:
    """The language model: the llama parser's self-attention layers, the cross-attention
    layers in their places, ``embed_tokens`` of ``vocab + 8`` rows. Returns it with the number
    of cross layers."""
    t = ConfigReader({**MLLAMA_TEXT_DEFAULTS, **text_raw}, f"{c.source} [text_config]")
    hidden, heads = t.int("hidden_size"), t.int("num_attention_heads")
    kv = t.int("num_key_value_heads", default=heads)
    head_dim = hidden // heads  # MllamaTextSelfAttention / MllamaTextCrossAttention: hidden_size // num_heads
    n_layers = t.layers("num_hidden_layers")
    cross = cross_layers(t, n_layers)
    drop = t.data.get("dropout", 0.0)
    llama_cfg = {k: t.data[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                        "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "hidden_act")}
    llama_cfg.update(model_type="llama", head_dim=head_dim, attention_dropout=drop)
    text = language_model(c, llama_cfg, name, tie=False)
    self_layer = text.layer_types[0]
    mlp = tuple(lin for lin in self_layer.linears if lin.role == "mlp")
    attn = (Linear("cross_attn.q_proj", hidden, heads * head_dim, False, "attention"),
            Linear("cross_attn.k_proj", hidden, kv * head_dim, False, "attention"),
            Linear("cross_attn.v_proj", hidden, kv * head_dim, False, "attention"),
            Linear("cross_attn.o_proj", heads * head_dim, hidden, False, "attention"))
    # two RMSNorm(H), q_norm and k_norm RMSNorm(head_dim), the two tanh gates of one element
    cross_type = LayerType("decoder", attn + mlp, other_parameters=2 * hidden + 2 * head_dim + 2, cross_attention=True)
    vocab = t.int("vocab_size")
    params = tuple(replace(p, numel=(vocab + 8) * hidden) if p.role == "embedding" else p for p in text.params)
    layers = tuple(1 if i in cross else 0 for i in range(n_layers))
    types = (self_layer, cross_type) if cross else (self_layer,)
    return replace(text, model_type="mllama", layer_types=types, layers=layers, params=params), len(cross)


def vision_tower(v: ConfigReader, lm_hidden: int) -> VisionTower:
    hv, inter = v.int("hidden_size"), v.int("intermediate_size")
    heads = v.int("attention_heads", "num_attention_heads")
    if hv % heads:
        raise ForgeError(f"{v.source}: hidden_size={hv} is not a multiple of attention_heads={heads}")
    local, global_ = v.layers("num_hidden_layers"), v.int("num_global_layers", minimum=0)
    channels, image, patch = v.int("num_channels"), v.int("image_size"), v.int("patch_size")
    if patch > image:
        raise ForgeError(f"{v.source}: patch_size={patch} is larger than image_size={image}")
    tiles = v.int("max_num_tiles")
    ratios = v.data.get("supported_aspect_ratios")
    if not isinstance(ratios, list) or not ratios:
        raise ForgeError(f"{v.source}: supported_aspect_ratios must be a non-empty list, got {ratios!r}")
    inter_idx = v.data.get("intermediate_layers_indices")
    if not isinstance(inter_idx, list):
        raise ForgeError(f"{v.source}: intermediate_layers_indices must be a list, got {inter_idx!r}")
    # the projector's input width as built (`Linear(vision_output_dim, H)`); a forward needs it
    # to equal Hv · (1 + len(intermediate_layers_indices)), the concatenation's width
    out_dim = v.int("vision_output_dim")
    positions = (image // patch) ** 2 + 1  # the patches of one tile and the class token
    aspect_rows = len(ratios) + 1  # nn.Embedding(max_aspect_ratio_id + 1, …): id 0 is padding
    attn = tuple(Linear(f"self_attn.{n}", hv, hv, False, "attention") for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    mlp = (Linear("mlp.fc1", hv, inter, True, "mlp"), Linear("mlp.fc2", inter, hv, True, "mlp"))
    norms = 2 * layer_norm(hv)
    block = LayerType("encoder", attn + mlp, other_parameters=norms)
    gated = LayerType("encoder", attn + mlp, other_parameters=norms + 2)  # gate_attn, gate_ffn
    p = "model.vision_model"
    params = (
        Param(f"{p}.patch_embedding.weight", hv * channels * patch * patch, "other"),
        Param(f"{p}.class_embedding", hv, "other"),
        Param(f"{p}.gated_positional_embedding", 1 + positions * hv + aspect_rows * tiles * positions * hv, "other"),
        Param(f"{p}.pre_tile_positional_embedding", aspect_rows * tiles * hv + 1, "other"),
        Param(f"{p}.post_tile_positional_embedding", aspect_rows * tiles * hv + 1, "other"),
        Param(f"{p}.layernorm_pre", layer_norm(hv), "other"),
        Param(f"{p}.layernorm_post", layer_norm(hv), "other"),
    )
    padded = positions + (PAD_MULTIPLE - positions % PAD_MULTIPLE) % PAD_MULTIPLE
    images = ImageRule("cross", patches=tiles * padded, tokens=1, tiles=tiles, vision_tokens=tiles * positions)
    projector = Projector((Linear("multi_modal_projector", out_dim, lm_hidden, True, "other"),))
    return VisionTower(
        hidden_size=hv, num_attention_heads=heads, head_dim=hv // heads, intermediate_size=inter, norm="layer_norm",
        gated_mlp=False, hidden_act=v.str("hidden_act"), layer_types=(block, gated) if global_ else (block,),
        layers=(0,) * local + (1,) * global_, params=params, projector=projector, images=images,
        # MllamaVisionModel.get_input_embeddings returns `self.patch_embedding`
        input_hook="patch",
    )


@register_architecture("mllama")
def build_mllama(c: ConfigReader, name: str) -> ModelShape:
    text_raw = c.data.get("text_config") or {}
    vision_raw = c.data.get("vision_config") or {}
    if not isinstance(text_raw, dict) or not isinstance(vision_raw, dict):
        raise ForgeError(f"{c.source}: fields 'text_config' and 'vision_config' must be objects")
    text, _ = text_shape(c, {k: v for k, v in text_raw.items() if k != "model_type"}, name)
    vision = ConfigReader({**MLLAMA_VISION_DEFAULTS, **vision_raw}, f"{c.source} [vision_config]")
    return _with_vision(text, c, "mllama", vision_tower(vision, text.hidden_size))
