"""Decoders from before Llama's layout, one builder each, transcribed from transformers 5:

* ``bloom`` (modeling_bloom.py): biased fused ``self_attention.query_key_value (H→3H)`` and
  ``dense``, ``mlp.dense_h_to_4h (H→4H)`` / ``dense_4h_to_h``, LayerNorms with bias,
  ``word_embeddings_layernorm``, ``ln_f``; ALiBi (no position table); tied head.
* ``gpt_neo`` (modeling_gpt_neo.py): ``attn.attention.{q,k,v}_proj`` unbiased,
  ``out_proj`` biased, ``mlp.c_fc`` / ``c_proj`` (``intermediate_size`` or 4H, biased),
  ``ln_1``/``ln_2``, learned ``wpe``; tied head.
* ``gptj`` / ``codegen`` (modeling_gptj.py, modeling_codegen.py): unbiased ``q/k/v/out_proj``
  (CodeGen fuses ``qkv_proj``), biased ``mlp.fc_in``/``fc_out`` (``n_inner`` or 4H), one
  ``ln_1`` (parallel attention and MLP), ``ln_f``; untied ``lm_head`` with a bias.
* ``gpt_bigcode`` (modeling_gpt_bigcode.py): biased ``attn.c_attn (H→H+2·kv_dim)`` where
  ``kv_dim`` is one head with ``multi_query`` else H, ``c_proj``, ``mlp.c_fc``/``c_proj``
  (``n_inner`` or 4H), ``ln_1``/``ln_2``, learned ``wpe``; tied head. ``nn.Linear`` modules.
* ``mpt`` (modeling_mpt.py): unbiased ``attn.Wqkv (H→3H)``, ``out_proj``, ``ffn.up_proj
  (H→4H, whatever ``expansion_ratio`` says)`` / ``down_proj``; LayerNorms whose bias is removed (``norm_1.bias =
  None``), ``norm_f``; ALiBi; tied head.
* ``openai-gpt`` (modeling_openai.py): ``Conv1D`` ``attn.c_attn (H→3H)``, ``c_proj``,
  ``mlp.c_fc (H→4H)``, ``c_proj``, post-norm ``ln_1``/``ln_2``, no final norm,
  ``tokens_embed`` and ``positions_embed``; tied head.
"""

from __future__ import annotations

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import layer_norm, python_facts
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture


def _shape(c: ConfigReader, name: str, *, hidden: int, heads: int, kv: int, inter: int, n_layers: int, vocab: int,
           linears: list[Linear], layer_other: int, params: list[Param], tie: bool, parallel: bool = False,
           act: tuple[str, ...] = ("activation_function",), act_default: str = "gelu_new",
           positions: int | None = None) -> ModelShape:
    return ModelShape(
        name=name,
        model_type=c.str("model_type"),
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=max(hidden // heads, 1),
        intermediate_size=inter,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        norm="layer_norm",
        gated_mlp=False,
        parallel_attn=parallel,
        layer_types=(LayerType("decoder", tuple(linears), other_parameters=layer_other),),
        layers=(0,) * n_layers,
        params=tuple(params),
        **python_facts(c, act=act, act_default=act_default, positions=positions),
    )


def _head(params: list[Param], c: ConfigReader, vocab: int, hidden: int, *, default_tie: bool, bias: bool = False) -> bool:
    tie = c.bool("tie_word_embeddings", default=default_tie)
    if not tie:
        params.append(Param("lm_head.weight", vocab * hidden, "lm_head"))
    if bias:
        params.append(Param("lm_head.bias", vocab, "lm_head"))
    return tie


@register_architecture("bloom")
def build_bloom(c: ConfigReader, name: str) -> ModelShape:
    h = c.int("hidden_size", "n_embed")
    heads = c.int("n_head", "num_attention_heads")
    n = c.layers("n_layer", "num_hidden_layers")
    vocab = c.int("vocab_size")
    linears = [
        Linear("self_attention.query_key_value", h, 3 * h, True, "attention"),
        Linear("self_attention.dense", h, h, True, "attention"),
        Linear("mlp.dense_h_to_4h", h, 4 * h, True, "mlp"),
        Linear("mlp.dense_4h_to_h", 4 * h, h, True, "mlp"),
    ]
    params = [
        Param("transformer.word_embeddings.weight", vocab * h, "embedding"),
        Param("transformer.word_embeddings_layernorm", layer_norm(h), "norm"),
        Param("transformer.ln_f", layer_norm(h), "norm"),
    ]
    tie = _head(params, c, vocab, h, default_tie=True)
    return _shape(c, name, hidden=h, heads=heads, kv=heads, inter=4 * h, n_layers=n, vocab=vocab, linears=linears,
                  layer_other=2 * layer_norm(h), params=params, tie=tie, act=(), act_default="gelu_pytorch_tanh")


@register_architecture("gpt_neo")
def build_gpt_neo(c: ConfigReader, name: str) -> ModelShape:
    h = c.int("hidden_size")
    heads = c.int("num_heads")
    n = c.layers("num_layers")
    vocab = c.int("vocab_size")
    inter = c.int("intermediate_size", default=4 * h)
    linears = [
        Linear("attn.attention.q_proj", h, h, False, "attention"),
        Linear("attn.attention.k_proj", h, h, False, "attention"),
        Linear("attn.attention.v_proj", h, h, False, "attention"),
        Linear("attn.attention.out_proj", h, h, True, "attention"),
        Linear("mlp.c_fc", h, inter, True, "mlp"),
        Linear("mlp.c_proj", inter, h, True, "mlp"),
    ]
    positions = c.int("max_position_embeddings", default=2048)
    params = [
        Param("transformer.wte.weight", vocab * h, "embedding"),
        Param("transformer.wpe.weight", positions * h, "position"),
        Param("transformer.ln_f", layer_norm(h), "norm"),
    ]
    tie = _head(params, c, vocab, h, default_tie=True)
    return _shape(c, name, hidden=h, heads=heads, kv=heads, inter=inter, n_layers=n, vocab=vocab, linears=linears,
                  layer_other=2 * layer_norm(h), params=params, tie=tie)


@register_architecture("gptj", "codegen")
def build_gptj(c: ConfigReader, name: str) -> ModelShape:
    h = c.int("n_embd", "hidden_size")
    heads = c.int("n_head", "num_attention_heads")
    n = c.layers("n_layer", "num_hidden_layers")
    vocab = c.int("vocab_size")
    inter = c.int("n_inner", default=4 * h)
    if c.str("model_type") == "codegen":
        attn = [Linear("attn.qkv_proj", h, 3 * h, False, "attention")]
    else:
        attn = [Linear(f"attn.{p}_proj", h, h, False, "attention") for p in ("q", "k", "v")]
    linears = [
        *attn,
        Linear("attn.out_proj", h, h, False, "attention"),
        Linear("mlp.fc_in", h, inter, True, "mlp"),
        Linear("mlp.fc_out", inter, h, True, "mlp"),
    ]
    params = [Param("transformer.wte.weight", vocab * h, "embedding"), Param("transformer.ln_f", layer_norm(h), "norm")]
    tie = _head(params, c, vocab, h, default_tie=False, bias=True)  # lm_head = nn.Linear(H, V) with bias
    return _shape(c, name, hidden=h, heads=heads, kv=heads, inter=inter, n_layers=n, vocab=vocab, linears=linears,
                  layer_other=layer_norm(h), params=params, tie=tie, parallel=True,
                  positions=c.int("n_positions", default=0, minimum=0) or None)


@register_architecture("gpt_bigcode")
def build_gpt_bigcode(c: ConfigReader, name: str) -> ModelShape:
    h = c.int("n_embd", "hidden_size")
    heads = c.int("n_head", "num_attention_heads")
    n = c.layers("n_layer", "num_hidden_layers")
    vocab = c.int("vocab_size")
    if c.bool("add_cross_attention", default=False):
        raise ForgeError(f"{c.source}: gpt_bigcode with add_cross_attention is not modelled without torch")
    inter = c.int("n_inner", default=4 * h)
    multi_query = c.bool("multi_query", default=True)
    kv_dim = h // heads if multi_query else h
    linears = [
        Linear("attn.c_attn", h, h + 2 * kv_dim, True, "attention"),
        Linear("attn.c_proj", h, h, True, "attention"),
        Linear("mlp.c_fc", h, inter, True, "mlp"),
        Linear("mlp.c_proj", inter, h, True, "mlp"),
    ]
    positions = c.int("n_positions", "max_position_embeddings", default=1024)
    params = [
        Param("transformer.wte.weight", vocab * h, "embedding"),
        Param("transformer.wpe.weight", positions * h, "position"),
        Param("transformer.ln_f", layer_norm(h), "norm"),
    ]
    tie = _head(params, c, vocab, h, default_tie=True)
    return _shape(c, name, hidden=h, heads=heads, kv=1 if multi_query else heads, inter=inter, n_layers=n, vocab=vocab,
                  linears=linears, layer_other=2 * layer_norm(h), params=params, tie=tie, positions=positions)


@register_architecture("mpt")
def build_mpt(c: ConfigReader, name: str) -> ModelShape:
    h = c.int("d_model", "hidden_size")
    heads = c.int("n_heads", "num_attention_heads")
    n = c.layers("n_layers", "num_hidden_layers")
    vocab = c.int("vocab_size")
    inter = 4 * h  # MptMLP: Linear(hidden_size, 4 * hidden_size); transformers ignores expansion_ratio
    linears = [
        Linear("attn.Wqkv", h, 3 * h, False, "attention"),
        Linear("attn.out_proj", h, h, False, "attention"),
        Linear("ffn.up_proj", h, inter, False, "mlp"),
        Linear("ffn.down_proj", inter, h, False, "mlp"),
    ]
    params = [Param("transformer.wte.weight", vocab * h, "embedding"), Param("transformer.norm_f.weight", h, "norm")]
    tie = _head(params, c, vocab, h, default_tie=True)
    # norm_1 / norm_2 keep their weight; `self.norm_1.bias = None` removes the bias
    return _shape(c, name, hidden=h, heads=heads, kv=heads, inter=inter, n_layers=n, vocab=vocab, linears=linears,
                  layer_other=2 * h, params=params, tie=tie, act=(), act_default="gelu")


@register_architecture("openai-gpt")
def build_openai_gpt(c: ConfigReader, name: str) -> ModelShape:
    h = c.int("n_embd", "hidden_size")
    heads = c.int("n_head", "num_attention_heads")
    n = c.layers("n_layer", "num_hidden_layers")
    vocab = c.int("vocab_size")
    positions = c.int("n_positions", "max_position_embeddings", default=512)
    linears = [
        Linear("attn.c_attn", h, 3 * h, True, "attention"),
        Linear("attn.c_proj", h, h, True, "attention"),
        Linear("mlp.c_fc", h, 4 * h, True, "mlp"),
        Linear("mlp.c_proj", 4 * h, h, True, "mlp"),
    ]
    params = [
        Param("transformer.tokens_embed.weight", vocab * h, "embedding"),
        Param("transformer.positions_embed.weight", positions * h, "position"),
    ]
    tie = _head(params, c, vocab, h, default_tie=True)
    return _shape(c, name, hidden=h, heads=heads, kv=heads, inter=4 * h, n_layers=n, vocab=vocab, linears=linears,
                  layer_other=2 * layer_norm(h), params=params, tie=tie, act=("afn",), act_default="gelu", positions=positions)
