"""GPT-NeoX and Pythia (``model_type: gpt_neox``). Follows transformers 5's
``models/gpt_neox/modeling_gpt_neox.py``:

* ``GPTNeoXAttention``: ``query_key_value = Linear(H, 3*H, bias=attention_bias)``,
  ``dense = Linear(H, H, bias=attention_bias)`` (``attention_bias`` defaults to true).
* ``GPTNeoXMLP``: ``dense_h_to_4h = Linear(H, intermediate_size)`` and
  ``dense_4h_to_h = Linear(intermediate_size, H)``, always with bias.
* ``GPTNeoXLayer``: ``input_layernorm`` and ``post_attention_layernorm`` (LayerNorm with
  bias) whatever ``use_parallel_residual`` says; with it (the default), attention and MLP
  read the same input.
* ``GPTNeoXModel``: ``embed_in``, ``final_layer_norm``; ``GPTNeoXForCausalLM.lm_head``
  (no bias), untied by default (``tie_word_embeddings: False``).
"""

from __future__ import annotations

from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import layer_norm, python_facts
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture


@register_architecture("gpt_neox")
def build_gpt_neox(c: ConfigReader, name: str) -> ModelShape:
    hidden = c.int("hidden_size")
    n_layers = c.layers("num_hidden_layers")
    heads = c.int("num_attention_heads")
    inter = c.int("intermediate_size")
    vocab = c.int("vocab_size")
    attn_bias = c.bool("attention_bias", default=True)
    tie = c.bool("tie_word_embeddings", default=False)
    linears = (
        Linear("attention.query_key_value", hidden, 3 * hidden, attn_bias, "attention"),
        Linear("attention.dense", hidden, hidden, attn_bias, "attention"),
        Linear("mlp.dense_h_to_4h", hidden, inter, True, "mlp"),
        Linear("mlp.dense_4h_to_h", inter, hidden, True, "mlp"),
    )
    params = [
        Param("gpt_neox.embed_in.weight", vocab * hidden, "embedding"),
        Param("gpt_neox.final_layer_norm", layer_norm(hidden), "norm"),
    ]
    if not tie:
        params.append(Param("lm_head.weight", vocab * hidden, "lm_head"))
    return ModelShape(
        name=name,
        model_type="gpt_neox",
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=max(hidden // heads, 1),
        intermediate_size=inter,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        norm="layer_norm",
        gated_mlp=False,
        parallel_attn=c.bool("use_parallel_residual", default=True),
        layer_types=(LayerType("decoder", linears, other_parameters=2 * layer_norm(hidden)),),
        layers=(0,) * n_layers,
        params=tuple(params),
        **python_facts(c, act_default="gelu"),
    )
