"""More hybrid decoders, beside shapes/families/hybrid.py's: MiniMax-01, Lara-mini.

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

from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.decoder import Moe, Spec, _moe
from forge_advisor.shapes.families.hybrid import _assemble, _attn, _gdn, _head, _kinds, _shape
from forge_advisor.shapes.model import LayerType, Linear, Mixer, ModelShape
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
        Linear("mlp.experts.gate_up_proj", hidden, 2 * inter, False, "expert", count=experts, lora_targetable=False),
        Linear("mlp.experts.down_proj", inter, hidden, False, "expert", count=experts, lora_targetable=False),
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
