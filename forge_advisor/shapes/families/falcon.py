"""Falcon (``model_type: falcon``). Follows transformers 5's
``models/falcon/modeling_falcon.py`` and ``configuration_falcon.py``:

* ``FalconAttention``: ``query_key_value = FalconLinear(H, qkv_out, bias=config.bias)``
  with ``qkv_out = (2*num_kv_heads + heads) * head_dim`` under
  ``new_decoder_architecture`` (Falcon-40B/180B), ``H + 2*head_dim`` under
  ``multi_query`` (Falcon-7B), else ``3*H``; ``dense = FalconLinear(H, H)``.
  ``head_dim = H // heads``. ``FalconLinear`` subclasses ``nn.Linear``.
* ``FalconMLP``: ``dense_h_to_4h = FalconLinear(H, ffn_hidden_size)``, ``dense_4h_to_h``
  back; ``ffn_hidden_size`` defaults to ``4*H`` (``FalconConfig.__post_init__``).
* ``FalconDecoderLayer``: without ``parallel_attn``, ``input_layernorm`` and
  ``post_attention_layernorm``; with it, ``ln_attn`` and ``ln_mlp`` when
  ``num_ln_in_parallel_attn == 2`` (the default under ``new_decoder_architecture``), else
  ``input_layernorm`` alone. All ``LayerNorm`` with weight and bias.
* ``FalconModel``: ``word_embeddings``, ``ln_f``; ``FalconForCausalLM.lm_head`` (no bias)
  tied unless ``tie_word_embeddings`` is false. ALiBi adds no parameters.
"""

from __future__ import annotations

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import layer_norm, python_facts
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture


@register_architecture("falcon")
def build_falcon(c: ConfigReader, name: str) -> ModelShape:
    hidden = c.int("hidden_size", "n_embed")
    n_layers = c.layers("num_hidden_layers")
    heads = c.int("num_attention_heads")
    kv_heads = c.int("num_kv_heads", default=heads)
    new_arch = c.bool("new_decoder_architecture", default=False)
    multi_query = c.bool("multi_query", default=True)
    parallel = c.bool("parallel_attn", default=True)
    bias = c.bool("bias", default=False)
    ffn = c.int("ffn_hidden_size", default=4 * hidden)
    vocab = c.int("vocab_size")
    tie = c.bool("tie_word_embeddings", default=True)
    n_ln = c.int("num_ln_in_parallel_attn", default=2 if new_arch else 1, minimum=0)
    if hidden % heads:
        # FalconAttention.__init__ raises the same
        raise ForgeError(f"{c.source}: hidden_size={hidden} must be divisible by num_attention_heads={heads}")
    head_dim = hidden // heads

    if new_arch:
        qkv_out, kv = (2 * kv_heads + heads) * head_dim, kv_heads
    elif multi_query:
        qkv_out, kv = hidden + 2 * head_dim, 1
    else:
        qkv_out, kv = 3 * hidden, heads
    linears = (
        Linear("self_attention.query_key_value", hidden, qkv_out, bias, "attention"),
        Linear("self_attention.dense", hidden, hidden, bias, "attention"),
        Linear("mlp.dense_h_to_4h", hidden, ffn, bias, "mlp"),
        Linear("mlp.dense_4h_to_h", ffn, hidden, bias, "mlp"),
    )
    n_norms = 2 if (not parallel or n_ln == 2) else 1
    params = [
        Param("transformer.word_embeddings.weight", vocab * hidden, "embedding"),
        Param("transformer.ln_f", layer_norm(hidden), "norm"),
    ]
    if not tie:
        params.append(Param("lm_head.weight", vocab * hidden, "lm_head"))
    return ModelShape(
        name=name,
        model_type="falcon",
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        intermediate_size=ffn,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        norm="layer_norm",
        gated_mlp=False,
        parallel_attn=parallel,
        layer_types=(LayerType("decoder", linears, other_parameters=n_norms * layer_norm(hidden)),),
        layers=(0,) * n_layers,
        params=tuple(params),
        **python_facts(c, act=("activation",), act_default="gelu"),
    )
