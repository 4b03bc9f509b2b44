"""Gemma 4 (``gemma4_text``, ``gemma4``; the encoder-free ``gemma4_unified_text`` /
``gemma4_unified``): transformers 5's ``models/gemma4/modeling_gemma4.py`` and
``models/gemma4_unified/modeling_gemma4_unified.py``, layer by layer.

Each decoder layer (``Gemma4TextDecoderLayer``) has its own shape, decided per layer:

* attention (``Gemma4TextAttention``): ``q_proj [heads·hd, H]``, ``o_proj [H, heads·hd]``,
  ``q_norm [hd]``; ``k_proj``/``v_proj [kv·hd, H]``, ``k_norm [hd]`` (``v_norm`` has no
  weight) only in a layer that computes its own K/V. ``hd`` and ``kv`` are the layer's
  (``config.per_layer_config[i]``): a full-attention layer has ``global_head_dim`` (512 by
  default) and, where ``attention_k_eq_v``, ``num_global_key_value_heads`` K/V heads and no
  ``v_proj`` (the keys are the values: ``use_alternative_attention``);
* KV sharing (``Gemma4TextConfig.kv_sharing_modes``): the last ``num_kv_shared_layers``
  layers reuse the K/V of the last earlier layer of their kind and keep no K/V projections
  or norms; with ``use_double_wide_mlp`` their MLP is twice ``intermediate_size`` wide;
* MLP ``gate/up/down_proj`` (GeGLU) and four norms (input, post-attention, pre- and
  post-feedforward), all ``[H]``; ``layer_scalar`` is a buffer;
* per-layer embeddings (``hidden_size_per_layer_input`` P > 0): ``per_layer_input_gate
  [P, H]``, ``per_layer_projection [H, P]``, ``post_per_layer_input_norm [H]``; the model
  adds ``embed_tokens_per_layer [V_p, L·P]``, ``per_layer_model_projection [L·P, H]`` and
  ``per_layer_projection_norm [P]``;
* ``enable_moe_block``: beside the dense MLP, ``router`` (``proj [E, H]``, ``scale [H]``,
  ``per_expert_scale [E]``), ``experts.gate_up_proj [E, 2I, H]``, ``experts.down_proj
  [E, H, I]`` and three more norms ``[H]``.

The multimodal ``gemma4`` adds ``model.vision_tower`` (``Gemma4VisionModel``: a bias-free
``patch_embedder.input_proj [Hv, 3p²]``, ``position_embedding_table [2, N, Hv]``, blocks of
the text layer's layout whose linears are ``Gemma4ClippableLinear`` wrappers (``….linear``),
q/k norms ``[hd]`` and four norms ``[Hv]``; the pooler has no weights), ``embed_vision``
(``embedding_projection [H, Hv]``, an unweighted norm), and ``model.audio_tower``
(``Gemma4AudioModel``, a conformer) with ``embed_audio`` when the config has one. The audio
tower is counted exactly as parameters outside the layers; its activations are not priced
(a plan carries no audio). Images: the processor's budget of ``max_soft_tokens`` (280)
language-model tokens per image, from ``280 · pooling_kernel_size²`` patches
(image_processing_gemma4.py, processing_gemma4.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import fused_experts, python_facts
from forge_advisor.shapes.families.vlm import _with_vision, language_model
from forge_advisor.shapes.hints import hints_for
from forge_advisor.shapes.model import ImageRule, LayerType, Linear, ModelShape, Param, Projector, VisionTower
from forge_advisor.shapes.registry import register_architecture

# configuration_gemma4.py Gemma4TextConfig field defaults (gemma4_unified_text has no
# per-layer embeddings and no MoE block: its config class lacks the fields)
TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 262_144, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 30,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131_072, "tie_word_embeddings": True, "attention_bias": False,
    "vocab_size_per_layer_input": 262_144, "hidden_size_per_layer_input": 256, "attention_k_eq_v": False,
    "num_kv_shared_layers": 0, "enable_moe_block": False, "use_double_wide_mlp": False,
}
UNIFIED_TEXT_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in TEXT_DEFAULTS.items() if k not in ("vocab_size_per_layer_input", "enable_moe_block")},
    "hidden_size_per_layer_input": 0, "max_position_embeddings": 262_144,
}
# Gemma4TextConfig.__post_init__: `global_head_dim` defaults to 512; sliding pattern 5:1
GLOBAL_HEAD_DIM = 512
SLIDING_PATTERN = 6
# configuration_gemma4.py Gemma4VisionConfig / Gemma4AudioConfig field defaults
VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 16, "num_attention_heads": 12,
    "num_key_value_heads": 12, "head_dim": 64, "hidden_activation": "gelu_pytorch_tanh", "attention_bias": False,
    "pooling_kernel_size": 3, "patch_size": 16, "position_embedding_size": 10 * 1024,
}
AUDIO_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024, "num_hidden_layers": 12, "num_attention_heads": 8, "subsampling_conv_channels": [128, 32],
    "conv_kernel_size": 5, "output_proj_dims": 1536,
}
# image_processing_gemma4.py Gemma4ImageProcessor.max_soft_tokens
MAX_SOFT_TOKENS = 280


def layer_kinds(c: ConfigReader, n_layers: int) -> list[str]:
    """``layer_types`` as transformers settles them: 5 sliding + 1 full by default, the last
    layer forced to full attention (``Gemma4TextConfig.__post_init__``)."""
    raw = c.data.get("layer_types")
    if raw is None:
        kinds = ["sliding_attention" if (i + 1) % SLIDING_PATTERN else "full_attention" for i in range(n_layers)]
    elif isinstance(raw, list) and len(raw) == n_layers and all(isinstance(t, str) for t in raw):
        kinds = list(raw)
    else:
        raise ForgeError(f"{c.source}: field 'layer_types' must list one string per layer ({n_layers})")
    kinds[-1] = "full_attention"
    return kinds


def per_layer_overrides(c: ConfigReader, kinds: list[str]) -> list[dict[str, Any]]:
    """Each layer's overrides: ``per_layer_config`` where the config has one (``to_dict``'s
    form, keys "05"), else what ``__post_init__`` derives for full-attention layers:
    ``head_dim = global_head_dim`` and, with ``attention_k_eq_v``, ``num_global_key_value_heads``."""
    table = c.data.get("per_layer_config")
    if table is not None:
        if not isinstance(table, dict):
            raise ForgeError(f"{c.source}: field 'per_layer_config' must be an object of layer overrides")
        out: list[dict[str, Any]] = [{} for _ in kinds]
        for key, over in table.items():
            if not str(key).isdigit() or int(key) >= len(kinds) or not isinstance(over, dict):
                raise ForgeError(f"{c.source}: per_layer_config key {key!r} must be a layer index below {len(kinds)}")
            out[int(key)] = over
        return out
    full: dict[str, Any] = {"head_dim": c.int("global_head_dim", default=GLOBAL_HEAD_DIM)}
    global_kv = c.data.get("num_global_key_value_heads")
    if global_kv is not None and c.bool("attention_k_eq_v", default=False):
        full["num_key_value_heads"] = global_kv
    return [full if k == "full_attention" else {} for k in kinds]


def kv_shared(c: ConfigReader, kinds: list[str]) -> list[bool]:
    """Layers that reuse an earlier layer's K/V (``kv_sharing_modes`` == "reuse"): the last
    ``num_kv_shared_layers``; transformers refuses a split where a shared kind has no producer."""
    n = len(kinds)
    shared = c.int("num_kv_shared_layers", default=0, minimum=0, maximum=n)
    first = n - shared
    if 0 < shared < n and set(kinds[:first]) != set(kinds):
        raise ForgeError(f"{c.source}: num_kv_shared_layers={shared} leaves a layer type without a layer producing its cache")
    return [i >= first for i in range(n)]


def _text_layer(c: ConfigReader, over: dict[str, Any], full: bool, shared: bool) -> LayerType:
    lc = ConfigReader({**c.data, **over}, f"{c.source} [layer]")
    h, heads = c.int("hidden_size"), lc.int("num_attention_heads")
    hd, kv = lc.int("head_dim"), lc.int("num_key_value_heads")
    bias = c.bool("attention_bias", default=False)
    lins = [Linear("self_attn.q_proj", h, heads * hd, bias, "attention")]
    other = hd  # q_norm
    if not shared:
        lins.append(Linear("self_attn.k_proj", h, kv * hd, bias, "attention"))
        if not (full and c.bool("attention_k_eq_v", default=False)):
            lins.append(Linear("self_attn.v_proj", h, kv * hd, bias, "attention"))
        other += hd  # k_norm (v_norm has no weight)
    lins.append(Linear("self_attn.o_proj", heads * hd, h, bias, "attention"))
    inter = lc.int("intermediate_size") * (2 if shared and c.bool("use_double_wide_mlp", default=False) else 1)
    lins += [Linear("mlp.gate_proj", h, inter, False, "mlp"), Linear("mlp.up_proj", h, inter, False, "mlp"),
             Linear("mlp.down_proj", inter, h, False, "mlp")]
    other += 4 * h
    ple = c.int("hidden_size_per_layer_input", default=0, minimum=0)
    if ple:
        lins += [Linear("per_layer_input_gate", h, ple, False, "other"), Linear("per_layer_projection", ple, h, False, "other")]
        other += h
    moe = c.bool("enable_moe_block", default=False)
    if moe:
        e, mi = c.int("num_experts"), c.int("moe_intermediate_size")
        lins += [Linear("router.proj", h, e, False, "router"),
                 *fused_experts("experts", h, mi, e)]
        other += h + e + 3 * h  # router.scale, router.per_expert_scale, three more norms
    # Gemma4TextConfig.sliding_window (512 by default) on "sliding_attention" layers
    window = 0 if full else c.int("sliding_window", default=512)
    return LayerType("decoder", tuple(lins), other_parameters=other, moe=moe, sliding_window=window)


def build_text(c: ConfigReader, name: str, model_type: str) -> ModelShape:
    h, n_layers = c.int("hidden_size"), c.layers("num_hidden_layers")
    heads = c.int("num_attention_heads")
    vocab = c.int("vocab_size")
    kinds = layer_kinds(c, n_layers)
    overrides = per_layer_overrides(c, kinds)
    shared = kv_shared(c, kinds)
    layer_types: list[LayerType] = []
    index: dict[LayerType, int] = {}
    layers = []
    for over, kind, sh in zip(overrides, kinds, shared):
        lt = _text_layer(c, over, kind == "full_attention", sh)
        layers.append(index.setdefault(lt, len(layer_types)))
        if len(layer_types) < len(index):
            layer_types.append(lt)
    params = [Param("model.embed_tokens.weight", vocab * h, "embedding")]
    ple = c.int("hidden_size_per_layer_input", default=0, minimum=0)
    if ple:
        params += [Param("model.embed_tokens_per_layer.weight", c.int("vocab_size_per_layer_input") * n_layers * ple, "embedding"),
                   Param("model.per_layer_model_projection.weight", h * n_layers * ple, "other"),
                   Param("model.per_layer_projection_norm", ple, "norm")]
    params.append(Param("model.norm", h, "norm"))
    tie = c.bool("tie_word_embeddings", default=True)
    if not tie:
        params.append(Param("lm_head.weight", vocab * h, "lm_head"))
    # the widest layer's head width and K/V heads for the global fields (each layer's own
    # widths are in its linears, which the activation model reads layer by layer)
    head_dims = [ConfigReader({**c.data, **o}, c.source).int("head_dim") for o in overrides]
    kvs = [ConfigReader({**c.data, **o}, c.source).int("num_key_value_heads") for o in overrides]
    moe = c.bool("enable_moe_block", default=False)
    shape = ModelShape(
        name=name, model_type=model_type, hidden_size=h, num_hidden_layers=n_layers, num_attention_heads=heads,
        num_key_value_heads=max(kvs), head_dim=max(head_dims), intermediate_size=c.int("intermediate_size"),
        vocab_size=vocab, tie_word_embeddings=tie, norm="rms_norm", gated_mlp=True, layer_types=tuple(layer_types),
        layers=tuple(layers), params=tuple(params),
        num_experts=c.int("num_experts") if moe else 0, num_experts_per_tok=c.int("top_k_experts") if moe else 0,
        moe_intermediate_size=c.int("moe_intermediate_size") if moe else 0,
        **python_facts(c, act=("hidden_activation",), act_default="gelu_pytorch_tanh"),
    )
    hints = hints_for(c, model_type)
    # what the activation model prices layer by layer (rust/src/activations.rs): q_norm and
    # k_norm over each head, the unweighted v_norm, each layer's own q/k widths (and none in a
    # layer reusing K/V), the per-layer input branch, and the MoE block's four norms
    hints.update(qk_norm=True, v_norm=True, per_layer_attention=True, per_layer_input_width=ple)
    if moe:
        # the router's fp32 top-k weights (`Gemma4TextRouter.forward`) make the experts'
        # combine fp32 (rust/src/shape.rs `Hints::moe_fp32_combine`)
        hints.update(moe_block_norms=4, moe_fp32_combine=True)
    return replace(shape, hints=hints)


def _text_reader(c: ConfigReader, model_type: str) -> ConfigReader:
    defaults = UNIFIED_TEXT_DEFAULTS if model_type.startswith("gemma4_unified") else TEXT_DEFAULTS
    return ConfigReader({**defaults, **c.data}, c.source)


@register_architecture("gemma4_text", "gemma4_unified_text")
def build_gemma4_text(c: ConfigReader, name: str) -> ModelShape:
    model_type = c.str("model_type")
    return build_text(_text_reader(c, model_type), name, model_type)


def _clippable(name: str, i: int, o: int, role: str) -> Linear:
    # Gemma4ClippableLinear wraps `self.linear = nn.Linear(i, o, bias=False)`; its clip
    # bounds are buffers
    return Linear(f"{name}.linear", i, o, False, role)  # type: ignore[arg-type]


def vision_tower(v: ConfigReader, text_hidden: int, tokens: int) -> VisionTower:
    hv, inter = v.int("hidden_size"), v.int("intermediate_size")
    heads, kv, hd = v.int("num_attention_heads"), v.int("num_key_value_heads"), v.int("head_dim")
    depth, patch, pool = v.layers("num_hidden_layers"), v.int("patch_size"), v.int("pooling_kernel_size")
    block = LayerType("encoder", (
        _clippable("self_attn.q_proj", hv, heads * hd, "attention"), _clippable("self_attn.k_proj", hv, kv * hd, "attention"),
        _clippable("self_attn.v_proj", hv, kv * hd, "attention"), _clippable("self_attn.o_proj", heads * hd, hv, "attention"),
        _clippable("mlp.gate_proj", hv, inter, "mlp"), _clippable("mlp.up_proj", hv, inter, "mlp"),
        _clippable("mlp.down_proj", inter, hv, "mlp"),
    ), other_parameters=2 * hd + 4 * hv)  # q_norm, k_norm [hd]; four norms [Hv]
    params = (Param("patch_embedder.input_proj.weight", 3 * patch * patch * hv, "other"),
              Param("patch_embedder.position_embedding_table", 2 * v.int("position_embedding_size") * hv, "other"))
    projector = Projector((Linear("embed_vision.embedding_projection", hv, text_hidden, False, "other"),), pooled=True)
    return VisionTower(
        hidden_size=hv, num_attention_heads=heads, head_dim=hd, intermediate_size=inter, norm="rms_norm", gated_mlp=True,
        hidden_act=v.str("hidden_activation", "hidden_act"), layer_types=(block,), layers=(0,) * depth, params=params,
        projector=projector, images=ImageRule("fixed", patches=tokens * pool * pool, tokens=tokens),
    )


def audio_parameters(a: ConfigReader, text_hidden: int) -> int:
    """``model.audio_tower`` + ``model.embed_audio`` (modeling_gemma4.py ``Gemma4AudioModel``):
    two subsampling Conv2d(3×3, stride 2, no bias) + LayerNorm(no bias) layers, the input
    projection ``[H, (C0 // 4) · C1]`` (as ``Gemma4AudioSubSampleConvProjection`` sizes it), per conformer layer two feed-forwards
    (``[4H, H]``, ``[H, 4H]``, two norms), attention (q/k/v/post ``[H, H]``,
    ``relative_k_proj [H, H]``, ``per_dim_scale [hd]``), the light convolution (``linear_start
    [2H, H]``, depthwise Conv1d ``[H, 1, k]``, ``linear_end [H, H]``, two norms) and three
    norms, then ``output_proj [D, H]`` with bias and ``embed_audio.embedding_projection [H_t, D]``."""
    h, n = a.int("hidden_size"), a.layers("num_hidden_layers")
    heads, k = a.int("num_attention_heads"), a.int("conv_kernel_size")
    c0, c1 = a.int_list("subsampling_conv_channels")[:2]
    out = a.int("output_proj_dims")
    sub = c0 * 1 * 9 + c0 + c1 * c0 * 9 + c1 + (c0 // 4) * c1 * h
    ff = 2 * (h * 4 * h) + 2 * h
    attn = 5 * h * h + h // heads
    conv = 2 * h * h + h * k + h * h + 2 * h
    layer = 2 * ff + attn + conv + 3 * h
    return sub + n * layer + h * out + out + out * text_hidden


@register_architecture("gemma4", "gemma4_unified")
def build_gemma4(c: ConfigReader, name: str) -> ModelShape:
    model_type = c.str("model_type")
    text_raw = c.data.get("text_config") or {}
    if not isinstance(text_raw, dict):
        raise ForgeError(f"{c.source}: field 'text_config' must be an object")
    text_type = f"{model_type}_text"
    tie = c.bool("tie_word_embeddings", default=True)
    text = language_model(c, {**text_raw, "model_type": text_type}, name, tie)
    h = text.hidden_size
    extra: list[Param] = []
    tower = None
    vision_raw, audio_raw = c.data.get("vision_config"), c.data.get("audio_config")
    for field, raw in (("vision_config", vision_raw), ("audio_config", audio_raw)):
        if raw is not None and not isinstance(raw, dict):
            raise ForgeError(f"{c.source}: field '{field}' must be an object or null")
    if model_type == "gemma4_unified":
        if vision_raw is not None or audio_raw is not None:
            raise ForgeError(f"{c.source}: gemma4_unified's encoder-free image and audio embedders are not parsed without torch "
                             "(the text model is: model_type gemma4_unified_text)")
    else:
        if isinstance(vision_raw, dict):
            v = ConfigReader({**VISION_DEFAULTS, **vision_raw}, f"{c.source} [vision_config]")
            tower = vision_tower(v, h, c.int("vision_soft_tokens_per_image", default=MAX_SOFT_TOKENS))
        if isinstance(audio_raw, dict):
            a = ConfigReader({**AUDIO_DEFAULTS, **audio_raw}, f"{c.source} [audio_config]")
            extra.append(Param("model.audio_tower", audio_parameters(a, h), "other"))
    shape = replace(text, params=text.params + tuple(extra))
    if tower is None:
        archs = c.data.get("architectures")
        return replace(shape, model_type=model_type,
                       architectures=tuple(x for x in archs if isinstance(x, str)) if isinstance(archs, list) else ())
    return _with_vision(shape, c, model_type, tower)


@register_architecture("gemma4_assistant", "gemma4_unified_assistant")
def build_gemma4_assistant(c: ConfigReader, name: str) -> ModelShape:
    """The speculative-decoding drafter (modeling_gemma4_assistant.py
    ``Gemma4AssistantForCausalLM``): a Gemma 4 text model whose every layer reuses the
    target's K/V (``__post_init__`` sets ``num_kv_shared_layers = num_hidden_layers``), its
    ``lm_head``, ``pre_projection [H, 2·H_b]`` and ``post_projection [H_b, H]`` to and from the
    target's width ``backbone_hidden_size`` (3840), and with ``use_ordered_embeddings`` the
    ``masked_embedding.centroids [num_centroids, H]``."""
    model_type = c.str("model_type")
    text_raw = c.data.get("text_config") or {}
    if not isinstance(text_raw, dict):
        raise ForgeError(f"{c.source}: field 'text_config' must be an object")
    text_type = "gemma4_unified_text" if model_type.startswith("gemma4_unified") else "gemma4_text"
    text_cfg = {**text_raw, "model_type": text_type}
    n_layers = text_cfg.get("num_hidden_layers", TEXT_DEFAULTS["num_hidden_layers"])
    if not text_cfg.get("num_kv_shared_layers"):
        text_cfg["num_kv_shared_layers"] = n_layers
    tie = c.bool("tie_word_embeddings", default=True)
    text = build_text(_text_reader(ConfigReader({**text_cfg, "tie_word_embeddings": tie}, f"{c.source} [text_config]"), text_type),
                      name, text_type)
    h, hb = text.hidden_size, c.int("backbone_hidden_size", default=3840)
    extra = [Param("pre_projection.weight", 2 * hb * h, "other"), Param("post_projection.weight", h * hb, "other")]
    if c.bool("use_ordered_embeddings", default=False):
        extra.append(Param("masked_embedding.centroids.weight", c.int("num_centroids", default=2048) * h, "other"))
    return replace(text, model_type=model_type, params=text.params + tuple(extra))
