"""More hybrid decoders, beside shapes/families/hybrid.py's: MiniMax-01, Lara-mini, Kimi
Linear, Bailing hybrid (Ling 2.5), MiniMax-M3's text decoder, Qwen4-Exp.

MiniMax-01 (``minimax``): lightning (linear) attention layers between softmax attention
layers, every layer's MLP a Mixtral-style sparse block.

Transcribes transformers 5's modeling_minimax.py. ``MiniMaxLightningAttention``:
``qkv_proj`` H → 3·heads·hd, ``output_gate`` H → heads·hd, ``out_proj`` heads·hd → H (no
biases) and an RMSNorm over heads·hd; ``MiniMaxAttention``: q/k/v/o without biases;
``MiniMaxSparseMoeBlock``: a ``gate`` router held as an nn.Parameter [E, H] (not a Linear:
peft cannot wrap it) and fused experts of ``intermediate_size``. ``layer_types`` defaults to
full attention on even layers, linear on odd ones (configuration_minimax.py ``__post_init__``).

Activations: no rule models the lightning-attention recurrence itself; its layers take the
Gated DeltaNet rule (rust/src/activations.rs ``mixer_core_bytes``), the nearest existing
linear-attention mixer, with the SiLU over ``qkv_proj``'s output standing where Gated
DeltaNet keeps its convolution's input and output (``conv_dim`` = 3·heads·hd, one tap: the
lightning layer has no convolution), ``heads`` = ``key_heads`` = num_attention_heads of
head_dim, and ``block_size`` as the chunk (README: "Architectures").
"""

from __future__ import annotations

import math
from collections.abc import Callable

from forge_advisor.shapes.config import ConfigReader
from forge_advisor.errors import ForgeError
from forge_advisor.shapes.families.decoder import Moe, Spec, _mla, _moe
from forge_advisor.shapes.families.hybrid import _assemble, _attn, _gated, _gdn, _head, _kinds, _shape
from forge_advisor.shapes.families.common import fused_experts
from forge_advisor.shapes.model import LayerType, Linear, Mixer, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture

__all__: list[str] = []


def _lightning(hidden: int, heads: int, hd: int, block: int) -> tuple[list[Linear], int, Mixer]:
    width = heads * hd
    lin = [
        Linear("self_attn.qkv_proj", hidden, 3 * width, False, "attention"),
        Linear("self_attn.output_gate", hidden, width, False, "attention"),
        Linear("self_attn.out_proj", width, hidden, False, "attention"),
    ]
    mixer = Mixer("gated_delta_net", d_inner=width, conv_dim=3 * width, conv_kernel=1, heads=heads, head_dim=hd,
                  key_heads=heads, key_head_dim=hd, chunk_size=block, gated_norm=True)
    return lin, width, mixer  # norm.weight [heads·hd]


@register_architecture("minimax")
def _minimax(c: ConfigReader, name: str) -> ModelShape:
    hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    hd = c.int("head_dim", default=hidden // heads)
    tie = c.bool("tie_word_embeddings", default=False)
    kinds = _kinds(c, "layer_types", n_layers, {"full_attention", "linear_attention"})
    if kinds is None:
        kinds = ["full_attention" if (i + 1) % 2 else "linear_attention" for i in range(n_layers)]
    experts = c.int("num_local_experts", default=8)
    top_k = c.int("num_experts_per_tok", default=2, maximum=experts)
    inter = c.int("intermediate_size")
    moe = [
        Linear("mlp.gate", hidden, experts, False, "router", lora_targetable=False),
        *fused_experts("mlp.experts", hidden, inter, experts),
    ]
    norms = 2 * hidden  # input_layernorm, post_attention_layernorm

    def layer(kind: tuple) -> LayerType:
        if kind[0] == "full_attention":
            return LayerType("decoder", tuple(_attn(c, hidden, heads, kv, hd) + moe), norms, moe=True)
        lin, other, mixer = _lightning(hidden, heads, hd, c.int("block_size", default=256))
        return LayerType("decoder", tuple(lin + moe), other + norms, moe=True, attention=False, mixer=mixer)

    layer_types, layers = _assemble([(k,) for k in kinds], layer)
    return _shape(c, name, "minimax", hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd, inter=inter, vocab=vocab,
                  tie=tie, layer_types=layer_types, layers=layers,
                  params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", "model.norm"),
                  experts=experts, top_k=top_k, moe_inter=inter)


# modeling_lara_mini.py LaraMiniSparseMoeBlock: router ``gate`` [E, H] (a Parameter), fused
# experts of moe_intermediate_size, and a shared expert added in full (no gate)
_LARA_MOE = Moe(shared="shared_expert", shared_inter=("shared_expert_intermediate_size",))


@register_architecture("lara_mini")
def _lara_mini(c: ConfigReader, name: str) -> ModelShape:
    """modeling_lara_mini.py ``LaraMiniDecoderLayer``: ``linear_attn`` (Qwen3.5's Gated
    DeltaNet with split input projections) or ``self_attn`` (Qwen3 attention: q/k/v/o,
    per-head ``q_norm``/``k_norm``; "sliding_attention" only masks) by ``layer_types``
    (configuration_lara_mini.py: the period-5 pattern linear, sliding, linear, full,
    sliding), every layer's MLP the sparse block; a head tied by default."""
    hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    hd = c.int("head_dim", default=128)
    tie = c.bool("tie_word_embeddings", default=True)
    kinds = _kinds(c, "layer_types", n_layers, {"linear_attention", "sliding_attention", "full_attention"})
    if kinds is None:
        pattern = ["linear_attention", "sliding_attention", "linear_attention", "full_attention", "sliding_attention"]
        kinds = [pattern[i % 5] for i in range(n_layers)]
    moe_lin, moe_other, experts, top_k, moe_inter = _moe(c, Spec(moe=_LARA_MOE), hidden)
    bias = c.bool("attention_bias", default=False)
    norms = 2 * hidden

    def layer(kind: tuple) -> LayerType:
        if kind[0] == "linear_attention":
            lin, other, mixer = _gdn(c, hidden, True)
            return LayerType("decoder", tuple(lin + moe_lin), other + moe_other + norms, moe=True, attention=False, mixer=mixer)
        return LayerType("decoder", tuple(_attn(c, hidden, heads, kv, hd, bias=bias) + moe_lin), 2 * hd + moe_other + norms, moe=True)

    # sliding and full layers share one shape
    layer_types, layers = _assemble([("linear_attention" if k == "linear_attention" else "attention",) for k in kinds], layer)
    return _shape(c, name, "lara_mini", hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd, inter=moe_inter, vocab=vocab,
                  tie=tie, layer_types=layer_types, layers=layers,
                  params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", "model.norm"),
                  experts=experts, top_k=top_k, moe_inter=moe_inter, hints={"qk_norm": True})


# modeling_kimi_linear.py KimiLinearMoE: router ``gate`` [E, H] (a Parameter; its
# e_score_correction_bias is a buffer), fused experts of moe_intermediate_size, and
# ``shared_experts`` of moe_intermediate_size · n_shared_experts added in full
# (KimiLinearConfig's attribute_map writes num_experts, num_shared_experts and
# num_experts_per_token into its to_dict)
_KIMI_MOE = Moe(shared="shared_experts", experts=("num_local_experts", "num_experts"),
                shared_count=("n_shared_experts", "num_shared_experts"), top_k=("num_experts_per_tok", "num_experts_per_token"))


def _kda(c: ConfigReader, hidden: int, *, bailing: bool = False) -> tuple[list[Linear], int, Mixer]:
    """modeling_kimi_linear.py ``KimiLinearDeltaAttention`` (Kimi Delta Attention): q/k/v
    H → nh·hd, depthwise ``conv1d`` over 3·nh·hd channels (no bias), ``b_proj`` H → nh,
    the low-rank output gate ``g_a_proj`` H → hd, ``g_b_proj`` hd → nh·hd, a gated RMSNorm
    ``o_norm`` [hd], ``o_proj``; ``KimiLinearForgetGate``: ``f_a_proj`` H → hd,
    ``f_b_proj`` hd → nh·hd, ``dt_bias`` [nh·hd], ``A_log`` [nh].
    modeling_bailing_hybrid.py ``BailingHybridDeltaAttention`` (``bailing``): full-rank
    ``forget_gate.f_proj`` H → nh·hd and ``g_proj`` H → nh·hd in place of the pairs.

    Its activations take the Gated DeltaNet rule (nh key and value heads of hd): KDA is the
    same chunked delta rule with a per-channel decay (the class docstring) where Gated
    DeltaNet's is per head, so the rule undercounts the decay tensors by a factor hd."""
    if bailing:
        # configuration_bailing_hybrid.py __post_init__: linear_head_dim = head_dim (the field
        # as given, before it is overwritten by qk_rope_head_dim), linear_num_heads =
        # num_attention_heads, linear_conv_kernel_dim = short_conv_kernel_size; a saved
        # config's own linear_* fields come back as kwargs set after that, and win
        nh, hd = c.int("linear_num_heads", "num_attention_heads"), c.int("linear_head_dim", "head_dim", default=128)
        kernel = c.int("linear_conv_kernel_dim", "short_conv_kernel_size", default=4)
    else:
        nh, hd = c.int("linear_num_heads", default=32), c.int("linear_head_dim", default=128)
        kernel = c.int("linear_conv_kernel_dim", default=4)
    width = nh * hd
    p = "self_attn"
    lin = [
        Linear(f"{p}.q_proj", hidden, width, False, "attention"),
        Linear(f"{p}.k_proj", hidden, width, False, "attention"),
        Linear(f"{p}.v_proj", hidden, width, False, "attention"),
    ]
    if bailing:
        lin += [Linear(f"{p}.forget_gate.f_proj", hidden, width, False, "other"),
                Linear(f"{p}.b_proj", hidden, nh, False, "other"),
                Linear(f"{p}.g_proj", hidden, width, False, "other")]
    else:
        lin += [Linear(f"{p}.forget_gate.f_a_proj", hidden, hd, False, "other"),
                Linear(f"{p}.forget_gate.f_b_proj", hd, width, False, "other"),
                Linear(f"{p}.b_proj", hidden, nh, False, "other"),
                Linear(f"{p}.g_a_proj", hidden, hd, False, "other"),
                Linear(f"{p}.g_b_proj", hd, width, False, "other")]
    lin.append(Linear(f"{p}.o_proj", width, hidden, False, "attention"))
    other = 3 * width * kernel + width + nh + hd  # conv1d, dt_bias, A_log, o_norm
    mixer = Mixer("gated_delta_net", d_inner=width, conv_dim=3 * width, conv_kernel=kernel, heads=nh, head_dim=hd,
                  key_heads=nh, key_head_dim=hd, chunk_size=64, gated_norm=True)
    return lin, other, mixer


def _kimi_kinds(c: ConfigReader, n_layers: int, bailing: bool) -> tuple[list[str], list[str]]:
    """configuration_kimi_linear.py ``__post_init__``: ``layer_types``, else the checkpoint's
    ``linear_attn_config`` (1-indexed ``full_attn_layers`` / ``kda_layers``), else full
    attention on every 4th layer after the first; ``mlp_layer_types``, else dense for the
    first ``first_k_dense_replace`` (default 1) layers. Bailing hybrid: no
    ``linear_attn_config``, full attention every ``layer_group_size``-th layer, 2 dense."""
    kinds = _kinds(c, "layer_types", n_layers, {"full_attention", "linear_attention"})
    lac = c.data.get("linear_attn_config")
    if kinds is None and isinstance(lac, dict) and "full_attn_layers" in lac and "kda_layers" in lac:
        by_index = {i: "full_attention" for i in lac["full_attn_layers"]} | {i: "linear_attention" for i in lac["kda_layers"]}
        if sorted(by_index) != list(range(1, n_layers + 1)):
            raise ForgeError(f"{c.source}: linear_attn_config's full_attn_layers and kda_layers must cover layers 1..{n_layers} once")
        kinds = [by_index[i + 1] for i in range(n_layers)]
    if kinds is None and bailing:  # configuration_bailing_hybrid.py: every layer_group_size-th is full
        group = c.int("layer_group_size", default=6)
        kinds = ["full_attention" if (i + 1) % group == 0 else "linear_attention" for i in range(n_layers)]
    if kinds is None:
        kinds = ["full_attention" if i and i % 4 == 0 else "linear_attention" for i in range(n_layers)]
    mlp = _kinds(c, "mlp_layer_types", n_layers, {"dense", "sparse"})
    if mlp is None:
        first = c.int("first_k_dense_replace", default=2 if bailing else 1, minimum=0)
        mlp = ["dense" if i < first else "sparse" for i in range(n_layers)]
    return kinds, mlp


def _kimi_like(model_type: str) -> Callable[[ConfigReader, str], ModelShape]:
    bailing = model_type == "bailing_hybrid"
    return lambda src, name: _kimi_linear(src, name, model_type, bailing)


def _kimi_linear(src: ConfigReader, name: str, model_type: str, bailing: bool) -> ModelShape:
    """modeling_kimi_linear.py ``KimiLinearDecoderLayer``: ``self_attn`` is MLA
    (``KimiLinearAttention``, DeepSeek-V2's without RoPE) on "full_attention" layers and
    Kimi Delta Attention elsewhere; ``mlp`` the sparse block or a gated MLP by
    ``mlp_layer_types``; ``input_layernorm``, ``post_attention_layernorm``, ``model.norm``.
    modeling_bailing_hybrid.py: the same layout; its MLA adds a per-head output gate
    ``g_proj`` H → heads (``BailingHybridAttention``); the ``num_mtp_layers`` layers are
    not built (only ignored when loading)."""
    lac = None if bailing else src.data.get("linear_attn_config")
    data = dict(src.data)
    if isinstance(lac, dict):  # the checkpoint's spellings (configuration_kimi_linear.py)
        for ours, theirs in (("linear_head_dim", "head_dim"), ("linear_num_heads", "num_heads"),
                             ("linear_conv_kernel_dim", "short_conv_kernel_size")):
            if theirs in lac:
                data[ours] = lac[theirs]
    data.setdefault("q_lora_rank", None)  # KimiLinearConfig's / BailingHybridConfig's default: no query LoRA
    if data.get("num_shared_experts") is None:
        data.setdefault("n_shared_experts", 1)  # both configs' default: one shared expert
    c = ConfigReader(data, src.source)
    hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    heads = c.int("num_attention_heads")
    tie = c.bool("tie_word_embeddings", default=False)
    kinds, mlp_kinds = _kimi_kinds(c, n_layers, bailing)
    inter = c.int("intermediate_size")
    moe_parts = _moe(c, Spec(moe=_KIMI_MOE), hidden) if "sparse" in mlp_kinds else None
    dense = _gated("mlp", ("gate_proj", "up_proj", "down_proj"), hidden, inter)
    norms = 2 * hidden

    def layer(kind: tuple) -> LayerType:
        mix, mlp = kind
        if mix == "full_attention":
            lin, other = _mla(c, "self_attn", hidden, heads)
            if bailing:
                lin.append(Linear("self_attn.g_proj", hidden, heads, False, "other"))
            mixer = None
        else:
            lin, other, mixer = _kda(c, hidden, bailing=bailing)
        if mlp == "sparse":
            assert moe_parts is not None
            lin, other = lin + moe_parts[0], other + moe_parts[1]
        else:
            lin = lin + dense
        return LayerType("decoder", tuple(lin), other + norms, moe=mlp == "sparse", attention=mixer is None, mixer=mixer)

    layer_types, layers = _assemble(list(zip(kinds, mlp_kinds)), layer)
    experts, top_k, moe_inter = (moe_parts[2], moe_parts[3], moe_parts[4]) if moe_parts else (0, 0, 0)
    # MLA's q/k width per head, as decoder.py's MLA parsers record it
    hd = c.int("qk_nope_head_dim") + c.int("qk_rope_head_dim")
    return _shape(c, name, model_type, hidden=hidden, n_layers=n_layers, heads=heads, kv=heads, hd=hd, inter=inter,
                  vocab=vocab, tie=tie, layer_types=layer_types, layers=layers,
                  params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", "model.norm"),
                  experts=experts, top_k=top_k, moe_inter=moe_inter)


register_architecture("kimi_linear")(_kimi_like("kimi_linear"))
register_architecture("bailing_hybrid")(_kimi_like("bailing_hybrid"))


def _m3_ffn(c: ConfigReader, hidden: int, sparse: bool) -> tuple[list[Linear], int]:
    """modeling_minimax_m3_vl.py ``MiniMaxM3VLDenseMLP`` (fused ``gate_up_proj`` H → 2·I,
    ``down_proj``; I = dense_intermediate_size) or ``MiniMaxM3VLSparseMoeBlock``: router
    ``gate`` [E, H] (a Parameter; e_score_correction_bias is a buffer), fused experts of
    intermediate_size, and a dense MLP of shared_intermediate_size as ``shared_experts``."""
    if not sparse:
        inter = c.int("dense_intermediate_size", default=12288)
        return [Linear("mlp.gate_up_proj", hidden, 2 * inter, False, "mlp"), Linear("mlp.down_proj", inter, hidden, False, "mlp")], inter
    experts, inter = c.int("num_local_experts", "num_experts", default=128), c.int("intermediate_size", default=3072)
    shared = c.int("shared_intermediate_size", default=3072)
    return [
        Linear("mlp.gate", hidden, experts, False, "router", lora_targetable=False),
        *fused_experts("mlp.experts", hidden, inter, experts),
        Linear("mlp.shared_experts.gate_up_proj", hidden, 2 * shared, False, "shared_expert"),
        Linear("mlp.shared_experts.down_proj", shared, hidden, False, "shared_expert"),
    ], inter


@register_architecture("minimax_m3_vl_text")
def _minimax_m3_text(c: ConfigReader, name: str) -> ModelShape:
    """modeling_minimax_m3_vl.py ``MiniMaxM3VLDecoderLayer``: q/k/v/o with per-head
    ``q_norm``/``k_norm``, and on "minimax_m3_sparse" layers a lightning indexer
    (``indexer.q_proj`` H → n·d, ``indexer.k_proj`` H → d, per-head norms of d) that picks
    the key blocks each query attends; a dense or sparse MLP by ``mlp_layer_types``
    (configuration_minimax_m3_vl.py ``__post_init__``: layer_types from
    ``sparse_attention_config.sparse_attention_freq``, else all full; mlp_layer_types from
    ``moe_layer_freq``, else all sparse; hidden_act is always "silu", the clamped SwiGLU
    being inline).

    Activations: the block-sparse attention is priced as the dense attention over the whole
    context it selects from (an upper bound: the indexer keeps at most
    ``index_topk_blocks`` blocks per query); the indexer's scores are not counted."""
    hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    hd = c.int("head_dim", default=hidden // heads)
    tie = c.bool("tie_word_embeddings", default=False)
    sparse_cfg = c.data.get("sparse_attention_config")
    freq = sparse_cfg.get("sparse_attention_freq") if isinstance(sparse_cfg, dict) else None
    kinds = _kinds(c, "layer_types", n_layers, {"full_attention", "minimax_m3_sparse"})
    if kinds is None and isinstance(freq, list):
        if len(freq) != n_layers:
            raise ForgeError(f"{c.source}: sparse_attention_config.sparse_attention_freq must list {n_layers} layers; got {freq!r}")
        kinds = ["minimax_m3_sparse" if f else "full_attention" for f in freq]
    kinds = kinds or ["full_attention"] * n_layers
    mlp_kinds = _kinds(c, "mlp_layer_types", n_layers, {"dense", "sparse"})
    moe_freq = c.data.get("moe_layer_freq")
    if mlp_kinds is None and isinstance(moe_freq, list):
        if len(moe_freq) != n_layers:
            raise ForgeError(f"{c.source}: field 'moe_layer_freq'={moe_freq!r} must list {n_layers} layers")
        mlp_kinds = ["sparse" if f else "dense" for f in moe_freq]
    mlp_kinds = mlp_kinds or ["sparse"] * n_layers
    # the checkpoint's sparse_attention_config spellings are set over the flat fields
    legacy = {k: v for k, v in (sparse_cfg or {}).items() if k in ("sparse_num_index_heads", "sparse_index_dim")}
    ci = ConfigReader({**c.data, **legacy}, c.source)
    idx_heads = ci.int("sparse_num_index_heads", "index_n_heads", default=4)
    idx_dim = ci.int("sparse_index_dim", "index_head_dim", default=128)
    norms = 2 * hidden

    def layer(kind: tuple) -> LayerType:
        attn, mlp = kind
        lin = _attn(c, hidden, heads, kv, hd)
        other = 2 * hd + norms  # q_norm, k_norm
        if attn == "minimax_m3_sparse":
            lin += [Linear("self_attn.indexer.q_proj", hidden, idx_heads * idx_dim, False, "other"),
                    Linear("self_attn.indexer.k_proj", hidden, idx_dim, False, "other")]
            other += 2 * idx_dim
        ffn, _ = _m3_ffn(c, hidden, mlp == "sparse")
        return LayerType("decoder", tuple(lin + ffn), other, moe=mlp == "sparse")

    layer_types, layers = _assemble(list(zip(kinds, mlp_kinds)), layer)
    any_sparse = "sparse" in mlp_kinds
    experts = c.int("num_local_experts", "num_experts", default=128) if any_sparse else 0
    top_k = c.int("num_experts_per_tok", default=4, maximum=experts) if any_sparse else 0
    moe_inter = c.int("intermediate_size", default=3072) if any_sparse else 0
    inter = _m3_ffn(c, hidden, False)[1] if "dense" in mlp_kinds else moe_inter
    return _shape(c, name, "minimax_m3_vl_text", hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd, inter=inter,
                  vocab=vocab, tie=tie, layer_types=layer_types, layers=layers,
                  params=_head(c, vocab, hidden, tie, "model.embed_tokens.weight", "model.norm"),
                  experts=experts, top_k=top_k, moe_inter=moe_inter, act=(), hints={"qk_norm": True})


# -- Qwen4-Exp: Gated DeltaNet / indexed attention inside gated hyper-connections ---------
_QWEN4_MOE = Moe(shared="shared_expert", shared_inter=("shared_expert_intermediate_size",), shared_gate=True)


def _gated_residual(p: str, hidden: int, hc: int, rank: int, combine: bool) -> tuple[list[Linear], int]:
    """modeling_qwen4_exp.py ``Qwen4ExpTextGatedResidual``: a grouped RMSNorm ``hc_norm``
    [hc·H], ``input_mix_weight_down`` hc·H → rank, ``input_mix_weight_up`` rank → hc·H and
    (``use_combine``) ``block_inject_weight`` hc·H → hc."""
    lin = [Linear(f"{p}.input_mix_weight_down", hc * hidden, rank, False, "other"),
           Linear(f"{p}.input_mix_weight_up", rank, hc * hidden, False, "other")]
    if combine:
        lin.append(Linear(f"{p}.block_inject_weight", hc * hidden, hc, False, "other"))
    return lin, hc * hidden


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def _ngram_rows(c: ConfigReader, ple_index: int, heads: int) -> int:
    """``Qwen4ExpTextNGramEmbedding``: head ``g`` (global index ple_index·heads + head) holds
    the (g+1)-th prime at or above ``ngram_vocab_size_base`` rows (``_find_nth_prime_after``);
    the table is their sum rounded up to ``make_ngram_vocab_size_divisible_by``."""
    base = c.int("ngram_vocab_size_base", default=20_000_000)
    primes: list[int] = []
    n = base - 1
    while len(primes) < (ple_index + 1) * heads:
        n += 1
        if _is_prime(n):
            primes.append(n)
    total = sum(primes[ple_index * heads:])
    div = c.int("make_ngram_vocab_size_divisible_by", default=128)
    return -(-total // div) * div


def _ple(c: ConfigReader, hidden: int, hc: int, ple_index: int) -> tuple[list[Linear], int]:
    """``Qwen4ExpTextPLELayer``: an n-gram embedding [rows, ple_embed_dim / heads] (heads =
    (ngram_size − 1)·heads_per_ngram), ``key_proj`` E → hc·H, ``value_proj`` E → H, three
    grouped norms [hc·H] and a depthwise dilated ``conv1d`` [hc·H, 1, ple_conv_kernel_size]."""
    embed = c.int("ple_embed_dim", default=hidden)
    heads = (c.int("ngram_size", default=3) - 1) * c.int("heads_per_ngram", default=8)
    if embed % heads:
        raise ForgeError(f"{c.source}: ple_embed_dim={embed} must be divisible by the n-gram heads ({heads})")
    lin = [Linear("ple.key_proj", embed, hc * hidden, False, "other"), Linear("ple.value_proj", embed, hidden, False, "other")]
    other = _ngram_rows(c, ple_index, heads) * (embed // heads) + 3 * hc * hidden + hc * hidden * c.int("ple_conv_kernel_size", default=4)
    return lin, other


def _qwen4_exp(model_type: str) -> Callable[[ConfigReader, str], ModelShape]:
    def build(src: ConfigReader, name: str) -> ModelShape:
        """modeling_qwen4_exp.py ``Qwen4ExpTextDecoderLayer``: Qwen3.5's Gated DeltaNet
        (``linear_attn``) or gated attention (q_proj emits the gate) with per-head norms and
        a QSA indexer (``index_qk_proj`` H → (n + kv)·d, ``q_layernorm``/``k_layernorm``
        [d]); the sparse block with a gated shared expert on every layer; a PLE layer on the
        1-indexed ``ple_layer_ids``; ``attn_hyper_connection`` and ``mlp_hyper_connection``
        in place of the layer norms; the model's ``hyper_connection_mixer`` (no inject) in
        place of the final norm. ``layer_types`` (configuration_qwen4_exp.py): every
        ``full_attention_interval``-th (4) layer "indexed_attention" ("full_attention" means
        the same)."""
        c = src.sub("text_config") if isinstance(src.data.get("text_config"), dict) else src
        hidden, n_layers, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
        heads = c.int("num_attention_heads")
        kv = c.int("num_key_value_heads", default=heads)
        hd = c.int("head_dim", default=256)
        # Qwen4ExpForCausalLM builds from the text config: its own tie_word_embeddings
        # (default False) decides, not the multimodal config's
        tie = c.bool("tie_word_embeddings", default=False)
        hc, rank = c.int("hc_count", default=4), c.int("hc_lowrank", default=320)
        listed = _kinds(c, "layer_types", n_layers, {"linear_attention", "indexed_attention", "full_attention"})
        if listed is None:
            every = c.int("full_attention_interval", default=4)
            listed = ["linear_attention" if (i + 1) % every else "indexed_attention" for i in range(n_layers)]
        kinds = ["linear_attention" if k == "linear_attention" else "indexed_attention" for k in listed]
        ple_ids: list[int] = sorted(set(c.int_list("ple_layer_ids"))) if c.has("ple_layer_ids") else []
        if any(not 1 <= i <= n_layers or kinds[i - 1] != "linear_attention" for i in ple_ids):
            raise ForgeError(f"{c.source}: field 'ple_layer_ids'={ple_ids} must name linear_attention layers in [1, {n_layers}]")
        moe_lin, moe_other, experts, top_k, moe_inter = _moe(c, Spec(moe=_QWEN4_MOE), hidden)
        hcs = [_gated_residual(f"{p}_hyper_connection", hidden, hc, rank, True) for p in ("attn", "mlp")]
        hc_lin = hcs[0][0] + hcs[1][0]
        hc_other = hcs[0][1] + hcs[1][1]

        def layer(kind: tuple) -> LayerType:
            mix, ple_index = kind
            if mix == "linear_attention":
                lin, other, mixer = _gdn(c, hidden, True)
            else:
                idx = [c.int(f) for f in ("indexer_n_heads", "indexer_kv_heads", "indexer_head_dim")]  # QSA: all required
                lin = _attn(c, hidden, heads, kv, hd, bias=c.bool("attention_bias", default=False), q_gate=True)
                lin.append(Linear("self_attn.indexer.index_qk_proj", hidden, (idx[0] + idx[1]) * idx[2], False, "other"))
                other, mixer = 2 * hd + 2 * idx[2], None
            if ple_index is not None:
                ple_lin, ple_other = _ple(c, hidden, hc, ple_index)
                lin, other = lin + ple_lin, other + ple_other
            return LayerType("decoder", tuple(lin + moe_lin + hc_lin), other + moe_other + hc_other, moe=True,
                             attention=mixer is None, mixer=mixer)

        ple_of = {i - 1: n for n, i in enumerate(ple_ids)}
        layer_types, layers = _assemble([(k, ple_of.get(i)) for i, k in enumerate(kinds)], layer)
        mixer_lin, mixer_norm = _gated_residual("", hidden, hc, rank, False)
        params = _head(c, vocab, hidden, tie, "model.embed_tokens.weight", None)
        params.append(Param("model.hyper_connection_mixer", mixer_norm + sum(lin.num_parameters for lin in mixer_lin), "other"))
        # n residual streams: what each hyper-connection keeps (activations.rs
        # hyper_connection_saved, HY-V4's rule: the nearest existing one)
        return _shape(c, name, model_type, hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd, inter=moe_inter,
                      vocab=vocab, tie=tie, layer_types=layer_types, layers=layers, params=params,
                      experts=experts, top_k=top_k, moe_inter=moe_inter,
                      hints={"qk_norm": True, "attn_output_gate": True, "hyper_connection_streams": hc})

    return build


register_architecture("qwen4_exp")(_qwen4_exp("qwen4_exp"))
register_architecture("qwen4_exp_text")(_qwen4_exp("qwen4_exp_text"))
