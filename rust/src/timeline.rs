//! A prepared plan over one training step: the phases' peak memory as a function of the
//! per-device batch.
//!
//! [`crate::Estimator::prepare`] prices everything about a plan that does not depend on
//! its batch; [`Prepared::finish`] walks the step's phases (forward, loss backward, each
//! layer's backward, backward end, optimizer step, see `estimator.rs`) at one batch and
//! builds the estimate of the largest. [`Prepared::evaluate`] gives what the search
//! ranks by (peak memory and speed) without the breakdown.

use crate::activations::Saved;
use crate::error::{Error, Result};
use crate::device::{allocator_reserve, reserved_upper, ReserveInputs, CUDA_CONTEXT_BYTES};
use crate::estimator::{sat, Breakdown, DeviceTerms, Estimate, Estimator, Phase};
use crate::throughput::SpeedModel;

/// Layers that back-propagate, grouped into runs of identical layers (bottom to top).
/// Byte counts are per token at the plan's attention context (`Saved::per_token +
/// per_token_ctx · ctx`, ctx = `Plan::attention_context`: max_length, or a masked flattened
/// row's batch × max_length), so a batch multiplies them by its token count.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Segment {
    /// Number of layers.
    pub(crate) n: u64,
    /// What each keeps until its backward (its input alone under checkpointing).
    pub(crate) kept: u64,
    /// What each holds while it back-propagates (everything it saved).
    pub(crate) full: u64,
    /// Gradient buffers alive during its backward…
    pub(crate) transient: u64,
    /// …of them, those of its MLP block (no attention scores), alive with `bwd_fixed`.
    pub(crate) transient_mlp: u64,
    /// Autocast's half copies of its weights.
    pub(crate) constant: u64,
    /// Gradient bytes each adds (sharded over the GPUs where grads are).
    pub(crate) layer_grads: u64,
    /// Token-independent bytes each keeps until its backward (`kept_fixed`) and holds while
    /// it back-propagates (`full_fixed`), and its backward's transient (`bwd_fixed`): peft
    /// `target_parameters`' merged expert weights (`activations::expert_lora_fixed`): the
    /// merged weight's gradient exists in the MLP block's backward, before the attention
    /// block's (eager attention's per-context buffers come later), so the layer's
    /// transient is `max(transient·T, transient_mlp·T + bwd_fixed)`.
    pub(crate) kept_fixed: u64,
    pub(crate) full_fixed: u64,
    pub(crate) bwd_fixed: u64,
    /// What each holds only while it runs forward (`activations::layer_forward_transient`).
    pub(crate) fwd_transient: u64,
}

impl Segment {
    /// Bytes per token of `x` at context length `ctx`, `per_token + per_token_ctx · ctx`
    /// (saturating: `min(true, u64::MAX)`; times the tokens it is the layer's bytes).
    pub(crate) fn per_token(x: &Saved, ctx: u64) -> u64 {
        x.per_token.saturating_add(x.per_token_ctx.saturating_mul(ctx))
    }
}

/// A few segments inline; spills to the heap only for unusual stacks of many layer types.
pub(crate) struct Segments {
    inline: [Segment; 6],
    len: usize,
    spill: Vec<Segment>,
}

impl Segments {
    pub(crate) fn new() -> Self {
        Segments { inline: [Segment::default(); 6], len: 0, spill: Vec::new() }
    }
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.spill.clear();
    }
    pub(crate) fn push(&mut self, s: Segment) {
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
    /// Phase-dependent distributed buffers (FSDP2's unsharded units, fsdp.rs).
    distributed: u64,
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

/// A plan priced up to its batch size (see [`Estimator::prepare`]).
pub struct Prepared<'a> {
    pub(crate) est: &'a Estimator,
    /// Everything about the plan but its layers (written whole by `prepare`).
    pub(crate) s: Scalars,
    pub(crate) segs: Segments,
    /// The peak as affine functions of the micro-batch's tokens, without and with
    /// gradient accumulation.
    pub(crate) lines: [Lines; 2],
    /// Up to this many tokens per micro-batch no per-token product saturates, and the
    /// lines are exact.
    pub(crate) fast_tokens_max: u64,
    /// The plan and GPU when its attention context follows the batch
    /// ([`crate::plan::Plan::context_follows_batch`]): another batch is priced by preparing
    /// the plan again at that batch.
    pub(crate) replan: Option<(crate::plan::Plan, Option<crate::gpu::GpuSpec>)>,
    /// The candidate lines while [`Prepared::build_lines`] reduces them (kept for reuse).
    scratch: Vec<(u64, u64)>,
}

/// The batch-independent numbers of a prepared plan.
#[derive(Clone, Copy, Default)]
pub(crate) struct Scalars {
    /// Tokens one sequence puts through the model (DPO: chosen + rejected).
    pub(crate) tokens_per_sequence: u64,
    /// Whether consecutive steps differ in length (`Batching::lengths_vary`).
    pub(crate) lengths_vary: bool,
    pub(crate) num_gpus: u64,
    pub(crate) gradient_checkpointing: bool,
    pub(crate) speed: Option<SpeedModel>,
    /// Communication and offloading seconds beyond compute (comm.rs).
    pub(crate) overhead: Option<crate::comm::Overhead>,
    pub(crate) tail_per_token: u64,
    pub(crate) logits_per_tv: (u64, u64, u64),
    /// Bytes per entry of the compute-dtype logits (0 when no [tokens, vocab] tensor exists).
    pub(crate) logits_width: u64,
    /// The terms alive in every phase: weights, quantisation state, adapters, reference
    /// model, optimizer states, distributed buffers…
    pub(crate) base: Breakdown,
    /// …and their exact sum.
    pub(crate) fixed: u128,
    pub(crate) temporaries: u64,
    pub(crate) paged: u64,
    /// cuBLAS workspaces of the step's handles ([`crate::device::cublas_workspace`]).
    pub(crate) cublas_workspace: u64,
    pub(crate) autocast_copies: u64,
    pub(crate) gradients: u64,
    /// Gradients alive across micro-batches under accumulation (FSDP2 keeps them unsharded
    /// until the last micro-batch; `gradients` otherwise).
    pub(crate) accum_gradients: u64,
    /// FSDP2's unsharded units per phase (zero for other plans).
    pub(crate) fsdp_units: crate::fsdp::PhaseBytes,
    pub(crate) head_grad: u64,
    /// Liger's fused linear cross-entropy: (hidden, vocab, compute bytes, head grad bytes).
    pub(crate) liger: Option<(u64, u64, u64, u64)>,
    /// Host memory of the offloading levers: fixed, and per token of a micro-batch.
    pub(crate) host_fixed: u64,
    pub(crate) host_per_token: u64,
    /// A vision-language model's images; `kept_bytes` per language-model token (vision.rs).
    pub(crate) vision: Option<crate::vision::VisionReport>,
    pub(crate) held_head: u64,
    /// Gradient bytes of the token embedding (vocab × hidden: what a tied head shares).
    pub(crate) vh: u64,
    /// Gradient bytes of the other embedding tables (Gemma 4's per-layer embeddings).
    pub(crate) vh_other: u64,
    pub(crate) embed_trains: bool,
    pub(crate) trainable: u64,
    pub(crate) frozen: u64,
    pub(crate) flops_per_token: f64,
    pub(crate) quality: f64,
}

impl Prepared<'_> {
    /// What the search ranks a (batch, accumulation) by: peak memory and speed, without
    /// the breakdown ([`Prepared::finish`] gives the whole estimate).
    pub fn evaluate(&self, batch: u64, accumulation: u64) -> Result<Evaluation> {
        check_batch(batch, accumulation)?;
        if let Some(other) = self.at_batch(batch)? {
            return other.evaluate(batch, accumulation);
        }
        let tokens = sat(batch, self.s.tokens_per_sequence);
        let lines = &self.lines[usize::from(accumulation > 1)];
        let peak_allocated = if lines.complete && tokens <= self.fast_tokens_max {
            let mut peak = lines.max_at(tokens);
            if let (Some((h, v, e, head_grad)), Some((a, b))) = (self.s.liger, lines.liger_forward) {
                // forward end: its line plus Liger's chunk (`forward_peak`)
                let chunk = crate::levers::liger_forward_transient(tokens, h, v, e, head_grad);
                peak = peak.max(a as u128 + b as u128 * tokens as u128 + chunk as u128);
            }
            clip(peak)
        } else {
            self.peak(batch, accumulation).total
        };
        debug_assert_eq!(peak_allocated, self.peak(batch, accumulation).total, "lines vs phases");
        self.evaluation(peak_allocated, batch, accumulation)
    }

    /// Device terms and speed once the peak is known.
    fn evaluation(&self, peak_allocated: u64, batch: u64, accumulation: u64) -> Result<Evaluation> {
        if peak_allocated >= u64::MAX / 4 {
            return Err(Error::overflow("peak memory"));
        }
        let device = DeviceTerms {
            cuda_context: CUDA_CONTEXT_BYTES,
            cublas_workspace: self.s.cublas_workspace,
            // lengths vary between steps unless every batch is padded to max_length
            // (plan.rs `Batching::lengths_vary`)
            allocator_reserve: allocator_reserve(&self.reserve_inputs(batch), self.s.lengths_vary),
            paged_optimizer_states: self.s.paged,
        };
        let peak_reserved = peak_allocated
            .saturating_add(device.cuda_context)
            .saturating_add(device.cublas_workspace)
            .saturating_add(device.allocator_reserve)
            .saturating_add(device.paged_optimizer_states);
        // The fit bound is built on what a roomy GPU shows (lengths varying between steps), not
        // on the least a run needs: on a full GPU the caching allocator frees its cached
        // segments and retries before raising out-of-memory (c10/cuda/CUDACachingAllocator.cpp,
        // `release_cached_blocks`), so the bound errs on the safe side by the variable-length
        // term (benches/results/allocator_replay.md, "least memory without OOM").
        let peak_reserved_upper = reserved_upper(peak_reserved, device.cuda_context);
        // e.g. 4 seqs × 1024 tokens × 4 accum × 1 GPU = 16,384 tokens per optimizer step
        // (DPO: 4 pairs × (1024 chosen + 1024 rejected) tokens × 4 × 1 = 32,768)
        let tokens_per_step = sat(sat(batch, self.s.tokens_per_sequence), sat(accumulation, self.s.num_gpus));
        let (tokens_per_second, step_seconds) = match &self.s.speed {
            Some(m) => {
                let (tps, step) = m.speed(self.s.flops_per_token, batch, accumulation, tokens_per_step);
                let extra = self.s.overhead.map_or(0.0, |o| o.seconds(step, accumulation, sat(batch, self.s.tokens_per_sequence)));
                if extra > 0.0 {
                    (Some(tokens_per_step as f64 / (step + extra)), Some(step + extra))
                } else {
                    (Some(tps), Some(step))
                }
            }
            None => (None, None),
        };
        Ok(Evaluation {
            peak_allocated_bytes: peak_allocated,
            device,
            peak_reserved_bytes: peak_reserved,
            peak_reserved_upper_bytes: peak_reserved_upper,
            tokens_per_step,
            tokens_per_second,
            step_seconds,
        })
    }

    /// The plan prepared again at `batch` when its attention context follows the batch and
    /// this one was prepared at another (`None`: this one prices `batch`).
    fn at_batch(&self, batch: u64) -> Result<Option<Prepared<'_>>> {
        match &self.replan {
            Some((plan, gpu)) if plan.per_device_train_batch_size != batch => {
                let p = crate::plan::Plan { per_device_train_batch_size: batch, ..plan.clone() };
                let mut other = Prepared::empty(self.est);
                self.est.prepare_in(&p, gpu.as_ref(), &mut other, false)?;
                Ok(Some(other))
            }
            _ => Ok(None),
        }
    }

    /// The blocks that set the allocator's reserve ([`crate::device::allocator_reserve`]) at
    /// `batch` sequences: logits-sized blocks of the micro-batch and the largest gradient.
    fn reserve_inputs(&self, batch: u64) -> ReserveInputs {
        // e.g. 4 seqs × 585 tokens × 128,256 vocab = 300,119,040 logits entries
        let tv = sat(sat(batch, self.s.tokens_per_sequence), self.est.shape.vocab_size);
        let has_logits = self.s.logits_width > 0;
        let embed = if self.s.embed_trains { self.s.vh.max(self.s.vh_other) } else { 0 };
        ReserveInputs {
            logits: sat(tv, self.s.logits_width),
            fp32_logits: if has_logits { sat(tv, 4) } else { 0 },
            loss_forward: sat(tv, self.s.logits_per_tv.0),
            largest_grad: embed.max(self.s.head_grad),
        }
    }

    /// The method's quality score (the same for every batch).
    pub fn quality(&self) -> f64 {
        self.s.quality
    }

    /// The estimate for `batch` sequences per device and `accumulation` micro-batches per
    /// optimizer step (the plan's own values give [`Estimator::estimate`]).
    pub fn finish(&self, batch: u64, accumulation: u64) -> Result<Estimate> {
        check_batch(batch, accumulation)?;
        if let Some(other) = self.at_batch(batch)? {
            return other.finish(batch, accumulation);
        }
        let peak = self.peak(batch, accumulation);
        let ev = self.evaluation(peak.total, batch, accumulation)?;
        let breakdown = Breakdown {
            gradients: peak.gradients,
            activations: peak.activations,
            logits_and_loss: peak.logits_and_loss,
            backward_buffers: peak.backward_buffers,
            autocast_copies: peak.autocast_copies,
            optimizer_temporaries: peak.optimizer_temporaries,
            distributed_buffers: self.s.base.distributed_buffers + peak.distributed,
            ..self.s.base
        };
        debug_assert_eq!(peak.total, breakdown.total());
        Ok(Estimate {
            peak_allocated_bytes: peak.total,
            peak_reserved_bytes: ev.peak_reserved_bytes,
            peak_reserved_upper_bytes: ev.peak_reserved_upper_bytes,
            peak_phase: peak.phase,
            breakdown,
            device: ev.device,
            total_parameters: self.est.analysis.total_params,
            trainable_parameters: self.s.trainable,
            frozen_layers: self.s.frozen,
            flops_per_token: self.s.flops_per_token,
            tokens_per_step: ev.tokens_per_step,
            tokens_per_second: ev.tokens_per_second,
            step_seconds: ev.step_seconds,
            mfu: self.s.speed.zip(ev.tokens_per_second).map(|(m, tps)| m.mfu(self.s.flops_per_token, tps)),
            quality: self.s.quality,
            host_memory_bytes: self.s.host_fixed.saturating_add(sat(self.s.host_per_token, sat(batch, self.s.tokens_per_sequence))),
            // the tower's kept bytes per language-model token, times the micro-batch's tokens
            vision: self.s.vision.map(|v| crate::vision::VisionReport {
                kept_bytes: sat(v.kept_bytes, sat(batch, self.s.tokens_per_sequence)),
                ..v
            }),
        })
    }

    /// The largest phase of the step: its total (exact, clipped to 64 bits: the same
    /// `min(true, u64::MAX)` as the saturating sum of its breakdown) and the terms that
    /// vary between phases. The phases in step order: forward end and loss backward
    /// ([`Prepared::forward_peak`]), each layer's backward ([`Prepared::segment_peak`]),
    /// backward end and optimizer step ([`Prepared::offer_step_end`]).
    fn peak(&self, batch: u64, accumulation: u64) -> Peak {
        let segs = self.segs.as_slice();
        let accum = accumulation > 1;
        // grads alive in forward and backward (unsharded under FSDP2 accumulation)
        let gradients = if accum { self.s.accum_gradients } else { self.s.gradients };
        // e.g. 4 seqs × 1024 tokens = 4,096 tokens per micro-batch (DPO: × 2)
        let tokens = sat(batch, self.s.tokens_per_sequence);
        let tail_saved = sat(tokens, self.s.tail_per_token);

        // ---- timeline --------------------------------------------------------------------
        let grads_prev = if accum { gradients } else { 0 };
        let mut peak = self.forward_peak(tokens, tail_saved, grads_prev);
        // walk down the layers in backward order
        let mut grads_done = if accum { gradients } else { self.s.head_grad.min(gradients) };
        // exact (u128) running sum of the activations kept below the current layer
        let kept = |sg: &Segment| sat(sg.kept, tokens) as u128 + sg.kept_fixed as u128;
        let mut below: u128 = segs.iter().fold(tail_saved as u128, |a, sg| a + kept(sg) * sg.n as u128);
        for sg in segs.iter().rev() {
            if let Some(candidate) = self.segment_peak(sg, tokens, below, grads_done, gradients, accum) {
                peak.offer(candidate);
            }
            below -= sg.n as u128 * kept(sg);
            if !accum {
                grads_done = grads_done.saturating_add(sat(sg.layer_grads, sg.n));
            }
        }
        self.offer_step_end(&mut peak, gradients, accum);
        peak
    }

    /// Forward end and loss backward: `fixed + autocast copies + grads of earlier
    /// micro-batches (grads_prev) + Σ kept activations + logits` (forward: logits, fp32
    /// upcast and log-softmax, `logits_per_tv.0` per token × vocab; loss backward: the
    /// larger of what it saved and its buffers, `.1` and `.2`; Liger: its chunk,
    /// `levers::liger_forward_transient`) + FSDP2's units of the phase.
    fn forward_peak(&self, tokens: u64, tail_saved: u64, grads_prev: u64) -> Peak {
        let segs = self.segs.as_slice();
        let units = self.s.fsdp_units;
        let tv = sat(tokens, self.est.shape.vocab_size);
        let (mut logits_fwd, logits_saved, logits_bwd) =
            (sat(tv, self.s.logits_per_tv.0), sat(tv, self.s.logits_per_tv.1), sat(tv, self.s.logits_per_tv.2));
        if let Some((h, v, e, head_grad)) = self.s.liger {
            logits_fwd = crate::levers::liger_forward_transient(tokens, h, v, e, head_grad);
        }
        let fixed = self.s.fixed;
        let autocast = self.s.autocast_copies;
        let acts_total: u64 = segs.iter().fold(tail_saved, |a, sg| a.saturating_add(sat(sat(sg.kept, tokens).saturating_add(sg.kept_fixed), sg.n)));
        let mut peak = Peak {
            total: clip(fixed + autocast as u128 + grads_prev as u128 + acts_total as u128 + logits_fwd as u128 + units.forward as u128),
            phase: Phase::Forward,
            gradients: grads_prev,
            activations: acts_total,
            logits_and_loss: logits_fwd,
            backward_buffers: 0,
            autocast_copies: autocast,
            optimizer_temporaries: 0,
            distributed: units.forward,
        };
        if !self.s.gradient_checkpointing {
            // a layer whose forward holds transients (the DSA indexer's scores), each segment's
            // top layer: the layers below keep what they saved (with checkpointing the
            // recompute in backward holds them instead: estimator.rs `layer_segments`)
            let mut before: u64 = 0;
            for sg in segs {
                let below = before.saturating_add(sat(sat(sg.kept, tokens), sg.n.saturating_sub(1)));
                if sg.fwd_transient > 0 {
                    let held = below.saturating_add(sat(sg.fwd_transient, tokens));
                    peak.offer(Peak {
                        total: clip(fixed + autocast as u128 + grads_prev as u128 + held as u128 + units.forward as u128),
                        activations: held,
                        logits_and_loss: 0,
                        ..peak
                    });
                }
                before = before.saturating_add(sat(sat(sg.kept, tokens), sg.n));
            }
        }
        let loss_bwd = logits_bwd.max(logits_saved);
        peak.offer(Peak {
            total: clip(fixed + autocast as u128 + grads_prev as u128 + acts_total as u128 + loss_bwd as u128 + units.loss_backward as u128),
            phase: Phase::LossBackward,
            logits_and_loss: loss_bwd,
            distributed: units.loss_backward,
            ..peak
        });
        peak
    }

    /// The largest backward of one segment's layers, top one first: `below` holds the
    /// activations kept below and within the segment, `grads_done` the grads of the layers
    /// above (and the head). `None` when no layer of the segment is a candidate.
    fn segment_peak(&self, sg: &Segment, tokens: u64, below: u128, grads_done: u64, gradients: u64, accum: bool) -> Option<Peak> {
        let autocast = self.s.autocast_copies;
        let units = self.s.fsdp_units;
        let backward_buffers = sat(sg.transient, tokens).max(sat(sg.transient_mlp, tokens).saturating_add(sg.bwd_fixed)).saturating_add(self.s.held_head);
        // the recomputed layer casts its weights again
        let layer_autocast = if self.s.gradient_checkpointing { autocast + sg.constant } else { autocast };
        let fixed = self.s.fixed + layer_autocast as u128 + backward_buffers as u128 + units.layer_backward as u128;
        // The m-th layer of the segment from the top (m = 1..=n) holds
        //   activations = below − m·kept + full,  gradients = min(done + m·grads, all)
        // (all of them under accumulation): a concave function of m, linear on each side
        // of the point where the gradients reach their total, so its last maximum is at
        // an end of one of those two pieces.
        let (n, kept, lg) = (sg.n as u128, sat(sg.kept, tokens) as u128 + sg.kept_fixed as u128, sg.layer_grads as u128);
        let full_bytes = sat(sg.full, tokens) as u128 + sg.full_fixed as u128;
        let (done, all) = (grads_done as u128, gradients as u128);
        let grads_at = |m: u128| if accum { all } else { (done + m * lg).min(all) };
        let acts_at = |m: u128| below - m * kept + full_bytes;
        // (64-bit division: `done`, `all` and `lg` are u64 values)
        let (uncapped_end, capped_start) = if accum || grads_done > gradients {
            (0, 1)
        } else {
            match (gradients - grads_done).checked_div(sg.layer_grads) {
                None => (n, n + 1), // no grads: never capped
                Some(mc) => ((mc as u128).min(n), mc as u128 + 1),
            }
        };
        let mut best: Option<(u128, u128)> = None; // (total, m)
        for m in [1, uncapped_end, capped_start, n] {
            let on_piece = (m >= 1 && m <= uncapped_end) || (m >= capped_start.max(1) && m <= n);
            if !on_piece {
                continue;
            }
            let total = fixed + acts_at(m) + grads_at(m);
            if best.is_none_or(|(bt, bm)| total > bt || (total == bt && m > bm)) {
                best = Some((total, m));
            }
        }
        best.map(|(total, m)| Peak {
            total: clip(total),
            phase: Phase::LayerBackward,
            gradients: clip(grads_at(m)),
            activations: clip(acts_at(m)),
            logits_and_loss: 0,
            backward_buffers,
            autocast_copies: layer_autocast,
            optimizer_temporaries: 0,
            distributed: units.layer_backward,
        })
    }

    /// Backward end, `fixed + grads + the embedding backward's transients + FSDP2's units`,
    /// then the optimizer step, `fixed + sharded grads + the optimizer's temporaries`.
    fn offer_step_end(&self, peak: &mut Peak, gradients: u64, accum: bool) {
        let fixed = self.s.fixed;
        // the autograd graph (and with it autocast's weight copies) is gone after backward
        let (embed_transient, end_units) = self.backward_end(accum);
        let after = Peak {
            total: clip(fixed + gradients as u128 + embed_transient as u128 + end_units as u128),
            phase: Phase::BackwardEnd,
            gradients,
            activations: 0,
            logits_and_loss: 0,
            backward_buffers: embed_transient,
            autocast_copies: 0,
            optimizer_temporaries: 0,
            distributed: end_units,
        };
        peak.offer(after);
        // the last micro-batch has reduce-scattered: the step sees the sharded grads
        let sharded_gradients = self.s.gradients;
        peak.offer(Peak {
            total: clip(fixed + sharded_gradients as u128 + self.s.temporaries as u128),
            phase: Phase::OptimizerStep,
            gradients: sharded_gradients,
            backward_buffers: 0,
            optimizer_temporaries: self.s.temporaries,
            distributed: 0,
            ..after
        });
    }
}

/// Peak memory and speed of one (batch, accumulation): what [`Prepared::evaluate`] gives.
#[derive(Clone, Copy)]
pub struct Evaluation {
    pub peak_allocated_bytes: u64,
    device: DeviceTerms,
    pub peak_reserved_bytes: u64,
    /// What a plan must stay under to fit: see [`crate::device::reserved_upper`].
    pub peak_reserved_upper_bytes: u64,
    pub tokens_per_step: u64,
    pub tokens_per_second: Option<f64>,
    pub step_seconds: Option<f64>,
}

impl Evaluation {
    /// The device terms added to the peak allocated memory.
    pub fn device(&self) -> DeviceTerms {
        self.device
    }
}

fn check_batch(batch: u64, accumulation: u64) -> Result<()> {
    for (field, v) in [("per_device_train_batch_size", batch), ("gradient_accumulation_steps", accumulation)] {
        if !(1..=1 << 16).contains(&v) {
            return Err(Error::field(field, v, "[1, 65536]"));
        }
    }
    Ok(())
}

/// At most this many lines per set: the upper envelope of the phases' lines (the forward,
/// a few per layer segment, the end; see [`Lines::envelope`]).
const LINES: usize = 16;

/// The step's phase totals as affine functions of the micro-batch's tokens `T`,
/// `a + b·T`: the peak is their maximum. Exact while no per-token product saturates
/// (`Prepared::fast_tokens_max`), which `Prepared::evaluate` checks in debug builds
/// against the phase walk of [`Prepared::finish`]. Only the lines of the upper envelope
/// over `T ≥ 0` are kept: the maximum of the others never exceeds theirs, so the maximum
/// is the same number, and an interleaved stack (one segment per layer) is priced in
/// a few lines instead of a walk over its layers.
#[derive(Clone, Copy)]
pub(crate) struct Lines {
    a: [u64; LINES],
    b: [u64; LINES],
    len: usize,
    /// All of the phases' lines are here (else the phase walk is used).
    complete: bool,
    /// Under Liger's fused cross-entropy, the forward end's line without the loss chunk
    /// (`levers::liger_forward_transient`, added at each batch); it is not in `a`, `b`.
    liger_forward: Option<(u64, u64)>,
}

impl Default for Lines {
    fn default() -> Self {
        Lines { a: [0; LINES], b: [0; LINES], len: 0, complete: false, liger_forward: None }
    }
}

/// Add the line `a + b·T` to `lines`; `None` when a term does not fit 64 bits (the phase
/// walk is used then).
fn push_line(lines: &mut Vec<(u64, u64)>, a: u128, b: u128) -> Option<()> {
    let line = (u64::try_from(a).ok()?, u64::try_from(b).ok()?);
    // the same line as the one before it (a one-layer segment's candidates) adds nothing
    if lines.last() != Some(&line) {
        lines.push(line);
    }
    Some(())
}

/// `p·q` against `r·s` exactly, for `|p|, q, |r|, s < 2^64` (each product's magnitude
/// fits 128 bits).
fn cmp_products(p: i128, q: u128, r: i128, s: u128) -> std::cmp::Ordering {
    let (lhs, rhs) = (p.unsigned_abs() * q, r.unsigned_abs() * s);
    match (p < 0, r < 0) {
        (false, false) => lhs.cmp(&rhs),
        (true, true) => rhs.cmp(&lhs),
        (false, true) => if lhs == 0 && rhs == 0 { std::cmp::Ordering::Equal } else { std::cmp::Ordering::Greater },
        (true, false) => if lhs == 0 && rhs == 0 { std::cmp::Ordering::Equal } else { std::cmp::Ordering::Less },
    }
}

impl Lines {
    /// The upper envelope of `cands` over `T ≥ 0` (`cands` is reordered); `complete` is
    /// false when it has more than [`LINES`] lines. The line with the largest value at
    /// `T = 0` (of equals, the steepest) is on it, and no shallower line is ever above it;
    /// the steeper ones, by slope, form the rest of the convex hull (the "convex hull
    /// trick"): with slopes `b1 < b2 < b3`, the middle line is never strictly above both
    /// others when `l1` meets `l3` no later than it meets `l2`,
    /// `(a1 − a3)/(b3 − b1) ≤ (a1 − a2)/(b2 − b1)`, compared exactly by cross-multiplying.
    fn envelope(cands: &mut Vec<(u64, u64)>) -> Lines {
        let mut out = Lines::default();
        let Some(&(a0, b0)) = cands.iter().max() else {
            out.complete = true;
            return out;
        };
        cands.retain(|&(_, b)| b > b0);
        // by slope, and of one slope only the highest
        cands.sort_unstable_by(|x, y| x.1.cmp(&y.1).then(y.0.cmp(&x.0)));
        cands.dedup_by_key(|l| l.1);
        cands.insert(0, (a0, b0));
        let useless = |l1: (u64, u64), l2: (u64, u64), l3: (u64, u64)| {
            let d = |x: u64, y: u64| x as i128 - y as i128;
            let w = |x: u64, y: u64| (x - y) as u128;
            cmp_products(d(l1.0, l3.0), w(l2.1, l1.1), d(l1.0, l2.0), w(l3.1, l1.1)) != std::cmp::Ordering::Greater
        };
        // the hull as a stack in `cands[..k]` (k ≤ i: it never overtakes the reading)
        let mut k = 0;
        for i in 0..cands.len() {
            let l3 = cands[i];
            while k >= 2 && useless(cands[k - 2], cands[k - 1], l3) {
                k -= 1;
            }
            cands[k] = l3;
            k += 1;
        }
        if k > LINES {
            return out;
        }
        for (i, &(a, b)) in cands[..k].iter().enumerate() {
            out.a[i] = a;
            out.b[i] = b;
        }
        out.len = k;
        out.complete = true;
        out
    }

    fn max_at(&self, tokens: u64) -> u128 {
        let t = tokens as u128;
        (0..self.len).map(|i| self.a[i] as u128 + self.b[i] as u128 * t).max().unwrap_or(0)
    }
}

impl<'a> Prepared<'a> {
    /// A slot for [`Estimator::prepare`] to fill.
    pub(crate) fn empty(est: &'a Estimator) -> Self {
        Prepared { est, s: Scalars::default(), segs: Segments::new(), lines: [Lines::default(); 2], fast_tokens_max: 0, replan: None, scratch: Vec::new() }
    }
}

impl Prepared<'_> {
    /// Build the lines of [`Lines`] (the same phases as [`Prepared::peak`], with every
    /// per-token product exact) and the token count up to which they hold.
    pub(crate) fn build_lines(&mut self) {
        let segs = self.segs.as_slice();
        let vocab = self.est.shape.vocab_size;
        let (c0, c1, c2) = self.s.logits_per_tv;
        // the largest per-token factor of any product `sat(x, T)` in `peak`
        let logits = [c0, c1, c2].iter().try_fold(vocab, |m, &c| vocab.checked_mul(c).map(|v| m.max(v)));
        self.fast_tokens_max = match logits {
            None => 0, // vocab × bytes overflows: always walk the phases
            Some(l) => {
                let coef = segs.iter().fold(l.max(self.s.tail_per_token), |m, sg| m.max(sg.kept).max(sg.full).max(sg.transient).max(sg.fwd_transient));
                u64::MAX.checked_div(coef).unwrap_or(u64::MAX)
            }
        };
        let mut cands = std::mem::take(&mut self.scratch);
        for accum in [false, true] {
            cands.clear();
            self.lines[usize::from(accum)] = match self.lines_for(accum, &mut cands) {
                Some(liger_forward) => Lines { liger_forward, ..Lines::envelope(&mut cands) },
                None => Lines::default(),
            };
        }
        self.scratch = cands;
    }

    /// The candidate lines of one line set into `lines`. Under Liger's fused cross-entropy
    /// the forward-end line is returned instead: its chunk is a power of two of the tokens,
    /// not affine, so [`Prepared::evaluate`] adds it to that line at each batch.
    fn lines_for(&self, accum: bool, lines: &mut Vec<(u64, u64)>) -> Option<Option<(u64, u64)>> {
        let segs = self.segs.as_slice();
        let (c0, c1, c2) = self.s.logits_per_tv;
        let vocab = self.est.shape.vocab_size as u128;
        let gradients = if accum { self.s.accum_gradients } else { self.s.gradients };
        let units = self.s.fsdp_units;
        let (fixed, autocast) = (self.s.fixed, self.s.autocast_copies as u128);
        let kept_total: u128 = segs.iter().map(|sg| sg.kept as u128 * sg.n as u128).sum();
        // token-independent kept bytes (peft target_parameters' merged expert weights)
        let mut fixed_below: u128 = segs.iter().map(|sg| sg.kept_fixed as u128 * sg.n as u128).sum();
        // forward end and loss backward: the same terms but the logits' (c0 vs c1, c2)
        let grads_prev = if accum { gradients as u128 } else { 0 };
        let mut below = self.s.tail_per_token as u128 + kept_total;
        let mut liger_forward = None;
        if self.s.liger.is_some() {
            // no [tokens, vocab] logits (`logits_per_tv` is zero): the forward's chunk is added later
            let a = fixed + autocast + grads_prev + fixed_below + units.forward as u128;
            liger_forward = Some((u64::try_from(a).ok()?, u64::try_from(below).ok()?));
            push_line(lines, fixed + autocast + grads_prev + fixed_below + units.loss_backward as u128, below + vocab * c1.max(c2) as u128)?;
        } else if units.forward == units.loss_backward {
            push_line(lines, fixed + autocast + grads_prev + fixed_below + units.forward as u128, below + vocab * c0.max(c1).max(c2) as u128)?;
        } else {
            push_line(lines, fixed + autocast + grads_prev + fixed_below + units.forward as u128, below + vocab * c0 as u128)?;
            push_line(lines, fixed + autocast + grads_prev + fixed_below + units.loss_backward as u128, below + vocab * c1.max(c2) as u128)?;
        }
        if !self.s.gradient_checkpointing {
            // the forward of each segment's top layer with its transients (`forward_peak`)
            let mut before: u128 = 0;
            for sg in segs {
                if sg.fwd_transient > 0 {
                    let b = before + sg.kept as u128 * sg.n.saturating_sub(1) as u128 + sg.fwd_transient as u128;
                    push_line(lines, fixed + autocast + grads_prev + units.forward as u128, b)?;
                }
                before += sg.kept as u128 * sg.n as u128;
            }
        }
        // each layer segment from the top: the candidates of `peak`'s walk
        let mut grads_done = if accum { gradients } else { self.s.head_grad.min(gradients) };
        for sg in segs.iter().rev() {
            let layer_autocast = if self.s.gradient_checkpointing { autocast + sg.constant as u128 } else { autocast };
            let a = fixed + layer_autocast + self.s.held_head as u128 + units.layer_backward as u128 + fixed_below + sg.full_fixed as u128;
            // the transient: the whole layer's, or the MLP block's with the merged weight's
            // gradient (`peak`'s max of the two, as two lines when they differ)
            let variants = [(0u128, sg.transient as u128), (sg.bwd_fixed as u128, sg.transient_mlp as u128)];
            let variants = if sg.bwd_fixed == 0 { &variants[..1] } else { &variants[..] };
            let (n, lg) = (sg.n as u128, sg.layer_grads as u128);
            let (done, all) = (grads_done as u128, gradients as u128);
            let (uncapped_end, capped_start) = if accum || grads_done > gradients {
                (0, 1)
            } else {
                match (gradients - grads_done).checked_div(sg.layer_grads) {
                    None => (n, n + 1),
                    Some(mc) => ((mc as u128).min(n), mc as u128 + 1),
                }
            };
            for m in [1, uncapped_end, capped_start, n] {
                if (m >= 1 && m <= uncapped_end) || (m >= capped_start.max(1) && m <= n) {
                    let grads = if accum { all } else { (done + m * lg).min(all) };
                    for &(ta, tb) in variants {
                        push_line(lines, a + ta + grads - m * sg.kept_fixed as u128, below + sg.full as u128 + tb - m * sg.kept as u128)?;
                    }
                }
            }
            below -= n * sg.kept as u128;
            fixed_below -= n * sg.kept_fixed as u128;
            if !accum {
                grads_done = grads_done.saturating_add(sat(sg.layer_grads, sg.n));
            }
        }
        // backward end (embedding grad transients) and optimizer step (its temporaries)
        let (embed, end_units) = self.backward_end(accum);
        let end = gradients as u128 + embed as u128 + end_units as u128;
        let step = self.s.gradients as u128 + self.s.temporaries as u128;
        push_line(lines, fixed + end.max(step), 0)?;
        Some(liger_forward)
    }

    /// The embedding backward's transients and FSDP2's units at the end of backward.
    fn backward_end(&self, accum: bool) -> (u64, u64) {
        let u = self.s.fsdp_units;
        if u == crate::fsdp::PhaseBytes::default() || accum {
            (self.embed_transient(accum), u.backward_end)
        } else {
            (0, u.backward_end.saturating_add(u.backward_end_sync))
        }
    }

    /// Embedding backward: a dense [vocab, hidden] grad (embedding_dense_backward); with a
    /// tied head, the head's contribution is held until it is summed with it (autograd
    /// InputBuffer), so three such tensors are alive at once; accumulation adds the result
    /// into the existing .grad, otherwise it becomes the .grad. Other embedding tables (an
    /// untied table each, run one after another) add their own dense grad when accumulating.
    fn embed_transient(&self, accum: bool) -> u64 {
        // FSDP2 sets accumulated grads aside: the embedding's backward writes a fresh .grad
        let accum = accum && self.s.fsdp_units == crate::fsdp::PhaseBytes::default();
        let other = if accum { self.s.vh_other } else { 0 };
        match (self.s.embed_trains, self.est.shape.tie_word_embeddings, accum) {
            (false, _, _) => 0,
            (true, true, true) => sat(self.s.vh, 3).max(other),
            (true, true, false) => sat(self.s.vh, 2),
            (true, false, true) => self.s.vh.max(other),
            (true, false, false) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Attention, Distributed, Dtype, Method, Optim, Plan, Targets, Trainer};

    fn read(rel: &str) -> String {
        std::fs::read_to_string(format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))).expect(rel)
    }

    /// A deterministic xorshift, so every run draws the same plans.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
            xs[(self.next() % xs.len() as u64) as usize].clone()
        }
    }

    /// A plan over the axes the search varies (method, rank, targets, freezing,
    /// checkpointing, attention, sharding, the levers) plus trainer, dtype and length.
    fn draw_plan(rng: &mut Rng) -> Plan {
        let method = rng.pick(&[Method::Full, Method::Lora, Method::Qlora, Method::Lora8bit]);
        let dtype = match method {
            Method::Full => rng.pick(&[Dtype::AmpBf16, Dtype::Bf16, Dtype::Fp32]),
            Method::Qlora => Dtype::Bf16,
            _ => rng.pick(&[Dtype::Bf16, Dtype::AmpBf16, Dtype::Fp16]),
        };
        let (num_gpus, distributed) =
            rng.pick(&[(1, Distributed::None), (1, Distributed::None), (2, Distributed::Ddp), (2, Distributed::Fsdp), (4, Distributed::Zero2), (8, Distributed::Zero3)]);
        let sharded_params = matches!(distributed, Distributed::Fsdp | Distributed::Zero3);
        Plan {
            method,
            dtype,
            trainer: rng.pick(&[Trainer::Sft, Trainer::Sft, Trainer::Dpo]),
            lora_r: rng.pick(&[4, 16, 64]),
            lora_target_modules: rng.pick(&[None, Some(Targets::Keyword("all-linear".into()))]),
            max_length: rng.pick(&[128, 512, 2048, 8192]),
            freeze_ratio: rng.pick(&[0.0, 0.0, 0.25, 0.5, 0.9]),
            gradient_checkpointing: rng.pick(&[false, true]),
            attn_implementation: rng.pick(&[Attention::Sdpa, Attention::Eager]),
            optim: rng.pick(&[Optim::AdamwTorch, Optim::Adamw8bit, Optim::Sgd]),
            num_gpus,
            distributed,
            activation_offloading: rng.pick(&[false, false, true]),
            use_liger_kernel: rng.pick(&[false, true]),
            offload_params: sharded_params && rng.pick(&[false, true]),
            ..Plan::default()
        }
    }

    /// The upper envelope of the lines (with Liger's forward chunk) gives the phase walk's
    /// peak, number for number, and is small enough to be used: on interleaved hybrid stacks (one segment per layer) and
    /// at every batch the search tries, with and without accumulation.
    fn envelope_matches_walk(est: &Estimator, plans: usize, seed: u64, min_segments: usize) {
        let mut rng = Rng(seed);
        let (mut checked, mut most_segments) = (0, 0);
        for _ in 0..plans {
            let plan = draw_plan(&mut rng);
            let Ok(p) = est.prepare(&plan, None) else { continue };
            most_segments = most_segments.max(p.segs.as_slice().len());
            for (accum, lines) in [(1, &p.lines[0]), (4, &p.lines[1])] {
                assert!(lines.complete, "{}: {plan:?}: the envelope fits {LINES} lines", est.shape.name);
                for batch in [1, 2, 3, 4, 8, 16, 32, 64, 1000] {
                    let tokens = sat(batch, p.s.tokens_per_sequence);
                    if tokens > p.fast_tokens_max {
                        continue;
                    }
                    assert_eq!(p.evaluate(batch, accum).expect("priced").peak_allocated_bytes, p.peak(batch, accum).total, "{}: {plan:?} at batch {batch}×{accum}", est.shape.name);
                    checked += 1;
                }
            }
        }
        assert!(checked > plans * 4, "{}: only {checked} comparisons", est.shape.name);
        assert!(most_segments > min_segments, "{}: at most {most_segments} segments", est.shape.name);
    }

    #[test]
    fn envelope_matches_walk_on_hybrid_catalog_shapes() {
        for name in ["nemotron-3-super", "qwen3-coder-next", "jamba-v0.1"] {
            let est = Estimator::from_json(&read(&format!("rust/tests/data/shapes/{name}.shape.json"))).expect(name);
            envelope_matches_walk(&est, 300, 0x9E37_79B9_7F4A_7C15, LINES);
        }
    }

    /// Jamba's three layer types (mamba + MLP, mamba + experts, attention + experts) in
    /// random orders and depths.
    #[test]
    fn envelope_matches_walk_on_random_interleavings() {
        let base: serde_json::Value = serde_json::from_str(&read("rust/tests/data/shapes/jamba-v0.1.shape.json")).expect("json");
        let types = base["layer_types"].as_array().expect("layer types").len() as u64;
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for _ in 0..20 {
            let n = 8 + rng.next() % 120;
            let layers: Vec<u64> = (0..n).map(|_| rng.next() % types).collect();
            let mut shape = base.clone();
            shape["layers"] = layers.into();
            shape["num_hidden_layers"] = n.into();
            let est = Estimator::from_json(&shape.to_string()).expect("a random interleaving");
            envelope_matches_walk(&est, 40, rng.next(), 1);
        }
    }

    #[test]
    fn envelope_keeps_the_maximum_of_its_lines() {
        let mut rng = Rng(7);
        for _ in 0..2000 {
            let n = 1 + (rng.next() % 40) as usize;
            // small values make ties and parallel lines common
            let scale = rng.pick(&[4u64, 1000, u64::MAX >> 1]);
            let cands: Vec<(u64, u64)> = (0..n).map(|_| (rng.next() % scale, rng.next() % scale)).collect();
            let lines = Lines::envelope(&mut cands.clone());
            if !lines.complete {
                continue;
            }
            for t in [0, 1, 2, 3, 7, 100, 1 << 20, u32::MAX as u64] {
                let want = cands.iter().map(|&(a, b)| a as u128 + b as u128 * t as u128).max().expect("lines");
                assert_eq!(lines.max_at(t), want, "{cands:?} at {t}");
            }
        }
    }
}
