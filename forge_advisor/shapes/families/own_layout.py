"""Causal LMs whose module layout is their own, one builder each (transformers 5 modeling
files; every builder is checked by the architecture sweep, benches/arch_sweep.py):

* DBRX (modeling_dbrx.py): ``transformer.wte``, ``transformer.blocks[i]`` of
  ``norm_attn_norm.{norm_1, attn, norm_2}`` (LayerNorm without bias) and ``ffn``;
  attention ``attn.Wqkv`` (H → H + 2·kv·hd) and ``attn.out_proj`` (H → H), no biases;
  ``ffn.router.layer`` nn.Linear(H, E) and the experts ``ffn.experts.mlp.{w1, v1, w2}``,
  each one 2-D parameter ``[E · ffn_hidden_size, H]`` (DbrxExpertGLU: the E experts'
  matrices stacked along rows, a GLU ``act(x·w1ᵀ) ⊙ (x·v1ᵀ)`` then ``·w2``);
  ``transformer.norm_f``, ``lm_head`` (untied by default).
* XLM (modeling_xlm.py XLMModel): no block modules; layer i is the i-th entry of four flat
  ModuleLists ``attentions`` (``q_lin/k_lin/v_lin/out_lin`` H → H, biased), ``layer_norm1``,
  ``ffns`` (``lin1`` H → 4H, ``lin2`` 4H → H, biased; gelu, or relu when
  ``gelu_activation`` is false) and ``layer_norm2`` (post-norms). The layer's linears are
  named ``<list>.<module>`` (``attentions.q_lin``: peft sees ``transformer.attentions.0.q_lin``,
  whose leaf is what ``target_modules`` match). Outside the layers: ``position_embeddings``
  [max_position_embeddings, H] (a parameter even when sinusoidal), ``lang_embeddings``
  [n_langs, H] when ``n_langs > 1 and use_lang_emb``, ``embeddings`` [vocab, H],
  ``layer_norm_emb``, and ``pred_layer.proj`` (bias [vocab]; its weight tied to the
  embeddings). The bidirectional (``causal: false``) attention has the decoder's shapes.
* CPM-Ant (modeling_cpmant.py): ``cpmant.encoder.layers[i]`` of
  ``self_att.{layernorm_before_attention, self_attention.{project_q, project_k, project_v,
  attention_out}}`` (H ↔ heads·dim_head, no biases) and ``ffn.{layernorm_before_ffn,
  ffn.{w_in.w_0, w_in.w_1, w_out}}`` (a GELU-gated MLP of ``dim_ff``); CpmAntLayerNorm is a
  weight-only RMS norm. Outside: ``segment_embedding`` [segment_types, H],
  ``input_embedding`` [vocab + prompt_types · prompt_length, H], ``position_bias.
  relative_attention_bias`` [segment_types² + position_bias_num_buckets, heads],
  ``encoder.output_layernorm`` and an untied ``lm_head`` (``_tied_weights_keys = {}``).
  Activation memory: the ``prompt_length`` prompt tokens CpmAntModel prepends to every
  sequence are not added; the segment/position bias ([heads, S, S] once per forward) is
  priced like any additive attention mask (approximations).
* ProphetNet's causal LM (modeling_prophetnet.py ProphetNetForCausalLM →
  ProphetNetDecoderWrapper): ``prophetnet.decoder.layers[i]`` of ``self_attn`` (n-gram
  self-attention: ``query/key/value/out_proj`` H → H biased, ``relative_pos_embeddings``
  H → num_buckets · heads biased), ``cross_attn`` (``ProphetNetAttention``, when
  ``add_cross_attention``: unused by the causal LM but holding parameters), ``feed_forward.
  {intermediate, output}`` (biased, ``activation_function``), and a torch LayerNorm after
  each block. Outside: ``word_embeddings`` (the wrapper's; the decoder's and ``lm_head``
  tie to it), learned ``position_embeddings`` [max_position_embeddings, H],
  ``ngram_embeddings`` [ngram, H], ``embeddings_layer_norm``. Activation memory is priced
  by the single-stream decoder rule: the n-gram self-attention also carries ``ngram``
  predicting streams beside the main one, so the real activations of the attention and
  FFN are up to (1 + ngram)× the priced ones (an underestimate, stated here and in the
  README's sweep notes).
* Doge (modeling_doge.py, ``is_moe: false``): the Llama layout (built by
  :func:`decoder.build_decoder`) with per-head RMSNorm q/k norms, learned residual weights
  ``input_residual`` and ``post_attention_residual`` [H] per layer, and the dynamic mask's
  ``self_attn.A`` [kv] and ``self_attn.dt_proj`` (kv·hd → kv, bias ``attention_bias``).
  ``prepare_dynamic_mask`` expands ``exp(A · softplus(dt_proj(v)))`` to a float mask
  [B, heads, S, S] that needs a gradient, so SDPA runs its efficient kernel and keeps the
  mask: a quadratic term. No rule prices exactly that mask; the nearest one, eager
  attention's (``eager_only``: fp32 softmax + half copy per head and context token,
  activations.rs ``qkv_saved``), is used: an overestimate of the quadratic term by about
  (4 + e) / e (3× in bf16). Doge's CDMoE (``is_moe: true``: retrieval experts held as
  ``nn.Embedding`` rows) is refused.
* ZAYA (modeling_zaya.py): every layer is attention + a sparse MoE. Attention
  ``self_attn.qkv_proj`` (ZayaCCAProjection: ``q_proj`` H → heads·hd, ``k_proj`` H → kv·hd,
  ``v_proj_current`` / ``v_proj_delayed`` H → kv·hd/2, bias ``attention_bias``; over the
  C = (heads + kv)·hd q/k channels a depthwise ``conv_qk_depthwise`` [C, 1, cca_time0] and a
  grouped ``conv_qk_grouped`` [C, hd, cca_time1] (groups = heads + kv), both biased),
  ``self_attn.qk_norm.temp`` [kv], ``self_attn.o_proj``; the MoE ``mlp.gate`` (ZayaRouter:
  ``down_proj`` H → R biased, ``router_states_scale`` [R] outside layer 0, ``router_mlp.
  {norm [R], fc1, fc2 (R → R biased), out_proj (R → E + 1, the skip expert)}``) and fused
  ``mlp.experts.{gate_up_proj [E, 2I, H], down_proj [E, H, I]}``; two RMSNorms and two
  ZayaResidualScaling (4 vectors [H] each). Outside: ``embed_tokens``, ``norm``,
  ``input_hidden_states_{scale,bias}`` [H], ``lm_head`` (tied by default, bias
  ``lm_head_bias``). Activation memory uses the attention + MoE decoder rule: the CCA
  convolutions' saved inputs (≈ 2·C per token) and the router MLP's R-wide activations are
  not priced (a small underestimate, R = router_hidden_size ≪ H·E).
* RecurrentGemma (modeling_recurrent_gemma.py, Griffin): layers follow ``block_types``
  cycled over the depth (``layers_block_type``: "recurrent" → RG-LRU, "attention" → local
  attention). Each layer: ``temporal_pre_norm``, the temporal block, ``channel_pre_norm``,
  ``mlp_block.{gate_proj, up_proj, down_proj}`` (biased, width ``intermediate_size // 2``).
  Recurrent block: ``linear_y`` / ``linear_x`` (H → L, L = ``lru_width``), ``linear_out``
  (L → H), all biased; a depthwise ``conv_1d`` [L, 1, conv1d_width] with bias; the RG-LRU's
  ``recurrent_param`` [L] and block-diagonal gates ``input_gate_weight`` /
  ``recurrent_gate_weight`` [heads, L/heads, L/heads] (counted as ``heads`` linears of
  L/heads, not peft-targetable) with biases [heads, L/heads]. Attention: ``q/k/v_proj``
  (bias ``attention_bias``), ``o_proj`` biased. Outside: ``embed_tokens``, ``final_norm``,
  ``lm_head`` (tied by default); the logits are soft-capped (``logits_soft_cap``). The
  RG-LRU's activations are priced by the Mamba-1 mixer rule with one state per channel
  (d_state = 1: the diagonal recurrence keeps one fp32 state per channel; dt_rank = 1, the
  least the rule admits, for the gate inputs);
  no rule of its own exists (activations.rs), so its gate intermediates are approximate.
* RWKV (v4, modeling_rwkv.py): ``rwkv.blocks[i]`` of ``ln1``, ``attention`` (time mixing:
  ``key/value/receptance`` H → A and ``output`` A → H without biases, A =
  ``attention_hidden_size`` or H; ``time_decay`` / ``time_first`` [A]; ``time_mix_key /
  value / receptance`` [1, 1, H]), ``ln2``, ``feed_forward`` (channel mixing: ``key`` H → I,
  ``receptance`` H → H, ``value`` I → H, no biases, I = ``intermediate_size`` or 4H;
  ``time_mix_key / receptance`` [1, 1, H]); layer 0 adds ``pre_ln``. Outside:
  ``embeddings``, ``ln_out``, ``head`` (untied by default). The CUDA WKV kernel is compiled
  for ``context_length`` tokens and refuses longer batches: that is the length limit. The
  WKV recurrence is priced by the Mamba-1 mixer rule with one state per channel
  (d_state = 1, dt_rank = 1) over A channels; the kernel's own saved tensors (k, v, w, u and
  its output) are not modelled one by one (approximation).
* A.X K2 (modeling_axk2.py): DeepSeek-V3 MLA without ``q_b_proj``: ``q_a_proj`` (H → Q,
  bias ``attention_bias``), ``q_a_layernorm`` [Q], a fused ``q_gate_proj`` (2Q →
  heads·(nope + rope + v), no bias: query and the output gate, ``attn_output ·
  sigmoid(gate.float())``), ``kv_a_proj_with_mqa`` (H → kv_lora + rope), ``kv_a_layernorm``,
  ``kv_b_proj`` (kv_lora → heads·(nope + v)), ``o_proj`` (heads·v → H); a DSA indexer
  (``wq_b`` Q → index_heads·index_hd, ``wk`` H → index_hd, LayerNorm ``k_norm``,
  ``weights_proj`` H → index_heads) in every layer. ``input_layernorm`` is an
  AXK2GatedRMSNorm (``norm`` [H] and ``mlp.fc1`` H → r, ``mlp.fc2`` r → H, r =
  ``gated_norm_rank``), and so is ``post_attention_layernorm`` in the "sparse" layers of
  ``mlp_layer_types`` (a plain RMSNorm in the dense ones). Sparse MLP: an fp32 router
  ``gate.weight`` [E, H] (a parameter, not an nn.Linear), fused experts, and
  ``shared_experts`` of ``moe_intermediate_size · n_shared_experts``. Activation memory:
  the MLA + indexer + gated-output rules of DeepSeek-V3.2 / gated attention
  (``dsa_indexer_heads``, ``attn_gate_width``); the gated norms' r-wide and H-wide sigmoid
  intermediates are not priced (approximation).
* LongCat-Flash (modeling_longcat_flash.py): ``num_layers`` blocks (``num_hidden_layers``
  is 2 × that), each with two MLA attentions ``self_attn.{0,1}`` (DeepSeek-V3 MLA:
  ``q_a_proj``, ``q_a_layernorm``, ``q_b_proj`` Q → heads·qk_head_dim, ``kv_a_proj_with_mqa``,
  ``kv_a_layernorm``, ``kv_b_proj``, ``o_proj``; bias ``attention_bias`` on q_a / kv_a / o),
  two dense MLPs ``mlps.{0,1}`` (``ffn_hidden_size``), ``input_layernorm.{0,1}`` and
  ``post_attention_layernorm.{0,1}``, and one shortcut MoE ``mlp``: ``router.classifier``
  (H → E + Z, Z = ``zero_expert_num`` identity experts; bias ``router_bias``) and experts
  ``gate_up_proj`` [E + Z, 2I, H], ``down_proj`` [E, H, I] (as transformers allocates them).
  Activation memory: the layer rule prices one attention core and its norms per block; the
  second attention's core (SDPA's q/k/v/output, the MLA latents) and the second pair of
  norms are not priced, so activation memory is underestimated by about one attention
  core per block (stated approximation); the linears' saved inputs are all counted.
* xLSTM (modeling_xlstm.py, the mLSTM blocks of xLSTM-7B without the external ``xlstm``
  package): ``backbone.blocks[i]`` (``num_blocks``) of ``norm_mlstm``, ``mlstm_layer``,
  ``norm_ffn``, ``ffn``; norms carry a bias when ``use_bias``. With ``weight_mode``
  "single": ``q``/``k`` (H → int(H · qk_dim_factor)), ``v``/``ogate_preact`` (H → int(H ·
  v_dim_factor)), bias ``use_bias``; ``igate_preact``/``fgate_preact`` (H → heads, biased);
  "fused": ``qkv_opreact`` (H → 2qk + 2v) and ``ifgate_preact`` (H → 2·heads, biased).
  ``multihead_norm`` [v] (+ bias), ``out_proj`` v → H. FFN: ``proj_up_gate``/``proj_up``
  (or fused ``proj_up_gate_z``) H → U, ``proj_down`` U → H, U = H · ffn_proj_factor rounded
  up to ``ffn_round_up_to_multiple_of``. Outside: ``backbone.embeddings``
  [vocab, embedding_dim], ``backbone.out_norm`` (built even when ``add_out_norm`` is
  false, weight only), untied ``lm_head``.
  The mLSTM is a chunkwise linear attention with a matrix memory per head: it is priced by
  the nearest rule, the chunked Gated DeltaNet mixer (``heads`` value heads of v/heads,
  key heads of qk/heads, ``chunk_size``; the q, k, v it keeps stand in for GDN's
  convolution output); the exponential gating's own stabiliser states are not modelled.
* DeepSeek-V4 (modeling_deepseek_v4.py): shared-KV attention ``self_attn.{q_a_proj (H → Q),
  q_a_norm [Q], q_b_proj (Q → heads·hd), kv_proj (H → hd), kv_norm [hd], o_a_proj (a
  DeepseekV4GroupedLinear: nn.Linear(heads·hd/g, g·o_lora_rank)), o_b_proj (g·o_lora_rank →
  H), sinks [heads]}``; by ``layer_types`` a compressor: "heavily_compressed_attention"
  (``kv_proj``/``gate_proj`` H → hd, ``position_bias`` [rate, hd], ``kv_norm`` [hd]) or
  "compressed_sparse_attention" (the same at 2·hd plus an ``indexer`` with its own
  compressor at index_hd, ``q_b_proj`` Q → index_heads·index_hd and ``scorer.weights_proj``
  H → index_heads); the sparse MoE (router ``gate.weight`` [E, H], hashed or top-k, fused
  experts and one ``shared_experts`` MLP, all of ``moe_intermediate_size``); two RMSNorms and
  two hyper-connections ``attn_hc``/``ffn_hc`` (``fn`` [(2 + n)·n, n·H], ``base`` [(2 + n)·n],
  ``scale`` [3], n = ``hc_mult``). Outside: ``embed_tokens``, ``norm``, ``hc_head``
  (``hc_fn`` [n, n·H], ``hc_base`` [n], ``hc_scale`` [1]), ``lm_head``. Activation memory: the
  hyper-connection, sink (eager) and DSA-indexer rules; the compressors' pooled KV and the
  attention over compressed entries are priced as full attention (approximation).
"""

from __future__ import annotations

from forge_advisor.errors import ForgeError
from dataclasses import replace

from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families import decoder
from forge_advisor.shapes.families.common import fused_experts, layer_norm, python_facts
from forge_advisor.shapes.model import LayerType, Linear, Mixer, ModelShape, Param
from forge_advisor.shapes.registry import UnsupportedArchitecture, register_architecture


@register_architecture("dbrx")
def build_dbrx(c: ConfigReader, name: str) -> ModelShape:
    h, n, heads, vocab = c.int("d_model", "hidden_size"), c.layers("n_layers"), c.int("n_heads"), c.int("vocab_size")
    attn, ffn = c.sub("attn_config"), c.sub("ffn_config")
    kv = attn.int("kv_n_heads", default=1, maximum=heads)
    hd = h // heads  # DbrxAttention: head_dim = d_model // n_heads
    experts, inter = ffn.int("moe_num_experts"), ffn.int("ffn_hidden_size")
    top_k = ffn.int("moe_top_k", maximum=experts)
    act = ffn.data.get("ffn_act_fn") or {}
    linears = (
        Linear("norm_attn_norm.attn.Wqkv", h, h + 2 * kv * hd, False, "attention"),
        Linear("norm_attn_norm.attn.out_proj", h, h, False, "attention"),
        Linear("ffn.router.layer", h, experts, False, "router"),
        # w1 / v1 / w2 are [E · ffn, H] each: E matrices of H × ffn, not nn.Linear modules
        Linear("ffn.experts.mlp.w1", h, inter, False, "expert", count=experts, lora_targetable=False),
        Linear("ffn.experts.mlp.v1", h, inter, False, "expert", count=experts, lora_targetable=False),
        Linear("ffn.experts.mlp.w2", inter, h, False, "expert", count=experts, lora_targetable=False),
    )
    ln = layer_norm(h, bias=False)  # nn.LayerNorm(d_model, bias=False)
    # configuration_dbrx.py validate_architecture: "tie_word_embeddings is not supported"
    tie = False
    params = [Param("transformer.wte.weight", vocab * h, "embedding"), Param("transformer.norm_f.weight", ln, "norm"),
              Param("lm_head.weight", vocab * h, "lm_head")]
    facts = python_facts(c, act=(), positions=c.int("max_seq_len", default=0, minimum=0) or None)
    facts["hidden_act"] = act.get("name", "silu") if isinstance(act, dict) else "silu"
    return ModelShape(
        name=name, model_type="dbrx", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=kv,
        head_dim=hd, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tie, norm="layer_norm", gated_mlp=True,
        layer_types=(LayerType("decoder", linears, other_parameters=2 * ln, moe=True),), layers=(0,) * n, params=tuple(params),
        num_experts=experts, num_experts_per_tok=top_k, moe_intermediate_size=inter, **facts,
    )


@register_architecture("xlm")
def build_xlm(c: ConfigReader, name: str) -> ModelShape:
    h, n, heads, vocab = c.int("emb_dim", "hidden_size"), c.layers("n_layers"), c.int("n_heads"), c.int("vocab_size", "n_words")
    if c.bool("asm", default=False):  # XLMPredLayer: nn.AdaptiveLogSoftmaxWithLoss head
        raise ForgeError(f"{c.source}: XLM with asm: true (adaptive softmax head) is not parsed; set asm: false")
    inter = 4 * h  # XLMModel: hidden_dim = dim * 4
    linears = tuple(Linear(f"attentions.{x}", h, h, True, "attention") for x in ("q_lin", "k_lin", "v_lin", "out_lin")) + (
        Linear("ffns.lin1", h, inter, True, "mlp"), Linear("ffns.lin2", inter, h, True, "mlp"))
    positions = c.int("max_position_embeddings", default=512)
    params = [Param("transformer.position_embeddings.weight", positions * h, "position"),
              Param("transformer.embeddings.weight", vocab * h, "embedding"),
              Param("transformer.layer_norm_emb", layer_norm(h), "norm"), Param("pred_layer.proj.bias", vocab, "lm_head")]
    langs = c.int("n_langs", default=1)
    if langs > 1 and c.bool("use_lang_emb", default=True):
        params.append(Param("transformer.lang_embeddings.weight", langs * h, "embedding"))
    tie = c.bool("tie_word_embeddings", default=True)
    if not tie:
        params.append(Param("pred_layer.proj.weight", vocab * h, "lm_head"))
    facts = python_facts(c, act=(), positions=positions)
    facts["hidden_act"] = "gelu" if c.bool("gelu_activation", default=True) else "relu"
    return ModelShape(
        name=name, model_type="xlm", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=heads,
        head_dim=h // heads, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tie, norm="layer_norm",
        gated_mlp=False, layer_types=(LayerType("decoder", linears, other_parameters=2 * layer_norm(h)),), layers=(0,) * n,
        params=tuple(params), **facts,
    )


@register_architecture("cpmant")
def build_cpmant(c: ConfigReader, name: str) -> ModelShape:
    h, n, heads, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("num_attention_heads"), c.int("vocab_size")
    hd, ff = c.int("dim_head"), c.int("dim_ff")
    segs, prompts = c.int("segment_types", default=32), c.int("prompt_types", default=32) * c.int("prompt_length", default=32)
    a = "self_att.self_attention"
    linears = (
        Linear(f"{a}.project_q", h, heads * hd, False, "attention"), Linear(f"{a}.project_k", h, heads * hd, False, "attention"),
        Linear(f"{a}.project_v", h, heads * hd, False, "attention"), Linear(f"{a}.attention_out", heads * hd, h, False, "attention"),
        Linear("ffn.ffn.w_in.w_0", h, ff, False, "mlp"), Linear("ffn.ffn.w_in.w_1", h, ff, False, "mlp"),
        Linear("ffn.ffn.w_out", ff, h, False, "mlp"),
    )
    params = (
        Param("cpmant.input_embedding.weight", (vocab + prompts) * h, "embedding"),
        Param("cpmant.segment_embedding.weight", segs * h, "embedding"),
        Param("cpmant.position_bias.relative_attention_bias", (segs * segs + c.int("position_bias_num_buckets", default=512)) * heads, "position"),
        Param("cpmant.encoder.output_layernorm.weight", h, "norm"),
        Param("lm_head.weight", vocab * h, "lm_head"),
    )
    facts = python_facts(c, act=(), act_default="gelu", positions=0)  # CpmAntDenseGatedACT: torch.nn.GELU()
    facts["max_position_embeddings"] = None  # bucketed relative positions: no table to run past
    return ModelShape(
        name=name, model_type="cpmant", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=heads,
        head_dim=hd, intermediate_size=ff, vocab_size=vocab, tie_word_embeddings=False, norm="rms_norm", gated_mlp=True,
        layer_types=(LayerType("decoder", linears, other_parameters=2 * h),), layers=(0,) * n, params=params, **facts,
    )


@register_architecture("prophetnet")
def build_prophetnet(c: ConfigReader, name: str) -> ModelShape:
    h, n, vocab = c.int("hidden_size"), c.layers("num_decoder_layers"), c.int("vocab_size")
    heads, ffn = c.int("num_decoder_attention_heads"), c.int("decoder_ffn_dim")
    if c.bool("is_encoder_decoder", default=True):  # the encoder-decoder checkpoint: the meta-device count
        raise UnsupportedArchitecture("prophetnet", c.source)
    qkvo = ("query_proj", "key_proj", "value_proj", "out_proj")
    linears = [Linear(f"self_attn.{x}", h, h, True, "attention") for x in qkvo]
    linears.append(Linear("self_attn.relative_pos_embeddings", h, c.int("num_buckets", default=32) * heads, True, "other"))
    norms = 2
    if c.bool("add_cross_attention", default=True):
        linears += [Linear(f"cross_attn.{x}", h, h, True, "other") for x in qkvo]
        norms += 1
    linears += [Linear("feed_forward.intermediate", h, ffn, True, "mlp"), Linear("feed_forward.output", ffn, h, True, "mlp")]
    positions = c.int("max_position_embeddings", default=512)
    params = [
        Param("prophetnet.word_embeddings.weight", vocab * h, "embedding"),
        Param("prophetnet.decoder.position_embeddings.weight", positions * h, "position"),
        Param("prophetnet.decoder.ngram_embeddings.weight", c.int("ngram", default=2) * h, "embedding"),
        Param("prophetnet.decoder.embeddings_layer_norm", layer_norm(h), "norm"),
    ]
    tie = c.bool("tie_word_embeddings", default=True)
    if not tie:  # untied, neither the decoder's embeddings nor lm_head share the wrapper's
        params += [Param("prophetnet.decoder.word_embeddings.weight", vocab * h, "embedding"), Param("lm_head.weight", vocab * h, "lm_head")]
    return ModelShape(
        name=name, model_type="prophetnet", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
        num_key_value_heads=heads, head_dim=h // heads, intermediate_size=ffn, vocab_size=vocab, tie_word_embeddings=tie,
        norm="layer_norm", gated_mlp=False,
        layer_types=(LayerType("decoder", tuple(linears), other_parameters=norms * layer_norm(h)),), layers=(0,) * n,
        params=tuple(params), **python_facts(c, act=("activation_function",), act_default="gelu", positions=positions),
    )


_DOGE = decoder.Spec(attn=decoder.Attn(qk_norm="head"), extra_layer_params=("input_residual", "post_attention_residual"))


@register_architecture("doge")
def build_doge(c: ConfigReader, name: str) -> ModelShape:
    if c.bool("is_moe", default=False):
        raise UnsupportedArchitecture("doge", c.source)
    shape = decoder.build_decoder(c, name, _DOGE, "doge")
    kv, bias = shape.num_key_value_heads, c.bool("attention_bias", default=False)
    dt = Linear("self_attn.dt_proj", kv * shape.head_dim, kv, bias, "other")
    lts = tuple(replace(lt, linears=lt.linears + (dt,), other_parameters=lt.other_parameters + kv) for lt in shape.layer_types)
    hints = decoder.hints_for(c, "doge")
    hints["qk_norm"] = True
    hints["eager_only"] = True  # the dynamic mask's quadratic term, by the nearest rule (see above)
    return replace(shape, layer_types=lts, hints=hints)


@register_architecture("zaya")
def build_zaya(c: ConfigReader, name: str) -> ModelShape:
    h, n, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads, maximum=heads)
    hd = c.int("head_dim", default=h // heads)
    experts, inter, r = c.int("num_experts"), c.int("moe_intermediate_size"), c.int("router_hidden_size")
    top_k = c.int("num_experts_per_tok", default=1, maximum=experts)
    ab = c.bool("attention_bias", default=False)
    a, g = "self_attn.qkv_proj", "mlp.gate"
    linears = (
        Linear(f"{a}.q_proj", h, heads * hd, ab, "attention"), Linear(f"{a}.k_proj", h, kv * hd, ab, "attention"),
        Linear(f"{a}.v_proj_current", h, kv * hd // 2, ab, "attention"), Linear(f"{a}.v_proj_delayed", h, kv * hd // 2, ab, "attention"),
        Linear("self_attn.o_proj", heads * hd, h, ab, "attention"),
        # the router's own MLP: nn.Linear modules peft can wrap, not LoRA defaults
        Linear(f"{g}.down_proj", h, r, True, "router"), Linear(f"{g}.router_mlp.fc1", r, r, True, "router"),
        Linear(f"{g}.router_mlp.fc2", r, r, True, "router"), Linear(f"{g}.router_mlp.out_proj", r, experts + 1, False, "router"),
        *fused_experts("mlp.experts", h, inter, experts),
    )
    ch = (heads + kv) * hd
    convs = ch * c.int("cca_time0", default=2) + ch + ch * hd * c.int("cca_time1", default=2) + ch
    other = convs + kv + r + 2 * h + 2 * 4 * h  # convs, qk temp, router norm, 2 RMSNorms, 2 residual scalings
    first, rest = LayerType("decoder", linears, other_parameters=other, moe=True), LayerType("decoder", linears, other_parameters=other + r, moe=True)
    tie = c.bool("tie_word_embeddings", default=True)
    params = [Param("model.embed_tokens.weight", vocab * h, "embedding"), Param("model.norm.weight", h, "norm"),
              Param("model.input_hidden_states_scale_bias", 2 * h, "other")]
    if not tie:
        params.append(Param("lm_head.weight", vocab * h, "lm_head"))
    if c.bool("lm_head_bias", default=False):
        params.append(Param("lm_head.bias", vocab, "lm_head"))
    return ModelShape(
        name=name, model_type="zaya", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=kv,
        head_dim=hd, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tie, norm="rms_norm", gated_mlp=True,
        layer_types=(first, rest) if n > 1 else (first,), layers=(0,) + (1,) * (n - 1), params=tuple(params),
        num_experts=experts, num_experts_per_tok=top_k, moe_intermediate_size=inter, **python_facts(c),
    )


@register_architecture("recurrent_gemma")
def build_recurrent_gemma(c: ConfigReader, name: str) -> ModelShape:
    h, n, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    heads = c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", default=heads, maximum=heads)
    hd = h // heads  # configuration_recurrent_gemma.py: head_dim = hidden_size // num_attention_heads
    lru = c.int("lru_width", default=h)
    bw, k = lru // heads, c.int("conv1d_width", default=4)
    inter = c.int("intermediate_size") // 2
    cycle = c.data.get("block_types") or ["recurrent", "recurrent", "attention"]
    if not isinstance(cycle, list) or not cycle or not all(b in ("recurrent", "attention") for b in cycle):
        raise ForgeError(f"{c.source}: field 'block_types'={cycle!r} must list 'recurrent' / 'attention'")
    mlp = (Linear("mlp_block.gate_proj", h, inter, True, "mlp"), Linear("mlp_block.up_proj", h, inter, True, "mlp"),
           Linear("mlp_block.down_proj", inter, h, True, "mlp"))
    ab, t = c.bool("attention_bias", default=False), "temporal_block"
    attention = LayerType("decoder", (
        Linear(f"{t}.q_proj", h, heads * hd, ab, "attention"), Linear(f"{t}.k_proj", h, kv * hd, ab, "attention"),
        Linear(f"{t}.v_proj", h, kv * hd, ab, "attention"), Linear(f"{t}.o_proj", heads * hd, h, True, "attention")) + mlp,
        other_parameters=2 * h)
    gates = tuple(Linear(f"{t}.rg_lru.{g}_gate_weight", bw, bw, False, "other", count=heads, lora_targetable=False)
                  for g in ("input", "recurrent"))
    recurrent = LayerType("decoder", (
        Linear(f"{t}.linear_y", h, lru, True, "other"), Linear(f"{t}.linear_x", h, lru, True, "other"),
        Linear(f"{t}.linear_out", lru, h, True, "other")) + gates + mlp,
        # conv weight and bias, recurrent_param, the two gate biases, two norms
        other_parameters=lru * k + lru + lru + 2 * lru + 2 * h, attention=False,
        mixer=Mixer("mamba", d_inner=lru, conv_dim=lru, conv_kernel=k, d_state=1, dt_rank=1))
    kinds = [cycle[i % len(cycle)] for i in range(n)]
    types = tuple(dict.fromkeys(kinds))
    tie = c.bool("tie_word_embeddings", default=True)
    params = [Param("model.embed_tokens.weight", vocab * h, "embedding"), Param("model.final_norm.weight", h, "norm")]
    if not tie:
        params.append(Param("lm_head.weight", vocab * h, "lm_head"))
    shape = ModelShape(
        name=name, model_type="recurrent_gemma", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
        num_key_value_heads=kv, head_dim=hd, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tie,
        norm="rms_norm", gated_mlp=True, layer_types=tuple(recurrent if t_ == "recurrent" else attention for t_ in types),
        layers=tuple(types.index(x) for x in kinds), params=tuple(params),
        **python_facts(c, act=("hidden_activation",), act_default="gelu_pytorch_tanh", positions=0),
    )
    hints = decoder.hints_for(c, "recurrent_gemma")
    hints["norm_fp32_weight"] = True  # RecurrentGemmaRMSNorm: x.float() * (1 + w.float()), as Gemma's
    if c.data.get("logits_soft_cap"):
        hints["final_logit_softcapping"] = True  # RecurrentGemmaForCausalLM: tanh(logits / cap) * cap
    return replace(shape, max_position_embeddings=None, hints=hints)


@register_architecture("rwkv")
def build_rwkv(c: ConfigReader, name: str) -> ModelShape:
    h, n, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    a = c.int("attention_hidden_size") if c.data.get("attention_hidden_size") is not None else h
    inter = c.int("intermediate_size") if c.data.get("intermediate_size") is not None else 4 * h
    linears = (
        Linear("attention.key", h, a, False, "attention"), Linear("attention.value", h, a, False, "attention"),
        Linear("attention.receptance", h, a, False, "attention"), Linear("attention.output", a, h, False, "attention"),
        Linear("feed_forward.key", h, inter, False, "mlp"), Linear("feed_forward.receptance", h, h, False, "mlp"),
        Linear("feed_forward.value", inter, h, False, "mlp"),
    )
    # ln1, ln2; time_decay, time_first [A]; five time_mix vectors [1, 1, H]
    other = 2 * layer_norm(h) + 2 * a + 5 * h
    # the token shift (nn.ZeroPad2d((0, 0, 1, -1)) mixed by time_mix_*) is a 2-tap per-channel mix
    mixer = Mixer("mamba", d_inner=a, conv_dim=a, conv_kernel=2, d_state=1, dt_rank=1)
    first = LayerType("decoder", linears, other_parameters=other + layer_norm(h), attention=False, mixer=mixer)
    rest = LayerType("decoder", linears, other_parameters=other, attention=False, mixer=mixer)
    tie = c.bool("tie_word_embeddings", default=False)
    params = [Param("rwkv.embeddings.weight", vocab * h, "embedding"), Param("rwkv.ln_out", layer_norm(h), "norm")]
    if not tie:
        params.append(Param("head.weight", vocab * h, "lm_head"))
    # the WKV kernel: "Cannot process a batch with {seq_len} tokens ..., use a maximum of context_length"
    positions = c.int("context_length", default=1024)
    return ModelShape(
        name=name, model_type="rwkv", hidden_size=h, num_hidden_layers=n, num_attention_heads=1, num_key_value_heads=1,
        head_dim=a, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tie, norm="layer_norm", gated_mlp=False,
        layer_types=(first, rest) if n > 1 else (first,), layers=(0,) + (1,) * (n - 1), params=tuple(params),
        # RwkvFeedForward: torch.square(torch.relu(key)); no rule for squared ReLU: relu's
        **python_facts(c, act=(), act_default="relu", positions=positions),
    )


@register_architecture("axk2")
def build_axk2(c: ConfigReader, name: str) -> ModelShape:
    h, n, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    heads = c.int("num_attention_heads")
    q, kvr, rope, nope, v = (c.int(f) for f in ("q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"))
    ih, ihd, r = c.int("index_n_heads"), c.int("index_head_dim"), c.int("gated_norm_rank")
    ab = c.bool("attention_bias", default=False)
    p = "self_attn"
    attn = (
        Linear(f"{p}.q_a_proj", h, q, ab, "attention"), Linear(f"{p}.q_gate_proj", 2 * q, heads * (nope + rope + v), False, "attention"),
        Linear(f"{p}.kv_a_proj_with_mqa", h, kvr + rope, ab, "attention"), Linear(f"{p}.kv_b_proj", kvr, heads * (nope + v), False, "attention"),
        Linear(f"{p}.o_proj", heads * v, h, ab, "attention"),
        Linear(f"{p}.indexer.wq_b", q, ih * ihd, False, "other"), Linear(f"{p}.indexer.wk", h, ihd, False, "other"),
        Linear(f"{p}.indexer.weights_proj", h, ih, False, "other"),
    )
    attn_other = q + kvr + layer_norm(ihd)  # q_a_layernorm, kv_a_layernorm, indexer.k_norm (LayerNorm with bias)

    def gated_norm(where: str) -> tuple[Linear, ...]:
        return (Linear(f"{where}.mlp.fc1", h, r, False, "other"), Linear(f"{where}.mlp.fc2", r, h, False, "other"))

    kinds = c.data.get("mlp_layer_types")
    if kinds is None:  # configuration_axk2.py: sparse from first_k_dense_replace on, every moe_layer_freq-th
        k, freq = c.int("first_k_dense_replace", default=1, minimum=0), c.int("moe_layer_freq", default=1)
        kinds = ["sparse" if i >= k and i % freq == 0 else "dense" for i in range(n)]
    if not isinstance(kinds, list) or len(kinds) != n or not set(kinds) <= {"sparse", "dense"}:
        raise ForgeError(f"{c.source}: field 'mlp_layer_types'={kinds!r} must list 'sparse' / 'dense' for each of {n} layers")
    inter = c.int("intermediate_size")
    dense = LayerType("decoder", attn + gated_norm("input_layernorm") + (
        Linear("mlp.gate_proj", h, inter, False, "mlp"), Linear("mlp.up_proj", h, inter, False, "mlp"),
        Linear("mlp.down_proj", inter, h, False, "mlp")), other_parameters=attn_other + 2 * h)
    experts, moe_inter = c.int("n_routed_experts"), c.int("moe_intermediate_size")
    shared = moe_inter * c.int("n_shared_experts", default=1, minimum=0)
    top_k = c.int("num_experts_per_tok", maximum=experts)
    moe = (Linear("mlp.gate", h, experts, False, "router", lora_targetable=False),
           *fused_experts("mlp.experts", h, moe_inter, experts))
    if shared:
        moe += (Linear("mlp.shared_experts.gate_proj", h, shared, False, "shared_expert"),
                Linear("mlp.shared_experts.up_proj", h, shared, False, "shared_expert"),
                Linear("mlp.shared_experts.down_proj", shared, h, False, "shared_expert"))
    sparse = LayerType("decoder", attn + gated_norm("input_layernorm") + gated_norm("post_attention_layernorm") + moe,
                       other_parameters=attn_other + 2 * h, moe=True)
    order = tuple(dict.fromkeys(kinds))
    tie = c.bool("tie_word_embeddings", default=False)
    params = [Param("model.embed_tokens.weight", vocab * h, "embedding"), Param("model.norm.weight", h, "norm")]
    if not tie:
        params.append(Param("lm_head.weight", vocab * h, "lm_head"))
    shape = ModelShape(
        name=name, model_type="axk2", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=heads,
        head_dim=nope + rope, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tie, norm="rms_norm", gated_mlp=True,
        layer_types=tuple(sparse if k_ == "sparse" else dense for k_ in order), layers=tuple(order.index(k_) for k_ in kinds),
        params=tuple(params), num_experts=experts if "sparse" in order else 0, num_experts_per_tok=top_k if "sparse" in order else 0,
        moe_intermediate_size=moe_inter if "sparse" in order else 0, **python_facts(c),
    )
    hints = decoder.hints_for(c, "axk2")
    hints["dsa_indexer_heads"] = ih
    hints["attn_gate_width"] = heads * v
    hints["attn_gate_fp32"] = True  # attn_output * torch.sigmoid(gate_states.float())
    return replace(shape, hints=hints)


@register_architecture("longcat_flash")
def build_longcat_flash(c: ConfigReader, name: str) -> ModelShape:
    h, vocab = c.int("hidden_size"), c.int("vocab_size")
    n = c.layers("num_layers") if c.has("num_layers") else c.int("num_hidden_layers") // 2
    heads = c.int("num_attention_heads")
    q, kvr, rope, nope, v = (c.int(f) for f in ("q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"))
    qk = c.int("qk_head_dim", default=nope + rope)
    ab = c.bool("attention_bias", default=False)
    inter = c.int("ffn_hidden_size", "intermediate_size")
    experts, zero = c.int("n_routed_experts", "num_local_experts"), c.int("zero_expert_num", default=0, minimum=0)
    moe_inter = c.int("expert_ffn_hidden_size", "moe_intermediate_size")
    # a token's top-k spans the E real and Z zero (identity) experts: at most min(k, E) of
    # them compute, the bound the shape carries
    top_k = min(c.int("moe_topk", "num_experts_per_tok", maximum=experts + zero), experts)
    linears: list[Linear] = []
    for i in (0, 1):
        p = f"self_attn.{i}"
        linears += [Linear(f"{p}.q_a_proj", h, q, ab, "attention"), Linear(f"{p}.q_b_proj", q, heads * qk, False, "attention"),
                    Linear(f"{p}.kv_a_proj_with_mqa", h, kvr + rope, ab, "attention"),
                    Linear(f"{p}.kv_b_proj", kvr, heads * (nope + v), False, "attention"),
                    Linear(f"{p}.o_proj", heads * v, h, ab, "attention")]
    for i in (0, 1):
        linears += [Linear(f"mlps.{i}.gate_proj", h, inter, False, "mlp"), Linear(f"mlps.{i}.up_proj", h, inter, False, "mlp"),
                    Linear(f"mlps.{i}.down_proj", inter, h, False, "mlp")]
    linears += [Linear("mlp.router.classifier", h, experts + zero, c.bool("router_bias", default=False), "router"),
                Linear("mlp.experts.gate_up_proj", h, 2 * moe_inter, False, "expert", count=experts + zero, lora_targetable=False),
                Linear("mlp.experts.down_proj", moe_inter, h, False, "expert", count=experts, lora_targetable=False)]
    other = 2 * (q + kvr) + 4 * h  # two attentions' q_a / kv_a norms; four RMSNorms
    tie = c.bool("tie_word_embeddings", default=False)
    params = [Param("model.embed_tokens.weight", vocab * h, "embedding"), Param("model.norm.weight", h, "norm")]
    if not tie:
        params.append(Param("lm_head.weight", vocab * h, "lm_head"))
    return ModelShape(
        name=name, model_type="longcat_flash", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
        num_key_value_heads=heads, head_dim=qk, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tie,
        norm="rms_norm", gated_mlp=True, layer_types=(LayerType("decoder", tuple(linears), other_parameters=other, moe=True),),
        layers=(0,) * n, params=tuple(params), num_experts=experts, num_experts_per_tok=top_k, moe_intermediate_size=moe_inter,
        **python_facts(c),
    )


@register_architecture("xlstm")
def build_xlstm(c: ConfigReader, name: str) -> ModelShape:
    h = c.int("hidden_size", "embedding_dim")
    n = c.layers("num_blocks", "num_hidden_layers")
    vocab, heads = c.int("vocab_size"), c.int("num_heads")
    bias = c.bool("use_bias", default=False)
    # xLSTMLayer: int(H · factor), not the config's rounded qk_dim / v_dim properties
    qk, v = int(h * c.data.get("qk_dim_factor", 0.5)), int(h * c.data.get("v_dim_factor", 1.0))
    mult = c.int("ffn_round_up_to_multiple_of", default=64)
    up = int((h * c.data.get("ffn_proj_factor", 2.667) + mult - 1) // mult * mult)  # round_up_to_next_multiple_of
    m, f = "mlstm_layer", "ffn"
    if c.str("weight_mode", default="single") == "fused":
        proj = [Linear(f"{m}.qkv_opreact", h, 2 * qk + 2 * v, bias, "attention"), Linear(f"{m}.ifgate_preact", h, 2 * heads, True, "other"),
                Linear(f"{f}.proj_up_gate_z", h, 2 * up, bias, "mlp")]
    else:
        proj = [Linear(f"{m}.q", h, qk, bias, "attention"), Linear(f"{m}.k", h, qk, bias, "attention"),
                Linear(f"{m}.v", h, v, bias, "attention"), Linear(f"{m}.ogate_preact", h, v, bias, "other"),
                Linear(f"{m}.igate_preact", h, heads, True, "other"), Linear(f"{m}.fgate_preact", h, heads, True, "other"),
                Linear(f"{f}.proj_up_gate", h, up, bias, "mlp"), Linear(f"{f}.proj_up", h, up, bias, "mlp")]
    proj += [Linear(f"{m}.out_proj", v, h, bias, "attention"), Linear(f"{f}.proj_down", up, h, bias, "mlp")]
    other = 2 * layer_norm(h, bias=bias) + layer_norm(v, bias=bias)  # two RMSNorms, the multi-head norm
    mixer = Mixer("gated_delta_net", d_inner=v, conv_dim=2 * qk + v, conv_kernel=1, heads=heads, head_dim=v // heads,
                  key_heads=heads, key_head_dim=qk // heads, chunk_size=c.int("chunk_size", default=64))
    # xLSTMModel builds out_norm = xLSTMRMSNorm(H) (weight only) whatever add_out_norm says
    params = [Param("backbone.embeddings.weight", vocab * c.int("embedding_dim", "hidden_size"), "embedding"),
              Param("lm_head.weight", vocab * h, "lm_head"), Param("backbone.out_norm.weight", h, "norm")]
    shape = ModelShape(
        name=name, model_type="xlstm", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=heads,
        head_dim=v // heads, intermediate_size=up, vocab_size=vocab, tie_word_embeddings=False, norm="rms_norm", gated_mlp=True,
        layer_types=(LayerType("decoder", tuple(proj), other_parameters=other, attention=False, mixer=mixer),),
        layers=(0,) * n, params=tuple(params), **python_facts(c, act=(), positions=0),
    )
    hints = decoder.hints_for(c, "xlstm")
    if c.data.get("output_logit_soft_cap"):
        hints["final_logit_softcapping"] = True  # xLSTMForCausalLM: soft_cap(logits, output_logit_soft_cap)
    return replace(shape, max_position_embeddings=None, hints=hints)


@register_architecture("deepseek_v4")
def build_deepseek_v4(c: ConfigReader, name: str) -> ModelShape:
    h, n, vocab = c.int("hidden_size"), c.layers("num_hidden_layers"), c.int("vocab_size")
    heads, hd, q = c.int("num_attention_heads"), c.int("head_dim"), c.int("q_lora_rank")
    g, olr = c.int("o_groups"), c.int("o_lora_rank")
    ih, ihd, hc = c.int("index_n_heads"), c.int("index_head_dim"), c.int("hc_mult")
    experts, inter = c.int("n_routed_experts", "num_local_experts"), c.int("moe_intermediate_size", "intermediate_size")
    top_k = c.int("num_experts_per_tok", maximum=experts)
    mb = c.bool("mlp_bias", default=False)
    rates = c.data.get("compress_rates") or {}
    kinds = c.data.get("layer_types") or ["sliding_attention"] * n
    allowed = {"sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"}
    if not isinstance(kinds, list) or len(kinds) != n or not set(kinds) <= allowed:
        raise ForgeError(f"{c.source}: field 'layer_types'={kinds!r} must list one of {sorted(allowed)} for each of {n} layers")
    a = "self_attn"
    base = (
        Linear(f"{a}.q_a_proj", h, q, False, "attention"), Linear(f"{a}.q_b_proj", q, heads * hd, False, "attention"),
        Linear(f"{a}.kv_proj", h, hd, False, "attention"),
        Linear(f"{a}.o_a_proj", heads * hd // g, g * olr, False, "other"), Linear(f"{a}.o_b_proj", g * olr, h, False, "attention"),
        Linear("mlp.gate", h, experts, False, "router", lora_targetable=False),
        *fused_experts("mlp.experts", h, inter, experts),
        Linear("mlp.shared_experts.gate_proj", h, inter, mb, "shared_expert"), Linear("mlp.shared_experts.up_proj", h, inter, mb, "shared_expert"),
        Linear("mlp.shared_experts.down_proj", inter, h, mb, "shared_expert"),
    )
    hc_params = 2 * ((2 + hc) * hc * hc * h + (2 + hc) * hc + 3)  # attn_hc, ffn_hc: fn, base, scale
    other = q + hd + heads + 2 * h + hc_params  # q_a_norm, kv_norm, sinks, two RMSNorms, hyper-connections

    def compressor(prefix: str, width: int, rate: int, norm: int) -> tuple[tuple[Linear, ...], int]:
        return (Linear(f"{prefix}.kv_proj", h, width, False, "other"), Linear(f"{prefix}.gate_proj", h, width, False, "other")), rate * width + norm

    def layer(kind: str) -> LayerType:
        lin, extra = base, 0
        if kind == "heavily_compressed_attention":
            comp, extra = compressor(f"{a}.compressor", hd, int(rates.get(kind, 128)), hd)
            lin += comp
        elif kind == "compressed_sparse_attention":
            rate = int(rates.get(kind, 4))
            comp, extra = compressor(f"{a}.compressor", 2 * hd, rate, hd)
            idx, idx_extra = compressor(f"{a}.compressor.indexer", 2 * ihd, rate, ihd)
            lin += comp + idx + (Linear(f"{a}.compressor.indexer.q_b_proj", q, ih * ihd, False, "other"),
                                 Linear(f"{a}.compressor.indexer.scorer.weights_proj", h, ih, False, "other"))
            extra += idx_extra
        return LayerType("decoder", lin, other_parameters=other + extra, moe=True)

    order = tuple(dict.fromkeys(kinds))
    tie = c.bool("tie_word_embeddings", default=False)
    params = [Param("model.embed_tokens.weight", vocab * h, "embedding"), Param("model.norm.weight", h, "norm"),
              Param("model.hc_head", hc * hc * h + hc + 1, "other")]
    if not tie:
        params.append(Param("lm_head.weight", vocab * h, "lm_head"))
    shape = ModelShape(
        name=name, model_type="deepseek_v4", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=1,
        head_dim=hd, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tie, norm="rms_norm", gated_mlp=True,
        layer_types=tuple(layer(k) for k in order), layers=tuple(order.index(k) for k in kinds), params=tuple(params),
        num_experts=experts, num_experts_per_tok=top_k, moe_intermediate_size=inter, **python_facts(c),
    )
    hints = decoder.hints_for(c, "deepseek_v4")
    hints["hyper_connection_streams"] = hc
    hints["eager_only"] = True  # sink logits join the softmax (as gpt-oss: SDPA cannot)
    if "compressed_sparse_attention" in order:
        hints["dsa_indexer_heads"] = ih
    return replace(shape, hints=hints)
