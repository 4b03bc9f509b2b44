"""Causal LMs with a layout of their own, one builder each (transformers 5 modeling files):

* GPT-NeoX-Japanese (modeling_gpt_neox_japanese.py): fused ``attention.query_key_value``
  (H→3H) and ``attention.dense`` without biases; the last layer alone holds a separate
  ``attention.dense_bias [H]`` (``use_bias=layer_number == num_hidden_layers - 1``); MLP
  ``dense_h_to_4h``/``dense_4h_to_h`` of width ``int(H · intermediate_multiple_size)``;
  LayerNorm(bias) pre-norms; ``embed_out`` tied to ``embed_in`` by default.
* CTRL (modeling_ctrl.py): ``multi_head_attention.{Wq,Wk,Wv,dense}`` (H→H, biased),
  ``ffn`` an ``nn.Sequential(Linear(H, dff), ReLU, Linear(dff, H))`` (peft names ``0``/``2``),
  ``layernorm1``/``layernorm2``, sinusoidal positions (a buffer), a final ``layernorm``,
  ``lm_head`` (bias=True) whose weight ties to ``transformer.w``.
* ModernBERT decoder (modeling_modernbert_decoder.py): ``attn.{q,k,v}_proj`` + ``attn.Wo``
  (bias ``attention_bias``), fused ``mlp.Wi`` (H→2I) + ``mlp.Wo`` (bias ``mlp_bias``),
  LayerNorm (bias ``norm_bias``) ``mlp_norm`` everywhere and ``attn_norm`` except in layer 0
  (``nn.Identity()``), ``embeddings.norm``, ``final_norm``, head ``lm_head.dense`` (bias
  ``classifier_bias``) + ``lm_head.norm``, ``decoder`` tied with bias ``decoder_bias``.
"""

from __future__ import annotations

from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import layer_norm, python_facts
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture


@register_architecture("gpt_neox_japanese")
def build_gpt_neox_japanese(c: ConfigReader, name: str) -> ModelShape:
    h, n, heads, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("num_attention_heads"), c.int("vocab_size")
    inter = int(h * c.int("intermediate_multiple_size", default=4))
    linears = (
        Linear("attention.query_key_value", h, 3 * h, False, "attention"),
        Linear("attention.dense", h, h, False, "attention"),
        Linear("mlp.dense_h_to_4h", h, inter, False, "mlp"),
        Linear("mlp.dense_4h_to_h", inter, h, False, "mlp"),
    )
    norms = 2 * layer_norm(h)
    # the last layer's attention.dense_bias [H] makes it a type of its own
    types = (LayerType("decoder", linears, other_parameters=norms), LayerType("decoder", linears, other_parameters=norms + h))
    tie = c.bool("tie_word_embeddings", default=True)
    params = [Param("gpt_neox_japanese.embed_in.weight", vocab * h, "embedding"), Param("gpt_neox_japanese.final_layer_norm", layer_norm(h), "norm")]
    if not tie:
        params.append(Param("embed_out.weight", vocab * h, "lm_head"))
    return ModelShape(
        name=name, model_type="gpt_neox_japanese", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
        num_key_value_heads=heads, head_dim=max(h // heads, 1), intermediate_size=inter, vocab_size=vocab,
        tie_word_embeddings=tie, norm="layer_norm", gated_mlp=False, layer_types=types if n > 1 else types[1:],
        layers=tuple(0 for _ in range(n - 1)) + (1 if n > 1 else 0,), params=tuple(params),
        **python_facts(c, act_default="gelu"),
    )


@register_architecture("ctrl")
def build_ctrl(c: ConfigReader, name: str) -> ModelShape:
    h, n, heads, vocab = c.int("n_embd"), c.layers("n_layer"), c.int("n_head"), c.int("vocab_size")
    dff = c.int("dff")
    linears = (
        Linear("multi_head_attention.Wq", h, h, True, "attention"),
        Linear("multi_head_attention.Wk", h, h, True, "attention"),
        Linear("multi_head_attention.Wv", h, h, True, "attention"),
        Linear("multi_head_attention.dense", h, h, True, "attention"),
        Linear("ffn.0", h, dff, True, "mlp"),
        Linear("ffn.2", dff, h, True, "mlp"),
    )
    tie = c.bool("tie_word_embeddings", default=True)
    params = [Param("transformer.w.weight", vocab * h, "embedding"), Param("transformer.layernorm", layer_norm(h), "norm"), Param("lm_head.bias", vocab, "lm_head")]
    if not tie:
        params.append(Param("lm_head.weight", vocab * h, "lm_head"))
    return ModelShape(
        name=name, model_type="ctrl", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
        num_key_value_heads=heads, head_dim=max(h // heads, 1), intermediate_size=dff, vocab_size=vocab,
        tie_word_embeddings=tie, norm="layer_norm", gated_mlp=False,
        layer_types=(LayerType("decoder", linears, other_parameters=2 * layer_norm(h)),), layers=(0,) * n, params=tuple(params),
        # modeling_ctrl.py point_wise_feed_forward_network: nn.ReLU
        **python_facts(c, act=(), act_default="relu", positions=c.int("n_positions", default=0, minimum=0) or None),
    )


@register_architecture("modernbert-decoder")
def build_modernbert_decoder(c: ConfigReader, name: str) -> ModelShape:
    h, n, heads, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("num_attention_heads"), c.int("vocab_size")
    inter = c.int("intermediate_size")
    attn_bias, mlp_bias = c.bool("attention_bias", default=False), c.bool("mlp_bias", default=False)
    ln = layer_norm(h, bias=c.bool("norm_bias", default=False))
    linears = (
        Linear("attn.q_proj", h, h, attn_bias, "attention"),
        Linear("attn.k_proj", h, h, attn_bias, "attention"),
        Linear("attn.v_proj", h, h, attn_bias, "attention"),
        Linear("attn.Wo", h, h, attn_bias, "attention"),
        Linear("mlp.Wi", h, 2 * inter, mlp_bias, "mlp"),
        Linear("mlp.Wo", inter, h, mlp_bias, "mlp"),
    )
    # layer 0's attn_norm is nn.Identity(): a type of its own
    types = (LayerType("decoder", linears, other_parameters=ln), LayerType("decoder", linears, other_parameters=2 * ln))
    tie = c.bool("tie_word_embeddings", default=True)
    cls_bias = c.bool("classifier_bias", default=False)
    params = [
        Param("model.embeddings.tok_embeddings.weight", vocab * h, "embedding"),
        Param("model.embeddings.norm", ln, "norm"),
        Param("model.final_norm", ln, "norm"),
        Param("lm_head", h * h + (h if cls_bias else 0) + ln, "other"),
    ]
    if c.bool("decoder_bias", default=True):
        params.append(Param("decoder.bias", vocab, "lm_head"))
    if not tie:
        params.append(Param("decoder.weight", vocab * h, "lm_head"))
    return ModelShape(
        name=name, model_type="modernbert-decoder", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
        num_key_value_heads=heads, head_dim=max(h // heads, 1), intermediate_size=inter, vocab_size=vocab,
        tie_word_embeddings=tie, norm="layer_norm", gated_mlp=True, layer_types=types if n > 1 else types[:1],
        layers=(0,) + (1,) * (n - 1), params=tuple(params),
        **python_facts(c, act=("hidden_activation", "hidden_act"), act_default="gelu"),
    )


@register_architecture("jetmoe")
def build_jetmoe(c: ConfigReader, name: str) -> ModelShape:
    """JetMoE (modeling_jetmoe.py): a mixture of attention heads and a mixture of MLPs. Both
    hold `JetMoeParallelExperts` weights `[E, out, in]` (parameters named `.weight`, which
    peft reaches through `target_parameters`), a `[H]` output bias and a router whose
    `layer` is an nn.Linear(H, E); attention adds `kv_proj` (H → 2 · kv_channels · kv heads).
    configuration_jetmoe.py: num_attention_heads = num_key_value_heads · num_experts_per_tok."""
    h, n, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    kv, d = c.int("num_key_value_heads"), c.int("kv_channels")
    experts = c.int("num_local_experts")
    top_k = c.int("num_experts_per_tok", maximum=experts)
    inter = c.int("intermediate_size")
    a = kv * d  # each attention expert's width
    linears = (
        Linear("self_attention.kv_proj", h, 2 * a, False, "attention"),
        Linear("self_attention.experts.router.layer", h, experts, False, "router"),
        Linear("self_attention.experts.input_linear.weight", h, a, False, "expert", count=experts, lora_targetable=False),
        Linear("self_attention.experts.output_linear.weight", a, h, False, "expert", count=experts, lora_targetable=False),
        Linear("mlp.router.layer", h, experts, False, "router"),
        Linear("mlp.input_linear.weight", h, 2 * inter, False, "expert", count=experts, lora_targetable=False),
        Linear("mlp.output_linear.weight", inter, h, False, "expert", count=experts, lora_targetable=False),
    )
    tie = c.bool("tie_word_embeddings", default=True)
    params = [Param("model.embed_tokens.weight", vocab * h, "embedding"), Param("model.norm.weight", h, "norm")]
    if not tie:
        params.append(Param("lm_head.weight", vocab * h, "lm_head"))
    # two RMSNorms and the two [H] expert output biases per layer
    layer = LayerType("decoder", linears, other_parameters=2 * h + 2 * h, moe=True)
    return ModelShape(
        name=name, model_type="jetmoe", hidden_size=h, num_hidden_layers=n, num_attention_heads=kv * top_k,
        num_key_value_heads=kv, head_dim=d, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tie,
        norm="rms_norm", gated_mlp=True, layer_types=(layer,), layers=(0,) * n, params=tuple(params),
        num_experts=experts, num_experts_per_tok=top_k, moe_intermediate_size=inter,
        **python_facts(c, act=("activation_function", "hidden_act")),
    )
