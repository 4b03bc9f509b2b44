"""Phi-1/1.5/2 (``model_type: phi``). Follows transformers 5's ``models/phi/modeling_phi.py``:

* ``PhiAttention``: ``q_proj = Linear(H, heads*head_dim)``, ``k_proj``/``v_proj =
  Linear(H, kv*head_dim)``, ``dense = Linear(heads*head_dim, H)``, all with bias;
  ``head_dim = getattr(config, "head_dim", H // heads)``. With ``qk_layernorm``,
  ``q_layernorm``/``k_layernorm = LayerNorm(H // heads)``.
* ``PhiMLP``: ``fc1 = Linear(H, intermediate_size)``, ``fc2`` back, with bias.
* ``PhiDecoderLayer``: one ``input_layernorm`` (LayerNorm with bias) feeding both
  attention and MLP (parallel residual).
* ``PhiModel``: ``embed_tokens``, ``final_layernorm``; ``PhiForCausalLM.lm_head =
  Linear(H, V, bias=True)``: its bias is a parameter even when the weight is tied.
"""

from __future__ import annotations

from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import layer_norm, python_facts
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture


@register_architecture("phi")
def build_phi(c: ConfigReader, name: str) -> ModelShape:
    hidden = c.int("hidden_size")
    n_layers = c.layers("num_hidden_layers")
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads)
    head_dim = c.int("head_dim", default=max(hidden // heads, 1))
    inter = c.int("intermediate_size")
    vocab = c.int("vocab_size")
    tie = c.bool("tie_word_embeddings", default=False)
    qk_norm = c.bool("qk_layernorm", default=False)
    q, k = heads * head_dim, kv * head_dim
    linears = (
        Linear("self_attn.q_proj", hidden, q, True, "attention"),
        Linear("self_attn.k_proj", hidden, k, True, "attention"),
        Linear("self_attn.v_proj", hidden, k, True, "attention"),
        Linear("self_attn.dense", q, hidden, True, "attention"),
        Linear("mlp.fc1", hidden, inter, True, "mlp"),
        Linear("mlp.fc2", inter, hidden, True, "mlp"),
    )
    other = layer_norm(hidden) + (2 * layer_norm(max(hidden // heads, 1)) if qk_norm else 0)
    params = [
        Param("model.embed_tokens.weight", vocab * hidden, "embedding"),
        Param("model.final_layernorm", layer_norm(hidden), "norm"),
        Param("lm_head.bias", vocab, "lm_head"),
    ]
    if not tie:
        params.append(Param("lm_head.weight", vocab * hidden, "lm_head"))
    return ModelShape(
        name=name,
        model_type="phi",
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        norm="layer_norm",
        gated_mlp=False,
        parallel_attn=True,
        layer_types=(LayerType("decoder", linears, other_parameters=other),),
        layers=(0,) * n_layers,
        params=tuple(params),
        **python_facts(c, act_default="gelu_new"),
    )
