//! The memory levers practitioners pull when a run does not fit: Liger-Kernel's fused
//! linear cross-entropy and its RMSNorm/SwiGLU kernels (`use_liger_kernel`), activation
//! offloading (trl `activation_offloading`), optimizer and parameter CPU offload
//! (DeepSpeed `offload_optimizer`/`offload_param`, FSDP `offload_params`). Pure functions;
//! `estimator.rs` and `timeline.rs` apply them.

/// Liger's fused linear cross-entropy chunk (liger_kernel/ops/fused_linear_cross_entropy.py
/// `fused_linear_cross_entropy_forward`): the `[BT, V]` logits are computed `chunk` rows at a
/// time, with `inc_factor = ceil(V / H)` and
/// `chunk = min(next_power_of_2(ceil(BT / inc_factor)), BT)` so that one `[chunk, V]` tile
/// is about one `[BT, H]` tensor. E.g. BT = 16,384, V = 32,000, H = 4,096: inc_factor 8,
/// chunk 2,048.
pub fn liger_chunk_rows(bt: u64, h: u64, v: u64) -> u64 {
    if bt == 0 {
        return 0;
    }
    let inc = v.div_ceil(h.max(1)).max(1);
    bt.div_ceil(inc).next_power_of_two().min(bt)
}

/// Bytes of Liger's fused linear cross-entropy in the loss forward, beyond what it keeps
/// for backward: one `[chunk, V]` logits tile in the compute dtype (`e` bytes; the
/// cross-entropy kernel writes the logits' gradient into it in place), the `[chunk, H]`
/// product `grad_logits @ W` before it is copied into `grad_input`, and — when the head
/// trains — the `[V, H]` weight gradient it accumulates from the first chunk on
/// (`head_grad_bytes`, the head's own `.grad` in backward).
pub fn liger_forward_transient(bt: u64, h: u64, v: u64, e: u64, head_grad_bytes: u64) -> u64 {
    let chunk = liger_chunk_rows(bt, h, v);
    chunk.saturating_mul(v).saturating_mul(e).saturating_add(chunk.saturating_mul(h).saturating_mul(e)).saturating_add(head_grad_bytes)
}

/// Bytes per token that Liger's fused linear cross-entropy keeps from the loss forward to
/// the start of backward: `grad_input` (`[BT, H]` in the compute dtype: the gradient is
/// computed in forward) and the fp32 per-token loss `loss_1d`.
pub fn liger_kept_per_token(h: u64, e: u64) -> u64 {
    h * e + 4
}

/// What Liger's kernels save per token of one decoder layer, less than transformers'
/// modules (when the layer back-propagates):
/// - RMSNorm (`LigerRMSNorm`, ops/rms_norm.py): saves the input in its own dtype and a fp32
///   `rstd` per row, `e·h + 4`, where HF's `x.to(fp32)` keeps `4·h + 4`: `(4 − e)·h` less,
///   for each of the layer's `norms` norms (nothing under fp32);
/// - SwiGLU (`LigerSiLUMulFunction`, ops/swiglu.py): saves the gate and up projections and
///   recomputes `silu` in backward, where HF's `act(gate) * up` also keeps `silu(gate)`:
///   one `e·inter` less (`gated` MLPs only);
/// - RoPE (`liger_rotary_pos_emb`): like HF's `q·cos + rotate_half(q)·sin`, it keeps only
///   `cos`/`sin` (per position, not per token of the batch): no change.
pub fn liger_layer_saving(h: u64, inter: u64, e: u64, norms: u64, gated_silu: bool) -> u64 {
    let norm = norms * h * 4u64.saturating_sub(e);
    let mlp = if gated_silu { inter * e } else { 0 };
    norm + mlp
}

/// Host memory and GPU memory left by activation offloading (trl
/// `OffloadActivations`, a `saved_tensors_hooks` pair): in forward every saved tensor
/// that is not a parameter moves to pinned host memory; in backward each layer's tensors
/// come back one layer ahead of use on a side stream. So the GPU keeps, per token, the
/// layer in backward (all it saved) and the next one being fetched (`kept_max`); the host
/// holds everything the layers kept (`kept_total`).
pub fn offload_prefetch_per_token(kept_max: u64) -> u64 {
    kept_max
}

/// Host bytes of an offloaded optimizer (DeepSpeed ZeRO-2/3 `offload_optimizer` with
/// `DeepSpeedCPUAdam`): per trainable parameter of this rank's partition, the fp32 master
/// weight, the fp32 gradient copy it steps from, and the optimizer states
/// (`states_bytes`, already per rank).
pub fn offloaded_optimizer_host_bytes(trainable_local: u64, states_bytes: u64) -> u64 {
    trainable_local.saturating_mul(4 + 4).saturating_add(states_bytes)
}

/// Seconds per optimizer step spent moving offloaded tensors over PCIe (`bytes` both ways,
/// at `gb_per_s` GB/s; see comm.rs for the link).
pub fn pcie_seconds(bytes: u64, gb_per_s: f64) -> f64 {
    if gb_per_s <= 0.0 {
        return 0.0;
    }
    bytes as f64 / (gb_per_s * 1e9)
}

/// Seconds of a CPU Adam step over `params` fp32 parameters. DeepSpeed's `DeepSpeedCPUAdam`
/// (AVX-512, all cores) reads and writes ~16 bytes of state per parameter; at host memory
/// bandwidth `host_gb_per_s` the step is bound by it: `params × 32 B / bandwidth` (read +
/// write of param, grad, exp_avg, exp_avg_sq).
pub fn cpu_adam_seconds(params: u64, host_gb_per_s: f64) -> f64 {
    if host_gb_per_s <= 0.0 {
        return 0.0;
    }
    params as f64 * 32.0 / (host_gb_per_s * 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liger_chunk_matches_the_kernel_comment() {
        // "BT = 4096*4, V = 32000, H = 4096 ==> inc_factor = 8, chunk_size = 2048"
        assert_eq!(liger_chunk_rows(4096 * 4, 4096, 32000), 2048);
        // Llama-3 vocabulary: inc_factor = ceil(128256/4096) = 32, 4096/32 = 128 rows
        assert_eq!(liger_chunk_rows(4096, 4096, 128_256), 128);
        // never more than BT; rounding up to a power of two
        assert_eq!(liger_chunk_rows(3, 4096, 8192), 2);
        assert_eq!(liger_chunk_rows(1000, 4096, 32000), 128);
        assert_eq!(liger_chunk_rows(0, 4096, 32000), 0);
    }

    #[test]
    fn liger_tile_is_about_one_hidden_tensor() {
        // 16,384 tokens, Llama-2: tile 2048 × 32000 × 2 B = 125 MiB vs [BT, H] bf16 = 128 MiB
        let tile = liger_forward_transient(16_384, 4096, 32_000, 2, 0);
        assert_eq!(tile, 2048 * 32_000 * 2 + 2048 * 4096 * 2);
        // the full logits it replaces: 16,384 × 32,000 × (2 + 4 + 4) B = 5 GB
        assert!(tile * 30 < 16_384 * 32_000 * 10);
        // a training head adds its [V, H] gradient from the forward on
        assert_eq!(liger_forward_transient(16_384, 4096, 32_000, 2, 7) - tile, 7);
    }

    #[test]
    fn liger_layer_saving_rules() {
        // Llama-3.1-8B layer, bf16: two RMSNorms save 2 B less per feature, SwiGLU one
        // bf16 [inter] less: 2·4096·2 + 14336·2
        assert_eq!(liger_layer_saving(4096, 14_336, 2, 2, true), 2 * 4096 * 2 + 14_336 * 2);
        assert_eq!(liger_layer_saving(4096, 14_336, 4, 2, false), 0);
    }

    #[test]
    fn offload_costs() {
        // 8B trainable on one rank: 64 GB of fp32 master + grad copies + states
        assert_eq!(offloaded_optimizer_host_bytes(8, 64), 8 * 8 + 64);
        assert!((pcie_seconds(25_000_000_000, 25.0) - 1.0).abs() < 1e-12);
        assert_eq!(pcie_seconds(1, 0.0), 0.0);
        assert!((cpu_adam_seconds(1_000_000_000, 32.0) - 1.0).abs() < 1e-12);
        assert_eq!(offload_prefetch_per_token(5), 5);
    }
}
