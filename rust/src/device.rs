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

/// Fraction of the bytes that churn within a step (allocated and freed every step: grads,
/// activations, logits, backward buffers, optimizer temporaries) that the caching
/// allocator holds reserved but unused at the peak. Mechanism
/// (`c10/cuda/CUDACachingAllocator.cpp`): blocks above 1 MiB are carved best-fit from
/// cached segments and split; a freed block merges only with free neighbours of its own
/// segment, so the tails of segments sized for earlier, differently-sized requests (other
/// sequence lengths, other phases) stay cached and cannot serve the largest request at the
/// peak, which gets a new segment. Static tensors (weights, adapters, optimizer states)
/// are allocated once and do not fragment. Fitted on the calibration rows of
/// `benches/published_gpu`: `max_memory_reserved` of whole runs with variable-length batches
/// on a GPU never short of memory. The allocator replay of recorded steps
/// (`benches/truth/allocator_study.py`) finds less at one batch shape (0.7–0.8 GiB for
/// Llama-3.2-3B LoRA at 4 × 585 tokens, against ~5 GiB here), and the allocator releases
/// cached segments before it raises out-of-memory: for fixed-length batches this errs on
/// the safe side.
pub const CHURN_RESERVE: f64 = 0.52;

/// Segment rounding: allocations above 10 MiB get their own segment rounded up to 2 MiB
/// (`kRoundLarge`), so each of the few largest transients wastes up to 2 MiB; 1–10 MiB
/// requests share 20 MiB segments (`kLargeBuffer`). Charged as a fixed 64 MiB (32 large
/// transients × 2 MiB at worst).
pub const ROUNDING_BYTES: u64 = 64 * MIB;

/// The allocator's reserve at a peak of `peak_allocated` bytes of which `fixed` are static.
pub fn allocator_reserve(peak_allocated: u64, fixed: u128) -> u64 {
    let churn = (peak_allocated as u128).saturating_sub(fixed) as f64;
    ((churn * CHURN_RESERVE) as u64).saturating_add(ROUNDING_BYTES)
}

/// The largest relative under-estimate of reserved memory measured on the published-GPU
/// set (`python -m benches.published_gpu`, comparable rows, calibration and held-out
/// together: −3.5% on PEFT's LoRA-on-MLP rows), rounded up to a whole percent: the bound
/// adds this fraction of the estimated PyTorch reserve.
pub const RESERVED_ERROR_BAND: f64 = 0.04;

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

    #[test]
    fn static_bytes_do_not_fragment() {
        // a peak made only of static tensors keeps just the rounding
        assert_eq!(allocator_reserve(10 << 30, 10 << 30), ROUNDING_BYTES);
        // 1 GiB of churn adds CHURN_RESERVE of it
        let r = allocator_reserve(11 << 30, 10 << 30);
        assert_eq!(r, ROUNDING_BYTES + ((1u64 << 30) as f64 * CHURN_RESERVE) as u64);
    }

    #[test]
    fn upper_bound_exceeds_estimate_by_the_band() {
        let ctx = CUDA_CONTEXT_BYTES;
        let up = reserved_upper(10 << 30, ctx);
        let torch = (10u64 << 30) - ctx;
        assert_eq!(up - (10u64 << 30), (torch as f64 * RESERVED_ERROR_BAND).ceil() as u64);
    }
}
