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

use crate::activations::{layer_backward_transient, layer_checkpointed, layer_saved, LayerGrad, Saved, Widths};
use crate::analysis::Analysis;
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
        plan.validate()?;
        let shape = &self.shape;
        let an = &self.analysis;
        if plan.trainer == Trainer::Dpo && shape.is_encoder_decoder {
            return Err(Error::field("trainer", "dpo", "decoder-only models (seq2seq DPO is not modelled)"));
        }
        let mask = if plan.uses_lora() { an.target_mask(plan.lora_target_modules.as_ref())? } else { 0 };
        if plan.uses_lora() {
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
        let embed_trains = full && frozen == 0;
        let head_trains = full && (!shape.tie_word_embeddings || embed_trains);

        // ---- parameters: weights, adapters, trainable set --------------------------
        let layer_lin_w: u64 = an.layers.iter().map(|&t| an.types[t as usize].linear_weight_params).sum();
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
                let rows: u64 = an.layers.iter().map(|&t| an.types[t as usize].lins.iter().map(|l| l.out_f * l.count).sum::<u64>()).sum();
                (layer_lin_w.saturating_add(sat(an.total_params - layer_lin_w, 4)), sat(rows, 4))
            }
        };
        let mut adapter_params = 0u64;
        let mut trainable = 0u64;
        let mut per_layer_trainable: Vec<u64> = Vec::with_capacity(an.layers.len());
        for (i, &t) in an.layers.iter().enumerate() {
            let info = &an.types[t as usize];
            let live = (i as u64) >= frozen;
            let mut tp = 0;
            if live {
                if full {
                    tp = info.params;
                } else {
                    for l in &info.lins {
                        if l.targetable && mask & (1 << l.bit) != 0 {
                            // lora_A: r×in, lora_B: out×r (peft LoraLayer.update_layer)
                            let p = sat(plan.lora_r, l.in_f + l.out_f) * l.count;
                            adapter_params += p;
                            tp += p;
                        }
                    }
                }
            }
            trainable += tp;
            per_layer_trainable.push(tp);
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
                let largest_layer = an.types.iter().map(|t| t.params).max().unwrap_or(0);
                weights /= n_gpus;
                // two unsharded layers in flight (current + prefetch): params gathered and
                // grads reduced in the compute dtype (FSDP MixedPrecision / ZeRO-3 bf16)
                dist_buffers = sat(largest_layer, 2 * 2 * w.e);
            }
        }
        let reference_model = if plan.trainer == Trainer::Dpo && full { weights } else { 0 };

        // ---- activations per layer --------------------------------------------------------
        let seq_factor = if plan.trainer == Trainer::Dpo { 2 } else { 1 };
        let b = plan.per_device_train_batch_size * seq_factor;
        let s = plan.max_length;
        let tokens = sat(b, s);
        // transformers 5 `gradient_checkpointing_enable` calls `enable_input_require_grads`
        // (modeling_utils.py): the embedding output requires grad, so frozen lower layers
        // stay in the graph (their checkpoint inputs are kept, backward runs through them).
        let mut input_grad = embed_trains || plan.gradient_checkpointing;
        let mut first_in_graph: Option<usize> = None;
        let mut saved_all: Vec<u64> = Vec::with_capacity(an.layers.len());
        let mut full_saved: Vec<u64> = Vec::with_capacity(an.layers.len());
        let mut transient: Vec<u64> = Vec::with_capacity(an.layers.len());
        let mut autocast_copies = 0u64;
        let mut layer_const: Vec<u64> = Vec::with_capacity(an.layers.len());
        let mut lowest_trainable: Option<usize> = None;
        for (i, &t) in an.layers.iter().enumerate() {
            let info = &an.types[t as usize];
            let live = (i as u64) >= frozen;
            let g = LayerGrad { input: input_grad, weights: full && live, lora: if live && !full { mask } else { 0 } };
            let in_graph = g.input || g.any_trains(info);
            let saved = layer_saved(shape, info, &g, plan);
            let act = Saved { constant: 0, ..saved };
            let full_bytes = act.bytes(tokens, s);
            // autocast's weight cache is dropped when the forward leaves autocast; a copy
            // outlives it only if autograd saved it, which checkpointing prevents
            if !plan.gradient_checkpointing && in_graph {
                autocast_copies = autocast_copies.saturating_add(saved.constant);
            }
            layer_const.push(if in_graph { saved.constant } else { 0 });
            let kept = if !in_graph {
                0
            } else if plan.gradient_checkpointing {
                layer_checkpointed(shape, w).bytes(tokens, s)
            } else {
                full_bytes
            };
            saved_all.push(kept);
            full_saved.push(if in_graph { full_bytes } else { 0 });
            transient.push(if in_graph { layer_backward_transient(shape, info, plan).bytes(tokens, s) } else { 0 });
            if in_graph && first_in_graph.is_none() {
                first_in_graph = Some(i);
            }
            if in_graph && lowest_trainable.is_none() && g.any_trains(info) {
                lowest_trainable = Some(i);
            }
            input_grad = in_graph;
        }

        // ---- tail: final norm, head, logits and loss --------------------------------
        let h = shape.hidden_size;
        let v = shape.vocab_size;
        let tail_saved = {
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
            if shape.hints.hidden_dropout > 0.0 {
                per_tok += h;
            }
            sat(tokens, per_tok)
        };
        if w.amp {
            autocast_copies = autocast_copies.saturating_add(sat(an.head_params.max(if shape.tie_word_embeddings { an.embedding_params } else { 0 }), 2));
        }
        let tv = sat(tokens, v);
        let (logits_fwd, logits_saved, logits_bwd) = if plan.trainer == Trainer::Dpo {
            // trl ≥ 1.x DPOTrainer computes log-probs through a fused LM head in chunks
            // (trl add_fused_lm_head): no [tokens, vocab] tensor is materialised
            (0, 0, 0)
        } else {
            let softcap = if shape.hints.final_logit_softcapping { sat(tv, w.e) } else { 0 };
            // logits (e) + fp32 upcast (ForCausalLMLoss: logits.float()) + log_softmax out (fp32)
            let upcast = if w.e == 4 { 0 } else { 4 };
            (
                sat(tv, w.e + upcast + 4).saturating_add(softcap),
                sat(tv, 4).saturating_add(softcap),
                // log_softmax backward: saved output + incoming grad + grad input, all fp32
                sat(tv, 12).saturating_add(softcap),
            )
        };

        if matches!(plan.distributed, Distributed::Fsdp | Distributed::Zero3) {
            // half copies exist only for the gathered units: the shard plus two in flight
            autocast_copies /= n_gpus;
        }

        // ---- timeline --------------------------------------------------------------------
        let accum = plan.gradient_accumulation_steps > 1;
        let base = Breakdown {
            weights,
            quant_state,
            lora_adapters: adapter_bytes,
            reference_model,
            optimizer_states: states,
            distributed_buffers: dist_buffers,
            autocast_copies,
            ..Default::default()
        };
        let grads_prev = if accum { gradients } else { 0 };
        let acts_total: u64 = saved_all.iter().fold(tail_saved, |a, &x| a.saturating_add(x));
        let mut candidates: Vec<(Phase, Breakdown)> = Vec::with_capacity(8);
        candidates.push((
            Phase::Forward,
            Breakdown { gradients: grads_prev, activations: acts_total, logits_and_loss: logits_fwd, ..base },
        ));
        candidates.push((
            Phase::LossBackward,
            Breakdown { gradients: grads_prev, activations: acts_total, logits_and_loss: logits_bwd.max(logits_saved), ..base },
        ));
        // walk down the layers in backward order
        let head_grad = sat(if full { head_train_params - if embed_trains { an.embedding_params + an.position_params } else { 0 } } else { 0 }, grad_bytes_per);
        let mut grads_done = if accum { gradients } else { head_grad.min(gradients) };
        // a tied head's grad waits in autograd's input buffer for the embedding's
        let held_head = if shape.tie_word_embeddings && embed_trains { sat(an.embedding_params, grad_bytes_per) } else { 0 };
        let mut below: u64 = saved_all.iter().fold(tail_saved, |a, &x| a.saturating_add(x));
        let grad_scale = if matches!(plan.distributed, Distributed::Zero2 | Distributed::Fsdp | Distributed::Zero3) { n_gpus } else { 1 };
        let stop = first_in_graph.unwrap_or(an.layers.len());
        for i in (stop..an.layers.len()).rev() {
            below = below.saturating_sub(saved_all[i]);
            let layer_grads = sat(per_layer_trainable[i], grad_bytes_per) / grad_scale;
            let here = below.saturating_add(full_saved[i]);
            candidates.push((
                Phase::LayerBackward,
                Breakdown {
                    gradients: if accum { gradients } else { grads_done.saturating_add(layer_grads).min(gradients) },
                    activations: here,
                    backward_buffers: transient[i].saturating_add(held_head),
                    // the recomputed layer casts its weights again
                    autocast_copies: if plan.gradient_checkpointing { base.autocast_copies + layer_const[i] } else { base.autocast_copies },
                    ..base
                },
            ));
            if !accum {
                grads_done = grads_done.saturating_add(layer_grads);
            }
        }
        // the autograd graph (and with it autocast's weight copies) is gone after backward
        let after = Breakdown { autocast_copies: 0, ..base };
        // embedding backward: a dense [vocab, hidden] grad (embedding_dense_backward); with a
        // tied head, the head's contribution is held until it is summed with it (autograd
        // InputBuffer), so three such tensors are alive at once; accumulation adds the result
        // into the existing .grad, otherwise it becomes the .grad
        let vh = sat(an.embedding_params, grad_bytes_per);
        let embed_transient = match (embed_trains, shape.tie_word_embeddings, accum) {
            (false, _, _) => 0,
            (true, true, true) => sat(vh, 3),
            (true, true, false) => sat(vh, 2),
            (true, false, true) => vh,
            (true, false, false) => 0,
        };
        candidates.push((
            Phase::BackwardEnd,
            Breakdown { gradients, backward_buffers: embed_transient, ..after }
        ));
        candidates.push((Phase::OptimizerStep, Breakdown { gradients, optimizer_temporaries: temporaries, ..after }));
        let (peak_phase, breakdown) = candidates
            .into_iter()
            .max_by_key(|(_, b)| b.total())
            .expect("at least one phase");
        let peak_allocated = breakdown.total();
        if peak_allocated >= u64::MAX / 4 {
            return Err(Error::overflow("peak memory"));
        }

        // ---- device terms (reserved) ------------------------------------------------------
        let device = DeviceTerms {
            cuda_context: 500 * MIB,
            cublas_workspace: 32 * MIB,
            // caching allocator: blocks rounded up (512 B / 2 MiB pools) and split; grows
            // with the number of distinct large activations; 5% of the peak is typical
            allocator_reserve: peak_allocated / 20,
            paged_optimizer_states: paged,
        };
        let peak_reserved = peak_allocated
            .saturating_add(device.cuda_context)
            .saturating_add(device.cublas_workspace)
            .saturating_add(device.allocator_reserve)
            .saturating_add(device.paged_optimizer_states);

        // ---- throughput -----------------------------------------------------------------
        let flops_per_token = crate::throughput::flops_per_token(self, plan, mask, frozen, first_in_graph);
        let tokens_per_step = sat(sat(plan.per_device_train_batch_size, s), sat(plan.gradient_accumulation_steps, n_gpus));
        let (tps, step, mfu) = match gpu {
            Some(g) => crate::throughput::speed(self, plan, g, flops_per_token, weights, quant_state, tokens_per_step),
            None => (None, None, None),
        };

        Ok(Estimate {
            peak_allocated_bytes: peak_allocated,
            peak_reserved_bytes: peak_reserved,
            peak_phase,
            breakdown,
            device,
            total_parameters: an.total_params,
            trainable_parameters: trainable,
            frozen_layers: frozen.min(n_layers),
            flops_per_token,
            tokens_per_step,
            tokens_per_second: tps,
            step_seconds: step,
            mfu,
            quality: crate::objective::quality_score(plan, crate::objective::targets_all_linear(plan, mask, an.all_linear_mask)),
        })
    }

    /// Evaluate many plans against one model and GPU (the advisor's batch API).
    pub fn estimate_many(&self, plans: &[Plan], gpu: Option<&GpuSpec>) -> Vec<Result<Estimate>> {
        plans.iter().map(|p| self.estimate(p, gpu)).collect()
    }
}
