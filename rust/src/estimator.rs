//! Peak GPU memory and throughput of one plan.
//!
//! Peak allocated memory is the maximum over a training step's phases (the second step,
//! so optimizer states exist), each the sum of named terms:
//!
//! | phase | alive |
//! |---|---|
//! | forward end (inside the loss) | weights, states, grads of earlier micro-batches, saved activations, logits + fp32 upcast + log-softmax |
//! | loss backward | the same, with the log-softmax backward buffers (3 × fp32 logits) |
//! | layer `l` backward | activations below `l` (+ layer `l` recomputed under checkpointing), grads of layers above, transient grad buffers |
//! | backward end | all grads |
//! | optimizer step | grads, states and the optimizer's temporaries |
//!
//! HF Trainer frees grads after each step (`zero_grad(set_to_none=True)`), drops the
//! model outputs (and so the bf16 logits) before `backward`, and with gradient
//! accumulation keeps grads alive across micro-batches.

use serde::Serialize;

use crate::activations::{layer_backward_transient, layer_checkpointed, layer_forward_transient, layer_saved, LayerGrad, PlanCtx, Widths};
use crate::analysis::{Analysis, LoraSums};
use crate::error::{Error, Result};
use crate::gpu::GpuSpec;
use crate::plan::{Distributed, Method, Optim, Plan, Trainer};
use crate::shape::ModelShape;
use crate::timeline::{Evaluation, Prepared, Scalars, Segment, Segments};

/// Named memory terms at the peak, in bytes. They add up to `peak_allocated`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Breakdown {
    pub weights: u64,
    pub quant_state: u64,
    pub lora_adapters: u64,
    pub reference_model: u64,
    pub gradients: u64,
    pub optimizer_states: u64,
    pub optimizer_temporaries: u64,
    pub activations: u64,
    pub autocast_copies: u64,
    pub logits_and_loss: u64,
    pub backward_buffers: u64,
    pub distributed_buffers: u64,
}

impl Breakdown {
    pub fn total(&self) -> u64 {
        [
            self.weights,
            self.quant_state,
            self.lora_adapters,
            self.reference_model,
            self.gradients,
            self.optimizer_states,
            self.optimizer_temporaries,
            self.activations,
            self.autocast_copies,
            self.logits_and_loss,
            self.backward_buffers,
            self.distributed_buffers,
        ]
        .iter()
        .fold(0u64, |a, &b| a.saturating_add(b))
    }

    pub fn entries(&self) -> [(&'static str, u64); 12] {
        [
            ("weights", self.weights),
            ("quant_state", self.quant_state),
            ("lora_adapters", self.lora_adapters),
            ("reference_model", self.reference_model),
            ("gradients", self.gradients),
            ("optimizer_states", self.optimizer_states),
            ("optimizer_temporaries", self.optimizer_temporaries),
            ("activations", self.activations),
            ("autocast_copies", self.autocast_copies),
            ("logits_and_loss", self.logits_and_loss),
            ("backward_buffers", self.backward_buffers),
            ("distributed_buffers", self.distributed_buffers),
        ]
    }
}

/// Memory the device holds beyond tensors: not seen by `max_memory_allocated`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DeviceTerms {
    /// CUDA context and kernels loaded lazily (CUDA ≥ 11.7 `CUDA_MODULE_LOADING=LAZY`):
    /// nvidia-smi counts it, `max_memory_reserved` does not (`device::CUDA_CONTEXT_BYTES`).
    pub cuda_context: u64,
    /// cuBLAS/cuBLASLt workspaces, one per handle (forward and backward threads), sized by
    /// GPU generation (`device::cublas_workspace`); inside `memory_allocated` on a GPU.
    pub cublas_workspace: u64,
    /// The caching allocator's reserved-but-unallocated blocks: cached segments of freed
    /// logits-sized and parameter-sized blocks that the peak's larger requests cannot use,
    /// plus segment rounding (`device::allocator_reserve`).
    pub allocator_reserve: u64,
    /// Paged optimizer states live in CUDA managed memory, outside PyTorch's allocator.
    pub paged_optimizer_states: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Forward,
    LossBackward,
    LayerBackward,
    BackwardEnd,
    OptimizerStep,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub peak_allocated_bytes: u64,
    pub peak_reserved_bytes: u64,
    /// The fit bound: `peak_reserved_bytes` plus the measured error band
    /// ([`crate::device::reserved_upper`]); a plan fits when this stays under the GPU.
    pub peak_reserved_upper_bytes: u64,
    pub peak_phase: Phase,
    pub breakdown: Breakdown,
    pub device: DeviceTerms,
    pub total_parameters: u64,
    pub trainable_parameters: u64,
    pub frozen_layers: u64,
    /// Training FLOPs per token (forward + backward + recompute).
    pub flops_per_token: f64,
    pub tokens_per_step: u64,
    pub tokens_per_second: Option<f64>,
    pub step_seconds: Option<f64>,
    pub mfu: Option<f64>,
    /// The method's quality score (objective.rs).
    pub quality: f64,
    /// Host (CPU) memory the plan's offloading levers take per process (levers.rs); absent
    /// from the JSON when nothing is offloaded.
    #[serde(skip_serializing_if = "is_zero")]
    pub host_memory_bytes: u64,
    /// A vision-language model's images (vision.rs); absent for text-only models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vision: Option<crate::vision::VisionReport>,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

/// A model prepared for estimating many plans.
pub struct Estimator {
    pub shape: ModelShape,
    pub analysis: Analysis,
}

pub(crate) fn sat(a: u64, b: u64) -> u64 {
    a.saturating_mul(b)
}

/// bitsandbytes 4-bit storage of `n` weights: packed 2 per byte plus the quant state of
/// blocks of 64 — fp32 absmax per block, or with double quantisation one byte per block
/// plus a fp32 absmax per 256 blocks (bitsandbytes/functional.py `quantize_4bit`).
fn nf4_bytes(n: u64, double_quant: bool) -> (u64, u64) {
    let packed = n.div_ceil(2);
    let blocks = n.div_ceil(64);
    let state = if double_quant { blocks + blocks.div_ceil(256) * 4 } else { blocks * 4 };
    (packed, state)
}

/// Trainable parameters of one unfrozen layer: all of them under full fine-tuning, else
/// the LoRA adapters of its targeted linears (lora_A: r×in, lora_B: out×r, peft
/// `LoraLayer.update_layer`).
fn layer_trainable(params: u64, lora: &LoraSums, full: bool, r: u64) -> u64 {
    if full {
        params
    } else {
        sat(r, lora.params_per_rank)
    }
}

/// A layer's backward transient per token at context `ctx` ([`layer_backward_transient`]):
/// (all of it, without the attention scores' per-context part — what the MLP block's
/// backward holds while the attention block's saved tensors wait).
fn backward_transient(shape: &ModelShape, info: &crate::analysis::LayerInfo, plan: &Plan, ctx: u64) -> (u64, u64) {
    let t = layer_backward_transient(shape, info, plan);
    (Segment::per_token(&t, ctx), t.per_token)
}

/// What every step of [`Estimator::prepare_in`] reads about a plan.
struct Basis {
    /// The LoRA target bits (0 without adapters).
    mask: u64,
    /// Full fine-tuning (else only adapters train).
    full: bool,
    /// Layers frozen from the bottom ([`Estimator::frozen_layers`]).
    frozen: u64,
    embed_trains: bool,
    head_trains: bool,
    /// Bytes of one gradient: the parameter dtype's under full fine-tuning, else the fp32
    /// adapters'.
    grad_bytes_per: u64,
    /// What per-layer grads are divided by: N GPUs where grads are sharded (ZeRO-2, FSDP,
    /// ZeRO-3), else 1.
    grad_scale: u64,
    /// A vision-language model's images per sample (vision.rs), `None` for text-only models.
    images: Option<crate::vision::ImagePlan>,
}

/// What [`Estimator::params`] prices of a plan: everything before its activations.
pub(crate) struct Params<'p> {
    /// The plan the activations are priced with (FSDP2: its compute dtype).
    act_plan: std::borrow::Cow<'p, Plan>,
    w: Widths,
    b: Basis,
    set: TrainableSet,
    /// Paged optimizer states (`optimizer_bytes`).
    paged: u64,
    fixed: Fixed,
    /// The terms alive in every phase (`Scalars::base`).
    base: Breakdown,
}

impl Params<'_> {
    /// The least peak reserved memory of the plan at any batch, in what the search judges
    /// fits by (`Evaluation::peak_reserved_upper_bytes`): the peak is at least the
    /// optimizer step's total, the terms of `base` (alive in every phase) + the sharded
    /// gradients + the optimizer's temporaries (`Prepared::offer_step_end`); the device adds
    /// at least the CUDA context and cuBLAS's workspaces (`Prepared::evaluation`); and
    /// `reserved_upper` rises with its input.
    pub(crate) fn reserved_floor(&self, gpu: Option<&GpuSpec>) -> u64 {
        let fixed: u128 = self.base.entries().iter().map(|&(_, x)| x as u128).sum();
        let step = fixed + self.fixed.gradients as u128 + self.fixed.temporaries as u128;
        let allocated = u64::try_from(step).unwrap_or(u64::MAX);
        let reserved = allocated.saturating_add(crate::device::CUDA_CONTEXT_BYTES).saturating_add(crate::device::cublas_workspace(gpu));
        crate::device::reserved_upper(reserved, crate::device::CUDA_CONTEXT_BYTES)
    }

    /// The floor's allocated part (`Scalars::fixed`) is beyond what `Prepared::evaluation`
    /// prices (it answers an overflow error there).
    pub(crate) fn overflows(&self) -> bool {
        let fixed: u128 = self.base.entries().iter().map(|&(_, x)| x as u128).sum();
        fixed >= (u64::MAX / 4) as u128
    }
}

/// The trainable parameters of a plan ([`Estimator::trainable_set`]).
struct TrainableSet {
    /// Of the LoRA adapters (0 under full fine-tuning).
    adapter_params: u64,
    /// All of them: the adapters, or the unfrozen layers plus `head_train_params`.
    trainable: u64,
    /// Full fine-tuning's trainable parameters outside the layers (norm, embeddings, head).
    head_train_params: u64,
}

/// The fixed memory terms that sharding and offloading divide or move, in bytes
/// ([`Estimator::sharded`]).
#[derive(Default)]
struct Fixed {
    weights: u64,
    gradients: u64,
    states: u64,
    temporaries: u64,
    dist_buffers: u64,
    host_fixed: u64,
    /// Grads alive across micro-batches (FSDP2: unsharded; `gradients` otherwise).
    accum_gradients: u64,
    fsdp_units: crate::fsdp::PhaseBytes,
}

impl Fixed {
    fn unsharded(weights: u64, gradients: u64, states: u64, temporaries: u64) -> Self {
        Fixed { weights, gradients, states, temporaries, ..Default::default() }
    }
}

/// What [`Estimator::layer_segments`] adds up besides the segments.
#[derive(Default)]
struct LayerSegments {
    /// The input of the layer above the last one requires grad (the final norm's input).
    input_grad: bool,
    /// The lowest layer in the autograd graph (FLOPs: backward starts there).
    first_in_graph: Option<usize>,
    /// Autocast's half weight copies that autograd keeps (without checkpointing).
    autocast_copies: u64,
    /// Activation offloading's host bytes per token.
    host_per_token: u64,
    /// A vision tower block is in the autograd graph.
    tower_in_graph: bool,
    /// What the images report, kept bytes per language-model token.
    vision: Option<crate::vision::VisionReport>,
    /// What cross-attention layers read (cross.rs), when they read images.
    cross: Option<crate::cross::CrossCtx>,
}

/// Weights and quantisation state in bytes: `total params · param bytes` (full, LoRA);
/// QLoRA: the layers' `nn.Linear` weights in NF4 ([`nf4_bytes`]) plus the rest at 4 bytes
/// (or the float storage's); LLM.int8: 1 byte per linear weight plus fp32 per output row.
fn weight_bytes(an: &Analysis, plan: &Plan) -> (u64, u64) {
    let layer_lin_w: u64 = an.layers_linear_weight_params;
    match plan.method {
        Method::Full | Method::Lora => (sat(an.total_params, plan.dtype.param_bytes()), 0),
        // peft `prepare_model_for_kbit_training` casts every non-quantised half
        // parameter (embeddings, norms, head, biases) to fp32.
        // With a float `bnb_4bit_quant_storage` (FSDP-QLoRA, peft's guide) the model loads
        // in that dtype and trl skips the upcast for sharded QLoRA: the rest stays half.
        Method::Qlora => {
            let (packed, state) = nf4_bytes(layer_lin_w, plan.bnb_4bit_use_double_quant);
            let rest = if plan.bnb_4bit_quant_storage.is_float() { plan.dtype.compute_bytes() } else { 4 };
            (packed.saturating_add(sat(an.total_params - layer_lin_w, rest)), state)
        }
        // LLM.int8: int8 weights plus a fp32 scale per output row (SCB).
        Method::Lora8bit => {
            let rows: u64 = an.layers_linear_rows;
            (layer_lin_w.saturating_add(sat(an.total_params - layer_lin_w, 4)), sat(rows, 4))
        }
    }
}

/// QLoRA's packed 4-bit layer weights, `⌈linear weights / 2⌉` bytes (0 for other methods).
fn qlora_packed(an: &Analysis, plan: &Plan) -> u64 {
    if plan.method == Method::Qlora {
        an.layers_linear_weight_params.div_ceil(2)
    } else {
        0
    }
}

/// Optimizer (states, temporaries, paged states) in bytes for `trainable` parameters:
/// AdamW keeps `2 · trainable · state bytes` + a fp32 step per tensor (state bytes: the
/// parameter dtype's under full fine-tuning, else fp32); bitsandbytes 8-bit `2 · trainable`
/// + fp32 absmax per 256-block of each state; Adafactor factored second moments.
fn optimizer_bytes(an: &Analysis, plan: &Plan, mask: u64, trainable: u64) -> (u64, u64, u64) {
    let full = plan.method == Method::Full;
    let pb = plan.dtype.param_bytes();
    let state_bytes_per = if full { pb } else { 4 };
    let n_tensors_trainable = if full { an.num_tensors } else { 2 * (an.layers.len() as u64) * (mask.count_ones() as u64) };
    match plan.optim {
        // exp_avg + exp_avg_sq in the parameter dtype, + a fp32 `step` per tensor
        Optim::AdamwTorchFused => (sat(trainable, 2 * state_bytes_per) + 4 * n_tensors_trainable, 0, 0),
        // foreach: `_foreach_sqrt(exp_avg_sq)` materialises one more state-sized list
        Optim::AdamwTorch => (
            sat(trainable, 2 * state_bytes_per) + 4 * n_tensors_trainable,
            sat(trainable, state_bytes_per),
            0,
        ),
        // bitsandbytes 8-bit: 1 byte per state + fp32 absmax per 256-block, two states
        Optim::Adamw8bit => (sat(trainable, 2) + sat(trainable.div_ceil(256), 8), 0, 0),
        Optim::PagedAdamw8bit => (0, 0, sat(trainable, 2) + sat(trainable.div_ceil(256), 8)),
        Optim::PagedAdamw32bit => (0, 0, sat(trainable, 8)),
        // Adafactor (HF defaults, no first moment): factored row+col second moments;
        // works tensor by tensor with fp32 copies of grad, param, update.
        Optim::Adafactor => {
            let factored = (trainable as f64).sqrt() as u64 * 2 * state_bytes_per;
            // per tensor: grad.float(), p.float() (half params only), grad²+eps, and the
            // rank-1 approximation row⊗col — all fp32 (transformers/optimization.py Adafactor.step)
            let copies = if state_bytes_per < 4 || pb < 4 { 4 } else { 2 };
            (factored.max(sat(trainable / 1024, state_bytes_per)), sat(an.largest_tensor.min(trainable), 4 * copies), 0)
        }
        Optim::Sgd => (0, 0, 0), // TrainingArguments has momentum 0 for SGD
    }
}

/// Bytes per token the tail keeps for backward: the final norm's saved input (RMSNorm:
/// `4h + 4`, fp32 input and rstd; LayerNorm: `r·h + 8`; Liger: `e·h + 4`) and its output
/// when the weights train, the head's input when it trains (or Liger's fused loss), the
/// token ids of a training embedding and a dropout mask.
fn tail_per_token(shape: &ModelShape, plan: &Plan, cx: &PlanCtx, input_grad: bool, b: &Basis) -> u64 {
    let (h, w, full) = (shape.hidden_size, cx.w, b.full);
    let mut per_tok = 0u64;
    let liger_norm = plan.use_liger_kernel && shape.norm == crate::shape::NormKind::RmsNorm;
    if input_grad || full {
        per_tok += if liger_norm { w.e * h + 4 } else if shape.norm == crate::shape::NormKind::RmsNorm { 4 * h + 4 } else { w.r * h + 8 };
        per_tok += crate::recurrent::stack_norms_per_token(shape);
        if full {
            per_tok += w.r * h;
        }
    }
    if plan.use_liger_kernel && plan.trainer == Trainer::Sft {
        // the fused loss keeps grad_input and loss_1d, and no head input (levers.rs)
        per_tok += crate::levers::liger_kept_per_token(h, w.e);
    } else if b.head_trains {
        per_tok += if w.amp { 2 * h } else { w.e * h };
    }
    if b.embed_trains {
        per_tok += 8; // token ids kept by the embedding
    }
    let ple = shape.hints.per_layer_input_width;
    if ple > 0 {
        // Gemma 4's per-layer inputs (modeling_gemma4.py `project_per_layer_inputs`): one
        // `[B, S, L, P]` tensor in the compute dtype, each layer's product keeping its slice
        // until that layer's backward (under checkpointing too: the slice is the checkpointed
        // layer's input); with full fine-tuning `per_layer_projection_norm` keeps its fp32
        // input and a rsqrt per layer slice
        let l = shape.num_hidden_layers;
        per_tok += w.e * l * ple + if full { 4 * l * ple + 4 * l } else { 0 };
    }
    if cx.hidden_dropout {
        per_tok += h;
    }
    if plan.context_follows_batch() && cx.kernel != crate::activations::AttnKernel::Eager {
        // a flattened row under sdpa: transformers 5 builds the block-diagonal bool mask of
        // the whole row, [1, 1, L, L] with L = the micro-batch's tokens (masking_utils
        // `sdpa_mask` over `packed_sequence_mask_function`), and every layer's attention keeps
        // it for backward: L² bytes = L per token at context L. Measured on fake-H100 cuDNN
        // attention (benches/cases_accuracy.json, batching cases): +12.8 MiB at L = 4,096
        // (mask 16 MiB), +66.6 MiB at L = 8,192 (mask 64 MiB) over the twin without it.
        per_tok = per_tok.saturating_add(plan.attention_context(plan.per_device_train_batch_size));
    }
    per_tok
}

/// Bytes per (token × vocabulary entry) of the logits and loss: (forward end, saved for
/// the loss backward, the loss backward's buffers).
fn logits_per_tv(shape: &ModelShape, plan: &Plan, w: Widths, liger: bool) -> (u64, u64, u64) {
    if plan.trainer == Trainer::Dpo || liger {
        // (Liger's fused linear cross-entropy: chunks, priced in `timeline.rs` via levers.rs)
        // trl ≥ 1.x DPOTrainer computes log-probs through a fused LM head in chunks
        // (trl add_fused_lm_head): no [tokens, vocab] tensor is materialised
        (0, 0, 0)
    } else {
        let softcap = if shape.hints.final_logit_softcapping { w.e } else { 0 };
        // logits (e) + fp32 upcast (ForCausalLMLoss: logits.float()) + log_softmax out (fp32)
        let upcast = if w.e == 4 { 0 } else { 4 };
        // log_softmax backward: saved output + incoming grad + grad input, all fp32
        (w.e + upcast + 4 + softcap, 4 + softcap, 12 + softcap)
    }
}

impl Estimator {
    pub fn new(shape: ModelShape) -> Result<Self> {
        let analysis = Analysis::new(&shape)?;
        Ok(Estimator { shape, analysis })
    }

    pub fn from_json(text: &str) -> Result<Self> {
        Self::new(ModelShape::from_json(text)?)
    }

    /// Layers frozen by a ratio: `floor(ratio × layers)`, the lowest in forward order.
    pub fn frozen_layers(&self, plan: &Plan) -> u64 {
        let n = self.analysis.layers.len() as f64;
        (plan.freeze_ratio * n + 1e-9).floor() as u64
    }

    pub fn estimate(&self, plan: &Plan, gpu: Option<&GpuSpec>) -> Result<Estimate> {
        let mut prepared = Prepared::empty(self);
        self.prepare_in(plan, gpu, &mut prepared, false)?;
        prepared.finish(plan.per_device_train_batch_size, plan.gradient_accumulation_steps)
    }

    /// Everything about `plan` that does not depend on the batch: the batch API prices a
    /// plan's structure once and each (per-device batch, accumulation) with
    /// [`Prepared::finish`], whose terms are products of per-token quantities.
    pub fn prepare(&self, plan: &Plan, gpu: Option<&GpuSpec>) -> Result<Prepared<'_>> {
        let mut prepared = Prepared::empty(self);
        self.prepare_in(plan, gpu, &mut prepared, true)?;
        Ok(prepared)
    }

    /// [`Estimator::prepare`] into a slot (the search reuses its slots instead of moving
    /// kilobyte structs); `lines` builds what [`Prepared::evaluate`] needs, which one
    /// [`Prepared::finish`] does not. In steps: the plan's checks and target mask
    /// ([`Estimator::checked_target_mask`]), weights and quantisation ([`weight_bytes`]),
    /// the trainable set ([`Estimator::trainable_set`]), optimizer states
    /// ([`optimizer_bytes`]), sharding and offloading ([`Estimator::sharded`]), the layer
    /// segments ([`Estimator::layer_segments`]), the tail ([`tail_per_token`],
    /// [`logits_per_tv`]) and the speed and overhead models ([`Estimator::overhead`]).
    pub(crate) fn prepare_in<'a>(&'a self, plan: &Plan, gpu: Option<&GpuSpec>, out: &mut Prepared<'a>, lines: bool) -> Result<()> {
        let params = self.params(plan)?;
        self.prepare_params(plan, gpu, out, lines, params);
        Ok(())
    }

    /// The first steps of [`Estimator::prepare_in`], all that can reject a plan: its checks
    /// and target mask, weights and quantisation, the trainable set, optimizer states,
    /// sharding and offloading.
    pub(crate) fn params<'p>(&self, plan: &'p Plan) -> Result<Params<'p>> {
        let mask = self.checked_target_mask(plan)?;
        let shape = &self.shape;
        let an = &self.analysis;
        // FSDP2 computes with the gathered `param_dtype` units: activations as that dtype's (fsdp.rs)
        let act_plan = if crate::fsdp::applies(plan) && plan.dtype.is_amp() {
            std::borrow::Cow::Owned(Plan { dtype: crate::fsdp::compute_dtype(plan.dtype), ..plan.clone() })
        } else {
            std::borrow::Cow::Borrowed(plan)
        };
        let w = Widths::of(act_plan.dtype);
        let pb = plan.dtype.param_bytes();
        let full = plan.method == Method::Full;
        let frozen = self.frozen_layers(plan);
        // any freeze ratio > 0 freezes the input embeddings, even when it rounds to 0 layers
        // (forge_advisor.train.freezing.setup_lp_lora_style, benches/truth)
        let embed_trains = full && plan.freeze_ratio == 0.0;
        let head_trains = full && (!shape.tie_word_embeddings || embed_trains);
        let grad_bytes_per = if full { pb } else { 4 };
        let grad_scale = if matches!(plan.distributed, Distributed::Zero2 | Distributed::Fsdp | Distributed::Zero3) { plan.num_gpus } else { 1 };
        let images = crate::vision::image_plan(an, plan)?;
        let b = Basis { mask, full, frozen, embed_trains, head_trains, grad_bytes_per, grad_scale, images };

        // ---- parameters: weights, adapters, trainable set --------------------------
        let (weights, quant_state) = weight_bytes(an, plan);
        let set = self.trainable_set(plan, &b);
        let trainable = set.trainable;
        let adapter_bytes = sat(set.adapter_params, 4); // peft keeps adapters in fp32 (autocast_adapter_dtype)
        let gradients = sat(trainable, grad_bytes_per);

        // ---- optimizer states and temporaries ---------------------------------------
        let (states, temporaries, paged) = optimizer_bytes(an, plan, mask, trainable);

        // ---- distributed sharding -------------------------------------------------------
        let fixed = self.sharded(plan, w, Fixed::unsharded(weights, gradients, states, temporaries), trainable, &b);
        let reference_model = if plan.trainer == Trainer::Dpo && full { fixed.weights } else { 0 };
        let base = Breakdown {
            weights: fixed.weights,
            quant_state,
            lora_adapters: adapter_bytes,
            reference_model,
            optimizer_states: fixed.states,
            distributed_buffers: fixed.dist_buffers,
            ..Default::default()
        };
        Ok(Params { act_plan, w, b, set, paged, fixed, base })
    }

    /// [`Estimator::prepare_in`] after [`Estimator::params`]: the layer segments, the tail,
    /// the speed and overhead models, and the lines.
    pub(crate) fn prepare_params<'a>(&'a self, plan: &Plan, gpu: Option<&GpuSpec>, out: &mut Prepared<'a>, lines: bool, params: Params<'_>) {
        let Params { act_plan, w, b, set, paged, fixed, base } = params;
        let (shape, an) = (&self.shape, &self.analysis);
        let (full, frozen, embed_trains, grad_bytes_per, grad_scale, mask) = (b.full, b.frozen, b.embed_trains, b.grad_bytes_per, b.grad_scale, b.mask);
        let n_layers = an.layers.len() as u64;
        let trainable = set.trainable;
        let n_gpus = plan.num_gpus;

        // ---- activations per layer (per token; multiplied out in `finish`) ---------------
        let cx = PlanCtx::new(shape, &act_plan, gpu);
        out.est = self;
        let acts = self.layer_segments(plan, &act_plan, &cx, &b, &mut out.segs);

        // ---- tail: final norm, head, logits and loss --------------------------------
        let h = shape.hidden_size;
        // the token embedding is vocab × hidden of the embedding parameters; the rest are other
        // tables (Gemma 4's per-layer embeddings [V_p, L·P]), which a tied head does not share
        let token_embedding = an.embedding_params.min(shape.vocab_size.saturating_mul(h));
        let tail_per_token = tail_per_token(shape, plan, &cx, acts.input_grad, &b);
        let mut autocast_copies = acts.autocast_copies;
        if w.amp {
            autocast_copies = autocast_copies.saturating_add(sat(an.head_params.max(if shape.tie_word_embeddings { token_embedding } else { 0 }), 2));
        }
        let liger = plan.use_liger_kernel && plan.trainer == Trainer::Sft;
        let logits_per_tv = logits_per_tv(shape, plan, w, liger);

        if matches!(plan.distributed, Distributed::Fsdp | Distributed::Zero3) {
            // half copies exist only for the gathered units: the shard plus two in flight
            autocast_copies /= n_gpus;
        }

        let head_grad = sat(if full { set.head_train_params - if embed_trains { an.embedding_params + an.position_params } else { 0 } } else { 0 }, grad_bytes_per);
        // a tied head's grad waits in autograd's input buffer for the embedding's
        let held_head = if shape.tie_word_embeddings && embed_trains { sat(token_embedding, grad_bytes_per) } else { 0 };
        let vh = sat(token_embedding, grad_bytes_per);
        let vh_other = sat(an.embedding_params - token_embedding, grad_bytes_per);
        let vision_flops = match (an.vision.as_deref(), b.images) {
            (Some(v), Some(ip)) => crate::vision::flops_per_lm_token(v, &ip, plan, acts.tower_in_graph),
            _ => 0.0,
        } + acts.cross.map_or(0.0, |c| crate::cross::flops_correction(an, shape, plan, &c, frozen));
        let flops_per_token = crate::throughput::flops_per_token(self, plan, mask, frozen, acts.first_in_graph) + vision_flops;
        let quality = crate::objective::quality_score(plan, crate::objective::targets_all_linear(plan, mask & an.all_linear_mask, an.all_linear_mask));
        out.s = Scalars {
            tokens_per_sequence: if plan.trainer == Trainer::Dpo { 2 * plan.max_length } else { plan.max_length },
            lengths_vary: plan.batching.lengths_vary(),
            num_gpus: plan.num_gpus,
            gradient_checkpointing: plan.gradient_checkpointing,
            speed: gpu.and_then(|g| crate::throughput::SpeedModel::new(self, plan, g, trainable / grad_scale)),
            overhead: gpu.map(|g| self.overhead(plan, g, trainable, grad_bytes_per, acts.host_per_token)),
            tail_per_token,
            logits_per_tv,
            logits_width: if plan.trainer == Trainer::Dpo { 0 } else { w.e },
            fixed: base.entries().iter().map(|&(_, x)| x as u128).sum(),
            base,
            temporaries: fixed.temporaries,
            paged,
            cublas_workspace: crate::device::cublas_workspace(gpu),
            autocast_copies,
            gradients: fixed.gradients,
            accum_gradients: fixed.accum_gradients,
            fsdp_units: fixed.fsdp_units,
            head_grad,
            liger: liger.then_some((h, shape.vocab_size, w.e, head_grad)),
            host_fixed: fixed.host_fixed,
            host_per_token: acts.host_per_token,
            vision: acts.vision,
            held_head,
            vh,
            vh_other,
            embed_trains,
            trainable,
            frozen: frozen.min(n_layers),
            flops_per_token,
            quality,
        };
        out.replan = plan.context_follows_batch().then(|| (plan.clone(), gpu.cloned()));
        if lines {
            out.build_lines();
        } else {
            out.lines = Default::default();
        }
    }

    /// The plan's checks that need the model (after [`Plan::validate`]) and its LoRA target
    /// mask (0 without adapters): DPO only on decoder-only models, and a rank no larger than
    /// the smallest side of any targeted linear (lora_A is r×in, lora_B out×r, peft
    /// `LoraLayer.update_layer`).
    fn checked_target_mask(&self, plan: &Plan) -> Result<u64> {
        plan.validate()?;
        let an = &self.analysis;
        if plan.trainer == Trainer::Dpo && self.shape.is_encoder_decoder {
            return Err(Error::field("trainer", "dpo", "decoder-only models (seq2seq DPO is not modelled)"));
        }
        // the modules' bits and the fused expert tensors' (`lora_target_parameters`): apart
        // bits of one mask (analysis.rs `TargetNames::register`)
        let mask = if plan.uses_lora() {
            let params = an.param_mask(plan.lora_target_parameters.as_ref())?;
            // `target_modules=[]` with parameters only is peft's "target_parameters alone"
            let modules = match &plan.lora_target_modules {
                Some(crate::plan::Targets::Names(list)) if list.is_empty() && params != 0 => 0,
                t => an.target_mask(t.as_ref())?,
            };
            modules | params
        } else {
            0
        };
        // fast check first: the rank fits the narrowest targeted linear of every target bit;
        // otherwise find the first offending linear for the message
        let mut rank_fits = true;
        let mut bits = mask;
        while bits != 0 {
            rank_fits &= plan.lora_r <= an.min_side_by_bit[bits.trailing_zeros() as usize];
            bits &= bits - 1;
        }
        if plan.uses_lora() && !rank_fits {
            for t in &an.types {
                for l in &t.lins {
                    if mask & (1 << l.bit) != 0 && l.targetable && plan.lora_r > l.in_f.min(l.out_f) {
                        return Err(Error::field(
                            "lora_r",
                            plan.lora_r,
                            format!("at most {} (the smallest side of a targeted linear)", l.in_f.min(l.out_f)),
                        ));
                    }
                }
            }
        }
        Ok(mask)
    }

    /// The trainable parameters: per unfrozen layer [`layer_trainable`] (all of its
    /// parameters under full fine-tuning, else `r · Σ (in + out) · count` of its adapters),
    /// plus under full fine-tuning the final norm and other top-level parameters, the
    /// embeddings unless frozen, and the head unless tied to frozen embeddings.
    fn trainable_set(&self, plan: &Plan, b: &Basis) -> TrainableSet {
        let (an, full, frozen, mask) = (&self.analysis, b.full, b.frozen, b.mask);
        // every layer of a type trains the same parameters unless frozen: price each run of
        // one type once (`live` = its unfrozen layers)
        let mut adapter_params = 0u64;
        let mut trainable = 0u64;
        for &(t, start, end) in &an.runs {
            let live = (end as u64).saturating_sub(frozen.max(start as u64));
            if live > 0 {
                let info = &an.types[t as usize];
                let tp = layer_trainable(info.params, &info.lora_sums(mask), full, plan.lora_r);
                if !full {
                    adapter_params += tp * live;
                }
                trainable += tp * live;
            }
        }
        let mut head_train_params = 0u64;
        if full {
            // final norm always trains; embeddings unless frozen; the head with them when tied
            head_train_params += an.norm_params + an.other_params;
            if b.embed_trains {
                head_train_params += an.embedding_params + an.position_params;
            }
            if b.head_trains {
                head_train_params += an.head_params;
            }
            trainable += head_train_params;
        }
        if let (Some(v), Some(ip)) = (an.vision.as_deref(), b.images) {
            // the tower trains whole (full, unfrozen) or through adapters on its blocks;
            // the projector trains with full fine-tuning
            if ip.tower_weights {
                trainable += v.tower_params;
            } else if ip.tower_mask != 0 {
                let per_rank: u64 = v.an.layers.iter().map(|&t| v.an.types[t as usize].lora_sums(ip.tower_mask).params_per_rank).sum();
                adapter_params += sat(plan.lora_r, per_rank);
                trainable += sat(plan.lora_r, per_rank);
            }
            if ip.projector_weights {
                trainable += v.projector_params;
            }
        }
        TrainableSet { adapter_params, trainable, head_train_params }
    }

    /// The fixed terms on one GPU of `plan.num_gpus` = N: DDP adds a bucket copy of the
    /// grads; ZeRO-2 shards states and grads (`x / N`) and keeps a 500M-element reduce
    /// bucket; FSDP2 and ZeRO-3 also shard the weights (`(weights − replicated) / N +
    /// replicated`, [`Estimator::fsdp_sharded`]); then the offloading levers move
    /// shards and optimizer to the host (levers.rs).
    fn sharded(&self, plan: &Plan, w: Widths, mut f: Fixed, trainable: u64, b: &Basis) -> Fixed {
        let (n_gpus, grad_bytes_per) = (plan.num_gpus, b.grad_bytes_per);
        // 4-bit weights in bitsandbytes' uint8 storage do not shard (plan.rs `QuantStorage`)
        let replicated = if plan.bnb_4bit_quant_storage.is_float() { 0 } else { qlora_packed(&self.analysis, plan) };
        let mut fsdp_accum_gradients = None;
        match plan.distributed {
            Distributed::None => {}
            // DDP buckets hold a second copy of the grads (gradient_as_bucket_view=False)
            Distributed::Ddp => f.dist_buffers = f.gradients,
            Distributed::Zero2 => {
                f.states /= n_gpus;
                f.temporaries /= n_gpus;
                f.gradients /= n_gpus;
                f.dist_buffers = sat(500_000_000, grad_bytes_per).min(sat(trainable, grad_bytes_per)); // reduce bucket
            }
            Distributed::Fsdp => {
                // earlier micro-batches' grads stay unsharded until the last one reduces (fsdp.rs)
                fsdp_accum_gradients = Some(f.gradients);
                self.fsdp_sharded(plan, &mut f, replicated, b);
            }
            Distributed::Zero3 => {
                f.states /= n_gpus;
                f.temporaries /= n_gpus;
                f.gradients /= n_gpus;
                let largest_layer = self.analysis.largest_layer_params;
                f.weights = (f.weights - replicated) / n_gpus + replicated;
                if plan.offload_params {
                    f.host_fixed = f.weights;
                    f.weights = 0;
                }
                // two unsharded layers in flight (current + prefetch): params gathered and
                // grads reduced in the compute dtype (FSDP MixedPrecision / ZeRO-3 bf16)
                f.dist_buffers = sat(largest_layer, 2 * 2 * w.e);
            }
        }
        if plan.offload_optimizer {
            // DeepSpeed ZeRO-2/3: states, fp32 master and grad copies on the host; CPU Adam
            let local = trainable / n_gpus.max(1);
            f.host_fixed = f.host_fixed.saturating_add(crate::levers::offloaded_optimizer_host_bytes(local, f.states));
            (f.states, f.temporaries) = (0, 0);
        }
        f.accum_gradients = fsdp_accum_gradients.unwrap_or(f.gradients);
        f
    }

    /// FSDP2 (`fully_shard`) on N GPUs: states, temporaries, grads and the non-replicated
    /// weights `/ N`, and the unsharded units alive in each phase (fsdp.rs `unit_bytes`;
    /// QLoRA's layers gather their packed 4-bit storage and norms, `phase_bytes`); with
    /// `offload_params` (CPUOffloadPolicy) shards, grads and states live on the host.
    fn fsdp_sharded(&self, plan: &Plan, f: &mut Fixed, replicated: u64, b: &Basis) {
        let (an, n_gpus) = (&self.analysis, plan.num_gpus);
        f.states /= n_gpus;
        f.temporaries /= n_gpus;
        f.gradients /= n_gpus;
        f.weights = (f.weights - replicated) / n_gpus + replicated;
        let (units, gb) = (crate::fsdp::Units::of(an, self.shape.tie_word_embeddings), crate::fsdp::gather_bytes(plan.dtype));
        let mut phases = crate::fsdp::unit_bytes(&units, gb);
        if plan.method == Method::Qlora {
            // a 4-bit layer gathers its packed storage (nothing when uint8: not sharded)
            // and its norms; the rest is fp32 after prepare_model_for_kbit_training
            // unless the storage is float (see the weights above)
            let (lin, other) = an.types.iter().map(|t| (t.linear_weight_params, t.params - t.linear_weight_params)).max().unwrap_or((0, 0));
            let rest = if plan.bnb_4bit_quant_storage.is_float() { plan.dtype.compute_bytes() } else { 4 };
            let layer = if replicated == 0 { lin.div_ceil(2) } else { 0 } + other * rest;
            phases = crate::fsdp::phase_bytes(layer, units.tail * rest, units.embed * rest, units.tied);
        }
        f.fsdp_units = crate::fsdp::PhaseBytes {
            backward_end_sync: crate::fsdp::backward_end_sync(&units, gb, b.grad_bytes_per, n_gpus, b.embed_trains, b.full),
            ..phases
        };
        if plan.offload_params {
            // FSDP CPUOffloadPolicy: shards, their grads and the optimizer on the host
            f.host_fixed = f.weights.saturating_add(f.gradients).saturating_add(f.states);
            (f.weights, f.gradients, f.states, f.temporaries) = (0, 0, 0, 0);
        }
    }

    /// The layers that back-propagate, as [`Segment`]s of identical consecutive layers
    /// (pushed into `segs`, bottom to top), with the autocast copies and host bytes they
    /// add. Per layer: `kept` = its input under checkpointing ([`layer_checkpointed`]),
    /// else everything it saved ([`layer_saved`]) less Liger's saving; `layer_grads` =
    /// `trainable · grad bytes / grad_scale` (sharded grads: `grad_scale` = N).
    fn layer_segments(&self, plan: &Plan, act_plan: &Plan, cx: &PlanCtx, b: &Basis, segs: &mut Segments) -> LayerSegments {
        let (shape, an, w) = (&self.shape, &self.analysis, cx.w);
        // transformers 5 `gradient_checkpointing_enable` calls `enable_input_require_grads`
        // (modeling_utils.py): the embedding output requires grad, so frozen lower layers
        // stay in the graph (their checkpoint inputs are kept, backward runs through them).
        let mut acc = LayerSegments { input_grad: b.embed_trains || plan.gradient_checkpointing, ..Default::default() };
        segs.clear();
        // the decoder layers' context: with what cross-attention layers read, when they read images
        let mut cross_cx = *cx;
        // a vision tower runs first: its blocks and projector are the bottom segments, and
        // image features that require grad make the decoder's input require grad
        if let (Some(v), Some(ip)) = (an.vision.as_deref(), b.images.as_ref()) {
            let lm = crate::vision::LanguageSide {
                grad_bytes_per: b.grad_bytes_per,
                grad_scale: b.grad_scale,
                embed_trains: b.embed_trains,
                hidden_size: shape.hidden_size,
            };
            let tower = crate::vision::push_segments(v, ip, (plan, act_plan), cx, lm, segs);
            acc.input_grad |= tower.output_grad;
            if ip.cross_tokens > 0 {
                let c = crate::cross::CrossCtx { tokens: ip.cross_tokens, seq: plan.max_length, states_grad: tower.cross_states_grad, mask: b.mask };
                cross_cx = PlanCtx { cross: Some(c), ..*cx };
                acc.cross = Some(c);
            }
            acc.autocast_copies = tower.autocast_copies;
            acc.tower_in_graph = tower.in_graph;
            acc.host_per_token = tower.host_per_token;
            let tower_trainable = if ip.tower_weights {
                v.tower_params
            } else {
                v.an.layers.iter().map(|&t| sat(plan.lora_r, v.an.types[t as usize].lora_sums(ip.tower_mask).params_per_rank)).sum()
            };
            acc.vision = Some(crate::vision::VisionReport {
                patches_per_sample: ip.patches,
                image_tokens_per_sample: ip.tokens - ip.video_tokens,
                video_tokens_per_sample: ip.video_tokens,
                tower_parameters: v.tower_params,
                projector_parameters: v.projector_params,
                tower_trainable_parameters: tower_trainable,
                kept_bytes: tower.kept_per_token,
                vision_states_per_sample: ip.cross_tokens,
            });
        }
        let cx = &cross_cx;
        // Consecutive layers with the same type, liveness and input-grad flag save, keep and
        // free exactly the same bytes: each such segment is priced once. Liveness changes at
        // `frozen`; the input flag can change once, after the first layer in the graph.
        // attention's context: max_length, or the whole flattened row under a mask (plan.rs)
        let ctx = plan.attention_context(plan.per_device_train_batch_size);
        let ckpt_kept = Segment::per_token(&layer_checkpointed(shape, w), ctx);
        // Every layer of one type with the same graph flags saves, keeps and frees the same
        // bytes wherever it sits: each (type, input grad, live) is priced once per plan and
        // reused by every run of it (an interleaved stack has a run per layer).
        let mut priced: Vec<((u32, bool, bool), Option<(Segment, u64)>)> = Vec::new();
        for &(t, start, end) in &an.runs {
            let info = &an.types[t as usize];
            let first_live = (b.frozen.min(end as u64) as usize).max(start);
            for (mut lo, hi, live) in [(start, first_live, false), (first_live, end, true)] {
                while lo < hi {
                    let key = (t, acc.input_grad, live);
                    let layer = match priced.iter().find(|(k, _)| *k == key) {
                        Some(&(_, layer)) => layer,
                        None => {
                            let layer = self.layer_segment(plan, act_plan, cx, b, info, acc.input_grad, live, (ckpt_kept, ctx));
                            priced.push((key, layer));
                            layer
                        }
                    };
                    let in_graph = layer.is_some();
                    let n = if in_graph == acc.input_grad { hi - lo } else { 1 };
                    if let Some((layer, prefetch)) = layer {
                        // autocast's weight cache is dropped when the forward leaves autocast; a
                        // copy outlives it only if autograd saved it, which checkpointing prevents
                        if !plan.gradient_checkpointing {
                            acc.autocast_copies = acc.autocast_copies.saturating_add(sat(layer.constant, n as u64));
                        }
                        acc.host_per_token = acc.host_per_token.saturating_add(sat(prefetch, n as u64));
                        segs.push(Segment { n: n as u64, ..layer });
                        if acc.first_in_graph.is_none() {
                            acc.first_in_graph = Some(lo);
                        }
                    }
                    acc.input_grad = in_graph;
                    lo += n;
                }
            }
        }
        acc
    }

    /// One layer of type `info` whose input requires grad (`input`) and that is `live`
    /// (not frozen), as a [`Segment`] of one layer, and the activation offloading's
    /// prefetch bytes per token it adds; `None` when it is not in the autograd graph (no
    /// layer below trains and it does not).
    /// `(ckpt_kept, ctx)`: a checkpointed layer's kept bytes per token, attention's context.
    #[allow(clippy::too_many_arguments)]
    fn layer_segment(&self, plan: &Plan, act_plan: &Plan, cx: &PlanCtx, b: &Basis, info: &crate::analysis::LayerInfo, input: bool, live: bool, (ckpt_kept, ctx): (u64, u64)) -> Option<(Segment, u64)> {
        let (shape, an, w, full) = (&self.shape, &self.analysis, cx.w, b.full);
        let lora = info.lora_sums(b.mask);
        let g = LayerGrad { input, weights: full && live, lora: if live && !full { lora } else { LoraSums::default() } };
        if !(g.input || g.any_trains()) {
            return None;
        }
        let liger_norms = if shape.norm == crate::shape::NormKind::RmsNorm { 2 * an.norms_per_block } else { 0 };
        let liger_silu = shape.gated_mlp && shape.hints.hidden_act == "silu";
        let saved = layer_saved(shape, an, info, &g, cx);
        let tp = if live { layer_trainable(info.params, &lora, full, plan.lora_r) } else { 0 };
        // Liger's RMSNorm/SwiGLU save less than transformers' modules (levers.rs)
        let liger_cut = if plan.use_liger_kernel && g.input {
            crate::levers::liger_layer_saving(shape.hidden_size, info.mlp_inter.unwrap_or(0), w.e, liger_norms, liger_silu)
        } else {
            0
        };
        let full_saved = Segment::per_token(&saved, ctx).saturating_sub(liger_cut);
        // the router logits the load-balancing loss reads, outside any checkpoint
        let router = if info.moe && shape.hints.router_logits_kept { w.e * shape.num_experts } else { 0 };
        let full_saved = full_saved + router;
        let kept = if plan.gradient_checkpointing { ckpt_kept + router } else { full_saved };
        // a layer run `passes` times (HRM's recurrent stacks) keeps one set per
        // run; while one run back-propagates, the others' sets wait
        let (kept, full_saved) = (sat(kept, info.passes), full_saved.saturating_add(sat(kept, info.passes - 1)));
        // activation offloading: kept bytes wait on the host; one layer is fetched ahead
        let (kept, prefetch) = if plan.activation_offloading { (0, crate::levers::offload_prefetch_per_token(kept)) } else { (kept, 0) };
        // peft target_parameters: the merged expert weights autograd keeps
        // (not under checkpointing; offloading moves them with the rest)
        let (merged, merged_bwd) = crate::activations::expert_lora_fixed(&g.lora, act_plan.dtype, plan.lora_r);
        // Inkling's dense position bias: its [S, S] index and masks (activations_conv.rs)
        let merged = merged + crate::activations_conv::position_bias_fixed(shape, cx, ctx, ctx);
        let kept_fixed = if plan.gradient_checkpointing || plan.activation_offloading { 0 } else { merged };
        let fwd_transient = Segment::per_token(&layer_forward_transient(shape, info, &g, cx), ctx)
            .max(crate::activations::moe_combine_forward(shape, info, full_saved));
        let (mut bwd_transient, bwd_mlp) = backward_transient(shape, info, act_plan, ctx);
        if plan.gradient_checkpointing && fwd_transient > 0 {
            // the recompute runs the forward again before the layer's backward:
            // its input and the forward's transients, not yet what it saves
            // (the walk adds `full`): max(backward buffers, input + transients − full)
            bwd_transient = bwd_transient.max(kept.saturating_add(fwd_transient).saturating_sub(full_saved));
        }
        let layer = Segment {
            n: 1,
            kept,
            full: full_saved,
            transient: prefetch + bwd_transient,
            transient_mlp: prefetch + bwd_mlp,
            constant: saved.constant,
            layer_grads: sat(tp, b.grad_bytes_per) / b.grad_scale,
            kept_fixed,
            full_fixed: merged,
            bwd_fixed: merged_bwd,
            fwd_transient,
        };
        Some((layer, prefetch))
    }

    /// The collectives, offload transfers and CPU optimizer of one step (comm.rs), priced
    /// on the bytes they move: parameters as gathered (FSDP2/ZeRO-3: `gather_bytes`, else
    /// the parameter dtype; QLoRA: packed 4-bit layers + the rest), `trainable · grad
    /// bytes` of grads, the largest layer, and the offloaded activations per token.
    fn overhead(&self, plan: &Plan, g: &GpuSpec, trainable: u64, grad_bytes_per: u64, host_per_token: u64) -> crate::comm::Overhead {
        let an = &self.analysis;
        let layer_lin_w = an.layers_linear_weight_params;
        // comm.rs: collectives per step, offload transfers, CPU optimizer
        let gathered = if matches!(plan.distributed, Distributed::Fsdp | Distributed::Zero3) { crate::fsdp::gather_bytes(plan.dtype) } else { plan.dtype.param_bytes() };
        let param_bytes = if plan.method == Method::Qlora { qlora_packed(an, plan) + sat(an.total_params - layer_lin_w, gathered) } else { sat(an.total_params, gathered) };
        let largest = sat(an.largest_layer_params, gathered);
        crate::comm::Overhead::new(plan, &g.name, g.compute_capability.as_deref(), param_bytes, sat(trainable, grad_bytes_per), largest, trainable, host_per_token)
    }

    /// The full estimate of many plans against one model and GPU. Consecutive plans that
    /// differ only in per-device batch and accumulation share one prepared structure.
    pub fn estimate_many(&self, plans: &[Plan], gpu: Option<&GpuSpec>) -> Vec<Result<Estimate>> {
        self.map_prepared(plans, gpu, false, |prepared, p| {
            prepared.finish(p.per_device_train_batch_size, p.gradient_accumulation_steps)
        })
    }

    /// Peak memory and speed of many plans: what a search ranks by, without the breakdown
    /// (the advisor's batch API). Consecutive plans that differ only in per-device batch
    /// and accumulation share one prepared structure.
    pub fn evaluate_many(&self, plans: &[Plan], gpu: Option<&GpuSpec>) -> Vec<Result<Evaluation>> {
        self.map_prepared(plans, gpu, true, |prepared, p| {
            prepared.evaluate(p.per_device_train_batch_size, p.gradient_accumulation_steps)
        })
    }

    fn map_prepared<T>(
        &self,
        plans: &[Plan],
        gpu: Option<&GpuSpec>,
        lines: bool,
        f: impl Fn(&Prepared<'_>, &Plan) -> Result<T>,
    ) -> Vec<Result<T>> {
        let mut slot = Prepared::empty(self);
        // the plan whose structure `slot` holds (none after an error)
        let mut held: Option<&Plan> = None;
        plans
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if !held.is_some_and(|h| h.same_structure(p)) {
                    held = None;
                    // the lines pay off only for a structure that the next plan shares
                    let shared = plans.get(i + 1).is_some_and(|next| next.same_structure(p));
                    self.prepare_in(p, gpu, &mut slot, lines && shared)?;
                    held = Some(p);
                }
                f(&slot, p)
            })
            .collect()
    }
}

