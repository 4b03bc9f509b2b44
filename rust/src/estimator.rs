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

use crate::activations::{layer_backward_transient, layer_checkpointed, layer_saved, LayerGrad, PlanCtx, Saved, Widths};
use crate::analysis::{Analysis, LoraSums};
use crate::error::{Error, Result};
use crate::gpu::GpuSpec;
use crate::plan::{Distributed, Method, Optim, Plan, Trainer};
use crate::shape::ModelShape;

const MIB: u64 = 1 << 20;

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
    /// CUDA context and kernels loaded lazily (CUDA ≥ 11.7 `CUDA_MODULE_LOADING=LAZY`).
    pub cuda_context: u64,
    /// cuBLAS/cuBLASLt workspace: `CUBLAS_WORKSPACE_CONFIG=:4096:8` on Hopper = 32 MiB.
    pub cublas_workspace: u64,
    /// The caching allocator's reserved-but-unallocated blocks (fragmentation, rounding).
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
}

/// A model prepared for estimating many plans.
pub struct Estimator {
    pub shape: ModelShape,
    pub analysis: Analysis,
}

fn sat(a: u64, b: u64) -> u64 {
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

/// Layers that back-propagate, grouped into runs of identical layers (bottom to top).
/// Byte counts are per token at the plan's sequence length (`Saved::per_token +
/// per_token_ctx · max_length`), so a batch multiplies them by its token count.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Segment {
    /// Number of layers.
    n: u64,
    /// What each keeps until its backward (its input alone under checkpointing).
    kept: u64,
    /// What each holds while it back-propagates (everything it saved).
    full: u64,
    /// Gradient buffers alive during its backward.
    transient: u64,
    /// Autocast's half copies of its weights.
    constant: u64,
    /// Gradient bytes each adds (sharded over the GPUs where grads are).
    layer_grads: u64,
}

impl Segment {
    /// Bytes per token of `x` at context length `ctx` (saturating, as `Saved::bytes`).
    fn per_token(x: &Saved, ctx: u64) -> u64 {
        x.per_token.saturating_add(x.per_token_ctx.saturating_mul(ctx))
    }
}

/// A few segments inline; spills to the heap only for unusual stacks of many layer types.
pub(crate) struct Segments {
    inline: [Segment; 8],
    len: usize,
    spill: Vec<Segment>,
}

impl Segments {
    fn new() -> Self {
        Segments { inline: [Segment::default(); 8], len: 0, spill: Vec::new() }
    }
    fn push(&mut self, s: Segment) {
        if self.spill.is_empty() && self.len < self.inline.len() {
            self.inline[self.len] = s;
            self.len += 1;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline[..self.len]);
            }
            self.spill.push(s);
        }
    }
    fn as_slice(&self) -> &[Segment] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
}

/// The phase with the largest total so far and what it holds beyond the fixed terms.
#[derive(Clone, Copy)]
struct Peak {
    total: u64,
    phase: Phase,
    gradients: u64,
    activations: u64,
    logits_and_loss: u64,
    backward_buffers: u64,
    autocast_copies: u64,
    optimizer_temporaries: u64,
}

impl Peak {
    /// Keep `candidate` if its total is at least the current one (on a tie the later
    /// phase wins, as `max_by_key`).
    fn offer(&mut self, candidate: Peak) {
        if candidate.total >= self.total {
            *self = candidate;
        }
    }
}

/// `x` clipped to 64 bits: `min(x, u64::MAX)`, which is also what the saturating sums of
/// non-negative terms in this file compute.
fn clip(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
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
        self.prepare(plan, gpu)?.finish(plan.per_device_train_batch_size, plan.gradient_accumulation_steps)
    }

    /// Everything about `plan` that does not depend on the batch: the batch API prices a
    /// plan's structure once and each (per-device batch, accumulation) with
    /// [`Prepared::finish`], whose terms are products of per-token quantities.
    pub fn prepare(&self, plan: &Plan, gpu: Option<&GpuSpec>) -> Result<Prepared<'_>> {
        plan.validate()?;
        let shape = &self.shape;
        let an = &self.analysis;
        if plan.trainer == Trainer::Dpo && shape.is_encoder_decoder {
            return Err(Error::field("trainer", "dpo", "decoder-only models (seq2seq DPO is not modelled)"));
        }
        let mask = if plan.uses_lora() { an.target_mask(plan.lora_target_modules.as_ref())? } else { 0 };
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
        let w = Widths::of(plan.dtype);
        let pb = plan.dtype.param_bytes();
        let full = plan.method == Method::Full;
        let frozen = self.frozen_layers(plan);
        let n_layers = an.layers.len() as u64;
        // any freeze ratio > 0 freezes the input embeddings, even when it rounds to 0 layers
        // (forge_advisor.train.freezing.setup_lp_lora_style, benches/truth)
        let embed_trains = full && plan.freeze_ratio == 0.0;
        let head_trains = full && (!shape.tie_word_embeddings || embed_trains);

        // ---- parameters: weights, adapters, trainable set --------------------------
        let layer_lin_w: u64 = an.layers_linear_weight_params;
        let (weights, quant_state) = match plan.method {
            Method::Full | Method::Lora => (sat(an.total_params, pb), 0),
            // peft `prepare_model_for_kbit_training` casts every non-quantised half
            // parameter (embeddings, norms, head, biases) to fp32.
            Method::Qlora => {
                let (packed, state) = nf4_bytes(layer_lin_w, plan.bnb_4bit_use_double_quant);
                (packed.saturating_add(sat(an.total_params - layer_lin_w, 4)), state)
            }
            // LLM.int8: int8 weights plus a fp32 scale per output row (SCB).
            Method::Lora8bit => {
                let rows: u64 = an.layers_linear_rows;
                (layer_lin_w.saturating_add(sat(an.total_params - layer_lin_w, 4)), sat(rows, 4))
            }
        };
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
            if embed_trains {
                head_train_params += an.embedding_params + an.position_params;
            }
            if head_trains {
                head_train_params += an.head_params;
            }
            trainable += head_train_params;
        }
        let adapter_bytes = sat(adapter_params, 4); // peft keeps adapters in fp32 (autocast_adapter_dtype)
        let grad_bytes_per = if full { pb } else { 4 };
        let gradients = sat(trainable, grad_bytes_per);
        let state_bytes_per = if full { pb } else { 4 };

        // ---- optimizer states and temporaries ---------------------------------------
        let n_tensors_trainable = if full { an.num_tensors } else { 2 * (an.layers.len() as u64) * (mask.count_ones() as u64) };
        let (mut states, mut temporaries, paged) = match plan.optim {
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
        };

        // ---- distributed sharding -------------------------------------------------------
        let n_gpus = plan.num_gpus;
        let mut weights = weights;
        let mut gradients = gradients;
        let mut dist_buffers = 0u64;
        match plan.distributed {
            Distributed::None => {}
            // DDP buckets hold a second copy of the grads (gradient_as_bucket_view=False)
            Distributed::Ddp => dist_buffers = gradients,
            Distributed::Zero2 => {
                states /= n_gpus;
                temporaries /= n_gpus;
                gradients /= n_gpus;
                dist_buffers = sat(500_000_000, grad_bytes_per).min(sat(trainable, grad_bytes_per)); // reduce bucket
            }
            Distributed::Fsdp | Distributed::Zero3 => {
                states /= n_gpus;
                temporaries /= n_gpus;
                gradients /= n_gpus;
                let largest_layer = an.largest_layer_params;
                weights /= n_gpus;
                // two unsharded layers in flight (current + prefetch): params gathered and
                // grads reduced in the compute dtype (FSDP MixedPrecision / ZeRO-3 bf16)
                dist_buffers = sat(largest_layer, 2 * 2 * w.e);
            }
        }
        let reference_model = if plan.trainer == Trainer::Dpo && full { weights } else { 0 };

        // ---- activations per layer (per token; multiplied out in `finish`) ---------------
        // transformers 5 `gradient_checkpointing_enable` calls `enable_input_require_grads`
        // (modeling_utils.py): the embedding output requires grad, so frozen lower layers
        // stay in the graph (their checkpoint inputs are kept, backward runs through them).
        let mut input_grad = embed_trains || plan.gradient_checkpointing;
        let mut first_in_graph: Option<usize> = None;
        let mut autocast_copies = 0u64;
        let grad_scale = if matches!(plan.distributed, Distributed::Zero2 | Distributed::Fsdp | Distributed::Zero3) { n_gpus } else { 1 };
        // Consecutive layers with the same type, liveness and input-grad flag save, keep and
        // free exactly the same bytes: each such segment is priced once. Liveness changes at
        // `frozen`; the input flag can change once, after the first layer in the graph.
        let cx = PlanCtx::new(shape, plan, gpu);
        let ctx = plan.max_length;
        let ckpt_kept = Segment::per_token(&layer_checkpointed(shape, w), ctx);
        let mut segs = Segments::new();
        for &(t, start, end) in &an.runs {
            let info = &an.types[t as usize];
            let lora = info.lora_sums(mask);
            let mut transient: Option<u64> = None;
            let first_live = (frozen.min(end as u64) as usize).max(start);
            for (mut lo, hi, live) in [(start, first_live, false), (first_live, end, true)] {
                while lo < hi {
                    let g = LayerGrad {
                        input: input_grad,
                        weights: full && live,
                        lora: if live && !full { lora } else { LoraSums::default() },
                    };
                    let in_graph = g.input || g.any_trains();
                    let n = if in_graph == input_grad { hi - lo } else { 1 };
                    if in_graph {
                        let saved = layer_saved(shape, an, info, &g, &cx);
                        // autocast's weight cache is dropped when the forward leaves autocast; a
                        // copy outlives it only if autograd saved it, which checkpointing prevents
                        if !plan.gradient_checkpointing {
                            autocast_copies = autocast_copies.saturating_add(sat(saved.constant, n as u64));
                        }
                        let tp = if live { layer_trainable(info.params, &lora, full, plan.lora_r) } else { 0 };
                        let full_saved = Segment::per_token(&saved, ctx);
                        segs.push(Segment {
                            n: n as u64,
                            kept: if plan.gradient_checkpointing { ckpt_kept } else { full_saved },
                            full: full_saved,
                            transient: *transient
                                .get_or_insert_with(|| Segment::per_token(&layer_backward_transient(shape, info, plan), ctx)),
                            constant: saved.constant,
                            layer_grads: sat(tp, grad_bytes_per) / grad_scale,
                        });
                        if first_in_graph.is_none() {
                            first_in_graph = Some(lo);
                        }
                    }
                    input_grad = in_graph;
                    lo += n;
                }
            }
        }

        // ---- tail: final norm, head, logits and loss --------------------------------
        let h = shape.hidden_size;
        let tail_per_token = {
            let mut per_tok = 0u64;
            if input_grad || full {
                per_tok += if shape.norm == crate::shape::NormKind::RmsNorm { 4 * h + 4 } else { w.r * h + 8 };
                if full {
                    per_tok += w.r * h;
                }
            }
            if head_trains {
                per_tok += if w.amp { 2 * h } else { w.e * h };
            }
            if embed_trains {
                per_tok += 8; // token ids kept by the embedding
            }
            if cx.hidden_dropout {
                per_tok += h;
            }
            per_tok
        };
        if w.amp {
            autocast_copies = autocast_copies.saturating_add(sat(an.head_params.max(if shape.tie_word_embeddings { an.embedding_params } else { 0 }), 2));
        }
        // bytes per (token × vocabulary entry) of the logits and loss
        let logits_per_tv: (u64, u64, u64) = if plan.trainer == Trainer::Dpo {
            // trl ≥ 1.x DPOTrainer computes log-probs through a fused LM head in chunks
            // (trl add_fused_lm_head): no [tokens, vocab] tensor is materialised
            (0, 0, 0)
        } else {
            let softcap = if shape.hints.final_logit_softcapping { w.e } else { 0 };
            // logits (e) + fp32 upcast (ForCausalLMLoss: logits.float()) + log_softmax out (fp32)
            let upcast = if w.e == 4 { 0 } else { 4 };
            // log_softmax backward: saved output + incoming grad + grad input, all fp32
            (w.e + upcast + 4 + softcap, 4 + softcap, 12 + softcap)
        };

        if matches!(plan.distributed, Distributed::Fsdp | Distributed::Zero3) {
            // half copies exist only for the gathered units: the shard plus two in flight
            autocast_copies /= n_gpus;
        }

        let head_grad = sat(if full { head_train_params - if embed_trains { an.embedding_params + an.position_params } else { 0 } } else { 0 }, grad_bytes_per);
        // a tied head's grad waits in autograd's input buffer for the embedding's
        let held_head = if shape.tie_word_embeddings && embed_trains { sat(an.embedding_params, grad_bytes_per) } else { 0 };
        let vh = sat(an.embedding_params, grad_bytes_per);
        let flops_per_token = crate::throughput::flops_per_token(self, plan, mask, frozen, first_in_graph);
        let quality = crate::objective::quality_score(plan, crate::objective::targets_all_linear(plan, mask, an.all_linear_mask));
        let base = Breakdown {
            weights,
            quant_state,
            lora_adapters: adapter_bytes,
            reference_model,
            optimizer_states: states,
            distributed_buffers: dist_buffers,
            ..Default::default()
        };
        Ok(Prepared {
            est: self,
            tokens_per_sequence: if plan.trainer == Trainer::Dpo { 2 * plan.max_length } else { plan.max_length },
            max_length: plan.max_length,
            num_gpus: plan.num_gpus,
            gradient_checkpointing: plan.gradient_checkpointing,
            speed: gpu.and_then(|g| crate::throughput::SpeedModel::new(self, plan, g)),
            segs,
            tail_per_token,
            logits_per_tv,
            fixed: base.entries().iter().map(|&(_, x)| x as u128).sum(),
            base,
            temporaries,
            paged,
            autocast_copies,
            gradients,
            head_grad,
            held_head,
            vh,
            embed_trains,
            trainable,
            frozen: frozen.min(n_layers),
            flops_per_token,
            quality,
        })
    }

    /// Evaluate many plans against one model and GPU (the advisor's batch API).
    pub fn estimate_many(&self, plans: &[Plan], gpu: Option<&GpuSpec>) -> Vec<Result<Estimate>> {
        plans.iter().map(|p| self.estimate(p, gpu)).collect()
    }
}

/// A plan priced up to its batch size (see [`Estimator::prepare`]).
pub struct Prepared<'a> {
    est: &'a Estimator,
    /// Tokens one sequence puts through the model (DPO: chosen + rejected).
    tokens_per_sequence: u64,
    max_length: u64,
    num_gpus: u64,
    gradient_checkpointing: bool,
    speed: Option<crate::throughput::SpeedModel>,
    segs: Segments,
    tail_per_token: u64,
    logits_per_tv: (u64, u64, u64),
    /// The terms alive in every phase: weights, quantisation state, adapters, reference
    /// model, optimizer states, distributed buffers…
    base: Breakdown,
    /// …and their exact sum.
    fixed: u128,
    temporaries: u64,
    paged: u64,
    autocast_copies: u64,
    gradients: u64,
    head_grad: u64,
    held_head: u64,
    vh: u64,
    embed_trains: bool,
    trainable: u64,
    frozen: u64,
    flops_per_token: f64,
    quality: f64,
}

impl Prepared<'_> {
    /// What the search ranks a (batch, accumulation) by: peak memory and speed, without
    /// the breakdown ([`Prepared::finish`] gives the whole estimate).
    pub fn evaluate(&self, batch: u64, accumulation: u64) -> Result<Evaluation> {
        for (field, v) in [("per_device_train_batch_size", batch), ("gradient_accumulation_steps", accumulation)] {
            if !(1..=1 << 16).contains(&v) {
                return Err(Error::field(field, v, "[1, 65536]"));
            }
        }
        let peak = self.peak(batch, accumulation);
        let peak_allocated = peak.total;
        if peak_allocated >= u64::MAX / 4 {
            return Err(Error::overflow("peak memory"));
        }
        let device = DeviceTerms {
            cuda_context: 500 * MIB,
            cublas_workspace: 32 * MIB,
            // caching allocator: blocks rounded up (512 B / 2 MiB pools) and split; grows
            // with the number of distinct large activations; 5% of the peak is typical
            allocator_reserve: peak_allocated / 20,
            paged_optimizer_states: self.paged,
        };
        let peak_reserved = peak_allocated
            .saturating_add(device.cuda_context)
            .saturating_add(device.cublas_workspace)
            .saturating_add(device.allocator_reserve)
            .saturating_add(device.paged_optimizer_states);
        // e.g. 4 seqs × 1024 tokens × 4 accum × 1 GPU = 16,384 tokens per optimizer step
        let tokens_per_step = sat(sat(batch, self.max_length), sat(accumulation, self.num_gpus));
        let (tokens_per_second, step_seconds, mfu) = match &self.speed {
            Some(m) => m.speed(self.flops_per_token, batch, accumulation, tokens_per_step),
            None => (None, None, None),
        };
        Ok(Evaluation { peak, device, peak_reserved_bytes: peak_reserved, tokens_per_step, tokens_per_second, step_seconds, mfu })
    }

    /// The method's quality score (the same for every batch).
    pub fn quality(&self) -> f64 {
        self.quality
    }

    /// The estimate for `batch` sequences per device and `accumulation` micro-batches per
    /// optimizer step (the plan's own values give [`Estimator::estimate`]).
    pub fn finish(&self, batch: u64, accumulation: u64) -> Result<Estimate> {
        let ev = self.evaluate(batch, accumulation)?;
        let peak = ev.peak;
        let breakdown = Breakdown {
            gradients: peak.gradients,
            activations: peak.activations,
            logits_and_loss: peak.logits_and_loss,
            backward_buffers: peak.backward_buffers,
            autocast_copies: peak.autocast_copies,
            optimizer_temporaries: peak.optimizer_temporaries,
            ..self.base
        };
        debug_assert_eq!(peak.total, breakdown.total());
        Ok(Estimate {
            peak_allocated_bytes: peak.total,
            peak_reserved_bytes: ev.peak_reserved_bytes,
            peak_phase: peak.phase,
            breakdown,
            device: ev.device,
            total_parameters: self.est.analysis.total_params,
            trainable_parameters: self.trainable,
            frozen_layers: self.frozen,
            flops_per_token: self.flops_per_token,
            tokens_per_step: ev.tokens_per_step,
            tokens_per_second: ev.tokens_per_second,
            step_seconds: ev.step_seconds,
            mfu: ev.mfu,
            quality: self.quality,
        })
    }

    /// The largest phase of the step: its total (exact, clipped to 64 bits: the same
    /// `min(true, u64::MAX)` as the saturating sum of its breakdown) and the terms that
    /// vary between phases.
    fn peak(&self, batch: u64, accumulation: u64) -> Peak {
        let shape = &self.est.shape;
        let segs = self.segs.as_slice();
        let gradients = self.gradients;
        // e.g. 4 seqs × 1024 tokens = 4,096 tokens per micro-batch (DPO: × 2)
        let tokens = sat(batch, self.tokens_per_sequence);
        let tail_saved = sat(tokens, self.tail_per_token);
        let tv = sat(tokens, shape.vocab_size);
        let (logits_fwd, logits_saved, logits_bwd) =
            (sat(tv, self.logits_per_tv.0), sat(tv, self.logits_per_tv.1), sat(tv, self.logits_per_tv.2));

        // ---- timeline --------------------------------------------------------------------
        let accum = accumulation > 1;
        let fixed = self.fixed;
        let autocast = self.autocast_copies;
        let grads_prev = if accum { gradients } else { 0 };
        let acts_total: u64 = segs.iter().fold(tail_saved, |a, sg| a.saturating_add(sat(sat(sg.kept, tokens), sg.n)));
        let mut peak = Peak {
            total: clip(fixed + autocast as u128 + grads_prev as u128 + acts_total as u128 + logits_fwd as u128),
            phase: Phase::Forward,
            gradients: grads_prev,
            activations: acts_total,
            logits_and_loss: logits_fwd,
            backward_buffers: 0,
            autocast_copies: autocast,
            optimizer_temporaries: 0,
        };
        let loss_bwd = logits_bwd.max(logits_saved);
        peak.offer(Peak {
            total: clip(fixed + autocast as u128 + grads_prev as u128 + acts_total as u128 + loss_bwd as u128),
            phase: Phase::LossBackward,
            logits_and_loss: loss_bwd,
            ..peak
        });
        // walk down the layers in backward order
        let mut grads_done = if accum { gradients } else { self.head_grad.min(gradients) };
        // exact (u128) running sum of the activations kept below the current layer
        let mut below: u128 = segs.iter().fold(tail_saved as u128, |a, sg| a + sat(sg.kept, tokens) as u128 * sg.n as u128);
        for sg in segs.iter().rev() {
            let backward_buffers = sat(sg.transient, tokens).saturating_add(self.held_head);
            // the recomputed layer casts its weights again
            let layer_autocast = if self.gradient_checkpointing { autocast + sg.constant } else { autocast };
            let fixed = fixed + layer_autocast as u128 + backward_buffers as u128;
            // The m-th layer of the segment from the top (m = 1..=n) holds
            //   activations = below − m·kept + full,  gradients = min(done + m·grads, all)
            // (all of them under accumulation): a concave function of m, linear on each side
            // of the point where the gradients reach their total, so its last maximum is at
            // an end of one of those two pieces.
            let (n, kept, lg) = (sg.n as u128, sat(sg.kept, tokens) as u128, sg.layer_grads as u128);
            let full_bytes = sat(sg.full, tokens) as u128;
            let (done, all) = (grads_done as u128, gradients as u128);
            let grads_at = |m: u128| if accum { all } else { (done + m * lg).min(all) };
            let acts_at = |m: u128| below - m * kept + full_bytes;
            let (uncapped_end, capped_start) = if accum || done > all {
                (0, 1)
            } else {
                match (all - done).checked_div(lg) {
                    None => (n, n + 1), // no grads: never capped
                    Some(mc) => (mc.min(n), mc + 1),
                }
            };
            let mut best: Option<(u128, u128)> = None; // (total, m)
            for m in [1, uncapped_end, capped_start, n] {
                let on_piece = (m >= 1 && m <= uncapped_end) || (m >= capped_start.max(1) && m <= n);
                if !on_piece {
                    continue;
                }
                let total = fixed + acts_at(m) + grads_at(m);
                if best.map_or(true, |(bt, bm)| total > bt || (total == bt && m > bm)) {
                    best = Some((total, m));
                }
            }
            if let Some((total, m)) = best {
                peak.offer(Peak {
                    total: clip(total),
                    phase: Phase::LayerBackward,
                    gradients: clip(grads_at(m)),
                    activations: clip(acts_at(m)),
                    logits_and_loss: 0,
                    backward_buffers,
                    autocast_copies: layer_autocast,
                    optimizer_temporaries: 0,
                });
            }
            below -= n * kept;
            if !accum {
                grads_done = grads_done.saturating_add(sat(sg.layer_grads, sg.n));
            }
        }
        // the autograd graph (and with it autocast's weight copies) is gone after backward;
        // embedding backward: a dense [vocab, hidden] grad (embedding_dense_backward); with a
        // tied head, the head's contribution is held until it is summed with it (autograd
        // InputBuffer), so three such tensors are alive at once; accumulation adds the result
        // into the existing .grad, otherwise it becomes the .grad
        let embed_transient = match (self.embed_trains, shape.tie_word_embeddings, accum) {
            (false, _, _) => 0,
            (true, true, true) => sat(self.vh, 3),
            (true, true, false) => sat(self.vh, 2),
            (true, false, true) => self.vh,
            (true, false, false) => 0,
        };
        let after = Peak {
            total: clip(fixed + gradients as u128 + embed_transient as u128),
            phase: Phase::BackwardEnd,
            gradients,
            activations: 0,
            logits_and_loss: 0,
            backward_buffers: embed_transient,
            autocast_copies: 0,
            optimizer_temporaries: 0,
        };
        peak.offer(after);
        peak.offer(Peak {
            total: clip(fixed + gradients as u128 + self.temporaries as u128),
            phase: Phase::OptimizerStep,
            backward_buffers: 0,
            optimizer_temporaries: self.temporaries,
            ..after
        });
        peak
    }
}

/// Peak memory and speed of one (batch, accumulation): what [`Prepared::evaluate`] gives.
#[derive(Clone, Copy)]
pub struct Evaluation {
    peak: Peak,
    device: DeviceTerms,
    pub peak_reserved_bytes: u64,
    pub tokens_per_step: u64,
    pub tokens_per_second: Option<f64>,
    pub step_seconds: Option<f64>,
    pub mfu: Option<f64>,
}

impl Evaluation {
    pub fn peak_allocated_bytes(&self) -> u64 {
        self.peak.total
    }
}
