"""HRM text (``hrm_text``): hierarchical reasoning, two recurrent transformer stacks.

Transcribes transformers 5's modeling_hrm_text.py. ``HrmTextModel`` holds ``L_module`` and
``H_module`` (``HrmTextStack``: ``num_layers_per_stack`` ``HrmTextDecoderLayer``s and a
weightless ``final_norm``), ``embed_tokens`` and ``z_L_init`` [H]; ``HrmTextForCausalLM``
adds ``lm_head`` (tied by ``tie_word_embeddings``, default false). A layer: MHA
(``q/k/v_proj`` H → heads·hd, every head its own k and v) with a sigmoid output gate
``gate_proj`` H → heads·hd and ``o_proj``, biases by ``attention_bias``; a gated MLP biased
by ``mlp_bias``; both norms are weightless RMSNorms (no parameters).

Depth: configuration_hrm_text.py ``__post_init__`` keeps the per-stack depth in
``num_layers_per_stack`` and rewrites ``num_hidden_layers`` to the cache slots
``per_stack · H_cycles · (L_cycles + 1)``; a config without ``num_layers_per_stack`` holds the
per-stack depth in ``num_hidden_layers``. The shape lists both stacks' layers (L first).

Passes (``LayerType.passes``, priced by rust/src/estimator.rs): per step the model runs the
L stack ``H_cycles · L_cycles`` times and the H stack ``H_cycles`` times
(``HrmTextModel.forward``); of the L runs in high cycle h only the last
``L_bp_cycles_padded[h]`` record autograd (earlier ones under ``torch.no_grad()``), with
``L_bp_cycles`` left-padded by 1s to ``H_cycles`` entries (default ``[2]`` → ``[1, 2]``).
So each L layer keeps ``Σ_h min(pad[h], L_cycles)`` sets of saved tensors (default 3) and
each H layer ``H_cycles`` (default 2). Each of those stack runs ends with a weightless final
norm that keeps its fp32 input (rust/src/recurrent.rs, ``stack_norm_runs``: all but the
last, which is the model's final norm). Not priced: under full fine-tuning our RMSNorm rule
counts the input of a norm weight's gradient that HRM's weightless norms do not have (a
small overestimate). Speed counts each layer's FLOPs once (the no-grad and repeated runs are not in the
roofline), so tokens/s is over-stated.
"""

from __future__ import annotations

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.hybrid import _gated, _head, _shape
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture

__all__: list[str] = []


def grad_passes(c: ConfigReader) -> tuple[int, int]:
    """(L-stack runs with autograd, H-stack runs) per step (modeling_hrm_text.py
    ``HrmTextModel.__init__``/``forward``)."""
    h_cycles, l_cycles = c.int("H_cycles", default=2), c.int("L_cycles", default=3)
    raw = c.data.get("L_bp_cycles")
    if raw is None:
        raw = [2]  # configuration_hrm_text.py __post_init__
    if not isinstance(raw, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in raw):
        raise ForgeError(f"{c.source}: field 'L_bp_cycles'={raw!r} must be a list of non-negative integers")
    padded = [1] * max(0, h_cycles - len(raw)) + list(raw)
    return sum(min(padded[h], l_cycles) for h in range(h_cycles)), h_cycles


@register_architecture("hrm_text")
def _hrm(c: ConfigReader, name: str) -> ModelShape:
    hidden, vocab = c.int("hidden_size"), c.int("vocab_size")
    heads = c.int("num_attention_heads")
    hd = c.int("head_dim", default=hidden // heads)
    per_stack = c.layers("num_layers_per_stack", "num_hidden_layers")
    tie = c.bool("tie_word_embeddings", default=False)
    inter = c.int("intermediate_size")
    abias, mbias = c.bool("attention_bias", default=False), c.bool("mlp_bias", default=False)
    width = heads * hd
    lin = (
        Linear("self_attn.q_proj", hidden, width, abias, "attention"),
        Linear("self_attn.k_proj", hidden, width, abias, "attention"),
        Linear("self_attn.v_proj", hidden, width, abias, "attention"),
        Linear("self_attn.o_proj", width, hidden, abias, "attention"),
        # the output gate reads the layer input (role "other", as AFMoE's gate)
        Linear("self_attn.gate_proj", hidden, width, abias, "other"),
        *_gated("mlp", ("gate_proj", "up_proj", "down_proj"), hidden, inter, mbias),
    )
    l_passes, h_passes = grad_passes(c)
    # two layer types of the same tensors, told apart by their passes; weightless norms
    layer_types = (LayerType("decoder", lin, 0, passes=l_passes), LayerType("decoder", lin, 0, passes=h_passes))
    params = _head(c, vocab, hidden, tie, "model.embed_tokens.weight", None)
    params.append(Param("model.z_L_init", hidden, "other"))  # an nn.Parameter (requires_grad=False)
    return _shape(c, name, "hrm_text", hidden=hidden, n_layers=2 * per_stack, heads=heads, kv=heads, hd=hd, inter=inter,
                  vocab=vocab, tie=tie, layer_types=layer_types, layers=(0,) * per_stack + (1,) * per_stack, params=params,
                  hints={"attn_gate_width": width, "stack_norm_runs": l_passes + h_passes - 1})
