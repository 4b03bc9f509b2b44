//! Training FLOPs per token and the time they take.
//!
//! Matmul FLOPs follow Kaplan et al. 2020 / Narayanan et al. 2021: a linear layer costs
//! 2·in·out per token forward, and backward costs 2·in·out for the input gradient plus
//! 2·in·out for the weight gradient when the weight trains. Causal attention costs
//! 2·2·heads·head_dim·ctx/2 per token forward (QKᵀ and PV, half the matrix is masked;
//! eager attention computes the whole matrix); FlashAttention's backward recomputes the
//! scores, 2.5× the forward (Dao 2023). Gradient checkpointing adds one more forward of
//! the checkpointed layers.
//!
//! LoRA on fused experts (peft `target_parameters`) adds the experts' weight gradient per
//! routed token; its merge `W + s·B·A` (one `baddbmm` of `2·E·in·out·r` FLOPs per tensor and
//! micro-batch, twice that backward) does not depend on the tokens and is not priced.
//!
//! DPO (trl's `DPOTrainer`): a token is a token of the chosen or the rejected sequence
//! (`concatenated_forward` runs both), so the step holds twice the pairs' tokens; each also
//! goes once through the reference model's forward (no grad, no recompute): the frozen
//! copy under full DPO, the same weights with the adapters disabled under LoRA DPO — the
//! base's forward FLOPs without the LoRA terms, plus one more 4-bit dequantisation pass.
//!
//! Time per optimizer step is a roofline sum: matmul FLOPs / (peak × efficiency), the
//! efficiency rising with tokens per micro-batch (small matmuls under-fill the GPU); the
//! memory-bound work at the GPU's bandwidth (logits and loss, the optimizer step and
//! gradient clipping over every trainable parameter, 4-bit dequantisation); and a host
//! overhead per layer and micro-batch. Two constants are fitted on the calibration rows of
//! `benches/published_gpu` (`EFFICIENCY_MAX`, `HOST_SECONDS_PER_LAYER`); the byte counts
//! are counted in the libraries' source. A measured calibration stored for the device
//! scales the result.

use crate::shape::Role;
use crate::estimator::Estimator;
use crate::gpu::GpuSpec;
use crate::plan::{Attention, Method, Optim, Plan, Trainer};

/// Best sustained fraction of dense peak for large transformer matmuls. Fitted on the
/// calibration rows of `benches/published_gpu` (`fit_speed`): the step time of PEFT's LoRA r32
/// run on an L40S grows by 2.9e-4 s per token of padded length (batch 4, 13.0 GFLOP per token,
/// 362 TFLOP/s peak), which with the logits' bytes and `EFFICIENCY_HALF_TOKENS` gives 0.53.
/// One Ada GPU is all the published set holds: other generations use the same value.
pub const EFFICIENCY_MAX: f64 = 0.53;
/// Tokens per micro-batch at which efficiency reaches half of `EFFICIENCY_MAX` (small
/// matmuls under-fill the GPU's SMs; not fitted: every published row has ~840 tokens).
pub const EFFICIENCY_HALF_TOKENS: f64 = 512.0;

pub fn flops_per_token(est: &Estimator, plan: &Plan, mask: u64, frozen: u64, first_in_graph: Option<usize>) -> f64 {
    let train = training_flops_per_token(est, plan, mask, frozen, first_in_graph);
    if plan.trainer == Trainer::Dpo { train + reference_forward_flops(est, plan) } else { train }
}

/// FLOPs per token of the DPO reference model's forward: every layer's attention and
/// linears forward (2·in·out per linear, top-k of the experts) and the LM head (2·h·V),
/// without LoRA terms (peft's `disable_adapter`) or any backward.
pub fn reference_forward_flops(est: &Estimator, plan: &Plan) -> f64 {
    let shape = &est.shape;
    let an = &est.analysis;
    let s = plan.max_length as f64;
    let eager = plan.attn_implementation == Attention::Eager || shape.hints.eager_only;
    let attn = 4.0 * (shape.num_attention_heads * shape.head_dim) as f64 * s * if eager { 1.0 } else { 0.5 };
    let top_k = shape.num_experts_per_tok.max(1) as f64;
    let per_type: Vec<f64> = an
        .types
        .iter()
        .map(|info| {
            (if info.attention { attn } else { 0.0 }) + info.mixer_fwd_flops as f64 + info.lins.iter().map(|l| 2.0 * (l.in_f * l.out_f) as f64 * if l.block == Role::Expert { top_k } else { l.count as f64 }).sum::<f64>()
        })
        .collect();
    let layers: f64 = an.runs.iter().map(|&(t, start, end)| per_type[t as usize] * (end - start) as f64).sum();
    layers + 2.0 * (shape.hidden_size * shape.vocab_size) as f64
}

fn training_flops_per_token(est: &Estimator, plan: &Plan, mask: u64, frozen: u64, first_in_graph: Option<usize>) -> f64 {
    let shape = &est.shape;
    let an = &est.analysis;
    let full = plan.method == Method::Full;
    // the attention context (plan.rs `attention_context`): a masked flattened row is one
    // sequence, and a kernel given an explicit mask computes every tile of it (no causal skip)
    let s = plan.attention_context(plan.per_device_train_batch_size) as f64;
    let top_k = shape.num_experts_per_tok.max(1) as f64;
    let eager = plan.attn_implementation == Attention::Eager || shape.hints.eager_only;
    let whole = eager || plan.context_follows_batch();
    let attn_fwd_per_layer = 4.0 * (shape.num_attention_heads * shape.head_dim) as f64 * s * if whole { 1.0 } else { 0.5 };
    let attn_bwd_factor = if eager { 2.0 } else { 2.5 };
    let r = plan.lora_r as f64;
    let lowest = first_in_graph.unwrap_or(an.layers.len());
    // FLOPs of one layer of type `t` (forward, backward), by liveness and graph membership
    let layer = |t: u32, live: bool, in_graph: bool| -> (f64, f64) {
        let info = &an.types[t as usize];
        // a mixer's scan: its backward costs twice its forward (the gradients of both
        // operands of every product), like a matmul's input and weight gradients
        let attn = if info.attention { attn_fwd_per_layer } else { 0.0 };
        let scan = info.mixer_fwd_flops as f64;
        let mut fwd = attn + scan;
        let mut bwd = if in_graph { attn * attn_bwd_factor + 2.0 * scan } else { 0.0 };
        for l in &info.lins {
            let mut mac = (l.in_f * l.out_f) as f64;
            if l.block == Role::Expert {
                mac = mac * top_k; // each token visits top_k of the `count` experts
            } else {
                mac *= l.count as f64;
            }
            fwd += 2.0 * mac;
            if in_graph {
                bwd += 2.0 * mac; // input gradient
                if full && live {
                    bwd += 2.0 * mac; // weight gradient
                }
            }
            if !full && live && l.targetable && mask & (1 << l.bit) != 0 {
                let lora = 2.0 * r * (l.in_f + l.out_f) as f64;
                fwd += lora;
                bwd += 2.0 * lora;
            }
            if !full && live && l.is_fused_expert() && mask & (1 << l.bit) != 0 {
                // peft target_parameters: the merged expert weight requires grad, so the
                // experts' matmul computes its weight gradient for every routed token
                bwd += 2.0 * mac;
            }
        }
        (fwd, bwd)
    };
    // Runs of one layer type split where layers unfreeze and where the graph starts: the
    // layers of a segment cost the same.
    let frozen_at = frozen.min(an.layers.len() as u64) as usize;
    let segments = an.runs.iter().flat_map(|&(t, start, end)| {
        let (a, b) = (frozen_at.clamp(start, end), lowest.clamp(start, end));
        let (p, q) = (a.min(b), a.max(b));
        [(start, p), (p, q), (q, end)].into_iter().filter(|(lo, hi)| lo < hi).map(move |(lo, hi)| (t, lo, hi))
    });
    // Every term above is an integer. Summed exactly in integers, the total is what the
    // float loop below computes whenever all its intermediates stay under 2^53 (then no
    // float operation rounds): guaranteed when the total is under 2^52.
    let head_trains = full && (!shape.tie_word_embeddings || plan.freeze_ratio == 0.0);
    if let Some(exact) = integer_flops(est, plan, mask, frozen, lowest, eager, head_trains) {
        if exact < 1u128 << 52 {
            return exact as f64;
        }
    }
    let mut total = 0.0;
    for (t, lo, hi) in segments {
        let (live, in_graph) = (lo as u64 >= frozen, lo >= lowest);
        let (fwd, bwd) = layer(t, live, in_graph);
        for _ in lo..hi {
            total += fwd + bwd;
            if plan.gradient_checkpointing && in_graph {
                total += fwd;
            }
        }
    }
    let head = 2.0 * (shape.hidden_size * shape.vocab_size) as f64;
    total += head + head + if head_trains { head } else { 0.0 };
    total
}

/// `flops_per_token` in exact integer arithmetic (segment by segment), or `None` if it
/// does not fit 128 bits.
fn integer_flops(est: &Estimator, plan: &Plan, mask: u64, frozen: u64, lowest: usize, eager: bool, head_trains: bool) -> Option<u128> {
    let shape = &est.shape;
    let an = &est.analysis;
    let full = plan.method == Method::Full;
    let ctx = plan.attention_context(plan.per_device_train_batch_size);
    let qd_s = (shape.num_attention_heads as u128).checked_mul(shape.head_dim as u128)?.checked_mul(ctx as u128)?;
    if qd_s >= 1 << 100 {
        return None;
    }
    // 4·qd·s·(1 | ½) forward; backward 2× (eager) or 2.5× (flash / memory-efficient); a
    // masked flattened row computes the whole matrix (1) with the fused kernels' 2.5×
    let (attn_fwd, attn_bwd) = if eager {
        (4 * qd_s, 8 * qd_s)
    } else if plan.context_follows_batch() {
        (4 * qd_s, 10 * qd_s)
    } else {
        (2 * qd_s, 5 * qd_s)
    };
    let r = plan.lora_r as u128;
    let top_k = shape.num_experts_per_tok.max(1) as u128;
    let frozen_at = frozen.min(an.layers.len() as u64) as usize;
    let mut total: u128 = 0;
    for &(t, start, end) in &an.runs {
        let info = &an.types[t as usize];
        let lora = info.lora_sums(if full { 0 } else { mask });
        let (a, b) = (frozen_at.clamp(start, end), lowest.clamp(start, end));
        let (p, q) = (a.min(b), a.max(b));
        for (lo, hi) in [(start, p), (p, q), (q, end)] {
            if lo >= hi {
                continue;
            }
            let (live, in_graph) = (lo as u64 >= frozen, lo >= lowest);
            let mac2 = info.fwd_flops_linear;
            // attention where the layer has it; a mixer's scan forward, backward twice that
            let (a_fwd, a_bwd) = if info.attention { (attn_fwd, attn_bwd) } else { (0, 0) };
            let scan = info.mixer_fwd_flops;
            let mut fwd = a_fwd + scan + mac2;
            let mut bwd = if in_graph { a_bwd + 2 * scan + mac2 } else { 0 }; // input gradient
            if in_graph && full && live {
                bwd += mac2; // weight gradient
            }
            if !full && live {
                // LoRA: 2·r·(in + out) per adapted linear forward, twice that backward
                let lora_flops = 2 * r * lora.in_plus_out as u128;
                fwd += lora_flops;
                bwd += 2 * lora_flops;
                // target_parameters: the merged expert weights' gradient, 2·in·out for each
                // of the top_k experts a token visits
                bwd += 2 * top_k * lora.expert_in_out as u128;
            }
            let per = fwd + bwd + if plan.gradient_checkpointing && in_graph { fwd } else { 0 };
            total = total.checked_add(per.checked_mul((hi - lo) as u128)?)?;
        }
    }
    let head = 2 * shape.hidden_size as u128 * shape.vocab_size as u128;
    total.checked_add(head * if head_trains { 3 } else { 2 })
}

/// Bytes moved per (token × vocabulary entry) by the logits and the loss, forward and
/// backward, on the Hugging Face path (transformers 5 `ForCausalLMLoss`, PyTorch's
/// `log_softmax` / `nll_loss` kernels): write the half logits (2), read them and write the
/// fp32 upcast (2 + 4), read it and write log-softmax (4 + 4); backward: read the saved
/// output and the incoming gradient and write the input gradient (4 + 4 + 4), read it and
/// write the half gradient of the logits (4 + 2), which the head's matmuls read (2):
/// 2 + 6 + 8 + 12 + 6 + 2 = 36 bytes.
pub const LOGITS_BYTES_PER_TV: f64 = 36.0;

/// Passes over the trainable parameters' bytes by the optimizer step (each pass reads or
/// writes one parameter-sized tensor), counted in PyTorch's `torch/optim/adamw.py`:
/// foreach AdamW (`_multi_tensor_adamw`): decay `p.mul_` (2), `exp_avg.lerp_` (3),
/// `exp_avg_sq.mul_` (2), `.addcmul_` (3), `_foreach_sqrt` (2), `_foreach_div_` (2),
/// `_foreach_add_(eps)` (2), `p.addcdiv_` (4) = 20; the fused kernel reads p, g, m, v and
/// writes p, m, v = 7; bitsandbytes 8-bit Adam reads/writes two 1-byte states next to a
/// half parameter and grad, ≈ 4 half-width passes; SGD without momentum: read p, g, write
/// p = 3; Adafactor (transformers `Adafactor.step`): fp32 copies of grad and param, the
/// squared grad, the row/col means and the update, ≈ 12.
pub fn optimizer_passes(optim: Optim) -> f64 {
    match optim {
        Optim::AdamwTorch => 20.0,
        Optim::AdamwTorchFused | Optim::PagedAdamw32bit => 7.0,
        Optim::Adamw8bit | Optim::PagedAdamw8bit => 4.0,
        Optim::Adafactor => 12.0,
        Optim::Sgd => 3.0,
    }
}

/// Gradient clipping (`TrainingArguments.max_grad_norm` = 1.0 by default):
/// `clip_grad_norm_` reads every grad once for `_foreach_norm` and scales them in place
/// with `_foreach_mul_` (read + write) = 3 passes over the gradients.
pub const CLIP_PASSES: f64 = 3.0;

/// Host-side cost per transformer layer per micro-batch: eager PyTorch launches every op
/// of the layer's forward and backward from Python (≈ 100–200 kernels per layer), which a
/// step of few tokens cannot hide behind GPU work. Fitted with `EFFICIENCY_MAX` on the same
/// calibration row (`benches/published_gpu` `fit_speed`): the zero-length intercept of its
/// step time, 0.0555 s, less the efficiency curve's share and the optimizer step, over 28
/// layers.
pub const HOST_SECONDS_PER_LAYER: f64 = 0.72e-3;

/// The batch-independent part of the time model for one plan on one GPU.
#[derive(Debug, Clone, Copy)]
pub struct SpeedModel {
    /// Dense peak in FLOP/s for the plan's compute dtype.
    peak: f64,
    /// Tokens one row of the micro-batch puts through the model (DPO: chosen + rejected).
    max_length: u64,
    num_gpus: f64,
    /// Host overhead of one micro-batch (layers × `HOST_SECONDS_PER_LAYER`).
    host_seconds: f64,
    /// Memory-bound terms (absent when the GPU's bandwidth is unknown).
    bandwidth: Option<Bandwidth>,
}

#[derive(Debug, Clone, Copy)]
struct Bandwidth {
    bytes_per_s: f64,
    dequant_passes: Option<f64>,
    linear_weights: f64,
    /// Logits and loss bytes per token of a micro-batch.
    logits_bytes_per_token: f64,
    /// Optimizer step and gradient clipping, once per optimizer step.
    optimizer_seconds: f64,
}

impl SpeedModel {
    /// `None` when the GPU's peak for the plan's dtype is unknown.
    pub fn new(est: &Estimator, plan: &Plan, gpu: &GpuSpec, trainable: u64) -> Option<Self> {
        let peak = gpu.peak_flops(plan.dtype.compute_kind())?;
        let bandwidth = gpu.bandwidth_bytes_per_s.filter(|b| *b > 0.0).map(|bw| {
            // trainable parameters: half (or fp32) weights under full fine-tuning, fp32 adapters
            // otherwise (peft's autocast_adapter_dtype); grads and states have their width
            let width = if plan.method == Method::Full { plan.dtype.param_bytes() as f64 } else { 4.0 };
            let opt_bytes = trainable as f64 * width * (optimizer_passes(plan.optim) + CLIP_PASSES);
            // DPO: trl's fused LM head computes log-probs in chunks without a [tokens, vocab] tensor
            let logits = if plan.trainer == Trainer::Dpo { 0.0 } else { LOGITS_BYTES_PER_TV * est.shape.vocab_size as f64 };
            Bandwidth {
                bytes_per_s: bw,
                // dequantise every 4-bit weight to bf16 in forward, backward and recompute:
                // read 0.5 B + write 2 B per weight per pass (bitsandbytes dequantize_4bit)
                // (DPO: one more, the reference forward)
                dequant_passes: (plan.method == Method::Qlora)
                    .then_some(if plan.gradient_checkpointing { 3.0 } else { 2.0 } + if plan.trainer == Trainer::Dpo { 1.0 } else { 0.0 }),
                // an exact integer sum (at most MAX_PARAMETERS < 2^53): the same as a float sum
                linear_weights: est.analysis.layers_linear_weight_params as f64,
                logits_bytes_per_token: logits,
                optimizer_seconds: opt_bytes / bw,
            }
        });
        let host_seconds = est.analysis.layers.len() as f64 * HOST_SECONDS_PER_LAYER;
        // DPO: a micro-batch of b pairs is 2·b sequences (chosen and rejected concatenated)
        let max_length = if plan.trainer == Trainer::Dpo { 2 * plan.max_length } else { plan.max_length };
        Some(SpeedModel { peak, max_length, num_gpus: plan.num_gpus as f64, host_seconds, bandwidth })
    }

    /// (tokens/s, seconds per optimizer step): matmul FLOPs at the efficiency of the
    /// micro-batch's token count, memory-bound work at the GPU's bandwidth, host overhead.
    pub fn speed(&self, flops_per_token: f64, batch: u64, accumulation: u64, tokens_per_step: u64) -> (f64, f64) {
        let peak = self.peak;
        let micro_tokens = (batch * self.max_length) as f64;
        let eff = EFFICIENCY_MAX * micro_tokens / (micro_tokens + EFFICIENCY_HALF_TOKENS);
        let n = self.num_gpus;
        let per_gpu_tokens = tokens_per_step as f64 / n;
        let micro_batches = accumulation as f64;
        let mut seconds = per_gpu_tokens * flops_per_token / (peak * eff) + micro_batches * self.host_seconds;
        if let Some(bw) = &self.bandwidth {
            if let Some(passes) = bw.dequant_passes {
                seconds += micro_batches * passes * 2.5 * bw.linear_weights / bw.bytes_per_s;
            }
            seconds += per_gpu_tokens * bw.logits_bytes_per_token / bw.bytes_per_s;
            seconds += bw.optimizer_seconds;
        }
        let tps = tokens_per_step as f64 / seconds;
        (tps, seconds)
    }

    /// Model FLOPs utilisation at `tokens_per_second`: achieved over peak FLOP/s.
    pub fn mfu(&self, flops_per_token: f64, tokens_per_second: f64) -> f64 {
        tokens_per_second * flops_per_token / (self.peak * self.num_gpus)
    }
}
