"""Decoder-only transformers described by mechanism, not by family.

Most causal LMs in transformers 5 share one module layout (``model.embed_tokens``,
``model.layers[i].{self_attn,mlp}``, ``model.norm``, ``lm_head``) and differ by a handful
of mechanisms. A :class:`Spec` names those mechanisms for one ``model_type``; one builder
turns a config into the exact inventory:

* attention: separate ``q/k/v/o`` projections, fused ``qkv``, or multi-head latent
  attention (DeepSeek-V2/V3 MLA: ``q_a_proj → q_a_layernorm → q_b_proj``,
  ``kv_a_proj_with_mqa → kv_a_layernorm → kv_b_proj``; modeling_deepseek_v3.py);
  biases from config flags; per-head or full-width Q/K norms; attention sinks
  (gpt-oss: one learned logit per head, ``self_attn.sinks [heads]``);
* norms: the per-layer norms by name (pre, post, sandwich), RMSNorm or LayerNorm
  (weight and bias), or parameter-free (OLMo's ``OlmoLayerNorm``);
* MLP: gated (``gate/up/down``, fused ``gate_up_proj``) or plain (``up/down``,
  ``c_fc/c_proj``), biases from config flags;
* mixture of experts: a router (``weight [E, H]``, optionally a bias), fused expert
  tensors ``experts.gate_up_proj [E, 2I, H]`` and ``experts.down_proj [E, H, I]``
  (transformers 5 stores experts fused; optional per-expert biases as in gpt-oss),
  shared experts (size ``moe_intermediate_size · n_shared_experts`` or their own field),
  a shared-expert gate, and which layers are sparse (all, after ``first_k_dense_replace``,
  every ``decoder_sparse_step``-th outside ``mlp_only_layers``, ``moe_layers``,
  ``mlp_layer_types``).

Every spec is checked against meta-device instantiation by the architecture sweep
(``python -m benches.arch_sweep``, tests/test_arch_sweep.py) and by tiny configs with the
switches flipped (tests/test_shapes_decoder.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Union

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import fused_experts, python_facts
from forge_advisor.shapes.hints import hints_for
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture

# A yes/no fact: a constant, or a config field read with a default: ("attention_bias", False)
Flag = Union[bool, tuple[str, bool]]


def flag(c: ConfigReader, f: Flag) -> bool:
    if isinstance(f, bool):
        return f
    name, default = f
    return c.bool(name, default=default)


@dataclass(frozen=True)
class Attn:
    kind: Literal["mha", "fused", "mla"] = "mha"
    prefix: str = "self_attn"
    names: tuple[str, str, str, str] = ("q_proj", "k_proj", "v_proj", "o_proj")
    qkv_bias: Flag = ("attention_bias", False)
    o_bias: Flag = ("attention_bias", False)
    # "head": RMSNorm(head_dim) on q and k (Qwen3); "full": a weight per head and channel
    # (OLMo 2: q_norm [heads·hd], k_norm [kv·hd]; Cohere: [heads, hd], [kv, hd]);
    # "per_head": one LayerNorm(head_dim, bias=False) per head (StableLmLayerNormPerHead);
    # "shared_ln": one LayerNorm(head_dim) with bias for q and one for k (Persimmon)
    qk_norm: Literal["head", "full", "per_head", "shared_ln"] | None = None
    qk_norm_names: tuple[str, str] = ("q_norm", "k_norm")
    qk_norm_when: Flag = True
    sinks: bool = False  # learned per-head sink logits (gpt-oss)
    o_in_hidden: bool = False  # o_proj reads hidden_size, not heads·head_dim (StableLM)
    # gated attention output: `out * act(gate_proj(x))` before o_proj; "full": a gate per
    # head and channel (heads·hd), "head": one per head, "gating": the config's `gating`
    # (True / "per-head" → per head; Laguna)
    gate: Literal["full", "head", "gating"] | None = None
    gate_name: str = "gate_proj"
    gate_bias: bool = False  # a learned [heads] bias added to the gate (Beam's gate_bias)
    gate_act: Literal["sigmoid", "softplus"] = "sigmoid"
    per_layer_heads: str | None = None  # a config list of query heads per layer (Laguna)
    # DeepSeek sparse attention (DSA) indexer beside MLA (modeling_deepseek_v32.py
    # DeepseekV32Indexer); `indexer_types` lists "full" / "shared" per layer (GLM-5: a
    # "shared" layer reuses the previous full layer's top-k and has no indexer)
    indexer: bool = False
    # sliding-window layers with their own shape (MiMo-V2-Flash: `num_key_value_heads * 2`
    # and sinks on "sliding_attention" layers only; modeling_mimo_v2_flash.py)
    swa_kv_mult: int = 1
    sinks_sliding_only: bool = False
    v_head_dim: str | None = None  # a config field for v's head width (else head_dim)


@dataclass(frozen=True)
class Mlp:
    kind: Literal["gated", "gated_fused", "plain"] = "gated"
    prefix: str = "mlp"
    names: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")
    bias: Flag = False
    inter: tuple[str, ...] = ("intermediate_size",)


@dataclass(frozen=True)
class Moe:
    prefix: str = "mlp"
    router: str = "gate"
    router_bias: bool = False
    router_linear: bool = False  # an nn.Linear subclass peft can wrap (Llama 4's router)
    experts: tuple[str, ...] = ("num_experts", "num_local_experts", "n_routed_experts")
    inter: tuple[str, ...] = ("moe_intermediate_size",)
    expert_bias: bool = False  # gpt-oss: gate_up_proj_bias [E, 2I], down_proj_bias [E, H]
    shared: str | None = None  # submodule name of the shared expert(s)
    # shared size: a field of its own, else moe_intermediate_size * n_shared_experts
    shared_inter: tuple[str, ...] = ()
    shared_count: tuple[str, ...] = ("n_shared_experts",)
    shared_gate: bool = False  # Qwen2-MoE's shared_expert_gate: Linear(H, 1)
    shared_mlp: Mlp = Mlp()  # the shared expert's own layout (GraniteMoeShared: fused input_linear)
    shared_in_layer: bool = False  # the shared expert hangs off the layer, not the sparse block
    top_k: tuple[str, ...] = ("num_experts_per_tok", "top_k", "moe_topk")
    correction_bias: bool = False  # a learned [E] routing bias held as a parameter (ERNIE 4.5)
    first_k: tuple[str, ...] = ("first_k_dense_replace",)  # "first_k_dense": the dense count's field
    first_k_default: int = 0
    extra_norms: int = 0  # norms of hidden size inside the sparse block (A.X K1 post_mlp_layernorm)
    # which layers are sparse
    sparse: Literal["all", "first_k_dense", "step", "moe_layers", "interval"] = "all"


@dataclass(frozen=True)
class Spec:
    attn: Attn = Attn()
    norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")
    norm: Literal["rms", "ln", "none"] = "rms"
    norm_bias: Flag = True  # for "ln": LayerNorm bias
    mlp: Mlp = Mlp()
    moe: Moe | None = None
    final_norm: bool = True
    tie_default: bool = False
    lm_head_bias: Flag = False
    parallel: Flag = False  # attention and MLP read one normed input
    text_config: bool = False  # the causal LM reads config["text_config"] (Llama 4)
    hidden_act: tuple[str, ...] = ("hidden_act",)
    extra_layer_params: tuple[str, ...] = ()  # scalar-per-hidden parameters in each layer
    # hyper-connections (HY-V4 modeling_hy_v4.py HYV4HyperConnection): `hc_mult` = n residual
    # streams; per layer an attention and an FFN connection, each fn [2n, n·H], base [2n],
    # scale [2] (fp32); the model's HYV4HyperHead hc_fn [n, n·H], hc_base [n], hc_scale [1]
    hyper_connections: bool = False


def _norm_params(spec: Spec, c: ConfigReader, dim: int) -> int:
    if spec.norm == "none":
        return 0
    if spec.norm == "ln":
        return dim * (2 if flag(c, spec.norm_bias) else 1)
    return dim


def _attention(
    c: ConfigReader, s: Spec, hidden: int, heads: int, kv: int, head_dim: int, indexer: bool = False, sliding: bool = False
) -> tuple[list[Linear], int]:
    a = s.attn
    p = a.prefix
    qkv_bias, o_bias = flag(c, a.qkv_bias), flag(c, a.o_bias)
    if sliding:
        kv *= a.swa_kv_mult
    q, k = heads * head_dim, kv * head_dim
    other = heads if a.sinks and (sliding or not a.sinks_sliding_only) else 0
    if a.kind == "mla":
        lin, mla_other = _mla(c, p, hidden, heads)
        if indexer:
            idx_lin, idx_other = _dsa_indexer(c, p, hidden)
            lin, mla_other = lin + idx_lin, mla_other + idx_other
        if a.gate:  # HY-V4: gate_proj H → heads · v_head_dim
            lin.append(Linear(f"{p}.{a.gate_name}", hidden, _gate_width(c, a, heads, c.int("v_head_dim")), False, "other"))
        return lin, other + mla_other
    qn, kn, vn, on = a.names
    o_in = hidden if a.o_in_hidden else q
    if a.v_head_dim:
        vd = c.int(a.v_head_dim, default=head_dim)
        o_in = heads * vd
        lin = [
            Linear(f"{p}.{qn}", hidden, q, qkv_bias, "attention"),
            Linear(f"{p}.{kn}", hidden, k, qkv_bias, "attention"),
            Linear(f"{p}.{vn}", hidden, kv * vd, qkv_bias, "attention"),
            Linear(f"{p}.{on}", o_in, hidden, o_bias, "attention"),
        ]
        return lin, other
    if a.kind == "fused":
        lin = [Linear(f"{p}.{qn}", hidden, q + 2 * k, qkv_bias, "attention"), Linear(f"{p}.{on}", o_in, hidden, o_bias, "attention")]
    else:
        lin = [
            Linear(f"{p}.{qn}", hidden, q, qkv_bias, "attention"),
            Linear(f"{p}.{kn}", hidden, k, qkv_bias, "attention"),
            Linear(f"{p}.{vn}", hidden, k, qkv_bias, "attention"),
            Linear(f"{p}.{on}", o_in, hidden, o_bias, "attention"),
        ]
    if a.gate:
        # role "other", not "attention": the default LoRA targets are the attention leaf
        # names, and AFMoE's `gate_proj` would also name the MLP's gate_proj, which peft
        # refuses on fused experts ("Cannot convert PEFT target(s) gate_proj without also
        # targeting up_proj")
        lin.append(Linear(f"{p}.{a.gate_name}", hidden, _gate_width(c, a, heads, head_dim), False, "other"))
        other += heads if a.gate_bias else 0
    if a.qk_norm and flag(c, a.qk_norm_when):
        if a.qk_norm == "head":
            other += 2 * head_dim
        elif a.qk_norm in ("full",):
            other += q + k
        elif a.qk_norm == "shared_ln":  # one LayerNorm(head_dim) with bias for q, one for k (Persimmon)
            other += 4 * head_dim
        else:
            other += head_dim * (heads + kv)
    return lin, other


def _dsa_indexer(c: ConfigReader, p: str, hidden: int) -> tuple[list[Linear], int]:
    """modeling_deepseek_v32.py ``DeepseekV32Indexer.__init__``: ``wq_b`` (q_lora_rank →
    index_n_heads · index_head_dim) reads MLA's compressed query, ``wk`` (H → index_head_dim),
    ``k_norm = LayerNorm(index_head_dim)`` (weight and bias), ``weights_proj`` (H →
    index_n_heads). Its forward runs under ``torch.no_grad()``: peft can wrap these
    nn.Linears, but they get no gradient, so they are role "other" (not default targets)."""
    q_rank = c.int("q_lora_rank", default=0, minimum=0)
    if not q_rank:
        raise ForgeError(f"{c.source}: the sparse-attention indexer reads the compressed query: 'q_lora_rank' must be set")
    n, d = c.int("index_n_heads"), c.int("index_head_dim")
    lin = [
        Linear(f"{p}.indexer.wq_b", q_rank, n * d, False, "other"),
        Linear(f"{p}.indexer.wk", hidden, d, False, "other"),
        Linear(f"{p}.indexer.weights_proj", hidden, n, False, "other"),
    ]
    return lin, 2 * d


def _indexer_layers(c: ConfigReader, a: Attn, n_layers: int) -> list[bool]:
    """Which layers hold an indexer: all, or those `indexer_types` marks "full"
    (modeling_glm_moe_dsa.py: `None if config.indexer_types[i] == "shared" else Indexer`)."""
    if not a.indexer:
        return [False] * n_layers
    kinds = c.data.get("indexer_types")
    if kinds is None:
        return [True] * n_layers
    if not isinstance(kinds, list) or len(kinds) != n_layers or not all(k in ("full", "shared") for k in kinds):
        raise ForgeError(f"{c.source}: field 'indexer_types'={kinds!r} must list 'full' or 'shared' for each of {n_layers} layers")
    return [k == "full" for k in kinds]


def _sliding_layers(c: ConfigReader, a: Attn, n_layers: int) -> list[bool]:
    """Which layers are "sliding_attention" (`layer_types`), where that changes their shape."""
    if a.swa_kv_mult == 1 and not a.sinks_sliding_only:
        return [False] * n_layers
    kinds = c.data.get("layer_types")
    if not isinstance(kinds, list) or len(kinds) != n_layers or not all(isinstance(k, str) for k in kinds):
        raise ForgeError(f"{c.source}: field 'layer_types'={kinds!r} must name the attention of each of {n_layers} layers")
    return [k == "sliding_attention" for k in kinds]


def _gate_width(c: ConfigReader, a: Attn, heads: int, head_dim: int) -> int:
    """Outputs of the attention-output gate: one per head, or one per head and channel."""
    per_head = a.gate == "head" or (a.gate == "gating" and c.data.get("gating", True) in (True, "per-head"))
    return heads if per_head else heads * head_dim


def _mla(c: ConfigReader, p: str, hidden: int, heads: int) -> tuple[list[Linear], int]:
    """Multi-head latent attention, modeling_deepseek_v3.py ``DeepseekV3Attention``."""
    bias = c.bool("attention_bias", default=False)
    rope = c.int("qk_rope_head_dim")
    nope = c.int("qk_nope_head_dim")
    v_dim = c.int("v_head_dim")
    kv_rank = c.int("kv_lora_rank")
    if "q_lora_rank" not in c.data:  # null means "no q LoRA"; absent would mean the class default
        raise ForgeError(f"{c.source}: field 'q_lora_rank' is missing (null when queries have no low-rank projection)")
    q_rank = c.int("q_lora_rank", default=0, minimum=0)
    qk_dim = nope + rope
    lin: list[Linear] = []
    other = kv_rank  # kv_a_layernorm
    if q_rank:
        lin += [
            Linear(f"{p}.q_a_proj", hidden, q_rank, bias, "attention"),
            Linear(f"{p}.q_b_proj", q_rank, heads * qk_dim, False, "attention"),
        ]
        other += q_rank  # q_a_layernorm
    else:
        lin.append(Linear(f"{p}.q_proj", hidden, heads * qk_dim, False, "attention"))
    lin += [
        Linear(f"{p}.kv_a_proj_with_mqa", hidden, kv_rank + rope, bias, "attention"),
        Linear(f"{p}.kv_b_proj", kv_rank, heads * (nope + v_dim), False, "attention"),
        Linear(f"{p}.o_proj", heads * v_dim, hidden, bias, "attention"),
    ]
    return lin, other


def _mlp(c: ConfigReader, m: Mlp, hidden: int, inter: int, prefix: str | None = None, role: str = "mlp") -> list[Linear]:
    p = prefix or m.prefix
    bias = flag(c, m.bias)
    if m.kind == "gated_fused":
        up, down = m.names if len(m.names) == 2 else ("gate_up_proj", "down_proj")
        return [Linear(f"{p}.{up}", hidden, 2 * inter, bias, role), Linear(f"{p}.{down}", inter, hidden, bias, role)]  # type: ignore[arg-type]
    if m.kind == "plain":
        up, down = m.names[-2:]
        return [Linear(f"{p}.{up}", hidden, inter, bias, role), Linear(f"{p}.{down}", inter, hidden, bias, role)]  # type: ignore[arg-type]
    g, u, d = m.names
    return [
        Linear(f"{p}.{g}", hidden, inter, bias, role),  # type: ignore[arg-type]
        Linear(f"{p}.{u}", hidden, inter, bias, role),  # type: ignore[arg-type]
        Linear(f"{p}.{d}", inter, hidden, bias, role),  # type: ignore[arg-type]
    ]


def _sparse_layers(c: ConfigReader, moe: Moe, n_layers: int) -> list[bool]:
    if c.data.get("mlp_layer_types") is not None:
        # transformers >= 5 configs spell the pattern out: "dense" / "sparse" per layer
        kinds = c.data["mlp_layer_types"]
        if not isinstance(kinds, list) or len(kinds) != n_layers or not all(k in ("dense", "sparse") for k in kinds):
            raise ForgeError(f"{c.source}: field 'mlp_layer_types'={kinds!r} must list 'dense' or 'sparse' for each of {n_layers} layers")
        return [k == "sparse" for k in kinds]
    if moe.sparse == "all":
        return [True] * n_layers
    if moe.sparse == "first_k_dense":
        k = c.int(*moe.first_k, default=moe.first_k_default, minimum=0) if moe.first_k else moe.first_k_default
        return [i >= k for i in range(n_layers)]
    if moe.sparse == "interval":
        # modeling_ernie4_5_moe.py, Ernie4_5_MoeDecoderLayer: every moe_layer_interval-th
        # layer between moe_layer_start_index and moe_layer_end_index
        every = c.int("moe_layer_interval", default=1)
        start = c.int("moe_layer_start_index", default=0, minimum=0)
        end = c.int("moe_layer_end_index", default=-1, minimum=-1)
        end = n_layers - 1 if end == -1 else end  # configuration_ernie4_5_moe.py: -1 is the last layer
        return [(i + 1) % every == 0 and start <= i <= end for i in range(n_layers)]
    if moe.sparse == "moe_layers":
        # configuration_llama4.py: moe_layers, else every interleave_moe_layer_step-th layer
        listed = c.data.get("moe_layers")
        if listed is not None:
            chosen = set(c.int_list("moe_layers"))
        else:
            step = c.int("interleave_moe_layer_step", default=1)
            chosen = set(range(step - 1, n_layers, step))
        return [i in chosen for i in range(n_layers)]
    # modeling_qwen2_moe.py, Qwen2MoeDecoderLayer: sparse unless in mlp_only_layers, every step-th
    mlp_only = set(c.int_list("mlp_only_layers"))
    step = c.int("decoder_sparse_step", default=1)
    return [i not in mlp_only and (i + 1) % step == 0 for i in range(n_layers)]


def _moe(c: ConfigReader, s: Spec, hidden: int) -> tuple[list[Linear], int, int, int, int]:
    m = s.moe
    assert m is not None
    experts = c.int(*m.experts)
    inter = c.int(*m.inter)
    # DeepSeek-V2's configuration leaves num_experts_per_tok unset (None); only the active
    # parameter count reads it, which then counts one routed expert per token
    top_k = c.int(*m.top_k, default=1, minimum=1, maximum=experts)
    p = m.prefix
    lin = [
        Linear(f"{p}.{m.router}", hidden, experts, m.router_bias, "router", lora_targetable=m.router_linear),
        *fused_experts(f"{p}.experts", hidden, inter, experts, m.expert_bias),
    ]
    if m.shared:
        if m.shared_inter:
            shared = c.int(*m.shared_inter, default=0, minimum=0)
        else:
            shared = inter * c.int(*m.shared_count, default=0, minimum=0)
        if shared:
            shared_mlp = replace(m.shared_mlp, bias=s.mlp.bias) if m.shared_mlp == Mlp() else m.shared_mlp
            where = m.shared if m.shared_in_layer else f"{p}.{m.shared}"
            lin += _mlp(c, shared_mlp, hidden, shared, prefix=where, role="shared_expert")
            if m.shared_gate:
                lin.append(Linear(f"{p}.shared_expert_gate", hidden, 1, False, "router"))
    other = (experts if m.correction_bias else 0) + m.extra_norms * hidden
    return lin, other, experts, top_k, inter


def _head_counts(c: ConfigReader, a: Attn, heads: int, kv: int, n_layers: int) -> list[int]:
    """Query heads of each layer: the config's per-layer list where the family has one
    (modeling_laguna.py: `LagunaAttention(config, i, config.num_attention_heads_per_layer[i])`)."""
    if not a.per_layer_heads or c.data.get(a.per_layer_heads) is None:
        return [heads] * n_layers
    counts = c.int_list(a.per_layer_heads)
    if len(counts) != n_layers or any(n < 1 or n % kv for n in counts):
        raise ForgeError(f"{c.source}: field '{a.per_layer_heads}'={counts!r} must give {n_layers} head counts, each a multiple of num_key_value_heads={kv}")
    return counts


def build_decoder(c: ConfigReader, name: str, spec: Spec, model_type: str) -> ModelShape:
    source = c
    if spec.text_config and isinstance(c.data.get("text_config"), dict):
        c = c.sub("text_config")
    hidden = c.int("hidden_size")
    n_layers = c.layers("num_hidden_layers")
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    if heads % kv:
        raise ForgeError(f"{c.source}: num_key_value_heads={kv} must divide num_attention_heads={heads}")
    head_dim = c.int("head_dim", default=max(hidden // heads, 1))
    if spec.attn.indexer:
        # what SDPA sees per head under MLA: qk_nope + qk_rope (DeepSeek-V3.2: 128 + 64); the
        # activation model reads q/k widths from it (config.json's head_dim, where present, is
        # the rope slice: configuration_glm_moe_dsa.py)
        head_dim = c.int("qk_nope_head_dim") + c.int("qk_rope_head_dim")
    vocab = c.int("vocab_size")
    tie = source.bool("tie_word_embeddings", default=spec.tie_default)
    inter = c.int(*spec.mlp.inter, default=0, minimum=0) if spec.moe else c.int(*spec.mlp.inter)

    head_counts = _head_counts(c, spec.attn, heads, kv, n_layers)
    norms = len(spec.norms) * _norm_params(spec, c, hidden) + len(spec.extra_layer_params) * hidden
    hc = c.int("hc_mult") if spec.hyper_connections else 0
    if hc:
        norms += 2 * (2 * hc * hc * hidden + 2 * hc + 2)  # attn_hc, ffn_hc: fn, base, scale
    layer_types: list[LayerType] = []
    flags = [False] * n_layers
    experts = top_k = moe_inter = 0
    if spec.moe is not None:
        flags = _sparse_layers(c, spec.moe, n_layers)
    if not all(flags) and not inter:
        raise ForgeError(f"{c.source}: field 'intermediate_size' is missing (the dense layers need it)")
    if any(flags):
        moe_lin, moe_other, experts, top_k, moe_inter = _moe(c, spec, hidden)
    # one dense and one sparse layer type per distinct attention (one but for Laguna's head
    # counts and GLM-5's layers without an indexer)
    attns = list(zip(head_counts, _indexer_layers(c, spec.attn, n_layers), _sliding_layers(c, spec.attn, n_layers)))
    index: dict[tuple[tuple[int, bool, bool], bool], int] = {}
    for at in dict.fromkeys(attns):
        attention, attn_other = _attention(c, spec, hidden, at[0], kv, head_dim, indexer=at[1], sliding=at[2])
        kinds = {f for f, a in zip(flags, attns) if a == at}
        if False in kinds:
            index[(at, False)] = len(layer_types)
            layer_types.append(LayerType("decoder", tuple(attention + _mlp(c, spec.mlp, hidden, inter)), other_parameters=attn_other + norms))
        if True in kinds:
            index[(at, True)] = len(layer_types)
            layer_types.append(LayerType("decoder", tuple(attention + moe_lin), other_parameters=attn_other + norms + moe_other, moe=True))
    layers = tuple(index[(a, f)] for a, f in zip(attns, flags))
    # the activation model reads one head count: the widest layer's (an upper bound)
    heads = max(head_counts)

    params = [Param("model.embed_tokens.weight", vocab * hidden, "embedding")]
    if hc:
        params.append(Param("model.hc_head", hc * hc * hidden + hc + 1, "other"))
    if spec.final_norm and spec.norm != "none":
        params.append(Param("model.norm", _norm_params(spec, c, hidden), "norm"))
    if not tie:
        params.append(Param("lm_head.weight", vocab * hidden, "lm_head"))
    if flag(c, spec.lm_head_bias):
        params.append(Param("lm_head.bias", vocab, "lm_head"))

    return ModelShape(
        name=name,
        model_type=model_type,
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        intermediate_size=inter or moe_inter,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        norm="layer_norm" if spec.norm == "ln" else "rms_norm",
        gated_mlp=spec.mlp.kind != "plain",
        layer_types=tuple(layer_types),
        layers=layers,
        params=tuple(params),
        num_experts=experts,
        num_experts_per_tok=top_k,
        moe_intermediate_size=moe_inter,
        parallel_attn=flag(c, spec.parallel),
        **python_facts(c, act=spec.hidden_act),
    )


# -- the specs ---------------------------------------------------------------------------
# Each line cites the modeling file whose __init__ it transcribes (transformers 5).

_NO_BIAS = Attn(qkv_bias=False, o_bias=False)
_QWEN3_MOE = Moe(sparse="step")
_DEEPSEEK_MOE = Moe(shared="shared_experts", sparse="first_k_dense")

SPECS: dict[str, Spec] = {
    # modeling_starcoder2.py: every linear biased by use_bias, LayerNorm(bias), c_fc/c_proj MLP
    "starcoder2": Spec(
        attn=Attn(qkv_bias=("use_bias", True), o_bias=("use_bias", True)),
        norm="ln",
        mlp=Mlp(kind="plain", names=("c_fc", "c_proj"), bias=("use_bias", True)),
        tie_default=True,
        hidden_act=("hidden_act",),
    ),
    # modeling_stablelm.py: q/k/v bias from use_qkv_bias, o_proj Linear(H, H) unbiased,
    # optional per-head LayerNorm q/k (qk_layernorm), LayerNorm(bias) everywhere; with
    # use_parallel_residual the layer has no post_attention_layernorm (built separately below)
    "stablelm": Spec(
        attn=Attn(qkv_bias=("use_qkv_bias", False), o_bias=False, qk_norm="per_head", qk_norm_when=("qk_layernorm", False), o_in_hidden=True),
        norm="ln",
    ),
    # modeling_olmo.py: OlmoLayerNorm has no parameters; q/k/v/o bias from attention_bias
    "olmo": Spec(norm="none"),
    # modeling_olmo2.py: post-norms only (post_attention/post_feedforward), q_norm/k_norm over
    # all heads (RMSNorm(heads·hd), RMSNorm(kv·hd))
    "olmo2": Spec(attn=Attn(qk_norm="full"), norms=("post_attention_layernorm", "post_feedforward_layernorm")),
    "olmo3": Spec(attn=Attn(qk_norm="full"), norms=("post_attention_layernorm", "post_feedforward_layernorm")),
    # modeling_exaone4.py: OLMo-2-style post-norms with per-head q/k norms
    "exaone4": Spec(attn=Attn(qk_norm="head"), norms=("post_attention_layernorm", "post_feedforward_layernorm")),
    # modeling_olmoe.py: full-width q/k norms, all layers sparse
    "olmoe": Spec(attn=Attn(qk_norm="full"), moe=Moe(inter=("intermediate_size",))),
    # modeling_flex_olmo.py: OLMo-2 post-norms + OLMoE experts
    "flex_olmo": Spec(attn=Attn(qk_norm="full"), norms=("post_attention_layernorm", "post_feedforward_layernorm"), moe=Moe(inter=("intermediate_size",))),
    # modeling_gpt_oss.py: biased q/k/v/o, sinks, router Linear-like with bias, expert biases
    "gpt_oss": Spec(
        attn=Attn(qkv_bias=("attention_bias", True), o_bias=("attention_bias", True), sinks=True),
        moe=Moe(router="router", router_bias=True, inter=("intermediate_size",), expert_bias=True),
    ),
    # modeling_llama4.py: Llama4Router is an nn.Linear; shared_expert sized intermediate_size;
    # dense layers use intermediate_size_mlp; moe_layers / interleave_moe_layer_step
    "llama4_text": Spec(
        mlp=Mlp(prefix="feed_forward", inter=("intermediate_size_mlp",)),
        moe=Moe(prefix="feed_forward", router="router", router_linear=True, inter=("intermediate_size",), shared="shared_expert", shared_inter=("intermediate_size",), sparse="moe_layers"),
    ),
    "llama4": Spec(
        mlp=Mlp(prefix="feed_forward", inter=("intermediate_size_mlp",)),
        moe=Moe(prefix="feed_forward", router="router", router_linear=True, inter=("intermediate_size",), shared="shared_expert", shared_inter=("intermediate_size",), sparse="moe_layers"),
        text_config=True,
    ),
    # modeling_deepseek_v3.py: MLA, dense first_k_dense_replace layers, shared experts
    "deepseek_v3": Spec(attn=Attn(kind="mla"), moe=_DEEPSEEK_MOE),
    "deepseek_v2": Spec(attn=Attn(kind="mla"), moe=_DEEPSEEK_MOE),
    # modeling_glm4_moe.py: GQA with q/k/v bias from attention_bias, optional qk norm
    "glm4_moe": Spec(attn=Attn(o_bias=False, qk_norm="head", qk_norm_when=("use_qk_norm", False)), moe=_DEEPSEEK_MOE),
    "glm4_moe_lite": Spec(attn=Attn(kind="mla"), moe=_DEEPSEEK_MOE),
    # modeling_minicpm3.py / modeling_youtu.py: MLA with a dense MLP
    "minicpm3": Spec(attn=Attn(kind="mla"), tie_default=True),
    "youtu": Spec(attn=Attn(kind="mla"), tie_default=True),
    # modeling_cohere.py: one LayerNorm (no bias) feeding attention and MLP in parallel
    "cohere": Spec(norms=("input_layernorm",), norm="ln", norm_bias=False, tie_default=True, parallel=True, attn=Attn(qk_norm="full", qk_norm_when=("use_qk_norm", False))),
    "cohere2": Spec(norms=("input_layernorm",), norm="ln", norm_bias=False, tie_default=True, parallel=True),
    # modeling_cohere_compass.py (text): Cohere 2's parallel block
    "cohere_compass_text": Spec(norms=("input_layernorm",), norm="ln", norm_bias=False, tie_default=True, parallel=True),
    # modeling_arcee.py: plain up/down MLP (ReLU²)
    "arcee": Spec(mlp=Mlp(kind="plain", names=("up_proj", "down_proj"), bias=("mlp_bias", False))),
    # modeling_ernie4_5.py: every linear biased by use_bias
    "ernie4_5": Spec(attn=Attn(qkv_bias=("use_bias", False), o_bias=("use_bias", False)), mlp=Mlp(bias=("use_bias", False)), tie_default=True),
    # modeling_glm.py: fused gate_up_proj, q/k/v bias (attention_bias defaults to true)
    "glm": Spec(attn=Attn(qkv_bias=("attention_bias", True), o_bias=False), mlp=Mlp(kind="gated_fused", names=("gate_up_proj", "down_proj"))),
    # modeling_glm4.py: glm + sandwich norms (post_self_attn_layernorm, post_mlp_layernorm)
    "glm4": Spec(
        attn=Attn(qkv_bias=("attention_bias", True), o_bias=False),
        norms=("input_layernorm", "post_attention_layernorm", "post_self_attn_layernorm", "post_mlp_layernorm"),
        mlp=Mlp(kind="gated_fused", names=("gate_up_proj", "down_proj")),
    ),
    # modeling_helium.py, modeling_emu3.py, modeling_exaone.py...: Llama's layout
    "helium": Spec(attn=_NO_BIAS),
    "emu3": Spec(text_config=True),
    "exaone": Spec(),
    # modeling_minimax_m2.py / modeling_mellum.py: Qwen3-MoE layout
    "minimax_m2": Spec(attn=Attn(qk_norm="full"), moe=Moe(inter=("intermediate_size",))),
    # modeling_granitemoe.py: block_sparse_moe with a router module
    "granitemoe": Spec(moe=Moe(prefix="block_sparse_moe", router="router", inter=("intermediate_size",))),
    # modeling_phimoe.py: LayerNorm with bias, q/k/v bias from attention_bias
    "phimoe": Spec(norm="ln", moe=Moe(prefix="mlp", router="router", router_linear=True, inter=("intermediate_size",))),
    # modeling_solar_open.py: shared experts in every layer
    "solar_open": Spec(moe=Moe(shared="shared_experts")),
    # modeling_jais2.py: biased linears and LayerNorm, plain up/down MLP
    "jais2": Spec(
        attn=Attn(qkv_bias=("attention_bias", True), o_bias=("attention_bias", True)),
        norm="ln",
        mlp=Mlp(kind="plain", names=("up_proj", "down_proj"), bias=("mlp_bias", True)),
    ),
    # modeling_vaultgemma.py: Gemma with input/pre_feedforward norms only
    "vaultgemma": Spec(norms=("input_layernorm", "pre_feedforward_layernorm"), tie_default=True, hidden_act=("hidden_activation", "hidden_act")),
    # modeling_diffllama.py: Llama + four lambda vectors of head_dim per layer
    "diffllama": Spec(),
    # modeling_bitnet.py: sub-norms inside attention (attn_sub_norm [H]) and MLP (ffn_sub_norm [I])
    "bitnet": Spec(),
    # modeling_granite_swa.py: Llama layout with attention sinks
    "granite_swa": Spec(attn=Attn(sinks=True), tie_default=True),
    # modeling_flint.py: per-head q/k norms and sinks
    # Qwen2-MoE-style sparse layers past `mlp_only_layers` with an ungated shared expert (modeling_flint.py FlintSparseMoeBlock)
    "flint": Spec(attn=Attn(qk_norm="head", sinks=True), moe=Moe(shared="shared_expert", shared_inter=("shared_expert_intermediate_size",), sparse="step")),
    # modeling_ministral3.py / modeling_cwm.py / mllama text: Llama layout
    # modeling_nanochat.py: parameter-free RMSNorm, plain fc1/fc2 MLP (relu²)
    "nanochat": Spec(norm="none", mlp=Mlp(kind="plain", names=("fc1", "fc2"))),
    # modeling_exaone_moe.py / modeling_hy_v3.py: per-head q/k norms, shared experts sized
    # moe_intermediate_size · num_shared_experts, dense/sparse from mlp_layer_types
    "exaone_moe": Spec(attn=Attn(qk_norm="head"), moe=Moe(shared="shared_experts", shared_count=("num_shared_experts",), sparse="first_k_dense")),
    "hy_v3": Spec(attn=Attn(qk_norm="head"), moe=Moe(shared="shared_experts", shared_count=("num_shared_experts",), sparse="first_k_dense")),
    # modeling_sarvam_moe.py (GLM-4-MoE classes) / sarvam_mla (DeepSeek-V3 classes)
    "sarvam_moe": Spec(attn=Attn(o_bias=False, qk_norm="head", qk_norm_when=("use_qk_norm", False)), moe=_DEEPSEEK_MOE),
    "sarvam_mla": Spec(attn=Attn(kind="mla"), moe=_DEEPSEEK_MOE),
    # modeling_axk1.py: DeepSeek-V3 + a post_mlp_layernorm inside each sparse block
    "axk1": Spec(attn=Attn(kind="mla"), moe=replace(_DEEPSEEK_MOE, extra_norms=1)),
    # modeling_mellum.py: Qwen3-MoE layout
    "mellum": Spec(attn=Attn(qk_norm="head"), moe=Moe()),
    # modeling_kolibri1.py: sandwich norms, per-head q/k norms, shared experts of their own size
    "kolibri1": Spec(
        attn=Attn(qk_norm="head"),
        norms=("input_layernorm", "post_attention_layernorm", "post_self_attn_layernorm", "post_mlp_layernorm"),
        moe=Moe(shared="shared_experts", shared_inter=("shared_expert_intermediate_size",)),
    ),
    # modeling_cohere2_moe.py: Cohere's parallel block with experts sized intermediate_size
    "cohere2_moe": Spec(
        norms=("input_layernorm",), norm="ln", norm_bias=False, tie_default=True, parallel=True,
        moe=Moe(inter=("intermediate_size",), shared="shared_experts", shared_count=("num_shared_experts",)),
    ),
    # modeling_granitemoeshared.py: shared_mlp (fused input_linear H→2S, output_linear) when
    # shared_intermediate_size > 0
    "granitemoeshared": Spec(
        moe=Moe(prefix="block_sparse_moe", router="router", inter=("intermediate_size",), shared="shared_mlp",
                shared_inter=("shared_intermediate_size",), shared_mlp=Mlp(kind="gated_fused", names=("input_linear", "output_linear")), shared_in_layer=True),
    ),
    "granitemoe_swa": Spec(attn=Attn(sinks=True), moe=Moe(prefix="block_sparse_moe", router="router", inter=("intermediate_size",))),
    # modeling_aria.py (text): router module, shared experts moe_num_shared_experts · I
    "aria_text": Spec(moe=Moe(router="router", experts=("moe_num_experts",), inter=("intermediate_size",), top_k=("moe_topk",), shared="shared_experts", shared_count=("moe_num_shared_experts",))),
    # modeling_ernie4_5_moe.py: use_bias everywhere, [1, E] learned correction bias, sparse
    # layers by interval between start and end indices
    "ernie4_5_moe": Spec(
        attn=Attn(qkv_bias=("use_bias", False), o_bias=("use_bias", False)),
        mlp=Mlp(bias=("use_bias", False)),
        tie_default=True,
        lm_head_bias=("use_bias", False),
        moe=Moe(experts=("moe_num_experts",), top_k=("moe_k",), shared="shared_experts", shared_count=("moe_num_shared_experts",), correction_bias=True, sparse="interval"),
    ),
    # modeling_apertus.py: xIELU activation with two learned scalars, plain up/down MLP
    "apertus": Spec(attn=Attn(qk_norm="head"), norms=("attention_layernorm", "feedforward_layernorm"), mlp=Mlp(kind="plain", names=("up_proj", "down_proj"), bias=("mlp_bias", False))),
    "apertus1p5_text": Spec(attn=Attn(qk_norm="head"), norms=("attention_layernorm", "feedforward_layernorm"), mlp=Mlp(kind="plain", names=("up_proj", "down_proj"), bias=("mlp_bias", False))),
    # modeling_persimmon.py: fused biased query_key_value + dense, LayerNorm q/k norms,
    # LayerNorm(bias) everywhere, plain biased dense_h_to_4h / dense_4h_to_h
    "persimmon": Spec(
        attn=Attn(kind="fused", names=("query_key_value", "", "", "dense"), qkv_bias=True, o_bias=True, qk_norm="shared_ln", qk_norm_when=("qk_layernorm", True)),
        norm="ln",
        mlp=Mlp(kind="plain", names=("dense_h_to_4h", "dense_4h_to_h"), bias=True),
    ),
    # modeling_nemotron.py: NemotronLayerNorm1P (an nn.LayerNorm with bias), plain up/down
    # MLP (relu²) biased by mlp_bias, q/k/v/o biased by attention_bias
    "nemotron": Spec(norm="ln", mlp=Mlp(kind="plain", names=("up_proj", "down_proj"), bias=("mlp_bias", False))),
    # modeling_hunyuan_v1_moe.py: per-head query_layernorm/key_layernorm, every layer sparse;
    # the router HunYuanMoEV1Gate holds an nn.Linear `wg` (peft can wrap it), experts and
    # the always-on shared_mlp are both sized intermediate_size
    "hunyuan_v1_moe": Spec(
        attn=Attn(qk_norm="head", qk_norm_names=("query_layernorm", "key_layernorm")),
        moe=Moe(router="gate.wg", router_linear=True, inter=("intermediate_size",), top_k=("moe_topk", "num_experts_per_tok"),
                shared="shared_mlp", shared_inter=("intermediate_size",)),
    ),
    # modeling_deepseek_v32.py / modeling_glm_moe_dsa.py: DeepSeek-V3 (MLA, shared experts,
    # dense first layers) plus the DSA indexer in every layer, or in the "full" ones
    "deepseek_v32": Spec(attn=Attn(kind="mla", indexer=True), moe=_DEEPSEEK_MOE),
    "glm_moe_dsa": Spec(attn=Attn(kind="mla", indexer=True), moe=_DEEPSEEK_MOE),
    # modeling_mimo_v2_flash.py: sliding layers with twice the kv heads and per-head sinks,
    # v heads of v_head_dim, unbiased o_proj; experts by mlp_layer_types (TopKRouter weight)
    "mimo_v2_flash": Spec(
        attn=Attn(o_bias=False, sinks=True, sinks_sliding_only=True, swa_kv_mult=2, v_head_dim="v_head_dim"),
        moe=Moe(sparse="first_k_dense"),
    ),
    # modeling_hy_v4.py: DeepSeek-V3.2's MLA and indexer with per-head sinks and a sigmoid
    # gate (gate_proj H → heads · v_head_dim), hyper-connections around attention and FFN,
    # experts by mlp_layer_types (TopkRouter weight, shared experts)
    "hy_v4": Spec(attn=Attn(kind="mla", indexer=True, sinks=True, gate="full"), moe=_DEEPSEEK_MOE, hyper_connections=True),
    # modeling_afmoe.py: sigmoid-gated attention output (self_attn.gate_proj H→heads·hd),
    # per-head q/k norms, four norms per layer, first num_dense_layers dense; the router
    # holds an nn.Linear `router.gate`; a fp32 [E] expert_bias parameter; shared experts
    # sized moe_intermediate_size · num_shared_experts
    "afmoe": Spec(
        attn=Attn(qk_norm="head", gate="full"),
        norms=("input_layernorm", "post_attention_layernorm", "pre_mlp_layernorm", "post_mlp_layernorm"),
        moe=Moe(router="router.gate", router_linear=True, shared="shared_experts", shared_count=("num_shared_experts",),
                correction_bias=True, sparse="first_k_dense", first_k=("num_dense_layers",)),
    ),
    # modeling_beam.py: sigmoid gate over heads·hd plus a per-head gate_bias [heads], Gemma-3
    # sandwich norms; sparse layers from mlp_layer_types (configuration_beam.py: else the
    # first min(3, layers) dense), a TopKRouter weight [E, H] (its correction bias a buffer)
    "beam": Spec(
        attn=Attn(qk_norm="head", gate="full", gate_bias=True),
        norms=("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"),
        moe=Moe(sparse="first_k_dense", first_k=(), first_k_default=3),
    ),
    # modeling_laguna.py: query heads per layer (num_attention_heads_per_layer), a softplus
    # gate `g_proj` per head (gating: true / "per-head") or per channel, per-head q/k norms;
    # sparse layers from mlp_layer_types (else all but the first), shared experts of their
    # own size, a TopKRouter weight with an [E] e_score_correction_bias parameter
    "laguna": Spec(
        attn=Attn(qk_norm="head", gate="gating", gate_name="g_proj", gate_act="softplus", per_layer_heads="num_attention_heads_per_layer"),
        moe=Moe(shared="shared_experts", shared_inter=("shared_expert_intermediate_size",), correction_bias=True,
                sparse="first_k_dense", first_k=(), first_k_default=1),
    ),
}


def _builder(model_type: str):  # noqa: ANN202
    spec = SPECS[model_type]

    def build(c: ConfigReader, name: str) -> ModelShape:
        shape = _fixups(c, build_decoder(c, name, spec, model_type), model_type)
        hints = hints_for(c, model_type)
        text = c.sub("text_config") if spec.text_config and isinstance(c.data.get("text_config"), dict) else c
        if spec.attn.qk_norm and flag(text, spec.attn.qk_norm_when):
            hints["qk_norm"] = True  # the Q/K norms save their inputs for backward (activations.rs)
        if spec.attn.sinks:
            # sink logits join the softmax, which SDPA cannot do: these models declare
            # `_supports_sdpa = False` (modeling_gpt_oss.py, modeling_flint.py) and run eager
            hints["eager_only"] = True
        if spec.attn.gate:
            # the gate's activation and the gated output are kept for backward (activations.rs attn_gate_saved)
            gate_hd = text.int("v_head_dim") if spec.attn.kind == "mla" else shape.head_dim
            hints["attn_gate_width"] = _gate_width(text, spec.attn, shape.num_attention_heads, gate_hd)
            hints["attn_gate_fp32"] = spec.attn.gate_act == "softplus"
        if spec.hyper_connections:
            # n residual streams: what each hyper-connection keeps (activations.rs hyper_connection_saved)
            hints["hyper_connection_streams"] = text.int("hc_mult")
        if spec.attn.indexer:
            # the indexer's per-head scores are a forward transient over the context, its top-k
            # a mask SDPA keeps (activations.rs layer_forward_transient, qkv_saved)
            hints["dsa_indexer_heads"] = text.int("index_n_heads")
            hints["dsa_indexer_head_dim"] = text.int("index_head_dim")
        object.__setattr__(shape, "hints", hints)
        return shape

    return build


def _fixups(c: ConfigReader, shape: ModelShape, model_type: str) -> ModelShape:
    """Per-layer tensors that only one family has (each with its modeling file)."""
    extra = 0
    if model_type == "stablelm" and c.bool("use_parallel_residual", default=False):
        # modeling_stablelm.py: no post_attention_layernorm with the parallel residual
        extra -= 2 * shape.hidden_size
    if model_type == "diffllama":
        extra += 4 * shape.head_dim  # lambda_q1, lambda_k1, lambda_q2, lambda_k2 [head_dim]
    if model_type.startswith("apertus"):
        extra += 2  # XIELUActivation: alpha_p [1], alpha_n [1] (activations.py)
    if model_type == "bitnet":
        extra += shape.hidden_size + shape.intermediate_size  # attn_sub_norm [H], ffn_sub_norm [I]
    if not extra:
        return shape
    lts = tuple(replace(lt, other_parameters=lt.other_parameters + extra) for lt in shape.layer_types)
    return replace(shape, layer_types=lts)


for _mt in SPECS:
    register_architecture(_mt)(_builder(_mt))
