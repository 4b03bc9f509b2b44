"""T5 / Flan-T5 / mT5 / mT0 (``model_type: t5``, ``mt5``): encoder-decoder. Follows
transformers 5's ``models/t5/modeling_t5.py`` (``modeling_mt5.py`` is the same code):

* ``T5Attention``: ``q``, ``k``, ``v = Linear(d_model, heads*d_kv, bias=False)``, ``o =
  Linear(heads*d_kv, d_model, bias=False)``; the first block of each stack
  (``has_relative_attention_bias=bool(i == 0)`` in ``T5Stack.__init__``) also holds
  ``relative_attention_bias = Embedding(relative_attention_num_buckets, heads)``.
* ``T5Block``: ``layer[0]`` is ``T5LayerSelfAttention`` (``SelfAttention`` +
  ``layer_norm``), in the decoder ``layer[1]`` is ``T5LayerCrossAttention``
  (``EncDecAttention`` + ``layer_norm``), and the last is ``T5LayerFF``: ``DenseReluDense``
  with ``wi = Linear(d_model, d_ff)`` or, for ``feed_forward_proj = "gated-*"``, ``wi_0``
  and ``wi_1``; ``wo = Linear(d_ff, d_model)``; plus ``layer_norm``. ``T5LayerNorm`` is an
  RMS norm with a weight only.
* ``T5ForConditionalGeneration``: ``shared [V, d_model]`` (both stacks' ``embed_tokens``
  are tied to it), ``encoder.final_layer_norm``, ``decoder.final_layer_norm`` and
  ``lm_head``. transformers 5's ``T5Config.__post_init__`` / ``MT5Config.__post_init__``
  force ``tie_word_embeddings = True`` (an untied ``false`` in the config only switches
  off output scaling), so ``lm_head`` is always tied to ``shared``: Flan-T5 and mT0
  checkpoints store a separate head that the instantiated model does not have.

Module names are relative to a block (``layer.0.SelfAttention.q``), as peft sees them
under ``encoder.block.N`` / ``decoder.block.N``.
"""

from __future__ import annotations

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import python_facts
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture

# configuration_t5.py / configuration_mt5.py defaults for fields that config.json files omit
_DEFAULT_FF = {"t5": "relu", "mt5": "gated-gelu"}


def _attention(prefix: str, d_model: int, inner: int) -> list[Linear]:
    return [
        Linear(f"{prefix}.q", d_model, inner, False, "attention"),
        Linear(f"{prefix}.k", d_model, inner, False, "attention"),
        Linear(f"{prefix}.v", d_model, inner, False, "attention"),
        Linear(f"{prefix}.o", inner, d_model, False, "attention"),
    ]


@register_architecture("t5", "mt5")
def build_t5(c: ConfigReader, name: str) -> ModelShape:
    model_type = c.str("model_type")
    d_model = c.int("d_model", "hidden_size")
    d_kv = c.int("d_kv", "head_dim")
    d_ff = c.int("d_ff")
    heads = c.int("num_heads", "num_attention_heads")
    n_enc = c.layers("num_layers", "num_hidden_layers")
    n_dec = c.layers("num_decoder_layers", default=n_enc)
    vocab = c.int("vocab_size")
    buckets = c.int("relative_attention_num_buckets", default=32)
    ff = c.str("feed_forward_proj", default=_DEFAULT_FF[model_type])
    act = ff.split("-")
    # T5Config.validate_architecture: "gated-{ACT}" or "{ACT}"
    if (len(act) > 1 and act[0] != "gated") or len(act) > 2 or not act[-1]:
        raise ForgeError(f"{c.source}: field 'feed_forward_proj'={ff!r} must be 'gated-ACT' or 'ACT'")
    gated = act[0] == "gated"
    hidden_act = "gelu_new" if ff == "gated-gelu" else act[-1]  # T5Config.__post_init__
    inner = heads * d_kv

    def ff_layer(idx: int) -> list[Linear]:
        p = f"layer.{idx}.DenseReluDense"
        wi = (
            [Linear(f"{p}.wi_0", d_model, d_ff, False, "mlp"), Linear(f"{p}.wi_1", d_model, d_ff, False, "mlp")]
            if gated
            else [Linear(f"{p}.wi", d_model, d_ff, False, "mlp")]
        )
        return [*wi, Linear(f"{p}.wo", d_ff, d_model, False, "mlp")]

    enc_linears = tuple(_attention("layer.0.SelfAttention", d_model, inner) + ff_layer(1))
    dec_linears = tuple(
        _attention("layer.0.SelfAttention", d_model, inner)
        + _attention("layer.1.EncDecAttention", d_model, inner)
        + ff_layer(2)
    )
    rel_bias = buckets * heads
    layer_types = (
        LayerType("encoder", enc_linears, other_parameters=2 * d_model + rel_bias),
        LayerType("encoder", enc_linears, other_parameters=2 * d_model),
        LayerType("decoder", dec_linears, other_parameters=3 * d_model + rel_bias, cross_attention=True),
        LayerType("decoder", dec_linears, other_parameters=3 * d_model, cross_attention=True),
    )
    layers = (0,) + (1,) * (n_enc - 1) + (2,) + (3,) * (n_dec - 1)
    params = (
        Param("shared.weight", vocab * d_model, "embedding"),
        Param("encoder.final_layer_norm.weight", d_model, "norm"),
        Param("decoder.final_layer_norm.weight", d_model, "norm"),
    )
    return ModelShape(
        name=name,
        model_type=model_type,
        hidden_size=d_model,
        num_hidden_layers=n_dec,
        num_encoder_layers=n_enc,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=d_kv,
        intermediate_size=d_ff,
        vocab_size=vocab,
        tie_word_embeddings=True,
        norm="rms_norm",
        gated_mlp=gated,
        is_encoder_decoder=True,
        layer_types=layer_types,
        layers=layers,
        params=params,
        # relative position buckets: no position table, so no hard length limit (n_positions is
        # only the pre-training length; transformers' T5 runs longer sequences)
        **{**python_facts(c, act=(), act_default=hidden_act), "max_position_embeddings": None},
    )
