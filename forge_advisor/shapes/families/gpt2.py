"""GPT-2 (``model_type: gpt2``): learned absolute positions, LayerNorm, fused q/k/v in a
``Conv1D``. Follows transformers 5's ``models/gpt2/modeling_gpt2.py``:

* ``GPT2Attention``: ``c_attn = Conv1D(3*H, H)`` and ``c_proj = Conv1D(H, H)``, both with
  bias; with ``add_cross_attention`` a second ``GPT2Attention(is_cross_attention=True)``
  named ``crossattention`` holds ``c_attn = Conv1D(2*H, H)``, ``q_attn = Conv1D(H, H)`` and
  ``c_proj``, plus ``ln_cross_attn``.
* ``GPT2MLP``: ``c_fc = Conv1D(inner, H)``, ``c_proj = Conv1D(H, inner)``, with
  ``inner = n_inner or 4*H`` (``GPT2Block.__init__``).
* ``GPT2Block``: ``ln_1`` and ``ln_2`` (``nn.LayerNorm``: weight and bias).
* ``GPT2Model``: ``wte [V, H]``, ``wpe [n_positions, H]``, ``ln_f``; ``GPT2LMHeadModel``
  adds ``lm_head`` (no bias), tied to ``wte`` unless ``tie_word_embeddings`` is false.

``Conv1D`` stores its weight as ``[in, out]`` but holds ``in*out + out`` parameters like
``nn.Linear``; peft wraps it by name (``fan_in_fan_out``), so the names are LoRA targets.
Config field names are GPT-2's own (``n_embd``, ``n_layer``, ``n_head``, ``n_positions``;
``configuration_gpt2.py`` maps ``hidden_size`` etc. onto them, accepted here too).
"""

from __future__ import annotations

from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import python_facts
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture


@register_architecture("gpt2", "gpt-sw3")  # GPT-SW3 is GPT2LMHeadModel (modeling_auto.py)
def build_gpt2(c: ConfigReader, name: str) -> ModelShape:
    hidden = c.int("n_embd", "hidden_size")
    n_layers = c.layers("n_layer", "num_hidden_layers")
    heads = c.int("n_head", "num_attention_heads")
    inner = c.int("n_inner", default=4 * hidden)
    vocab = c.int("vocab_size")
    positions = c.int("n_positions", "max_position_embeddings", default=1024)
    tie = c.bool("tie_word_embeddings", default=True)
    cross = c.bool("add_cross_attention", default=False)

    linears = [
        Linear("attn.c_attn", hidden, 3 * hidden, True, "attention"),
        Linear("attn.c_proj", hidden, hidden, True, "attention"),
    ]
    norms = 2 * (2 * hidden)  # ln_1, ln_2
    if cross:
        linears += [
            Linear("crossattention.c_attn", hidden, 2 * hidden, True, "attention"),
            Linear("crossattention.q_attn", hidden, hidden, True, "attention"),
            Linear("crossattention.c_proj", hidden, hidden, True, "attention"),
        ]
        norms += 2 * hidden  # ln_cross_attn
    linears += [
        Linear("mlp.c_fc", hidden, inner, True, "mlp"),
        Linear("mlp.c_proj", inner, hidden, True, "mlp"),
    ]
    params = [
        Param("transformer.wte.weight", vocab * hidden, "embedding"),
        Param("transformer.wpe.weight", positions * hidden, "position"),
        Param("transformer.ln_f", 2 * hidden, "norm"),
    ]
    if not tie:
        params.append(Param("lm_head.weight", vocab * hidden, "lm_head"))
    return ModelShape(
        name=name,
        model_type=c.str("model_type", default="gpt2"),
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=max(hidden // heads, 1),
        intermediate_size=inner,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        norm="layer_norm",
        gated_mlp=False,
        layer_types=(LayerType("decoder", tuple(linears), other_parameters=norms, cross_attention=cross),),
        layers=(0,) * n_layers,
        params=tuple(params),
        **python_facts(c, act=("activation_function",), act_default="gelu_new", positions=positions),
    )
