//! The shape of a model: what every estimate is computed from.
//!
//! A [`ModelShape`] is produced by the Python parser (`forge_advisor.shapes`) from a
//! Hugging Face `config.json` and handed over as JSON. It carries the global sizes and
//! an inventory of every parameter tensor: per layer type, the linear modules with their
//! real names and shapes, plus the "other" per-layer parameters (norms, per-head norms);
//! outside the layers, the embeddings, position tables, final norm and LM head.
//!
//! Parameter counts are exact: `nn.Linear(in, out, bias)` holds `in·out (+ out)`
//! parameters (torch.nn.Linear docs), and the parser lists every other tensor.

use serde::{Deserialize, Serialize};

use crate::error::{checked_sum, Checked, Error, Result};

/// Anything above this many parameters is treated as a typo, not a model (10 trillion).
pub const MAX_PARAMETERS: u64 = 10_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Attention projections (q/k/v/o, fused qkv, c_attn, query_key_value…).
    Attention,
    /// Dense MLP projections.
    Mlp,
    /// Projections inside a mixture-of-experts block, stored `count` times.
    Expert,
    /// Shared (always active) experts of an MoE block.
    SharedExpert,
    /// The router / gate of an MoE block.
    Router,
    /// Anything else (cross-attention lives under Attention).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stack {
    Decoder,
    Encoder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    RmsNorm,
    LayerNorm,
}

/// One linear map inside a layer, e.g. `self_attn.q_proj`: `in_features → out_features`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    /// Module path relative to the layer, with the model's own spelling.
    pub name: String,
    pub in_features: u64,
    pub out_features: u64,
    pub bias: bool,
    /// How many copies the layer holds (number of experts for stacked expert weights).
    #[serde(default = "one")]
    pub count: u64,
    pub role: Role,
    /// Whether it is an `nn.Linear` module that peft can wrap by name. Fused expert
    /// tensors (`nn.Parameter` of shape `[E, out, in]`) are not.
    #[serde(default = "yes")]
    pub lora_targetable: bool,
    /// An `nn.Linear` that peft refuses to adapt in this architecture (peft
    /// `tuners_utils._check_lora_target_modules_mamba`: `out_proj` of Mamba-based models).
    #[serde(default)]
    pub peft_excluded: bool,
    /// The weight belongs to a block tied across layers and is owned by an earlier layer
    /// (Zamba's shared transformer: modeling_zamba2.py `get_layers`, `_tied_weights_keys`):
    /// its parameters, gradient, optimizer state and quantised storage count at the owner;
    /// its activations and FLOPs at every layer that runs it. peft wraps each layer's module
    /// (the modules are distinct, only their weights are tied), so LoRA adapters count per layer.
    #[serde(default)]
    pub shared: bool,
    /// Held by the layer but not run by its forward (Zamba2's adapter slots of the other
    /// invocations of its shared block, `linear_q_adapter_list[i]`): its parameters count
    /// where it is owned, its activations and FLOPs nowhere.
    #[serde(default)]
    pub idle: bool,
}

fn one() -> u64 {
    1
}
fn yes() -> bool {
    true
}

impl Linear {
    /// `in·out (+ out)` per copy, times `count`.
    pub fn num_parameters(&self) -> Result<u64> {
        let weight = self.in_features.mul_or(self.out_features, "linear weight size")?;
        let bias = if self.bias { self.out_features } else { 0 };
        weight.add_or(bias, "linear size")?.mul_or(self.count, "expert weights")
    }
}

/// A kind of layer; a model lists its layers as indices into its layer types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerType {
    pub stack: Stack,
    pub linears: Vec<Linear>,
    /// Parameters of the layer that are not in `linears` (norm weights and biases,
    /// per-head q/k norms, layer scales…).
    #[serde(default)]
    pub other_parameters: u64,
    /// Whether the layer's MLP is a mixture of experts.
    #[serde(default)]
    pub moe: bool,
    /// Whether the layer has cross-attention (seq2seq decoder).
    #[serde(default)]
    pub cross_attention: bool,
    /// Whether the layer has softmax self-attention (false: only a mixer and/or an MLP).
    #[serde(default = "yes")]
    pub attention: bool,
    /// A linear-attention, state-space or convolutional token mixer (besides attention
    /// where `attention` is also set, as in Falcon-H1).
    #[serde(default)]
    pub mixer: Option<Mixer>,
    /// Times the layer runs forward with autograd recording in one step (1 but for
    /// recurrent stacks: HRM's L and H modules, shapes/families/hrm.py); each run keeps its
    /// own saved tensors (estimator.rs).
    #[serde(default = "one")]
    pub passes: u64,
    /// Tokens a sliding-window attention layer attends to (0: full attention). Recorded
    /// where it changes what attention keeps (Gemma 4: activations.rs `qkv_saved`).
    #[serde(default)]
    pub sliding_window: u64,
}

/// The kind of a non-attention token mixer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MixerKind {
    /// Gated DeltaNet (Qwen3-Next, Qwen3.5): a chunked delta-rule recurrence per value head.
    GatedDeltaNet,
    /// Mamba-1 selective scan (Mamba, Falcon-Mamba, Jamba).
    Mamba,
    /// Mamba-2 structured state-space duality (Falcon-H1, Nemotron-H, Zamba 2, Bamba).
    Mamba2,
    /// A gated depthwise short convolution (LFM2).
    ShortConv,
}

/// The widths of a token mixer (fields a kind does not use are 0); the Python twin is
/// `forge_advisor.shapes.model.Mixer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mixer {
    pub kind: MixerKind,
    /// Channels of the scan's output (GDN: value heads × head_dim; Mamba: intermediate size).
    pub d_inner: u64,
    /// Channels of the depthwise causal convolution.
    pub conv_dim: u64,
    pub conv_kernel: u64,
    #[serde(default)]
    pub heads: u64,
    #[serde(default)]
    pub head_dim: u64,
    #[serde(default)]
    pub key_heads: u64,
    #[serde(default)]
    pub key_head_dim: u64,
    #[serde(default)]
    pub d_state: u64,
    #[serde(default)]
    pub n_groups: u64,
    #[serde(default)]
    pub dt_rank: u64,
    #[serde(default)]
    pub chunk_size: u64,
    /// A gated RMSNorm over the scan output (Qwen3-Next, Mamba-2 with `rms_norm`).
    #[serde(default)]
    pub gated_norm: bool,
}

impl Mixer {
    /// The widths a kind's rules read are positive and below 2^24 (the widest published
    /// mixer is ~2^15 channels), so the per-token byte and FLOP products cannot overflow.
    pub fn validate(&self) -> Result<()> {
        let used: &[(&str, u64)] = match self.kind {
            MixerKind::GatedDeltaNet => &[
                ("heads", self.heads),
                ("head_dim", self.head_dim),
                ("key_heads", self.key_heads),
                ("key_head_dim", self.key_head_dim),
                ("chunk_size", self.chunk_size),
            ],
            MixerKind::Mamba => &[("d_state", self.d_state), ("dt_rank", self.dt_rank)],
            MixerKind::Mamba2 => &[
                ("heads", self.heads),
                ("head_dim", self.head_dim),
                ("d_state", self.d_state),
                ("n_groups", self.n_groups),
                ("chunk_size", self.chunk_size),
            ],
            MixerKind::ShortConv => &[],
        };
        let common = [("d_inner", self.d_inner), ("conv_dim", self.conv_dim), ("conv_kernel", self.conv_kernel)];
        for &(field, value) in common.iter().chain(used.iter()) {
            if value == 0 || value >= 1 << 24 {
                return Err(Error::field(format!("mixer.{field}"), value, "a positive integer below 16,777,216"));
            }
        }
        Ok(())
    }
}

impl LayerType {
    pub fn num_parameters(&self) -> Result<u64> {
        // a weight owned by another layer (`shared`) counts there
        let lin = self.linears.iter().filter(|l| !l.shared).map(Linear::num_parameters).collect::<Result<Vec<_>>>()?;
        checked_sum(lin, "layer parameters")?.add_or(self.other_parameters, "layer parameters")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamRole {
    /// The input token embedding (frozen first by a freeze ratio).
    Embedding,
    /// Learned absolute position table (GPT-2 `wpe`, OPT `embed_positions`).
    Position,
    /// An untied output head.
    LmHead,
    /// Final norm(s) and embedding norms.
    Norm,
    /// Anything else outside the layers (relative-attention bias, projections).
    Other,
}

/// A parameter tensor outside the layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub name: String,
    pub numel: u64,
    pub role: ParamRole,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelShape {
    pub name: String,
    pub model_type: String,
    pub hidden_size: u64,
    /// Decoder layers (for seq2seq: decoder layers; encoder layers are in `num_encoder_layers`).
    pub num_hidden_layers: u64,
    #[serde(default)]
    pub num_encoder_layers: u64,
    pub num_attention_heads: u64,
    pub num_key_value_heads: u64,
    pub head_dim: u64,
    pub intermediate_size: u64,
    pub vocab_size: u64,
    pub tie_word_embeddings: bool,
    pub norm: NormKind,
    pub gated_mlp: bool,
    #[serde(default)]
    pub num_experts: u64,
    #[serde(default)]
    pub num_experts_per_tok: u64,
    #[serde(default)]
    pub moe_intermediate_size: u64,
    #[serde(default)]
    pub is_encoder_decoder: bool,
    /// Attention and MLP read the same normed input (Falcon, GPT-J, Phi-2, GPT-NeoX parallel residual).
    #[serde(default)]
    pub parallel_attn: bool,
    /// Facts that change what autograd keeps (see `activations.rs`).
    #[serde(default)]
    pub hints: Hints,
    pub layer_types: Vec<LayerType>,
    /// One index into `layer_types` per layer, in forward order (encoder first).
    pub layers: Vec<u32>,
    pub params: Vec<Param>,
    /// The vision tower and projector of a vision-language model (vision.rs); its
    /// parameters count in the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<crate::vision::VisionTower>,
}

/// Architecture facts that change activation memory but not parameter counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hints {
    /// `hidden_act` as in config.json; selects what the activation saves for backward.
    pub hidden_act: String,
    /// Gemma's RMSNorm computes `x.float() * (1 + w.float())` in fp32 (modeling_gemma.py).
    pub norm_fp32_weight: bool,
    /// Per-head RMSNorm on q and k (Qwen3, Gemma 3, OLMo 2).
    pub qk_norm: bool,
    /// Dropout probability on residual branches and embeddings (GPT-2 `resid_pdrop`…).
    pub hidden_dropout: f64,
    /// Dropout on attention probabilities (eager kernels store a mask; SDPA does not).
    pub attention_dropout: f64,
    /// `final_logit_softcapping` present (Gemma 2): tanh over the logits.
    pub final_logit_softcapping: bool,
    /// `attn_logit_softcapping` present (Gemma 2): tanh over attention scores.
    pub attn_logit_softcapping: bool,
    /// The architecture refuses SDPA in transformers 5 and runs eager attention.
    pub eager_only: bool,
    /// `output_router_logits` is on: every MoE layer's router logits (`[tokens, experts]`,
    /// compute dtype) are recorded for the load-balancing loss (transformers 5
    /// `OutputRecorder(<Model>TopKRouter, index=0)`, `load_balancing_loss_func`), alive from
    /// the layer's forward until the loss, then as their gradient until the layer's backward.
    pub router_logits_kept: bool,
    /// Gated attention output, `o_proj(out * act(gate_proj(x)))` (AFMoE, Beam, Laguna): the
    /// gate's width per token (heads·head_dim, or heads for a per-head gate); 0 when none.
    pub attn_gate_width: u64,
    /// The gate's activation runs in fp32 (modeling_laguna.py: `F.softplus(g.float())`).
    pub attn_gate_fp32: bool,
    /// Heads of a DeepSeek sparse-attention indexer in every layer (`index_n_heads`;
    /// DeepSeek-V3.2, GLM-5); 0 when none.
    pub dsa_indexer_heads: u64,
    /// Width of one indexer head (`index_head_dim`); 0 when none.
    pub dsa_indexer_head_dim: u64,
    /// Residual streams of hyper-connections (`hc_mult`; HY-V4, DeepSeek-V4); 0 when none.
    pub hyper_connection_streams: u64,
    /// The attention output is gated by a half of q_proj: `attn_output * sigmoid(gate)`
    /// (Qwen3-Next, Qwen3.5).
    pub attn_output_gate: bool,
    /// Zamba's hybrid layers: the attention block reads `concat(hidden, embeddings)` (2H,
    /// modeling_zamba2.py `Zamba2AttentionDecoderLayer.forward`), its output goes through a
    /// `linear` H → H into the input of the layer's own Mamba block, which follows in
    /// sequence with its own norm (not side by side on one normed input, as in Falcon-H1).
    pub concat_embeddings: bool,
    /// No rotary embedding (Zamba; Zamba2 without `use_mem_rope`): q, k, v reach SDPA as
    /// transposed views of the projections' `[b, s, h, d]` outputs, the layout cuDNN takes
    /// as is, so it makes no copies of them.
    pub attention_without_rope: bool,
    /// Channels of fp32 depthwise short convolutions on the layer's grad path (Inkling:
    /// keys, values, the attention output and the MLP output; activations_conv.rs); 0 when none.
    pub fp32_short_conv_channels: u64,
    /// A hidden-state-conditioned relative position bias `[batch, heads, q, kv]` enters
    /// attention as a dense additive mask (Inkling; activations_conv.rs).
    pub dense_position_bias: bool,
    /// Weightless RMSNorms outside the layers that run with autograd in one step, beyond
    /// the final norm (HRM: each recurrent stack run ends with one; recurrent.rs).
    pub stack_norm_runs: u64,
    /// Attention widths differ by layer (Gemma 4: 512-wide heads on full-attention layers,
    /// 256 on sliding ones; a layer reusing an earlier layer's K/V computes none): each
    /// layer's q and new k/v widths are read from its own projections (activations.rs
    /// `attn_widths`), not from the model-wide `head_dim`.
    pub per_layer_attention: bool,
    /// An unweighted RMSNorm over each value head (Gemma 4 `v_norm`, `with_scale=False`).
    pub v_norm: bool,
    /// Width P of the per-layer input embeddings (Gemma 4 `hidden_size_per_layer_input`);
    /// 0 when none.
    pub per_layer_input_width: u64,
    /// RMSNorms over the hidden size that a mixture-of-experts block adds beside the dense
    /// MLP (Gemma 4 26B-A4B: `post_feedforward_layernorm_1`, `pre_feedforward_layernorm_2`,
    /// `post_feedforward_layernorm_2` and the router's unweighted norm: 4); 0 when none.
    pub moe_block_norms: u64,
    /// The router's top-k weights stay fp32 and multiply the experts' half output, so the
    /// experts' combine (transformers integrations/moe.py `grouped_mm_experts_forward`:
    /// `weighted_out = proj_out * sample_weights_g`, its reordering gather and the sum over
    /// the k routes) runs in fp32 (Gemma 4: `Gemma4TextRouter` returns the fp32 softmax's
    /// top-k times `per_expert_scale`; activations.rs `moe_combine_backward`).
    pub moe_fp32_combine: bool,
}

impl Default for Hints {
    fn default() -> Self {
        Hints {
            hidden_act: "silu".into(),
            norm_fp32_weight: false,
            qk_norm: false,
            hidden_dropout: 0.0,
            attention_dropout: 0.0,
            final_logit_softcapping: false,
            attn_logit_softcapping: false,
            eager_only: false,
            router_logits_kept: false,
            attn_gate_width: 0,
            attn_gate_fp32: false,
            dsa_indexer_heads: 0,
            dsa_indexer_head_dim: 0,
            hyper_connection_streams: 0,
            attn_output_gate: false,
            concat_embeddings: false,
            attention_without_rope: false,
            fp32_short_conv_channels: 0,
            dense_position_bias: false,
            stack_norm_runs: 0,
            per_layer_attention: false,
            v_norm: false,
            per_layer_input_width: 0,
            moe_block_norms: 0,
            moe_fp32_combine: false,
        }
    }
}

impl ModelShape {
    pub fn from_json(text: &str) -> Result<Self> {
        let shape: ModelShape =
            serde_json::from_str(text).map_err(|e| Error::Decode { message: format!("bad model shape: {e}") })?;
        shape.validate()?;
        Ok(shape)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ModelShape always serialises")
    }

    /// Check every size that later arithmetic relies on.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("intermediate_size", self.intermediate_size),
            ("vocab_size", self.vocab_size),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::field(field, value, "a positive integer"));
            }
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(Error::field(
                "num_key_value_heads",
                self.num_key_value_heads,
                format!("a divisor of num_attention_heads={}", self.num_attention_heads),
            ));
        }
        if self.num_experts_per_tok > self.num_experts {
            return Err(Error::field(
                "num_experts_per_tok",
                self.num_experts_per_tok,
                format!("at most num_experts={}", self.num_experts),
            ));
        }
        if self.layer_types.is_empty() {
            return Err(Error::field("layer_types", "[]", "at least one layer type"));
        }
        let decoder = self.layers_in(Stack::Decoder)?;
        let encoder = self.layers_in(Stack::Encoder)?;
        if decoder != self.num_hidden_layers {
            return Err(Error::field("layers", decoder, format!("num_hidden_layers={} decoder layers", self.num_hidden_layers)));
        }
        if encoder != self.num_encoder_layers {
            return Err(Error::field("layers", encoder, format!("num_encoder_layers={} encoder layers", self.num_encoder_layers)));
        }
        for lt in &self.layer_types {
            if let Some(m) = &lt.mixer {
                m.validate()?;
            }
            for lin in &lt.linears {
                if lin.in_features == 0 || lin.out_features == 0 || lin.count == 0 {
                    return Err(Error::field(
                        format!("{}.shape", lin.name),
                        format!("[{}, {}]x{}", lin.out_features, lin.in_features, lin.count),
                        "positive sizes",
                    ));
                }
            }
        }
        if let Some(v) = &self.vision {
            v.validate()?;
        }
        let total = self.num_parameters()?;
        if total > MAX_PARAMETERS {
            return Err(Error::field("num_parameters", total, format!("at most {MAX_PARAMETERS} (10 trillion)")));
        }
        Ok(())
    }

    fn layers_in(&self, stack: Stack) -> Result<u64> {
        let mut n = 0u64;
        for &idx in &self.layers {
            let lt = self
                .layer_types
                .get(idx as usize)
                .ok_or_else(|| Error::field("layers", idx, format!("an index below {}", self.layer_types.len())))?;
            if lt.stack == stack {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Per-layer parameter counts, in forward order.
    pub fn layer_parameters(&self) -> Result<Vec<u64>> {
        let per_type = self.layer_types.iter().map(LayerType::num_parameters).collect::<Result<Vec<_>>>()?;
        Ok(self.layers.iter().map(|&i| per_type[i as usize]).collect())
    }

    /// Parameters outside the layers, each tensor once (a tied head is not listed).
    pub fn non_layer_parameters(&self) -> Result<u64> {
        checked_sum(self.params.iter().map(|p| p.numel), "non-layer parameters")
    }

    pub fn embedding_parameters(&self) -> u64 {
        self.params.iter().filter(|p| matches!(p.role, ParamRole::Embedding | ParamRole::Position)).map(|p| p.numel).sum()
    }

    /// Total parameters, counted like `sum(p.numel() for p in model.parameters())`
    /// (shared tensors once).
    pub fn num_parameters(&self) -> Result<u64> {
        let layers = checked_sum(self.layer_parameters()?, "total parameters")?;
        let total = layers.add_or(self.non_layer_parameters()?, "total parameters")?;
        total.add_or(self.vision_parameters()?, "total parameters")
    }

    /// Parameters of the vision tower and projector (0 for a text-only model).
    pub fn vision_parameters(&self) -> Result<u64> {
        self.vision.as_ref().map_or(Ok(0), |v| v.num_parameters())
    }

    /// Parameters that the forward pass of one token touches (MoE: only `top_k` of the
    /// routed experts), a tied block's once (at its owner).
    pub fn active_parameters(&self) -> Result<u64> {
        let mut total = self.non_layer_parameters()?.add_or(self.vision_parameters()?, "active parameters")?;
        for &i in &self.layers {
            let lt = &self.layer_types[i as usize];
            for lin in lt.linears.iter().filter(|l| !l.shared) {
                let mut p = lin.num_parameters()?;
                if lin.role == Role::Expert && lin.count > 0 && self.num_experts_per_tok > 0 {
                    p = p / lin.count * self.num_experts_per_tok.min(lin.count);
                }
                total = total.add_or(p, "active parameters")?;
            }
            total = total.add_or(lt.other_parameters, "active parameters")?;
        }
        Ok(total)
    }
}
