//! Memory the GPU holds beyond live tensors: the CUDA context, cuBLAS workspaces, the
//! caching allocator's reserve, and the upper bound a plan must stay under to fit.
//!
//! What each term means for PyTorch's counters:
//!
//! | term | `memory_allocated` | `max_memory_reserved` | nvidia-smi |
//! |---|---|---|---|
//! | tensors (the estimator's peak allocated) | yes | yes | yes |
//! | cuBLAS/cuBLASLt workspaces | yes (allocated through the caching allocator) | yes | yes |
//! | allocator reserve (cached, unused blocks) | no | yes | yes |
//! | CUDA context, kernels, cuBLAS handles | no | no | yes |
//!
//! The fake-tensor truth that checks the allocated peak has no workspaces, so they are a
//! device term here although a real GPU's `memory_allocated` includes them.

use crate::gpu::GpuSpec;

const MIB: u64 = 1 << 20;

/// CUDA context with lazily loaded kernels (`CUDA_MODULE_LOADING=LAZY`, the default since
/// CUDA 11.7 and PyTorch 1.13): a few hundred MiB per process, counted by nvidia-smi and by
/// the device's free memory, never by PyTorch's counters. Not measured per generation by
/// any source this project holds; 500 MiB is the usual order for CUDA 12 on Ampere/Hopper.
pub const CUDA_CONTEXT_BYTES: u64 = 500 * MIB;

/// cuBLAS workspace per (handle, stream), PyTorch `aten/src/ATen/cuda/CublasHandlePool.cpp`
/// `parseChosenWorkspaceSize`: `:4096:2:16:8` (2 × 4 MiB + 8 × 16 KiB = 8,519,680 B) by
/// default, `4096 × 8 × 1024` = 32 MiB on compute capability 9.x, 10.x and 12.x (Hopper,
/// Blackwell). cuBLASLt shares it in current PyTorch. Unknown GPUs get the larger.
pub fn cublas_workspace_per_handle(gpu: Option<&GpuSpec>) -> u64 {
    match gpu.and_then(GpuSpec::cc_major) {
        Some(major) if !matches!(major, 9 | 10 | 12) => 4096 * 1024 * 2 + 16 * 1024 * 8,
        _ => 32 * MIB,
    }
}

/// Handles a training step uses: the Python thread runs the forward and the autograd
/// engine's device thread the backward, and the handle pool gives each thread its own
/// handle, hence its own workspace (`cublas_handle_stream_to_workspace` keyed by handle
/// and stream).
pub const CUBLAS_HANDLES: u64 = 2;

/// The step's cuBLAS workspaces.
pub fn cublas_workspace(gpu: Option<&GpuSpec>) -> u64 {
    CUBLAS_HANDLES * cublas_workspace_per_handle(gpu)
}

/// Segment rounding and the small transients' segments: allocations above 10 MiB get their
/// own segment rounded up to 2 MiB (`kRoundLarge`), 1–10 MiB requests share 20 MiB segments
/// (`kLargeBuffer`), ≤ 1 MiB ones 2 MiB segments (`kSmallBuffer`). Charged as a fixed 64 MiB
/// (32 large transients × 2 MiB at worst); the replay of recorded steps
/// (`benches/truth/allocator_study.py`) finds 40–160 MiB of such tails at the peak.
pub const ROUNDING_BYTES: u64 = 64 * MIB;

/// The blocks of one step (at its longest batch, `T` tokens, vocabulary `V`) that decide
/// how much the caching allocator holds reserved but unused at the peak.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReserveInputs {
    /// The logits in the compute dtype, `e·T·V` (bf16: 2 bytes per entry).
    pub logits: u64,
    /// The fp32 logits-sized blocks of the loss (the upcast, `log_softmax` and its
    /// gradient), `4·T·V`: the largest requests of a step, made at its peak (loss backward).
    pub fp32_logits: u64,
    /// What the loss forward allocates, `(e + upcast + 4)·T·V` (estimator's `logits_per_tv.0`).
    pub loss_forward: u64,
    /// The largest single parameter gradient (full fine-tuning of the embedding or of an
    /// untied head: `V·H·grad bytes`; 0 when no such parameter trains).
    pub largest_grad: u64,
}

/// PyTorch's CUDA caching allocator's reserve at the step's peak: bytes in cached segments
/// that no live tensor uses (`max_memory_reserved − max_memory_allocated`). Mechanism
/// (`c10/cuda/CUDACachingAllocator.cpp`): a request takes the smallest cached free block
/// that holds it, else a new segment; blocks above 10 MiB get a segment of their own size,
/// and a freed block merges only with free neighbours of its segment. So a segment freed
/// before the peak stays cached, and stays unused when the peak's requests are larger than
/// it. Derived from replays of recorded steps through a model of those rules
/// (`python -m benches.truth.allocator_study`, table in `benches/results/allocator_replay.md`):
///
/// **One length** (every batch the same length: padding to `max_length`). The
/// compute-dtype logits (`e·T·V`) are freed before the loss backward asks for fp32
/// logits-sized blocks (`4·T·V`, twice as large in bf16): that segment is the reserve,
/// plus [`ROUNDING_BYTES`] of small segments' tails. With full fine-tuning, the largest
/// parameter's gradient and the optimizer's temporary of the same size (foreach AdamW) leave
/// two segments of that size cached for the next step; they are reused at the peak only when
/// the fp32 logits block fits in them (best fit), so they count when smaller than it.
///
/// **Lengths vary** (`lengths_vary`: the default collator pads each batch to its longest
/// sample, so consecutive steps differ). A shorter batch leaves its segments cached, each a
/// little smaller than the longer batch's matching request: its loss forward's logits-sized
/// segments (`loss_forward`, `(e + upcast + 4)·Ts·V`) cannot serve it and stay stranded.
/// The worst shorter batch is just below the longest, stranding `loss_forward` at the
/// longest length. Replays of Llama-3.2-3B LoRA (2 layers, 4 × 585 tokens, one predecessor;
/// this term: 2.80 GiB): a 209-token predecessor adds 1.00 GiB, 400 adds 1.92, 520 adds
/// 2.87, 570 adds 3.24 (its per-layer blocks are stranded too: an under-estimate of 14%
/// here, growing with depth); a descending run before the long batch (570, 400, 209) adds
/// what its longest member adds, 3.24; the long batch first adds nothing. A rising run
/// strands every member's blocks (209, 280, 400 then 585: 4.34 GiB): those are free blocks,
/// released by a failing `cudaMalloc` before it raises out-of-memory, so what a run needs
/// stays near the one-length term while what a roomy GPU shows can be higher. The plan's
/// `batching` decides (plan.rs `Batching::lengths_vary`): false only for batches padded to
/// `max_length`; packed rows, flattened with best-fit gaps, vary too (replay: "packed rows").
pub fn allocator_reserve(x: &ReserveInputs, lengths_vary: bool) -> u64 {
    // full fine-tuning: 2 parameter-sized blocks stranded when the fp32 logits do not fit them
    let params = if x.largest_grad < x.fp32_logits { x.largest_grad.saturating_mul(2) } else { 0 };
    let one_length = x.logits.saturating_add(params).saturating_add(ROUNDING_BYTES);
    if lengths_vary {
        one_length.saturating_add(x.loss_forward)
    } else {
        one_length
    }
}

/// The largest relative under-estimate of reserved memory measured on the published-GPU
/// set (`python -m benches.published_gpu`, comparable rows, calibration and held-out
/// together: −5.6% on PEFT's LoRA-on-MLP rows), rounded up to a whole percent: the bound
/// adds this fraction of the estimated PyTorch reserve.
pub const RESERVED_ERROR_BAND: f64 = 0.06;

/// What a plan must stay under to fit (nvidia-smi level): the estimated PyTorch reserve
/// (`peak_reserved − context`) raised by [`RESERVED_ERROR_BAND`], plus the context.
pub fn reserved_upper(peak_reserved: u64, cuda_context: u64) -> u64 {
    let torch_reserved = peak_reserved.saturating_sub(cuda_context);
    let band = (torch_reserved as f64 * RESERVED_ERROR_BAND).ceil() as u64;
    peak_reserved.saturating_add(band)
}

/// Default headroom for every fit verdict (`estimate`, `fit`, `recommend`, the TUI): the
/// fraction of the GPU's memory kept free ON TOP of the fit bound [`reserved_upper`], for
/// what the estimate cannot see (a desktop, a second CUDA context, a monitoring process).
/// The estimate's own error is not in it: the measured band is already inside the bound.
/// A plan fits when `reserved_upper ≤ memory × (1 − headroom)`; see the README, "Fits is a
/// promise".
pub const DEFAULT_HEADROOM: f64 = 0.02;

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(cc: &str) -> GpuSpec {
        GpuSpec::from_json(&format!(r#"{{"name":"x","memory_bytes":1,"compute_capability":"{cc}"}}"#)).unwrap()
    }

    #[test]
    fn workspace_follows_pytorch_by_generation() {
        // PyTorch CublasHandlePool.cpp: 8,519,680 B before Hopper, 33,554,432 B on 9.x/10.x/12.x
        assert_eq!(cublas_workspace_per_handle(Some(&gpu("8.9"))), 8_519_680);
        assert_eq!(cublas_workspace_per_handle(Some(&gpu("8.0"))), 8_519_680);
        assert_eq!(cublas_workspace_per_handle(Some(&gpu("9.0"))), 33_554_432);
        assert_eq!(cublas_workspace_per_handle(Some(&gpu("12.0"))), 33_554_432);
        assert_eq!(cublas_workspace(Some(&gpu("7.5"))), 2 * 8_519_680);
    }

    const GIB: f64 = (1u64 << 30) as f64;

    /// The estimator's inputs for a bf16 step of `tokens` × vocabulary `v` (no softcap).
    fn bf16(tokens: u64, v: u64, largest_grad: u64) -> ReserveInputs {
        let tv = tokens * v;
        ReserveInputs { logits: 2 * tv, fp32_logits: 4 * tv, loss_forward: 10 * tv, largest_grad }
    }

    fn within(est: u64, truth_gib: f64, tol: f64) {
        let e = est as f64 / GIB;
        assert!((e - truth_gib).abs() <= tol * truth_gib, "estimate {e:.3} GiB vs replay {truth_gib:.3} GiB");
    }

    #[test]
    fn one_length_matches_the_replay() {
        // replay (`python -m benches.truth.allocator_study`), reserve at one length:
        // Llama-3.2-3B LoRA 4×585: 0.715 GiB; Llama-3.2-1B LoRA 4×256: 0.282 GiB;
        // Qwen2.5-7B LoRA 2×512: 0.402 GiB
        within(allocator_reserve(&bf16(4 * 585, 128_256, 0), false), 0.715, 0.15);
        within(allocator_reserve(&bf16(4 * 256, 128_256, 0), false), 0.282, 0.15);
        within(allocator_reserve(&bf16(2 * 512, 152_064, 0), false), 0.402, 0.15);
    }

    #[test]
    fn full_fine_tuning_strands_parameter_sized_blocks() {
        // replay: Llama-3.2-3B full 4×585 (tied 128,256 × 3,072 bf16 embedding grad,
        // 751.5 MiB, smaller than the 1,145 MiB fp32 logits): 2.53 GiB
        let embed = 128_256 * 3_072 * 2;
        within(allocator_reserve(&bf16(4 * 585, 128_256, embed), false), 2.53, 0.20);
        // the embedding-sized blocks serve the fp32 logits when these fit: not stranded
        let small = allocator_reserve(&bf16(4 * 100, 128_256, embed), false);
        assert_eq!(small, allocator_reserve(&bf16(4 * 100, 128_256, 0), false));
    }

    #[test]
    fn varying_lengths_add_the_stranded_loss_blocks() {
        // replay: Llama-3.2-3B LoRA, one predecessor then 4×585 tokens: reserve 3.953 GiB
        // after 4×570 (the worst shorter batch), 3.302 after 4×520, 2.634 after 4×400
        let fixed = allocator_reserve(&bf16(4 * 585, 128_256, 0), false);
        let vary = allocator_reserve(&bf16(4 * 585, 128_256, 0), true);
        within(vary, 3.953, 0.15);
        assert!(vary > fixed);
        // the stranded blocks are the loss forward's, whatever the dtype
        let x = ReserveInputs { logits: 4, fp32_logits: 4, loss_forward: 8, largest_grad: 0 };
        assert_eq!(allocator_reserve(&x, true) - allocator_reserve(&x, false), 8);
        // DPO's fused head has no logits blocks: rounding only
        assert_eq!(allocator_reserve(&ReserveInputs::default(), true), ROUNDING_BYTES);
    }

    #[test]
    fn upper_bound_exceeds_estimate_by_the_band() {
        let ctx = CUDA_CONTEXT_BYTES;
        let up = reserved_upper(10 << 30, ctx);
        let torch = (10u64 << 30) - ctx;
        assert_eq!(up - (10u64 << 30), (torch as f64 * RESERVED_ERROR_BAND).ceil() as u64);
    }
}
