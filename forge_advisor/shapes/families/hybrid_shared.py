"""Hybrids with a block shared across layers (Zamba 2), and the LFM2 / Gated DeltaNet
hybrids with their own layouts (LFM2-MoE, OLMo-Hybrid).

Zamba 2 (modeling_zamba2.py ``Zamba2Model.get_layers``): every ``hybrid`` layer runs one of
``num_mem_blocks`` shared transformer blocks (attention over ``concat(hidden, embeddings)``
and a fused gated MLP), then a ``linear`` of its own, then its own Mamba-2 layer; the k-th
hybrid layer runs block ``k % num_mem_blocks``, whose weights the first ``num_mem_blocks``
hybrid layers own and the later ones tie to (``_tied_weights_keys``, applied only when
``tie_word_embeddings`` is true). A tied linear is listed
in every layer that runs it with ``shared=True``: its parameters, gradient and optimizer state
count at the owner, its activations where it runs (rust/src/shape.rs ``Linear::shared``).
Each block also holds per-invocation adapters (``linear_{q,k,v}_adapter_list[i]``,
``gate_up_proj_adapter_list[i]``: Linear(in, r) then Linear(r, out)) for the slots
``i % num_mem_blocks == block_id``; a layer runs only its own slot (the others are ``idle``).

Checked against meta-device instantiation by tests/test_shapes_hybrid_shared.py and the
architecture sweep.
"""

from __future__ import annotations

import dataclasses

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.hybrid import _assemble, _attn, _gated, _head, _kinds, _mamba2, _shape
from forge_advisor.shapes.families.common import fused_experts
from forge_advisor.shapes.model import LayerType, Linear, Mixer, ModelShape
from forge_advisor.shapes.registry import register_architecture

__all__: list[str] = []

_ZAMBA_KINDS = {"mamba": "linear_attention", "linear_attention": "linear_attention", "hybrid": "hybrid"}


def _adapter(prefix: str, width_in: int, rank: int, width_out: int, *, shared: bool, idle: bool) -> list[Linear]:
    """``nn.Sequential(Linear(in, r, bias=False), Linear(r, out, bias=False))``
    (modeling_zamba2.py ``Zamba2Attention.__init__`` / ``Zamba2MLP.__init__``)."""
    return [Linear(f"{prefix}.0", width_in, rank, False, "other", shared=shared, idle=idle),
            Linear(f"{prefix}.1", rank, width_out, False, "other", shared=shared, idle=idle)]


def _zamba2_block(c: ConfigReader, hidden: int, *, block: int, slots: list[int], run: int | None, owner: bool) -> tuple[list[Linear], int]:
    """The shared transformer of ``block`` as one hybrid layer sees it: ``Zamba2Attention``
    (q/k/v from ``attention_hidden_size`` = 2H, the concatenation, to heads × head_dim;
    ``o_proj`` back to H), ``Zamba2MLP`` (fused ``gate_up_proj`` H → 2I, ``down_proj``),
    the adapters of the block's slots, and its norms (``input_layernorm`` over 2H,
    ``pre_ff_layernorm`` over H: counted only at the owner)."""
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    width = c.int("attention_hidden_size", default=2 * hidden)
    hd = c.int("attention_head_dim", default=2 * hidden // heads)
    inter = c.int("intermediate_size", default=4 * hidden)
    bias = c.bool("add_bias_linear", default=False)
    rank = c.int("adapter_rank", default=128)
    p = "shared_transformer"
    lin = [
        Linear(f"{p}.self_attn.q_proj", width, heads * hd, False, "attention", shared=not owner),
        Linear(f"{p}.self_attn.k_proj", width, kv * hd, False, "attention", shared=not owner),
        Linear(f"{p}.self_attn.v_proj", width, kv * hd, False, "attention", shared=not owner),
        Linear(f"{p}.self_attn.o_proj", heads * hd, hidden, False, "attention", shared=not owner),
        Linear(f"{p}.feed_forward.gate_up_proj", hidden, 2 * inter, bias, "mlp", shared=not owner),
        Linear(f"{p}.feed_forward.down_proj", inter, hidden, bias, "mlp", shared=not owner),
    ]
    attn_adapters = c.bool("use_shared_attention_adapter", default=False)
    for i in slots:
        idle = i != run
        if attn_adapters:
            for x in "qkv":
                lin += _adapter(f"{p}.self_attn.linear_{x}_adapter_list.{i}", width, rank, width, shared=not owner, idle=idle)
        lin += _adapter(f"{p}.feed_forward.gate_up_proj_adapter_list.{i}", hidden, rank, 2 * inter, shared=not owner, idle=idle)
    return lin, (width + hidden if owner else 0)


@register_architecture("zamba2")
def _zamba2(c: ConfigReader, name: str) -> ModelShape:
    """modeling_zamba2.py: ``Zamba2MambaDecoderLayer`` (``input_layernorm`` + a Mamba-2
    mixer with an always-biased ``conv1d`` and a gated RMSNorm) or ``Zamba2HybridLayer``
    (the shared block, ``linear`` H → H, then its own Mamba layer under ``mamba_decoder``);
    ``embed_tokens``, ``final_layernorm``, a head tied by default."""
    hidden, vocab = c.int("hidden_size"), c.int("vocab_size")
    kinds = _zamba_kinds(c)
    hybrid = [i for i, k in enumerate(kinds) if k == "hybrid"]
    # the adapter slots follow `hybrid_layer_ids` as given (configuration_zamba2.py derives it
    # from layers_block_type; modeling_zamba2.py `len(config.hybrid_layer_ids)` slots per block)
    ids = c.int_list("hybrid_layer_ids") if c.has("hybrid_layer_ids") else hybrid
    blocks = c.int("num_mem_blocks", default=1)
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    expand = c.data.get("mamba_expand", 2)
    if not isinstance(expand, (int, float)) or isinstance(expand, bool) or expand <= 0:
        raise ForgeError(f"{c.source}: field 'mamba_expand'={expand!r} must be a positive number")
    inner = int(expand * hidden)  # Zamba2MambaMixer: int(config.mamba_expand * hidden_size)
    m_heads = c.int("n_mamba_heads", default=8)
    m_hd = c.int("mamba_headdim", default=inner // m_heads)
    bias = c.bool("add_bias_linear", default=False)

    def mamba(prefix: str) -> tuple[list[Linear], int, Mixer]:
        # Zamba2MambaMixer: conv1d(bias=True) whatever use_conv_bias says
        return _mamba2(hidden, f"{prefix}mamba", heads=m_heads, head_dim=m_hd, inner=inner, groups=c.int("mamba_ngroups", default=1),
                       state=c.int("mamba_d_state", default=64), kernel=c.int("mamba_d_conv", default=4),
                       chunk=c.int("chunk_size", default=256), conv_bias=True, in_bias=bias, out_bias=bias, norm=True)

    def layer(kind: tuple) -> LayerType:
        if kind[0] == "linear_attention":
            lin, other, mixer = mamba("")
            return LayerType("decoder", tuple(lin), other + hidden, attention=False, mixer=mixer)
        _, block, run, owner = kind
        slots = [i for i in range(len(ids)) if i % blocks == block]
        shared, shared_other = _zamba2_block(c, hidden, block=block, slots=slots, run=run, owner=owner)
        lin, other, mixer = mamba("mamba_decoder.")
        own = [Linear("linear", hidden, hidden, False, "other")]
        return LayerType("decoder", tuple(shared + own + lin), shared_other + other + hidden, attention=True, mixer=mixer)

    # transformers 5 applies `_tied_weights_keys` only under `tie_word_embeddings`
    # (modeling_utils.py `get_expanded_tied_weights_keys`): untied, every layer owns its block
    tie = c.bool("tie_word_embeddings", default=True)
    keys: list[tuple] = []
    for i, k in enumerate(kinds):
        if k == "hybrid":
            n = hybrid.index(i)
            keys.append(("hybrid", n % blocks, ids.index(i) if i in ids else None, n < blocks or not tie))
        else:
            keys.append((k,))
    layer_types, layers = _assemble(keys, layer)
    hd = c.int("attention_head_dim", default=2 * hidden // heads)
    return _shape(c, name, "zamba2", hidden=hidden, n_layers=len(kinds), heads=heads, kv=kv, hd=hd,
                  inter=c.int("intermediate_size", default=4 * hidden), vocab=vocab, tie=tie, layer_types=layer_types, layers=layers,
                  params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", "model.final_layernorm"),
                  hints={"concat_embeddings": True, "attention_without_rope": not c.bool("use_mem_rope", default=False)})


@register_architecture("lfm2_moe")
def _lfm2_moe(c: ConfigReader, name: str) -> ModelShape:
    """modeling_lfm2_moe.py ``Lfm2MoeDecoderLayer``: ``Lfm2MoeShortConv`` (``in_proj`` H →
    3H, depthwise ``conv`` of ``conv_L_cache`` taps, ``out_proj``, biased by ``conv_bias``)
    or ``Lfm2MoeAttention`` (q/k/v/``out_proj``, per-head ``q_layernorm``/``k_layernorm``)
    by ``layer_types``; the first ``num_dense_layers`` layers a gated MLP (w1/w3/w2 of
    ``intermediate_size``, no auto-adjust), the rest ``Lfm2MoeSparseMoeBlock``: a
    ``Lfm2MoeTopKRouter`` weight [E, H] (not an nn.Linear) and fused experts
    (``gate_up_proj`` [E, 2I, H], ``down_proj`` [E, H, I]); ``expert_bias`` is a buffer.
    ``operator_norm``, ``ffn_norm``; ``embedding_norm`` is the final norm."""
    hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    hd = c.int("head_dim", default=hidden // heads)  # getattr(config, "head_dim", hidden // heads)
    kinds = _kinds(c, "layer_types", n_layers, {"conv", "full_attention"})
    if kinds is None:
        raise ForgeError(f"{c.source}: field 'layer_types' is missing (LFM2-MoE lists 'conv' or 'full_attention' per layer)")
    dense = c.int("num_dense_layers", default=2, minimum=0)
    inter = c.int("intermediate_size")
    experts = c.int("num_experts")
    top_k = c.int("num_experts_per_tok", default=4, maximum=experts)
    moe_inter = c.int("moe_intermediate_size")
    bias = c.bool("conv_bias", default=False)
    kernel = c.int("conv_L_cache", default=3)
    moe = [
        Linear("feed_forward.gate", hidden, experts, False, "router", lora_targetable=False),
        *fused_experts("feed_forward.experts", hidden, moe_inter, experts),
    ]

    def layer(kind: tuple) -> LayerType:
        mix, sparse = kind
        ffn = moe if sparse else _gated("feed_forward", ("w1", "w3", "w2"), hidden, inter)
        if mix == "conv":
            lin = [Linear("conv.in_proj", hidden, 3 * hidden, bias, "attention"), Linear("conv.out_proj", hidden, hidden, bias, "attention")]
            mixer = Mixer("short_conv", d_inner=hidden, conv_dim=hidden, conv_kernel=kernel)
            other = hidden * kernel + (hidden if bias else 0)
            return LayerType("decoder", tuple(lin + ffn), other + 2 * hidden, moe=sparse, attention=False, mixer=mixer)
        return LayerType("decoder", tuple(_attn(c, hidden, heads, kv, hd, o="out_proj") + ffn), 2 * hd + 2 * hidden, moe=sparse)

    layer_types, layers = _assemble([(k, i >= dense) for i, k in enumerate(kinds)], layer)
    any_moe = n_layers > dense
    tie = c.bool("tie_word_embeddings", "tie_embedding", default=True)
    return _shape(c, name, "lfm2_moe", hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd, inter=inter, vocab=vocab,
                  tie=tie, layer_types=layer_types, layers=layers,
                  params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", "model.embedding_norm"),
                  experts=experts if any_moe else 0, top_k=top_k if any_moe else 0, moe_inter=moe_inter if any_moe else 0,
                  hints={"qk_norm": True})


@register_architecture("olmo_hybrid")
def _olmo_hybrid(c: ConfigReader, name: str) -> ModelShape:
    """modeling_olmo_hybrid.py: ``OlmoHybridAttentionDecoderLayer`` (OLMo 3's attention:
    q/k/v/o biased by ``attention_bias``, ``q_norm``/``k_norm`` over all heads' width, post-
    norms ``post_attention_layernorm``/``post_feedforward_layernorm``) or
    ``OlmoHybridLinearAttentionDecoderLayer`` (pre-norms ``input_layernorm``/
    ``post_attention_layernorm`` around ``OlmoHybridGatedDeltaNet``: separate q/k/v/a/b/g
    projections, ``conv1d`` over 2·kd + vd channels without bias, ``A_log``/``dt_bias``
    [nv], a gated RMSNorm(head_v_dim) ``o_norm``, ``o_proj``), a gated MLP each; defaults
    of configuration_olmo_hybrid.py ``__post_init__`` (key heads = value heads = attention
    heads, key head dim 0.75·H / heads, value head dim twice it)."""
    hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    hd = c.int("head_dim", default=hidden // heads)
    kinds = _kinds(c, "layer_types", n_layers, {"linear_attention", "full_attention"})
    if kinds is None:  # every 4th layer full, at least the last one
        kinds = ["full_attention" if i % 4 == 3 else "linear_attention" for i in range(n_layers)]
        if "full_attention" not in kinds:
            kinds[-1] = "full_attention"
    nk = c.int("linear_num_key_heads", default=heads)
    nv = c.int("linear_num_value_heads", default=heads)
    dk = c.int("linear_key_head_dim", default=int(0.75 * hidden / nk))
    dv = c.int("linear_value_head_dim", default=2 * dk)
    kernel = c.int("linear_conv_kernel_dim", default=4)
    inter = c.int("intermediate_size")
    mlp = _gated("mlp", ("gate_proj", "up_proj", "down_proj"), hidden, inter)
    bias = c.bool("attention_bias", default=False)

    def layer(kind: tuple) -> LayerType:
        if kind[0] == "full_attention":
            return LayerType("decoder", tuple(_attn(c, hidden, heads, kv, hd, bias=bias) + mlp), (heads + kv) * hd + 2 * hidden)
        kd, vd = nk * dk, nv * dv
        p = "linear_attn"
        lin = [Linear(f"{p}.q_proj", hidden, kd, False, "attention"), Linear(f"{p}.k_proj", hidden, kd, False, "attention"),
               Linear(f"{p}.v_proj", hidden, vd, False, "attention"), Linear(f"{p}.a_proj", hidden, nv, False, "other"),
               Linear(f"{p}.b_proj", hidden, nv, False, "other"), Linear(f"{p}.g_proj", hidden, vd, False, "attention"),
               Linear(f"{p}.o_proj", vd, hidden, False, "attention")]
        conv_dim = 2 * kd + vd
        mixer = Mixer("gated_delta_net", d_inner=vd, conv_dim=conv_dim, conv_kernel=kernel, heads=nv, head_dim=dv,
                      key_heads=nk, key_head_dim=dk, chunk_size=64, gated_norm=True)
        other = conv_dim * kernel + 2 * nv + dv + 2 * hidden  # conv1d, A_log + dt_bias, o_norm, two norms
        return LayerType("decoder", tuple(lin + mlp), other, attention=False, mixer=mixer)

    layer_types, layers = _assemble([(k,) for k in kinds], layer)
    tie = c.bool("tie_word_embeddings", default=False)
    return _shape(c, name, "olmo_hybrid", hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd, inter=inter, vocab=vocab,
                  tie=tie, layer_types=layer_types, layers=layers,
                  params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", "model.norm"), hints={"qk_norm": True})


def _zamba_kinds(c: ConfigReader, n_layers: int | None = None) -> list[str]:
    """``layers_block_type`` ("mamba"/"linear_attention" or "hybrid" per layer), or Zamba's
    default (configuration_zamba.py ``__post_init__``: two Mamba layers, a hybrid, then a
    hybrid at every ``attn_layer_period``-th layer from ``attn_layer_offset``)."""
    field = "layers_block_type" if c.has("layers_block_type") else "layer_types"
    listed = c.data.get(field)
    if listed is None and n_layers is not None:
        period, offset = c.int("attn_layer_period", default=6), c.int("attn_layer_offset", default=4, minimum=0)
        return ["linear_attention", "linear_attention", "hybrid"] + [
            "hybrid" if i % period == offset else "linear_attention" for i in range(n_layers - 3)]
    if not isinstance(listed, list) or not listed:
        raise ForgeError(f"{c.source}: field 'layers_block_type' must list 'mamba' or 'hybrid' for each layer; got {listed!r}")
    return [_ZAMBA_KINDS[k] for k in _kinds(c, field, len(listed), set(_ZAMBA_KINDS)) or []]


def _zamba_mamba(c: ConfigReader, hidden: int, prefix: str) -> tuple[list[Linear], int, Mixer]:
    """modeling_zamba.py ``ZambaMambaMixer``: Mamba-1 split into ``n_mamba_heads`` heads:
    ``in_proj`` H → 2I, depthwise ``conv1d`` (I·K, + I bias), per-head ``x_proj_weight``
    [nh, R + 2N, I/nh] and ``dt_proj_weight`` [nh, I/nh, R] (nn.Parameters, not
    nn.Linear: peft cannot wrap them), ``dt_proj_bias`` and ``D`` [nh, I/nh], ``A_log``
    [nh, I/nh, N], ``out_proj`` I → H."""
    inner = c.int("mamba_expand", default=2) * hidden
    nh = c.int("n_mamba_heads", default=2)
    if inner % nh:
        raise ForgeError(f"{c.source}: field 'n_mamba_heads'={nh} must divide mamba_expand × hidden_size = {inner}")
    hd = inner // nh
    state, kernel = c.int("mamba_d_state", default=16), c.int("mamba_d_conv", default=4)
    raw = c.data.get("mamba_dt_rank", "auto")
    rank = -(-hidden // 16) if raw == "auto" else c.int("mamba_dt_rank")  # math.ceil(hidden_size / 16)
    bias = c.bool("mamba_proj_bias", default=False)
    p = f"{prefix}mamba"
    lin = [
        Linear(f"{p}.in_proj", hidden, 2 * inner, bias, "attention"),
        Linear(f"{p}.x_proj_weight", hd, rank + 2 * state, False, "other", count=nh, lora_targetable=False),
        Linear(f"{p}.dt_proj_weight", rank, hd, False, "other", count=nh, lora_targetable=False),
        Linear(f"{p}.out_proj", inner, hidden, bias, "attention"),
    ]
    conv = inner * kernel + (inner if c.bool("mamba_conv_bias", default=True) else 0)
    other = conv + inner + inner * state + inner  # conv1d, dt_proj_bias, A_log, D
    return lin, other, Mixer("mamba", d_inner=inner, conv_dim=inner, conv_kernel=kernel, d_state=state, dt_rank=rank)


@register_architecture("zamba")
def _zamba(c: ConfigReader, name: str) -> ModelShape:
    """modeling_zamba.py ``ZambaModel``: ``ZambaMambaDecoderLayer`` (``input_layernorm`` +
    the mixer) or ``ZambaHybridLayer``: the one shared ``ZambaAttentionDecoderLayer``
    (``shared_transf``: attention from ``attention_hidden_size`` = 2H, the concatenation of
    the hidden state and the embeddings; a gated MLP; ``input_layernorm`` over 2H,
    ``pre_ff_layernorm``), a ``linear`` H → H of its own, then its own Mamba layer
    (``mamba_decoder``). Every hybrid layer's block ties to the first one's
    (``_tied_weights_keys``, applied under ``tie_word_embeddings``)."""
    hidden, vocab = c.int("hidden_size"), c.int("vocab_size")
    n_given = c.layers("num_hidden_layers") if c.has("num_hidden_layers") else None
    kinds = _zamba_kinds(c, n_given)
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    width = c.int("attention_hidden_size", default=2 * hidden)
    hd = c.int("attention_head_dim", default=2 * hidden // heads)
    inter = c.int("intermediate_size")
    tie = c.bool("tie_word_embeddings", default=True)

    def layer(kind: tuple) -> LayerType:
        if kind[0] == "linear_attention":
            lin, other, mixer = _zamba_mamba(c, hidden, "")
            return LayerType("decoder", tuple(lin), other + hidden, attention=False, mixer=mixer)
        owner = kind[1]
        p = "shared_transf"
        block = [
            Linear(f"{p}.self_attn.q_proj", width, heads * hd, False, "attention", shared=not owner),
            Linear(f"{p}.self_attn.k_proj", width, kv * hd, False, "attention", shared=not owner),
            Linear(f"{p}.self_attn.v_proj", width, kv * hd, False, "attention", shared=not owner),
            Linear(f"{p}.self_attn.o_proj", heads * hd, hidden, False, "attention", shared=not owner),
            *(replace_shared(lin, not owner) for lin in _gated(f"{p}.feed_forward", ("gate_proj", "up_proj", "down_proj"), hidden, inter)),
        ]
        lin, other, mixer = _zamba_mamba(c, hidden, "mamba_decoder.")
        own = [Linear("linear", hidden, hidden, False, "other")]
        norms = (width + hidden if owner else 0) + hidden
        return LayerType("decoder", tuple(block + own + lin), other + norms, attention=True, mixer=mixer)

    hybrid = [i for i, k in enumerate(kinds) if k == "hybrid"]
    keys = [("hybrid", i == hybrid[0] or not tie) if k == "hybrid" else (k,) for i, k in enumerate(kinds)]
    layer_types, layers = _assemble(keys, layer)
    return _shape(c, name, "zamba", hidden=hidden, n_layers=len(kinds), heads=heads, kv=kv, hd=hd, inter=inter, vocab=vocab,
                  tie=tie, layer_types=layer_types, layers=layers,
                  params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", "model.final_layernorm"),
                  hints={"concat_embeddings": True, "attention_without_rope": True})  # ZambaAttention has no rotary


def replace_shared(lin: Linear, shared: bool) -> Linear:
    return dataclasses.replace(lin, shared=shared)
