"""Llama-style decoders: RMSNorm, rotary attention with GQA, gated (SwiGLU/GeGLU) MLP,
optionally mixture-of-experts. Module names and shapes follow transformers 5's
``modeling_<type>.py`` for each registered type (checked against meta-device
instantiation in tests/test_shapes_meta.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import fused_experts, python_facts
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture


@dataclass(frozen=True)
class Variant:
    """How one llama-like family differs from Llama itself."""

    qkv_bias: bool | None = None  # None: read `attention_bias`
    o_bias: bool | None = None  # None: read `attention_bias`
    mlp_bias: bool | None = None  # None: read `mlp_bias`
    attention_bias_default: bool = False  # seed_oss: configuration_seed_oss.py attention_bias=True
    o_bias_field: str | None = None  # seed_oss: o_proj bias from `attention_out_bias` (default false)
    norms_per_layer: int = 2  # gemma2/3: 4 (pre/post attention and feed-forward)
    qk_norm: bool = False  # per-head RMSNorm on q and k (qwen3, gemma3)
    fused: bool = False  # phi3: qkv_proj and gate_up_proj
    tie_default: bool = False
    moe: str | None = None  # "mixtral" | "qwen2_moe" | "qwen3_moe"


# Checked against meta-device instantiation of tiny configs in tests/test_shapes_meta.py
# (with and without attention_bias / mlp_bias / tie_word_embeddings): most transformers 5
# MLPs are built with bias=False whatever `mlp_bias` says (e.g. modeling_mistral.py
# MistralMLP), only Llama's own reads it.
_NO_MLP_BIAS = {"mlp_bias": False}
VARIANTS: dict[str, Variant] = {
    "llama": Variant(),
    "mistral": Variant(qkv_bias=False, o_bias=False, **_NO_MLP_BIAS),
    "qwen2": Variant(qkv_bias=True, o_bias=False, **_NO_MLP_BIAS),
    "qwen3": Variant(qk_norm=True, **_NO_MLP_BIAS),
    "gemma": Variant(qkv_bias=None, o_bias=None, tie_default=True, **_NO_MLP_BIAS),
    "gemma2": Variant(norms_per_layer=4, tie_default=True, **_NO_MLP_BIAS),
    "gemma3_text": Variant(norms_per_layer=4, qk_norm=True, tie_default=True, **_NO_MLP_BIAS),
    "phi3": Variant(qkv_bias=False, o_bias=False, fused=True, **_NO_MLP_BIAS),
    "mixtral": Variant(qkv_bias=False, o_bias=False, moe="mixtral", **_NO_MLP_BIAS),
    "qwen2_moe": Variant(qkv_bias=True, o_bias=False, moe="qwen2_moe", **_NO_MLP_BIAS),
    "qwen3_moe": Variant(qk_norm=True, moe="qwen3_moe", **_NO_MLP_BIAS),
    # Found by sweeping transformers' causal-LM model types (tests/test_shapes_meta.py,
    # test_swept_model_type): modeling files that follow Llama's module layout exactly.
    "granite": Variant(),  # modeling_granite.py: Llama + scalar multipliers (no parameters)
    "internlm3": Variant(),
    "iquestcoder": Variant(),
    "smollm3": Variant(tie_default=True),  # configuration_smollm3.py: tie_word_embeddings=True
    "ministral": Variant(qkv_bias=False, o_bias=False, **_NO_MLP_BIAS),
    "ministral3": Variant(qkv_bias=False, o_bias=False, **_NO_MLP_BIAS),
    "cwm": Variant(qkv_bias=False, o_bias=False),
    # modeling_seed_oss.py: q/k/v bias from attention_bias (default true), o_proj from
    # attention_out_bias (default false)
    "seed_oss": Variant(attention_bias_default=True, o_bias_field="attention_out_bias"),
    "hunyuan_v1_dense": Variant(qk_norm=True, **_NO_MLP_BIAS),
    "hyperclovax": Variant(norms_per_layer=4),
}


def _attention(c: ConfigReader, v: Variant, hidden: int, heads: int, kv: int, head_dim: int) -> list[Linear]:
    attn_bias = c.bool("attention_bias", default=v.attention_bias_default)
    qkv_bias = attn_bias if v.qkv_bias is None else v.qkv_bias
    o_bias = attn_bias if v.o_bias is None else v.o_bias
    if v.o_bias_field:
        o_bias = c.bool(v.o_bias_field, default=False)
    q, k = heads * head_dim, kv * head_dim
    if v.fused:
        return [
            Linear("self_attn.qkv_proj", hidden, q + 2 * k, qkv_bias, "attention"),
            Linear("self_attn.o_proj", q, hidden, o_bias, "attention"),
        ]
    return [
        Linear("self_attn.q_proj", hidden, q, qkv_bias, "attention"),
        Linear("self_attn.k_proj", hidden, k, qkv_bias, "attention"),
        Linear("self_attn.v_proj", hidden, k, qkv_bias, "attention"),
        Linear("self_attn.o_proj", q, hidden, o_bias, "attention"),
    ]


def _dense_mlp(c: ConfigReader, v: Variant, hidden: int, inter: int, prefix: str = "mlp", role: str = "mlp") -> list[Linear]:
    bias = c.bool("mlp_bias", default=False) if v.mlp_bias is None else v.mlp_bias
    if v.fused:
        return [
            Linear(f"{prefix}.gate_up_proj", hidden, 2 * inter, bias, role),  # type: ignore[arg-type]
            Linear(f"{prefix}.down_proj", inter, hidden, bias, role),  # type: ignore[arg-type]
        ]
    return [
        Linear(f"{prefix}.gate_proj", hidden, inter, bias, role),  # type: ignore[arg-type]
        Linear(f"{prefix}.up_proj", hidden, inter, bias, role),  # type: ignore[arg-type]
        Linear(f"{prefix}.down_proj", inter, hidden, bias, role),  # type: ignore[arg-type]
    ]


def _moe_mlp(c: ConfigReader, v: Variant, hidden: int) -> tuple[list[Linear], int, int, int]:
    """The sparse block: router, fused expert tensors (transformers 5 stores experts as
    ``experts.gate_up_proj [E, 2I, H]`` and ``experts.down_proj [E, H, I]``), shared expert."""
    if v.moe == "mixtral":
        experts = c.int("num_local_experts")
        inter = c.int("intermediate_size")
    else:
        experts = c.int("num_experts", "num_local_experts")
        inter = c.int("moe_intermediate_size")
    top_k = c.int("num_experts_per_tok", minimum=1, maximum=experts)
    linears = [
        # the router is a `<Type>TopKRouter` holding `weight [E, H]` as an nn.Parameter, not
        # an nn.Linear (modeling_mixtral.py, MixtralTopKRouter), so peft cannot wrap it
        Linear("mlp.gate", hidden, experts, False, "router", lora_targetable=False),
        *fused_experts("mlp.experts", hidden, inter, experts),
    ]
    if v.moe == "qwen2_moe":
        shared = c.int("shared_expert_intermediate_size")
        linears += _dense_mlp(c, v, hidden, shared, prefix="mlp.shared_expert", role="shared_expert")
        linears.append(Linear("mlp.shared_expert_gate", hidden, 1, False, "router"))
    return linears, experts, top_k, inter


def _is_sparse_layer(c: ConfigReader, v: Variant, idx: int) -> bool:
    if v.moe is None:
        return False
    if v.moe == "mixtral":
        return True
    # Qwen2-MoE / Qwen3-MoE: modeling_qwen2_moe.py, Qwen2MoeDecoderLayer.__init__
    mlp_only = set(c.int_list("mlp_only_layers"))
    step = c.int("decoder_sparse_step", default=1)
    experts = c.int("num_experts", "num_local_experts", default=0, minimum=0)  # transformers 5 renames the field
    return idx not in mlp_only and experts > 0 and (idx + 1) % step == 0


def build_llama_like(c: ConfigReader, name: str) -> ModelShape:
    model_type = c.str("model_type")
    v = VARIANTS[model_type]
    hidden = c.int("hidden_size")
    n_layers = c.layers("num_hidden_layers")
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    head_dim = c.int("head_dim", default=max(hidden // heads, 1))
    inter = c.int("intermediate_size")
    vocab = c.int("vocab_size")
    tie = c.bool("tie_word_embeddings", default=v.tie_default)

    attention = _attention(c, v, hidden, heads, kv, head_dim)
    norms = v.norms_per_layer * hidden + (2 * head_dim if v.qk_norm else 0)
    dense = LayerType("decoder", tuple(attention + _dense_mlp(c, v, hidden, inter)), other_parameters=norms)
    layer_types = [dense]
    experts = top_k = moe_inter = 0
    sparse_flags = [_is_sparse_layer(c, v, i) for i in range(n_layers)]
    if any(sparse_flags):
        moe_linears, experts, top_k, moe_inter = _moe_mlp(c, v, hidden)
        layer_types.append(LayerType("decoder", tuple(attention + moe_linears), other_parameters=norms, moe=True))
    layers = tuple(1 if s else 0 for s in sparse_flags)
    if not any(i == 0 for i in layers):
        # every layer is sparse: drop the unused dense type so inventories list what exists
        layer_types = layer_types[1:]
        layers = tuple(0 for _ in layers)

    params = [Param("model.embed_tokens.weight", vocab * hidden, "embedding"), Param("model.norm.weight", hidden, "norm")]
    if not tie:
        params.append(Param("lm_head.weight", vocab * hidden, "lm_head"))

    return ModelShape(
        name=name,
        model_type=model_type,
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        norm="rms_norm",
        gated_mlp=True,
        layer_types=tuple(layer_types),
        layers=layers,
        params=tuple(params),
        num_experts=experts,
        num_experts_per_tok=top_k,
        moe_intermediate_size=moe_inter,
        # Gemma's modeling reads `hidden_activation` (gemma-7b's config.json has both fields)
        **python_facts(c, act=("hidden_activation", "hidden_act") if model_type.startswith("gemma") else ("hidden_act",)),
    )


register_architecture(*VARIANTS)(build_llama_like)
