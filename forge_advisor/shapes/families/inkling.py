"""Inkling text decoders: ``inkling_text``, ``inkling2_text``, ``inkling2_loop_text``.

Transcribes transformers 5's modeling_inkling.py, modeling_inkling2.py and
modeling_inkling2_loop.py. Every layer is attention + MLP with **short causal convolutions
around them**: depthwise ``nn.Conv1d`` (no bias, ``conv_kernel_size`` taps, fp32) over the
attention output (``attn_sconv`` / ``post_attention_convolution``) and the MLP output
(``mlp_sconv`` / ``post_mlp_convolution``), and over the keys and values
(``k_sconv``/``v_sconv``, ``sconv_kernel_size`` taps, an alias of ``conv_kernel_size``:
configuration_inkling.py ``attribute_map``). Attention adds a hidden-state-conditioned
relative position bias (``r_proj`` / ``relative_position_bias.linear`` H → heads·d_rel and a
bank ``proj`` [d_rel, rel_extent]; sliding layers use ``sliding_window_size`` as their
extent), and ``hybrid_sliding`` layers their own head counts (``swa_*``).

* ``inkling_text`` (``InklingDecoderLayer``): q/k/v/r/o projections, per-head ``q_norm``
  and ``k_norm``; the MLP is dense (gate/up/down and a scalar ``global_scale``) or, by
  ``mlp_layer_types``, sparse: a router ``gate.weight`` [routed + shared, H] and
  ``gate.global_scale`` [1] (Parameters, not Linear), fused experts ``gate_up_proj``
  [E, 2·m, H] / ``down_proj`` [E, H, m], and ``shared_experts`` held as 3-D Parameters
  [S, m, H] (bmm, not Linear: peft cannot wrap them). The head is never tied.
* ``inkling2_text``: the projections are wrapped (``q_proj.linear`` + a ``norm.scale``
  [heads, hd]; ``k_proj``/``v_proj``: ``linear`` + ``sconv``, in ``hybrid`` (full) layers a
  *dynamic* convolution: ``static_weight`` [K, kv·hd] and ``weight_proj`` H → kv·K), a gated
  output ``o_proj.gate_proj`` + ``o_proj.linear``, ``sink_proj`` H → heads; block attention
  residuals (a learned ``query`` [H] before attention, [3, H] in full layers, none in layer
  0, and before the MLP); every MLP the sparse block (router [E, H]); full layers normalise q,
  k and v inputs apart (4 RMSNorms, sliding 2). The model adds ``final_input.query`` [H]; the
  head maps to ``unpadded_vocab_size``.
* ``inkling2_loop_text``: Inkling 2 plus, in layers ``loop_layer_index_start`` ≤ i <
  ``loop_layer_index_end``, four message gates (``down_proj`` 2H → rank, ``forget_gate_proj``
  and ``message_gate_proj`` rank → H), and ``message_input.query`` [loop layers, 4, H].

Activations: attention + MoE/MLP (activations.rs, with per-head q/k norm and, for Inkling
2, the fp32 sigmoid output gate ``attn_gate_width``) plus rust/src/activations_conv.rs: the
four short convolutions (each keeps its input, autocast's half copy) and the dense relative
position bias (SDPA's float mask ``[batch, heads, S, S]``, the [S, S] gather index and
masks), checked on fake-tensor truth (benches/cases_accuracy.json ``inkling-*``). Inkling 2
and its loop variant reuse these rules as the nearest ones and are not checked: their block
attention residuals (an fp32 stack of block states normalised and attended per layer), the
dynamic k/v convolutions of full layers (``unfold`` windows in fp32), the L2 clips, the
softcapped SwiGLU and the loop's repeated passes keep more than these rules count, so the
estimate **under**-states their activations (README "Architecture coverage"). Per-layer
head counts differ between sliding and full layers; the shape carries the sliding layers'
(:func:`_shape_heads`).
"""

from __future__ import annotations

from dataclasses import dataclass

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.hybrid import _assemble, _kinds, _shape
from forge_advisor.shapes.families.common import fused_experts
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture

__all__: list[str] = []

_KINDS = {"hybrid", "hybrid_sliding"}


@dataclass(frozen=True)
class _Attn:
    heads: int
    kv: int
    hd: int
    extent: int  # relative-position extent: sliding_window_size in sliding layers


def _attn_dims(c: ConfigReader, sliding: bool) -> _Attn:
    """modeling_inkling.py ``InklingAttention.__init__``: sliding layers take ``swa_*``
    heads and head_dim and ``sliding_window_size`` as their relative extent."""
    if sliding:
        heads = c.int("swa_num_attention_heads")
        return _Attn(heads, c.int("swa_num_key_value_heads", default=heads), c.int("swa_head_dim"), c.int("sliding_window_size"))
    heads = c.int("num_attention_heads")
    return _Attn(heads, c.int("num_key_value_heads", default=heads), c.int("head_dim"), c.int("rel_extent"))


def _layer_kinds(c: ConfigReader, n_layers: int, default: list[str]) -> list[str]:
    return _kinds(c, "layer_types", n_layers, _KINDS) or default


def _shape_heads(c: ConfigReader, kinds: list[str]) -> _Attn:
    """The attention widths the shape carries (one set per model): the sliding layers', the
    majority kind of both defaults (5 of every 6 layers), else the full layers'."""
    return _attn_dims(c, "hybrid_sliding" in kinds)


def _conv_bias_hints(a: _Attn, hidden: int) -> dict:
    """The activation rules of rust/src/activations_conv.rs: fp32 short convolutions over
    keys and values (kv·hd each), the attention output and the MLP output (H each), and the
    dense relative position bias; q/k per-head RMSNorm."""
    return {"qk_norm": True, "fp32_short_conv_channels": 2 * a.kv * a.hd + 2 * hidden, "dense_position_bias": True}


# -- Inkling (v1) ---------------------------------------------------------------------------
def _inkling_mlp(c: ConfigReader, hidden: int, sparse: bool, inter: int, moe_inter: int) -> tuple[list[Linear], int]:
    """modeling_inkling.py ``InklingMLP`` / ``InklingMoE``: (linears, other parameters)."""
    if not sparse:
        return [Linear("mlp.gate_proj", hidden, inter, False, "mlp"), Linear("mlp.up_proj", hidden, inter, False, "mlp"),
                Linear("mlp.down_proj", inter, hidden, False, "mlp")], 1  # global_scale [1]
    experts, shared = c.int("n_routed_experts"), c.int("n_shared_experts", minimum=1)
    lin = [
        # InklingTopkRouter.weight [routed + shared, H] (a Parameter) and global_scale [1]
        Linear("mlp.gate", hidden, experts + shared, False, "router", lora_targetable=False),
        *fused_experts("mlp.experts", hidden, moe_inter, experts),
        # InklingSharedExperts: 3-D Parameters [S, m, H] / [S, H, m] run through bmm over every
        # token, held as one S·m-wide shared expert (what each token computes and keeps)
        Linear("mlp.shared_experts.gate_proj", hidden, shared * moe_inter, False, "shared_expert", lora_targetable=False),
        Linear("mlp.shared_experts.up_proj", hidden, shared * moe_inter, False, "shared_expert", lora_targetable=False),
        Linear("mlp.shared_experts.down_proj", shared * moe_inter, hidden, False, "shared_expert", lora_targetable=False),
    ]
    return lin, 1


@register_architecture("inkling_text")
def _inkling(c: ConfigReader, name: str) -> ModelShape:
    hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    d_rel, kernel = c.int("d_rel"), c.int("conv_kernel_size", "sconv_kernel_size", default=4)
    inter, moe_inter = c.int("intermediate_size"), c.int("moe_intermediate_size")
    if c.has("dense_intermediate_size"):  # configuration_inkling.py __post_init__ (#49416)
        inter, moe_inter = c.int("dense_intermediate_size"), inter
    local = c.data.get("local_layer_ids")
    default = ["hybrid_sliding" if (i in local if isinstance(local, list) else (i + 1) % 6) else "hybrid" for i in range(n_layers)]
    kinds = _layer_kinds(c, n_layers, default)
    dense_idx = c.int("dense_mlp_idx", default=0, minimum=0)
    mlp_kinds = _kinds(c, "mlp_layer_types", n_layers, {"dense", "sparse"}) or ["dense" if i < dense_idx else "sparse" for i in range(n_layers)]

    def layer(kind: tuple) -> LayerType:
        a = _attn_dims(c, kind[0] == "hybrid_sliding")
        attn = [
            Linear("self_attn.q_proj", hidden, a.heads * a.hd, False, "attention"),
            Linear("self_attn.k_proj", hidden, a.kv * a.hd, False, "attention"),
            Linear("self_attn.v_proj", hidden, a.kv * a.hd, False, "attention"),
            Linear("self_attn.r_proj", hidden, a.heads * d_rel, False, "attention"),
            Linear("self_attn.o_proj", a.heads * a.hd, hidden, False, "attention"),
        ]
        mlp, mlp_other = _inkling_mlp(c, hidden, kind[1] == "sparse", inter, moe_inter)
        # k_sconv, v_sconv [kv·hd, 1, K]; q_norm, k_norm [hd]; rel_logits_proj.proj [d_rel, extent];
        # input/post_attention_layernorm [H]; attn_sconv, mlp_sconv [H, 1, K]
        other = 2 * a.kv * a.hd * kernel + 2 * a.hd + d_rel * a.extent + 2 * hidden + 2 * hidden * kernel
        return LayerType("decoder", tuple(attn + mlp), other + mlp_other, moe=kind[1] == "sparse")

    layer_types, layers = _assemble(list(zip(kinds, mlp_kinds)), layer)
    top = _shape_heads(c, kinds)
    sparse = "sparse" in mlp_kinds
    params = [Param("model.embed_tokens.weight", vocab * hidden, "embedding"), Param("model.embed_tokens.embed_norm.weight", hidden, "norm"),
              Param("model.norm.weight", hidden, "norm"), Param("lm_head.weight", vocab * hidden, "lm_head")]
    return _shape(c, name, "inkling_text", hidden=hidden, n_layers=n_layers, heads=top.heads, kv=top.kv, hd=top.hd,
                  inter=inter, vocab=vocab, tie=False, layer_types=layer_types, layers=layers, params=params,
                  experts=c.int("n_routed_experts") if sparse else 0,
                  top_k=c.int("num_experts_per_tok") if sparse else 0, moe_inter=moe_inter if sparse else 0,
                  hints=_conv_bias_hints(top, hidden))


# -- Inkling 2 and its loop variant ----------------------------------------------------------
def _inkling2_layer(c: ConfigReader, hidden: int, full: bool, first: bool, loop: bool) -> LayerType:
    """modeling_inkling2.py ``Inkling2SlidingDecoderLayer`` / ``Inkling2FullDecoderLayer``
    (and modeling_inkling2_loop.py's ``*LoopDecoderLayer``: four ``Inkling2LoopMessageGate``)."""
    a = _attn_dims(c, not full)
    d_rel, kernel = c.int("d_rel"), c.int("conv_kernel_size", "sconv_kernel_size", default=4)
    experts, moe_inter = c.int("n_routed_experts"), c.int("moe_intermediate_size")
    kvw = a.kv * a.hd
    lin = [
        Linear("self_attn.q_proj.linear", hidden, a.heads * a.hd, False, "attention"),
        Linear("self_attn.k_proj.linear", hidden, kvw, False, "attention"),
        Linear("self_attn.v_proj.linear", hidden, kvw, False, "attention"),
        Linear("self_attn.o_proj.gate_proj", hidden, a.heads * a.hd, False, "attention"),
        Linear("self_attn.o_proj.linear", a.heads * a.hd, hidden, False, "attention"),
        Linear("self_attn.sink_proj", hidden, a.heads, False, "attention"),
        Linear("self_attn.relative_position_bias.linear", hidden, a.heads * d_rel, False, "attention"),
        Linear("mlp.gate", hidden, experts, False, "router", lora_targetable=False),  # Inkling2TopKRouter.weight [E, H]
        *fused_experts("mlp.experts", hidden, moe_inter, experts),
    ]
    if full:
        # Inkling2DynamicShortConvolution: static_weight [K, kv·hd], weight_proj H → kv·K
        lin += [Linear(f"self_attn.{p}_proj.sconv.weight_proj", hidden, a.kv * kernel, False, "attention") for p in ("k", "v")]
        convs = 2 * kernel * kvw
    else:
        convs = 2 * kvw * kernel  # k/v ShortConvolution conv1d [kv·hd, 1, K]
    if loop:
        rank = c.int("loop_gate_rank")
        for g in ("q", "k", "v", "mlp"):
            lin += [Linear(f"{g}_message_gate.down_proj", 2 * hidden, rank, False, "other"),
                    Linear(f"{g}_message_gate.forget_gate_proj", rank, hidden, False, "other"),
                    Linear(f"{g}_message_gate.message_gate_proj", rank, hidden, False, "other")]
    # q_proj.norm.scale [heads, hd], relative_position_bias.norm.scale [heads, d_rel] and .proj
    # [d_rel, extent]; attention_input.query ([3, H] full, [H] sliding, none in layer 0),
    # mlp_input.query [H]; RMSNorms (q/k/v input + post in full layers, input + post in
    # sliding ones); post_attention/post_mlp_convolution [H, 1, K]
    queries = (0 if first else (3 if full else 1)) * hidden + hidden
    norms = (4 if full else 2) * hidden
    other = a.heads * a.hd + a.heads * d_rel + d_rel * a.extent + convs + queries + norms + 2 * hidden * kernel
    return LayerType("decoder", tuple(lin), other, moe=True)


def _inkling2(model_type: str, loop: bool):
    def build(c: ConfigReader, name: str) -> ModelShape:
        hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
        kinds = _layer_kinds(c, n_layers, ["hybrid" if (i + 1) % 6 == 0 else "hybrid_sliding" for i in range(n_layers)])
        start, end = (c.int("loop_layer_index_start", default=6), c.int("loop_layer_index_end", default=18)) if loop else (0, 0)
        if loop and end < start:
            raise ForgeError(f"{c.source}: loop_layer_index_end={end} must not be below loop_layer_index_start={start}")
        keys = [(k == "hybrid", i == 0, start <= i < end) for i, k in enumerate(kinds)]
        layer_types, layers = _assemble(keys, lambda k: _inkling2_layer(c, hidden, *k))
        head = c.int("unpadded_vocab_size", default=vocab)  # Inkling2ForCausalLM.lm_head: H → unpadded_vocab_size
        params = [Param("model.embed_tokens.weight", vocab * hidden, "embedding"), Param("model.embed_tokens.embed_norm.weight", hidden, "norm"),
                  Param("model.norm.weight", hidden, "norm"), Param("model.final_input.query", hidden, "other"),
                  Param("lm_head.weight", head * hidden, "lm_head")]
        if loop:  # Inkling2LoopMessageAttentionResidual.query [loop layers, 4, H]
            params.append(Param("model.message_input.query", (end - start) * 4 * hidden, "other"))
        top = _shape_heads(c, kinds)
        return _shape(c, name, model_type, hidden=hidden, n_layers=n_layers, heads=top.heads, kv=top.kv, hd=top.hd,
                      inter=c.int("moe_intermediate_size"), vocab=vocab, tie=False, layer_types=layer_types, layers=layers,
                      params=params, experts=c.int("n_routed_experts"), top_k=c.int("num_experts_per_tok"),
                      moe_inter=c.int("moe_intermediate_size"),
                      hints={**_conv_bias_hints(top, hidden), "attn_gate_width": top.heads * top.hd, "attn_gate_fp32": True})

    register_architecture(model_type)(build)
    return build


_inkling2("inkling2_text", loop=False)
_inkling2("inkling2_loop_text", loop=True)
