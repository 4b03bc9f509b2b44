//! FSDP2 (`torch.distributed.fsdp.fully_shard`) as accelerate sets it up: which unsharded
//! parameter units and gradient buffers are alive in each phase of a training step.
//!
//! accelerate 1.15 `fsdp2_prepare_model` shards every decoder layer, the untied input
//! embedding alone, the tail `[final norm, (input embedding when tied), lm_head]` as one
//! unit with `reshard_after_forward=False`, and the root. FSDP2 (torch 2.15,
//! `_fsdp_param_group.py`) then holds, beyond the shards:
//!
//! | phase | unsharded units (in the mixed-precision `param_dtype`) |
//! |---|---|
//! | forward end (inside the loss) | the tail, and the result of the last all-gather, kept for copy-out overlap (`wait_for_unshard`: `AllGatherState`) until the root's post-forward: the tail's own when untied (it is gathered last), the last layer's when tied (the tail is gathered first, with the embedding) |
//! | loss backward | the tail |
//! | layer backward | the layer and the one FSDP2 prefetches below it (`_backward_prefetch`), and the tail while it holds the tied embedding (it reshards after its own backward) |
//! | backward end | the embedding's unit: the tail when tied, the embedding unit when untied |
//!
//! Gradients: with gradient accumulation, HF Trainer runs every micro-batch but the last
//! under `accelerator.no_sync`, which for FSDP2 is `set_requires_gradient_sync(False)`:
//! the gradients of earlier micro-batches stay UNSHARDED (in the reduce dtype) until the
//! last micro-batch reduce-scatters them. FSDP2 keeps them aside
//! (`unsharded_accumulated_grad`), so autograd writes each new gradient into a fresh
//! `.grad`, as without accumulation.
//!
//! Every figure here is checked against `FSDPMemTracker` on fake tensors at world sizes
//! 2, 4 and 8 (`benches/truth/fsdp2.py`, `benches/accuracy_fsdp.py`).

use crate::analysis::Analysis;
use crate::plan::{Dtype, Plan};

/// Parameter counts of the units FSDP2 gathers whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Units {
    /// The largest decoder layer.
    pub layer: u64,
    /// Final norm + head (+ the input embedding when tied).
    pub tail: u64,
    /// The input embedding (+ learned positions) when it is its own unit (untied).
    pub embed: u64,
    pub tied: bool,
}

impl Units {
    /// The units of a model: the tail is the final norm, the head and what the root keeps
    /// (learned positions, other top-level parameters; the root is not resharded after
    /// forward either), plus the input embedding when it is tied to the head.
    pub fn of(an: &Analysis, tied: bool) -> Self {
        let top = an.norm_params + an.head_params + an.position_params + an.other_params;
        Units {
            layer: an.largest_layer_params,
            tail: top + if tied { an.embedding_params } else { 0 },
            embed: if tied { 0 } else { an.embedding_params },
            tied,
        }
    }
}

/// Bytes beyond the shards, per phase of the step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseBytes {
    pub forward: u64,
    pub loss_backward: u64,
    pub layer_backward: u64,
    pub backward_end: u64,
    /// Backward end without accumulation, beyond the sharded grads: see [`backward_end_sync`].
    pub backward_end_sync: u64,
}

/// The mixed-precision `param_dtype` of a plan under FSDP, in bytes: the dtype units are
/// gathered in and the forward computes with. `amp-bf16`/`amp-fp16` is accelerate's
/// `mixed_precision` under FSDP: fp32 shards, `MixedPrecisionPolicy(param_dtype=half)`;
/// the others gather in their own dtype.
pub fn gather_bytes(dtype: Dtype) -> u64 {
    dtype.compute_bytes()
}

/// The dtype whose widths the activations of an FSDP plan follow: under `amp-*` the
/// gathered parameters are already half, so the embedding output, the residual stream and
/// every matmul are half, and autocast has nothing to copy — the pure half plan's
/// activations.
pub fn compute_dtype(dtype: Dtype) -> Dtype {
    match dtype {
        Dtype::AmpBf16 => Dtype::Bf16,
        Dtype::AmpFp16 => Dtype::Fp16,
        d => d,
    }
}

/// Whether `plan` is priced with the FSDP2 model of this module.
pub fn applies(plan: &Plan) -> bool {
    plan.distributed == crate::plan::Distributed::Fsdp
}

/// The unsharded parameter bytes alive in each phase (see the module table), gathered at
/// `gb` bytes per parameter.
pub fn unit_bytes(u: &Units, gb: u64) -> PhaseBytes {
    let b = |n: u64| n.saturating_mul(gb);
    phase_bytes(b(u.layer), b(u.tail), b(u.embed), u.tied)
}

/// [`unit_bytes`] from the units' gathered bytes (a 4-bit layer gathers its packed storage).
pub fn phase_bytes(layer: u64, tail: u64, embed: u64, tied: bool) -> PhaseBytes {
    let last_gathered = if tied { layer } else { tail };
    let tail_in_backward = if tied { tail } else { 0 };
    PhaseBytes {
        forward: tail.saturating_add(last_gathered),
        loss_backward: tail,
        layer_backward: layer.saturating_mul(2).saturating_add(tail_in_backward),
        backward_end: if tied { tail } else { embed },
        backward_end_sync: 0,
    }
}

/// What the embedding's backward adds at the end of a step without accumulation, beyond
/// the shards of the gradients already reduced, when the embedding trains (full
/// fine-tuning): the unsharded gradients are computed in the gather dtype `gb`. Tied, the
/// head's contribution, the embedding's and their sum are alive at once (3 tensors; the
/// sum is the unsharded `.grad`); untied, the embedding's `.grad` alone. Its unit has not
/// reduce-scattered yet, so its shard (`grad_bytes` each, over `n` GPUs) is not counted,
/// while the reduce-scatter input of the unit reduced before it (one buffer in flight:
/// `reduce_scatter_max_input_buffers = 1`, of the largest layer's grads in the reduce
/// dtype) still is. Without a training embedding: only that buffer.
pub fn backward_end_sync(u: &Units, gb: u64, grad_bytes: u64, n: u64, embed_trains: bool, layer_trains: bool) -> u64 {
    let rs = if layer_trains { u.layer.saturating_mul(grad_bytes) } else { 0 };
    if !embed_trains {
        return rs;
    }
    let emb = if u.tied { u.tail } else { u.embed };
    let copies = if u.tied { 3 } else { 1 };
    let shard = emb.saturating_mul(grad_bytes) / n.max(1);
    rs.saturating_add(emb.saturating_mul(gb).saturating_mul(copies)).saturating_sub(shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Llama-3.2-1B-like, tied: layer 60.8M, tail = embedding 262.7M + norm 2048.
    const TIED: Units = Units { layer: 60_821_504, tail: 262_670_336, embed: 0, tied: true };
    // Llama-3.1-8B-like, untied: head + norm in the tail, embedding alone.
    const UNTIED: Units = Units { layer: 218_112_000, tail: 525_340_672, embed: 525_336_576, tied: false };

    #[test]
    fn forward_end_holds_tail_and_last_all_gather() {
        // tied: the tail is gathered first (with the embedding), the last layer last
        assert_eq!(unit_bytes(&TIED, 2).forward, 2 * (262_670_336 + 60_821_504));
        // untied: the tail itself is gathered last, so its all-gather result is held too
        assert_eq!(unit_bytes(&UNTIED, 2).forward, 2 * 2 * 525_340_672);
    }

    #[test]
    fn loss_backward_holds_only_the_tail() {
        assert_eq!(unit_bytes(&TIED, 2).loss_backward, 2 * 262_670_336);
        assert_eq!(unit_bytes(&UNTIED, 4).loss_backward, 4 * 525_340_672);
    }

    #[test]
    fn backward_end_gathers_the_embedding_unit() {
        assert_eq!(unit_bytes(&TIED, 2).backward_end, 2 * 262_670_336);
        assert_eq!(unit_bytes(&UNTIED, 2).backward_end, 2 * 525_336_576);
    }

    #[test]
    fn backward_end_without_accumulation() {
        // l1b full amp-bf16 on 4 GPUs, measured (FSDPMemTracker): reduce-scatter buffer
        // 232 MiB (a layer's fp32 grads) + 3 bf16 [V,H] grads 1503 MiB − the embedding
        // shard's fp32 grad 250 MiB
        let got = backward_end_sync(&TIED, 2, 4, 4, true, true);
        assert_eq!(got, 60_821_504 * 4 + 3 * 2 * 262_670_336 - 262_670_336 * 4 / 4);
        assert_eq!(backward_end_sync(&TIED, 2, 4, 4, false, false), 0);
    }

    #[test]
    fn amp_gathers_half() {
        assert_eq!(gather_bytes(Dtype::AmpBf16), 2);
        assert_eq!(gather_bytes(Dtype::Fp32), 4);
        assert_eq!(compute_dtype(Dtype::AmpFp16), Dtype::Fp16);
        assert_eq!(compute_dtype(Dtype::Bf16), Dtype::Bf16);
    }
}
