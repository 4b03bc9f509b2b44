"""OPT (``model_type: opt``). Follows transformers 5's ``models/opt/modeling_opt.py``:

* ``OPTAttention``: ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, each
  ``nn.Linear(H, H, bias=enable_bias)``.
* ``OPTDecoderLayer``: ``self_attn_layer_norm`` and ``final_layer_norm``
  (``nn.LayerNorm(H, elementwise_affine=layer_norm_elementwise_affine)``), ``fc1 =
  Linear(H, ffn_dim)``, ``fc2 = Linear(ffn_dim, H)`` (bias ``enable_bias``).
* ``OPTDecoder``: ``embed_tokens [V, word_embed_proj_dim]``; ``embed_positions`` is an
  ``OPTLearnedPositionalEmbedding`` with ``max_position_embeddings + 2`` rows (its
  ``offset = 2``); ``project_in``/``project_out`` (no bias) exist only when
  ``word_embed_proj_dim != hidden_size`` (opt-350m: 512 vs 1024); the decoder's
  ``final_layer_norm`` exists only when ``do_layer_norm_before and not
  _remove_final_layer_norm`` (opt-350m has none).
* ``OPTForCausalLM``: ``lm_head = Linear(word_embed_proj_dim, V, bias=False)``, tied to
  ``embed_tokens`` unless ``tie_word_embeddings`` is false.
"""

from __future__ import annotations

from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import layer_norm, python_facts
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture


@register_architecture("opt")
def build_opt(c: ConfigReader, name: str) -> ModelShape:
    hidden = c.int("hidden_size")
    n_layers = c.layers("num_hidden_layers")
    heads = c.int("num_attention_heads")
    ffn = c.int("ffn_dim")
    vocab = c.int("vocab_size")
    positions = c.int("max_position_embeddings", default=2048)
    proj = c.int("word_embed_proj_dim", default=hidden)
    bias = c.bool("enable_bias", default=True)
    affine = c.bool("layer_norm_elementwise_affine", default=True)
    final_ln = c.bool("do_layer_norm_before", default=True) and not c.bool("_remove_final_layer_norm", default=False)
    tie = c.bool("tie_word_embeddings", default=True)

    linears = (
        Linear("self_attn.k_proj", hidden, hidden, bias, "attention"),
        Linear("self_attn.v_proj", hidden, hidden, bias, "attention"),
        Linear("self_attn.q_proj", hidden, hidden, bias, "attention"),
        Linear("self_attn.out_proj", hidden, hidden, bias, "attention"),
        Linear("fc1", hidden, ffn, bias, "mlp"),
        Linear("fc2", ffn, hidden, bias, "mlp"),
    )
    norms = 2 * layer_norm(hidden, affine)  # self_attn_layer_norm, final_layer_norm
    params = [
        Param("model.decoder.embed_tokens.weight", vocab * proj, "embedding"),
        Param("model.decoder.embed_positions.weight", (positions + 2) * hidden, "position"),
    ]
    if proj != hidden:
        params += [
            Param("model.decoder.project_out.weight", hidden * proj, "other"),
            Param("model.decoder.project_in.weight", proj * hidden, "other"),
        ]
    if final_ln and affine:
        params.append(Param("model.decoder.final_layer_norm", layer_norm(hidden, affine), "norm"))
    if not tie:
        params.append(Param("lm_head.weight", proj * vocab, "lm_head"))
    return ModelShape(
        name=name,
        model_type="opt",
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=max(hidden // heads, 1),
        intermediate_size=ffn,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        norm="layer_norm",
        gated_mlp=False,
        layer_types=(LayerType("decoder", linears, other_parameters=norms),),
        layers=(0,) * n_layers,
        params=tuple(params),
        **python_facts(c, act=("activation_function",), act_default="relu", positions=positions),
    )
