"""Decoders whose token mixer is not (only) softmax attention: linear attention (Gated
DeltaNet), state-space scans (Mamba, Mamba-2) and short convolutions (LFM2), alone or in
hybrids with attention layers.

Each builder transcribes the ``__init__`` of transformers 5's modeling file it names. The
mixers' ``nn.Linear`` projections (``in_proj*``, ``x_proj``, ``dt_proj``, ``out_proj``) are
what peft can wrap; the depthwise ``conv1d`` weight, ``A_log``, ``D``, ``dt_bias`` and the
mixers' norms are other parameters of the layer. Every layer's mixer is described by a
:class:`~forge_advisor.shapes.model.Mixer` (its widths price the activations and the scan).
The wide in/out projections of a mixer take the "attention" role (they fill the attention
slot: the default LoRA targets), its narrow ones (``x_proj``, ``dt_proj``, the gate
projections ``in_proj_b``/``in_proj_a``/``in_proj_ba`` whose width is a head count) the
"other" role: ``all-linear`` adapts them, the default does not.

Checked against meta-device instantiation by the architecture sweep and by
tests/test_shapes_hybrid.py (configs that mix every layer kind).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import fused_experts, python_facts
from forge_advisor.shapes.families.decoder import Moe, Spec, _moe, _sparse_layers
from forge_advisor.shapes.hints import hints_for
from forge_advisor.shapes.model import LayerType, Linear, Mixer, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture

__all__: list[str] = []


# -- shared pieces ---------------------------------------------------------------------
def _attn(c: ConfigReader, hidden: int, heads: int, kv: int, hd: int, *, bias: bool = False, q_gate: bool = False,
          o: str = "o_proj", prefix: str = "self_attn") -> list[Linear]:
    """q/k/v/o projections; ``q_gate``: q_proj also emits the output gate (Qwen3-Next:
    ``Linear(H, heads·hd·2)``, ``attn_output * sigmoid(gate)``)."""
    q = heads * hd * (2 if q_gate else 1)
    return [
        Linear(f"{prefix}.q_proj", hidden, q, bias, "attention"),
        Linear(f"{prefix}.k_proj", hidden, kv * hd, bias, "attention"),
        Linear(f"{prefix}.v_proj", hidden, kv * hd, bias, "attention"),
        Linear(f"{prefix}.{o}", heads * hd, hidden, bias, "attention"),
    ]


def _gated(prefix: str, names: tuple[str, str, str], hidden: int, inter: int, bias: bool = False) -> list[Linear]:
    g, u, d = names
    return [
        Linear(f"{prefix}.{g}", hidden, inter, bias, "mlp"),
        Linear(f"{prefix}.{u}", hidden, inter, bias, "mlp"),
        Linear(f"{prefix}.{d}", inter, hidden, bias, "mlp"),
    ]


def _kinds(c: ConfigReader, field: str, n_layers: int, allowed: set[str]) -> list[str] | None:
    value = c.data.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n_layers or not all(v in allowed for v in value):
        raise ForgeError(f"{c.source}: field '{field}'={value!r} must list one of {sorted(allowed)} for each of {n_layers} layers")
    return list(value)


def _assemble(kinds: list[tuple], build: Callable[[tuple], LayerType]) -> tuple[tuple[LayerType, ...], tuple[int, ...]]:
    """Distinct layer kinds (in first-seen order) built once, and each layer's index."""
    order: dict[tuple, int] = {}
    for k in kinds:
        order.setdefault(k, len(order))
    return tuple(build(k) for k in order), tuple(order[k] for k in kinds)


def _shape(c: ConfigReader, name: str, model_type: str, *, hidden: int, n_layers: int, heads: int, kv: int, hd: int,
           inter: int, vocab: int, tie: bool, layer_types: tuple[LayerType, ...], layers: tuple[int, ...],
           params: list[Param], gated_mlp: bool = True, experts: int = 0, top_k: int = 0, moe_inter: int = 0,
           act: tuple[str, ...] = ("hidden_act",), hints: dict | None = None) -> ModelShape:
    shape = ModelShape(
        name=name, model_type=model_type, hidden_size=hidden, num_hidden_layers=n_layers, num_attention_heads=heads,
        num_key_value_heads=kv, head_dim=hd, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tie,
        norm="rms_norm", gated_mlp=gated_mlp, layer_types=layer_types, layers=layers, params=tuple(params),
        num_experts=experts, num_experts_per_tok=top_k, moe_intermediate_size=moe_inter, **python_facts(c, act=act),
    )
    h = hints_for(c, model_type)
    h.update(hints or {})
    object.__setattr__(shape, "hints", h)
    return shape


def _head(c: ConfigReader, vocab: int, hidden: int, tie: bool, embed: str, final_norm: str | None) -> list[Param]:
    params = [Param(embed, vocab * hidden, "embedding")]
    if final_norm:
        params.append(Param(final_norm, hidden, "norm"))
    if not tie:
        params.append(Param("lm_head.weight", vocab * hidden, "lm_head"))
    return params


# -- Gated DeltaNet hybrids: Qwen3-Next, Qwen3.5 ---------------------------------------
def _gdn(c: ConfigReader, hidden: int, split: bool) -> tuple[list[Linear], int, Mixer]:
    """modeling_qwen3_next.py ``Qwen3NextGatedDeltaNet`` (``split=False``: fused
    ``in_proj_qkvz`` [H → 2·kd + 2·vd] and ``in_proj_ba`` [H → 2·nv]) and
    modeling_qwen3_5.py ``Qwen3_5GatedDeltaNet`` (``split``: ``in_proj_qkv``, ``in_proj_z``,
    ``in_proj_b``, ``in_proj_a``); ``conv1d`` depthwise over ``2·kd + vd`` channels (no
    bias), ``dt_bias`` and ``A_log`` [nv], a gated RMSNorm(head_v_dim), ``out_proj``."""
    nk, nv = c.int("linear_num_key_heads"), c.int("linear_num_value_heads")
    dk, dv = c.int("linear_key_head_dim"), c.int("linear_value_head_dim")
    kernel = c.int("linear_conv_kernel_dim", default=4)
    if nv % nk:
        raise ForgeError(f"{c.source}: linear_num_key_heads={nk} must divide linear_num_value_heads={nv}")
    kd, vd = nk * dk, nv * dv
    p = "linear_attn"
    if split:
        lin = [
            Linear(f"{p}.in_proj_qkv", hidden, 2 * kd + vd, False, "attention"),
            Linear(f"{p}.in_proj_z", hidden, vd, False, "attention"),
            Linear(f"{p}.in_proj_b", hidden, nv, False, "other"),
            Linear(f"{p}.in_proj_a", hidden, nv, False, "other"),
        ]
    else:
        lin = [
            Linear(f"{p}.in_proj_qkvz", hidden, 2 * kd + 2 * vd, False, "attention"),
            Linear(f"{p}.in_proj_ba", hidden, 2 * nv, False, "other"),
        ]
    lin.append(Linear(f"{p}.out_proj", vd, hidden, False, "attention"))
    conv_dim = 2 * kd + vd
    other = conv_dim * kernel + 2 * nv + dv  # conv1d.weight, dt_bias + A_log, norm.weight
    mixer = Mixer("gated_delta_net", d_inner=vd, conv_dim=conv_dim, conv_kernel=kernel, heads=nv, head_dim=dv,
                  key_heads=nk, key_head_dim=dk, chunk_size=64, gated_norm=True)
    return lin, other, mixer


_QWEN3_NEXT_MOE = Moe(shared="shared_expert", shared_inter=("shared_expert_intermediate_size",), shared_gate=True, sparse="step")


def _qwen_gdn(model_type: str, *, split: bool, moe: Moe | None, text_config: bool) -> Callable[[ConfigReader, str], ModelShape]:
    def build(src: ConfigReader, name: str) -> ModelShape:
        c = src.sub("text_config") if text_config and isinstance(src.data.get("text_config"), dict) else src
        hidden, n_layers = c.int("hidden_size"), c.layers("num_hidden_layers")
        heads = c.int("num_attention_heads")
        kv = c.int("num_key_value_heads", default=heads)
        hd = c.int("head_dim", default=hidden // heads)
        vocab = c.int("vocab_size")
        tie = src.bool("tie_word_embeddings", default=c.bool("tie_word_embeddings", default=False))
        kinds = _kinds(c, "layer_types", n_layers, {"linear_attention", "full_attention"})
        if kinds is None:  # configuration_qwen3_next.py: every full_attention_interval-th layer is full
            every = c.int("full_attention_interval", default=4)
            kinds = ["full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(n_layers)]
        sparse = _sparse_layers(c, moe, n_layers) if moe else [False] * n_layers
        inter = c.int("intermediate_size", default=0, minimum=0)
        bias = c.bool("attention_bias", default=False)
        moe_parts = _moe(c, Spec(moe=moe), hidden) if moe and any(sparse) else None
        if not all(sparse) and not inter:
            raise ForgeError(f"{c.source}: field 'intermediate_size' is missing (the dense layers need it)")
        norms = 2 * hidden  # input_layernorm, post_attention_layernorm

        def layer(kind: tuple) -> LayerType:
            mix, is_sparse = kind
            if mix == "full_attention":
                lin, other, mixer = _attn(c, hidden, heads, kv, hd, bias=bias, q_gate=True), 2 * hd, None  # q_norm, k_norm
            else:
                lin, other, mixer = _gdn(c, hidden, split)
            if is_sparse:
                assert moe_parts is not None
                lin = lin + moe_parts[0]
                other += moe_parts[1]
            else:
                lin = lin + _gated("mlp", ("gate_proj", "up_proj", "down_proj"), hidden, inter)
            return LayerType("decoder", tuple(lin), other + norms, moe=is_sparse, attention=mixer is None, mixer=mixer)

        layer_types, layers = _assemble(list(zip(kinds, sparse)), layer)
        experts, top_k, moe_inter = (moe_parts[2], moe_parts[3], moe_parts[4]) if moe_parts else (0, 0, 0)
        return _shape(c, name, model_type, hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd,
                      inter=inter or moe_inter, vocab=vocab, tie=tie, layer_types=layer_types, layers=layers,
                      params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", "model.norm"),
                      experts=experts, top_k=top_k, moe_inter=moe_inter, hints={"qk_norm": True, "attn_output_gate": True})

    return build


register_architecture("qwen3_next")(_qwen_gdn("qwen3_next", split=False, moe=_QWEN3_NEXT_MOE, text_config=False))
register_architecture("qwen3_5_text")(_qwen_gdn("qwen3_5_text", split=True, moe=None, text_config=False))
register_architecture("qwen3_5")(_qwen_gdn("qwen3_5", split=True, moe=None, text_config=True))
# modeling_qwen3_5_moe.py: every layer's MLP is Qwen3_5MoeSparseMoeBlock (shared expert + gate)
_QWEN3_5_MOE = Moe(shared="shared_expert", shared_inter=("shared_expert_intermediate_size",), shared_gate=True)
register_architecture("qwen3_5_moe_text")(_qwen_gdn("qwen3_5_moe_text", split=True, moe=_QWEN3_5_MOE, text_config=False))
register_architecture("qwen3_5_moe")(_qwen_gdn("qwen3_5_moe", split=True, moe=_QWEN3_5_MOE, text_config=True))


# -- LFM2 / LFM3: short convolutions and attention --------------------------------------
def _lfm_inter(c: ConfigReader) -> int:
    """Lfm2MLP.__init__ (modeling_lfm2.py): with ``block_auto_adjust_ff_dim``, 2/3 of the
    width, times ``block_ffn_dim_multiplier``, rounded up to ``block_multiple_of``."""
    inter = c.int("intermediate_size", "block_ff_dim")
    if c.bool("block_auto_adjust_ff_dim", default=True):
        inter = int(2 * inter / 3)
        mult = c.data.get("block_ffn_dim_multiplier", 1.0)
        if mult is not None:
            if not isinstance(mult, (int, float)) or isinstance(mult, bool) or not math.isfinite(mult) or mult <= 0:
                raise ForgeError(f"{c.source}: field 'block_ffn_dim_multiplier'={mult!r} must be a positive number")
            inter = int(mult * inter)
            m = c.int("block_multiple_of", default=256)
            inter = m * ((inter + m - 1) // m)
    return inter


def _lfm(model_type: str) -> Callable[[ConfigReader, str], ModelShape]:
    v3 = model_type == "lfm3"

    def build(c: ConfigReader, name: str) -> ModelShape:
        """modeling_lfm2.py: ``Lfm2ShortConv`` (``in_proj`` H → 3H, depthwise ``conv`` of
        ``conv_L_cache`` taps, ``out_proj`` H → H, all biased by ``conv_bias``) or
        ``Lfm2Attention`` (q/k/v/``out_proj``, per-head ``q_layernorm``/``k_layernorm``) per
        layer; ``Lfm2MLP`` w1/w3/w2 with the auto-adjusted width; ``operator_norm``,
        ``ffn_norm``; ``embedding_norm`` is the final norm. modeling_lfm3.py: the MLP width
        as given, ``o_proj`` and per-head ``q_norm``/``k_norm``, a per-head output gate
        ``g_proj`` (H → heads, ``use_attention_gate``), sliding or full attention layers, and
        sandwich norms (``post_operator_norm``, ``post_ffn_norm``, ``use_sandwich_norm``)."""
        hidden, n_layers = c.int("hidden_size"), c.layers("num_hidden_layers")
        heads = c.int("num_attention_heads")
        kv = c.int("num_key_value_heads", default=heads)
        hd = c.int("head_dim", default=128) if v3 else hidden // heads
        vocab = c.int("vocab_size")
        tie = c.bool("tie_word_embeddings", "tie_embedding", default=True)
        attn_kinds = {"full_attention", "sliding_attention"} if v3 else {"full_attention"}
        kinds = _kinds(c, "layer_types", n_layers, attn_kinds | {"conv"})
        if kinds is None and v3:  # configuration_lfm3.py __post_init__
            kinds = ["full_attention" if i % 4 == 2 else "sliding_attention" if i % 4 == 0 and i > 0 else "conv" for i in range(n_layers)]
        elif kinds is None:  # configuration_lfm2.py: full_attn_idxs (default: every layer)
            idx = set(c.int_list("full_attn_idxs")) if c.has("full_attn_idxs") else set(range(n_layers))
            kinds = ["full_attention" if i in idx else "conv" for i in range(n_layers)]
        inter = c.int("intermediate_size") if v3 else _lfm_inter(c)
        bias = c.bool("conv_bias", default=False)
        kernel = c.int("conv_L_cache", default=7 if v3 else 3)
        norms = 4 * hidden if v3 and c.bool("use_sandwich_norm", default=True) else 2 * hidden
        mlp = _gated("feed_forward", ("w1", "w3", "w2"), hidden, inter)

        def layer(kind: tuple) -> LayerType:
            if kind[0] == "conv":
                lin = [Linear("conv.in_proj", hidden, 3 * hidden, bias, "attention"), Linear("conv.out_proj", hidden, hidden, bias, "attention")]
                other = hidden * kernel + (hidden if bias else 0)
                mixer = Mixer("short_conv", d_inner=hidden, conv_dim=hidden, conv_kernel=kernel)
                return LayerType("decoder", tuple(lin + mlp), other + norms, attention=False, mixer=mixer)
            if v3:
                lin = _attn(c, hidden, heads, kv, hd, bias=c.bool("attention_bias", default=False))
                if c.bool("use_attention_gate", default=True):
                    lin.append(Linear("self_attn.g_proj", hidden, heads, False, "other"))
            else:
                lin = _attn(c, hidden, heads, kv, hd, o="out_proj")
            return LayerType("decoder", tuple(lin + mlp), 2 * hd + norms)

        layer_types, layers = _assemble([(k,) for k in kinds], layer)
        return _shape(c, name, model_type, hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd, inter=inter, vocab=vocab,
                      tie=tie, layer_types=layer_types, layers=layers,
                      params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", "model.embedding_norm"),
                      hints={"qk_norm": True})

    return build


register_architecture("lfm2")(_lfm("lfm2"))
register_architecture("lfm3")(_lfm("lfm3"))


# -- Mamba-1: Mamba, Falcon-Mamba, and Jamba's mamba layers -------------------------------
def _mamba1(c: ConfigReader, hidden: int, prefix: str, *, jamba: bool) -> tuple[list[Linear], int, Mixer]:
    """modeling_mamba.py ``MambaMixer`` / modeling_jamba.py ``JambaMambaMixer``: ``in_proj``
    H → 2·I, depthwise ``conv1d`` (I·K, + I bias), ``x_proj`` I → R + 2N, ``dt_proj``
    R → I (biased), ``A_log`` [I, N], ``D`` [I], ``out_proj`` I → H; Jamba adds RMSNorms
    over dt (R), B and C (N each)."""
    if jamba:
        state, kernel, expand = c.int("mamba_d_state", default=16), c.int("mamba_d_conv", default=4), c.int("mamba_expand", default=2)
        rank = c.int("mamba_dt_rank", default=math.ceil(hidden / 16))
        conv_bias, bias = c.bool("mamba_conv_bias", default=True), c.bool("mamba_proj_bias", default=False)
        inner = expand * hidden
    else:
        state, kernel = c.int("state_size", default=16), c.int("conv_kernel", default=4)
        inner = c.int("intermediate_size", default=int(c.int("expand", default=2) * hidden))
        raw = c.data.get("time_step_rank", "auto")
        rank = math.ceil(hidden / 16) if raw == "auto" else c.int("time_step_rank")  # configuration_mamba.py
        conv_bias, bias = c.bool("use_conv_bias", default=True), c.bool("use_bias", default=False)
    lin = [
        Linear(f"{prefix}.in_proj", hidden, 2 * inner, bias, "attention"),
        Linear(f"{prefix}.x_proj", inner, rank + 2 * state, False, "other"),
        Linear(f"{prefix}.dt_proj", rank, inner, True, "other"),
        Linear(f"{prefix}.out_proj", inner, hidden, bias, "attention", peft_excluded=not jamba),
    ]
    other = inner * kernel + (inner if conv_bias else 0) + inner * state + inner  # conv1d, A_log, D
    if jamba:
        other += rank + 2 * state
    return lin, other, Mixer("mamba", d_inner=inner, conv_dim=inner, conv_kernel=kernel, d_state=state, dt_rank=rank)


def _mamba_lm(model_type: str) -> Callable[[ConfigReader, str], ModelShape]:
    def build(c: ConfigReader, name: str) -> ModelShape:
        """modeling_mamba.py / modeling_falcon_mamba.py: ``backbone.embeddings``, per layer
        ``norm`` + ``mixer``, ``backbone.norm_f``, a head tied by default."""
        hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
        tie = c.bool("tie_word_embeddings", default=True)
        lin, other, mixer = _mamba1(c, hidden, "mixer", jamba=False)
        lt = LayerType("decoder", tuple(lin), other + hidden, attention=False, mixer=mixer)
        return _shape(c, name, model_type, hidden=hidden, n_layers=n_layers, heads=1, kv=1, hd=hidden, inter=mixer.d_inner,
                      vocab=vocab, tie=tie, layer_types=(lt,), layers=(0,) * n_layers,
                      params=_head(c, vocab, hidden, tie, "backbone.embeddings.weight", "backbone.norm_f"))

    return build


register_architecture("mamba")(_mamba_lm("mamba"))
register_architecture("falcon_mamba")(_mamba_lm("falcon_mamba"))


@register_architecture("jamba")
def _jamba(c: ConfigReader, name: str) -> ModelShape:
    """modeling_jamba.py: attention every ``attn_layer_period``-th layer (at
    ``attn_layer_offset``), Mamba elsewhere; experts every ``expert_layer_period``-th layer
    (``router`` Linear(H, E), fused experts of ``intermediate_size``), a gated MLP elsewhere;
    ``input_layernorm``, ``pre_ff_layernorm``, ``final_layernorm``."""
    hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    hd = hidden // heads
    inter = c.int("intermediate_size")
    tie = c.bool("tie_word_embeddings", default=False)
    ap, ao = c.int("attn_layer_period", default=8), c.int("attn_layer_offset", default=4, minimum=0)
    ep, eo = c.int("expert_layer_period", default=2), c.int("expert_layer_offset", default=1, minimum=0)
    experts = c.int("num_experts", default=16)
    top_k = c.int("num_experts_per_tok", default=2, maximum=experts)
    kinds = [("attention" if i % ap == ao else "mamba", experts > 1 and i % ep == eo) for i in range(n_layers)]
    moe_lin = [
        Linear("feed_forward.router", hidden, experts, False, "router", lora_targetable=False),
        *fused_experts("feed_forward.experts", hidden, inter, experts),
    ]

    def layer(kind: tuple) -> LayerType:
        mix, sparse = kind
        ffn = moe_lin if sparse else _gated("feed_forward", ("gate_proj", "up_proj", "down_proj"), hidden, inter)
        if mix == "attention":
            return LayerType("decoder", tuple(_attn(c, hidden, heads, kv, hd) + ffn), 2 * hidden, moe=sparse)
        lin, other, mixer = _mamba1(c, hidden, "mamba", jamba=True)
        return LayerType("decoder", tuple(lin + ffn), other + 2 * hidden, moe=sparse, attention=False, mixer=mixer)

    layer_types, layers = _assemble(kinds, layer)
    any_moe = any(s for _, s in kinds)
    return _shape(c, name, "jamba", hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd, inter=inter, vocab=vocab,
                  tie=tie, layer_types=layer_types, layers=layers,
                  params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", "model.final_layernorm"),
                  experts=experts if any_moe else 0, top_k=top_k if any_moe else 0, moe_inter=inter if any_moe else 0)


# -- Mamba-2 mixers: Falcon-H1 (parallel with attention), Nemotron-H ----------------------
# peft refuses LoRA on `out_proj` (and conv1d) of these model types
# (peft/tuners/tuners_utils.py `_check_lora_target_modules_mamba`)
PEFT_MAMBA_TYPES = {"falcon_h1", "mamba", "mamba2", "falcon_mamba", "nemotron_h"}


def _mamba2(hidden: int, prefix: str, *, heads: int, head_dim: int, inner: int, groups: int, state: int, kernel: int,
            chunk: int, conv_bias: bool, in_bias: bool, out_bias: bool, norm: bool, peft_excluded: bool = False) -> tuple[list[Linear], int, Mixer]:
    """modeling_falcon_h1.py ``FalconH1Mixer`` / modeling_nemotron_h.py
    ``NemotronHMamba2Mixer``: ``in_proj`` H → I + conv_dim + heads (z, xBC, dt), depthwise
    ``conv1d`` over conv_dim = I + 2·G·N channels, ``dt_bias``/``A_log``/``D`` [heads], a
    gated RMSNorm(I) when ``norm``, ``out_proj`` I → H."""
    conv_dim = inner + 2 * groups * state
    lin = [
        Linear(f"{prefix}.in_proj", hidden, inner + conv_dim + heads, in_bias, "attention"),
        Linear(f"{prefix}.out_proj", inner, hidden, out_bias, "attention", peft_excluded=peft_excluded),
    ]
    other = conv_dim * kernel + (conv_dim if conv_bias else 0) + 3 * heads + (inner if norm else 0)
    mixer = Mixer("mamba2", d_inner=inner, conv_dim=conv_dim, conv_kernel=kernel, heads=heads, head_dim=head_dim,
                  d_state=state, n_groups=groups, chunk_size=chunk, gated_norm=norm)
    return lin, other, mixer


@register_architecture("falcon_h1")
def _falcon_h1(c: ConfigReader, name: str) -> ModelShape:
    """modeling_falcon_h1.py ``FalconH1DecoderLayer``: attention and a Mamba-2 mixer side by
    side on one normed input, then a gated MLP (``feed_forward``)."""
    hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    hd = c.int("head_dim", default=hidden // heads)
    inter = c.int("intermediate_size")
    tie = c.bool("tie_word_embeddings", default=False)
    m_heads, m_hd = c.int("mamba_n_heads"), c.int("mamba_d_head")
    inner = c.int("mamba_d_ssm", default=c.int("mamba_expand", default=2) * hidden)
    lin, other, mixer = _mamba2(hidden, "mamba", heads=m_heads, head_dim=m_hd, inner=inner, groups=c.int("mamba_n_groups", default=1),
                                state=c.int("mamba_d_state", default=256), kernel=c.int("mamba_d_conv", default=4),
                                chunk=c.int("mamba_chunk_size", default=256), conv_bias=c.bool("mamba_conv_bias", default=True),
                                in_bias=c.bool("mamba_proj_bias", default=False), out_bias=c.bool("projectors_bias", default=False),
                                norm=c.bool("mamba_rms_norm", default=False), peft_excluded=True)
    attn = _attn(c, hidden, heads, kv, hd, bias=c.bool("attention_bias", default=False))
    mlp = _gated("feed_forward", ("gate_proj", "up_proj", "down_proj"), hidden, inter, c.bool("mlp_bias", default=False))
    lt = LayerType("decoder", tuple(attn + lin + mlp), other + 2 * hidden, attention=True, mixer=mixer)
    return _shape(c, name, "falcon_h1", hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd, inter=inter, vocab=vocab,
                  tie=tie, layer_types=(lt,), layers=(0,) * n_layers,
                  params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", "model.final_layernorm"))


_NEMOTRON_PATTERN = {"M": "linear_attention", "E": "moe", "*": "full_attention", "-": "mlp"}


@register_architecture("nemotron_h")
def _nemotron_h(c: ConfigReader, name: str) -> ModelShape:
    """modeling_nemotron_h.py ``NemotronHBlock``: one RMSNorm and one mixer per layer, by
    ``layers_block_type`` (or the legacy ``hybrid_override_pattern``: M Mamba-2, * attention,
    - MLP, E experts): Mamba-2, attention, a plain up/down MLP (relu²) or experts without a
    gate projection (``up_proj`` [E, I, H], ``down_proj`` [E, H, I]) with a shared MLP."""
    hidden, vocab = c.int("hidden_size"), c.int("vocab_size")
    kinds = c.data.get("layers_block_type") or c.data.get("layer_types")
    pattern = c.data.get("hybrid_override_pattern")
    if kinds is None and isinstance(pattern, str) and pattern and set(pattern) <= set(_NEMOTRON_PATTERN):
        kinds = [_NEMOTRON_PATTERN[ch] for ch in pattern]
    if not isinstance(kinds, list) or not kinds or not all(k in _NEMOTRON_PATTERN.values() for k in kinds):
        raise ForgeError(f"{c.source}: field 'layers_block_type' (or 'hybrid_override_pattern') must list the layers' kinds "
                         f"({', '.join(sorted(_NEMOTRON_PATTERN.values()))}); got {kinds if kinds is not None else pattern!r}")
    n_layers = len(kinds)
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    hd = c.int("head_dim", default=128)  # configuration_nemotron_h.py default (attention_head_dim is not read)
    # only the dense MLP layers read it (configuration_nemotron_h.py default 21504)
    inter = c.int("intermediate_size", default=21504)
    tie = c.bool("tie_word_embeddings", default=False)
    mlp_bias = c.bool("mlp_bias", default=False)
    m_heads, m_hd = c.int("mamba_num_heads"), c.int("mamba_head_dim")
    experts = top_k = moe_inter = 0

    def layer(kind: tuple) -> LayerType:
        nonlocal experts, top_k, moe_inter
        k = kind[0]
        if k == "linear_attention":
            lin, other, mixer = _mamba2(hidden, "mixer", heads=m_heads, head_dim=m_hd, inner=m_heads * m_hd,
                                        # NemotronHConfig.__post_init__ reads the legacy mamba_* spellings first
                                        groups=c.int("mamba_n_groups", "n_groups", default=8), state=c.int("ssm_state_size", default=128),
                                        kernel=c.int("mamba_d_conv", "conv_kernel", default=4),
                                        chunk=c.int("mamba_chunk_size", "chunk_size", default=128),
                                        conv_bias=c.bool("mamba_conv_bias", "use_conv_bias", default=True), in_bias=c.bool("use_bias", default=False),
                                        out_bias=c.bool("use_bias", default=False), norm=True, peft_excluded=True)
            return LayerType("decoder", tuple(lin), other + hidden, attention=False, mixer=mixer)
        if k == "full_attention":
            return LayerType("decoder", tuple(_attn(c, hidden, heads, kv, hd, bias=c.bool("attention_bias", default=False), prefix="mixer")), hidden)
        if k == "mlp":
            lin = [Linear("mixer.up_proj", hidden, inter, mlp_bias, "mlp"), Linear("mixer.down_proj", inter, hidden, mlp_bias, "mlp")]
            return LayerType("decoder", tuple(lin), hidden, attention=False)
        experts = c.int("n_routed_experts", "num_local_experts")
        top_k = c.int("num_experts_per_tok", default=1, maximum=experts)
        moe_inter = c.int("moe_intermediate_size")
        latent = c.int("moe_latent_size", default=0, minimum=0)
        width = latent or hidden  # experts read the latent projection when there is one
        lin = [
            Linear("mixer.gate", hidden, experts, False, "router", lora_targetable=False),
            Linear("mixer.experts.up_proj", width, moe_inter, False, "expert", count=experts, lora_targetable=False),
            Linear("mixer.experts.down_proj", moe_inter, width, False, "expert", count=experts, lora_targetable=False),
        ]
        shared = c.int("moe_shared_expert_intermediate_size", default=0, minimum=0)
        if shared:
            lin += [Linear("mixer.shared_experts.up_proj", hidden, shared, mlp_bias, "shared_expert"),
                    Linear("mixer.shared_experts.down_proj", shared, hidden, mlp_bias, "shared_expert")]
        if latent:
            lin += [Linear("mixer.fc1_latent_proj", hidden, latent, mlp_bias, "other"),
                    Linear("mixer.fc2_latent_proj", latent, hidden, mlp_bias, "other")]
        return LayerType("decoder", tuple(lin), hidden, moe=True, attention=False)

    layer_types, layers = _assemble([(k,) for k in kinds], layer)
    return _shape(c, name, "nemotron_h", hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd, inter=inter or moe_inter,
                  vocab=vocab, tie=tie, layer_types=layer_types, layers=layers, gated_mlp=False,
                  params=_head(c, vocab, hidden, tie, "model.embeddings.weight", "model.norm_f"),
                  experts=experts, top_k=top_k, moe_inter=moe_inter, act=("mlp_hidden_act", "hidden_act"))


def _mamba2_dims(c: ConfigReader, hidden: int, prefix: str = "mamba_") -> dict:
    """The Mamba-2 mixer's sizes as configuration_bamba.py / configuration_granitemoehybrid.py
    (``mamba_*`` fields; ``mamba_d_head`` "auto" = expand·H / heads) and
    configuration_mamba2.py (plain names) spell them: intermediate = expand · H."""
    p = prefix
    inner = c.int(f"{p}expand" if p else "expand", default=2) * hidden
    heads = c.int(f"{p}n_heads" if p else "num_heads")
    raw = c.data.get(f"{p}d_head" if p else "head_dim", "auto")
    head_dim = inner // heads if raw == "auto" or raw is None else c.int(f"{p}d_head" if p else "head_dim")
    if heads * head_dim != inner:
        raise ForgeError(f"{c.source}: Mamba heads × head dim = {heads}×{head_dim} must equal expand × hidden_size = {inner}")
    if p:
        return dict(heads=heads, head_dim=head_dim, inner=inner, groups=c.int("mamba_n_groups", default=1),
                    state=c.int("mamba_d_state", default=256), kernel=c.int("mamba_d_conv", default=4),
                    chunk=c.int("mamba_chunk_size", default=256), conv_bias=c.bool("mamba_conv_bias", default=True),
                    in_bias=c.bool("mamba_proj_bias", default=False), out_bias=c.bool("mamba_proj_bias", default=False), norm=True)
    bias = c.bool("use_bias", default=False)
    return dict(heads=heads, head_dim=head_dim, inner=inner, groups=c.int("n_groups", default=8), state=c.int("state_size", default=128),
                kernel=c.int("conv_kernel", default=4), chunk=c.int("chunk_size", default=256),
                conv_bias=c.bool("use_conv_bias", default=True), in_bias=bias, out_bias=bias, norm=True)


@register_architecture("mamba2")
def _mamba2_lm(c: ConfigReader, name: str) -> ModelShape:
    """modeling_mamba2.py: ``backbone.embeddings``, per layer ``norm`` + ``Mamba2Mixer``
    (gated RMSNorm always), ``backbone.norm_f``, an untied head by default."""
    hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    tie = c.bool("tie_word_embeddings", default=False)
    lin, other, mixer = _mamba2(hidden, "mixer", **_mamba2_dims(c, hidden, prefix=""), peft_excluded=True)
    lt = LayerType("decoder", tuple(lin), other + hidden, attention=False, mixer=mixer)
    return _shape(c, name, "mamba2", hidden=hidden, n_layers=n_layers, heads=1, kv=1, hd=hidden, inter=mixer.d_inner,
                  vocab=vocab, tie=tie, layer_types=(lt,), layers=(0,) * n_layers,
                  params=_head(c, vocab, hidden, tie, "backbone.embeddings.weight", "backbone.norm_f"))


_MAMBA_KINDS = {"linear_attention": "mamba", "mamba": "mamba", "full_attention": "attention", "attention": "attention"}


def _granite_hybrid(model_type: str) -> Callable[[ConfigReader, str], ModelShape]:
    granite = model_type == "granitemoehybrid"

    def build(c: ConfigReader, name: str) -> ModelShape:
        """modeling_bamba.py ``BambaDecoderLayer``: a Mamba-2 mixer (``mamba``) or attention
        (``self_attn``) by ``attn_layer_indices``, then a gated MLP (``feed_forward``);
        ``input_layernorm``, ``pre_ff_layernorm``, ``final_layernorm``.
        modeling_granitemoehybrid.py ``GraniteMoeHybridDecoderLayer``: the mixer by
        ``layer_types``, experts (``block_sparse_moe``, when ``num_local_experts`` > 0) and
        a fused shared MLP (``shared_mlp.input_linear`` H → 2S, ``output_linear``);
        ``input_layernorm``, ``post_attention_layernorm``, ``norm``."""
        hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
        heads = c.int("num_attention_heads")
        kv = c.int("num_key_value_heads", default=heads)
        hd = c.int("head_dim", default=hidden // heads)
        tie = c.bool("tie_word_embeddings", default=False)
        if granite:
            listed = _kinds(c, "layer_types", n_layers, set(_MAMBA_KINDS))
            kinds = [_MAMBA_KINDS[k] for k in listed] if listed else ["mamba"] * n_layers
        else:
            attn = set(c.int_list("attn_layer_indices"))
            kinds = ["attention" if i in attn else "mamba" for i in range(n_layers)]
        bias = c.bool("attention_bias", default=False)
        experts = top_k = moe_inter = 0
        if granite:
            experts = c.int("num_local_experts", default=0, minimum=0)
            ffn: list[Linear] = []
            if experts:
                moe_inter = c.int("intermediate_size")
                top_k = c.int("num_experts_per_tok", default=1, maximum=experts)
                ffn = [
                    Linear("block_sparse_moe.router", hidden, experts, False, "router", lora_targetable=False),
                    *fused_experts("block_sparse_moe.experts", hidden, moe_inter, experts),
                ]
            shared = c.int("shared_intermediate_size")
            ffn += [Linear("shared_mlp.input_linear", hidden, 2 * shared, False, "mlp"), Linear("shared_mlp.output_linear", shared, hidden, False, "mlp")]
            inter = shared
        else:
            inter = c.int("intermediate_size")
            ffn = _gated("feed_forward", ("gate_proj", "up_proj", "down_proj"), hidden, inter, c.bool("mlp_bias", default=False))

        def layer(kind: tuple) -> LayerType:
            if kind[0] == "attention":
                return LayerType("decoder", tuple(_attn(c, hidden, heads, kv, hd, bias=bias) + ffn), 2 * hidden, moe=bool(experts))
            lin, other, mixer = _mamba2(hidden, "mamba", **_mamba2_dims(c, hidden))
            return LayerType("decoder", tuple(lin + ffn), other + 2 * hidden, moe=bool(experts), attention=False, mixer=mixer)

        layer_types, layers = _assemble([(k,) for k in kinds], layer)
        final = "model.norm" if granite else "model.final_layernorm"
        return _shape(c, name, model_type, hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd, inter=inter, vocab=vocab,
                      tie=tie, layer_types=layer_types, layers=layers,
                      params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", final),
                      experts=experts, top_k=top_k, moe_inter=moe_inter)

    return build


register_architecture("bamba")(_granite_hybrid("bamba"))
register_architecture("granitemoehybrid")(_granite_hybrid("granitemoehybrid"))
