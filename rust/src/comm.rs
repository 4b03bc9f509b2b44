//! Communication per optimizer step of the multi-GPU plans, and the link it crosses.
//!
//! Volumes (bytes each GPU sends, ring algorithms: a collective over `n` GPUs of a
//! `B`-byte buffer moves `B·(n−1)/n` per GPU; NCCL's "bus bandwidth" convention):
//!
//! | plan | per micro-batch | per optimizer step |
//! |---|---|---|
//! | DDP | — | all-reduce of the grads: `2·G·(n−1)/n` (reduce-scatter + all-gather) |
//! | ZeRO-2 | — | reduce-scatter of the grads `G·(n−1)/n`, all-gather of the updated params `P·(n−1)/n` |
//! | FSDP / ZeRO-3 | all-gather of the params in forward and again in backward (`reshard_after_forward`): `2·P·(n−1)/n` | reduce-scatter of the grads `G·(n−1)/n` (once: Trainer's `no_sync` on earlier micro-batches, fsdp.rs) |
//!
//! `P`: parameter bytes as gathered (FSDP's `param_dtype`), `G`: gradient bytes as reduced.
//!
//! The catalog has no interconnect field, so the link is a documented default keyed by
//! form factor and generation (`link_of`): SXM/NVL boards talk over NVLink, the others over
//! PCIe. Bandwidths are per direction per GPU, from NVIDIA's datasheets: NVLink 2 (V100
//! SXM2) 150 GB/s, NVLink 3 (A100 SXM) 300 GB/s, NVLink 4 (H100 SXM, H200, H100 NVL bridge)
//! 450 GB/s, NVLink 5 (B200) 900 GB/s; PCIe 3/4/5 ×16: 16/32/64 GB/s raw, of which NCCL
//! reaches about 75% (its `all_reduce_perf` bus bandwidth on PCIe boards), and consumer
//! boards without peer-to-peer (GeForce) stage through host memory at about half that.
//!
//! Overlap: FSDP2 and ZeRO-3 prefetch the next unit's all-gather while the current one
//! computes, and reduce-scatter while the previous layer back-propagates, so the step is
//! bound by the larger of compute and communication, plus the one gather that nothing
//! hides (the first unit's).

/// The link between GPUs of one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    NvLink { generation: u8 },
    Pcie { generation: u8, peer_to_peer: bool },
}

/// The link of a catalog GPU from its name and compute capability (see the module docs).
pub fn link_of(name: &str, compute_capability: Option<&str>) -> Link {
    // case-insensitive, without allocating (this runs once per prepared plan)
    let has = |pat: &str| name.as_bytes().windows(pat.len()).any(|w| w.eq_ignore_ascii_case(pat.as_bytes()));
    let starts = |pat: &str| name.len() >= pat.len() && name.as_bytes()[..pat.len()].eq_ignore_ascii_case(pat.as_bytes());
    let cc: f64 = compute_capability.and_then(|c| c.parse().ok()).unwrap_or(0.0);
    let nvlink_board = has("SXM") || has("NVL") || name.eq_ignore_ascii_case("H200") || starts("B200");
    if nvlink_board {
        let generation = if cc >= 10.0 { 5 } else if cc >= 9.0 { 4 } else if cc >= 8.0 { 3 } else { 2 };
        return Link::NvLink { generation };
    }
    // PCIe 5 from Hopper/Blackwell boards on, 4 from Ampere/Ada, 3 before
    let generation = if cc >= 9.0 { 5 } else if cc >= 8.0 { 4 } else { 3 };
    let geforce = starts("RTX ") && !has("A6000") && !has("6000 ADA");
    Link::Pcie { generation, peer_to_peer: !geforce }
}

/// Bus bandwidth of a collective over `link`, bytes per second per GPU and direction.
pub fn bus_bytes_per_s(link: Link) -> f64 {
    match link {
        Link::NvLink { generation } => match generation {
            5 => 900e9,
            4 => 450e9,
            3 => 300e9,
            _ => 150e9,
        },
        Link::Pcie { generation, peer_to_peer } => {
            let raw = match generation {
                5 => 64e9,
                4 => 32e9,
                _ => 16e9,
            };
            raw * 0.75 * if peer_to_peer { 1.0 } else { 0.5 }
        }
    }
}

/// What the plan's collectives move per GPU, split by whether compute can hide it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepComm {
    /// Bytes per micro-batch (FSDP/ZeRO-3 parameter gathers).
    pub per_micro_batch: f64,
    /// Bytes once per optimizer step (gradient reduction, ZeRO-2's parameter gather).
    pub per_step: f64,
}

fn ring(bytes: f64, n: u64) -> f64 {
    if n <= 1 {
        0.0
    } else {
        bytes * (n - 1) as f64 / n as f64
    }
}

/// DDP: one all-reduce of `grad_bytes` per optimizer step.
pub fn ddp(grad_bytes: u64, n: u64) -> StepComm {
    StepComm { per_micro_batch: 0.0, per_step: 2.0 * ring(grad_bytes as f64, n) }
}

/// ZeRO-2: reduce-scatter the grads, all-gather the updated parameter partitions.
pub fn zero2(grad_bytes: u64, param_bytes: u64, n: u64) -> StepComm {
    StepComm { per_micro_batch: 0.0, per_step: ring(grad_bytes as f64, n) + ring(param_bytes as f64, n) }
}

/// FSDP / ZeRO-3: gather every parameter in forward and in backward, reduce-scatter the
/// grads once per step.
pub fn fully_sharded(gathered_param_bytes: u64, grad_bytes: u64, n: u64) -> StepComm {
    StepComm { per_micro_batch: 2.0 * ring(gathered_param_bytes as f64, n), per_step: ring(grad_bytes as f64, n) }
}

/// Seconds the communication adds to a step of `micro_batches` micro-batches that compute
/// for `compute_s` seconds: with prefetch (`overlap`), only what exceeds the compute plus the
/// first unit's gather (`first_unit_bytes`); without, all of it.
pub fn exposed_seconds(c: StepComm, micro_batches: u64, compute_s: f64, bus: f64, overlap: bool, first_unit_bytes: f64) -> f64 {
    if bus <= 0.0 {
        return 0.0;
    }
    let total = (c.per_micro_batch * micro_batches as f64 + c.per_step) / bus;
    if overlap {
        (total - compute_s).max(0.0) + first_unit_bytes / bus * micro_batches as f64
    } else {
        total
    }
}

/// Host link of a board (offloading crosses it): PCIe of its generation, per direction.
pub fn host_bytes_per_s(link: Link, compute_capability: Option<&str>) -> f64 {
    let generation = match link {
        Link::Pcie { generation, .. } => generation,
        // SXM boards hang off the host by PCIe too: 5 for Hopper/Blackwell, 4 for Ampere
        Link::NvLink { .. } => {
            let cc: f64 = compute_capability.and_then(|c| c.parse().ok()).unwrap_or(0.0);
            if cc >= 9.0 {
                5
            } else if cc >= 8.0 {
                4
            } else {
                3
            }
        }
    };
    bus_bytes_per_s(Link::Pcie { generation, peer_to_peer: true })
}

/// Host memory bandwidth a CPU optimizer step streams at: a documented default of 50 GB/s
/// (a dual-channel-per-socket server measures 100–300 GB/s in STREAM; a workstation 50–80),
/// the conservative end since the step shares the host with data loading.
pub const HOST_MEMORY_BYTES_PER_S: f64 = 50e9;

/// What a multi-GPU or offloaded plan adds to a step beyond compute (seconds), built once
/// per plan; `SpeedModel` adds [`Overhead::seconds`] to its compute seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Overhead {
    comm: StepComm,
    bus: f64,
    overlap: bool,
    first_unit_bytes: f64,
    /// Offloading: bytes over the host link per micro-batch and per step, and CPU Adam time.
    host_per_micro_batch: f64,
    host_per_step: f64,
    host: f64,
    cpu_optimizer_s: f64,
    /// Activation offloading: bytes per token of a micro-batch that go down in forward
    /// and come back in backward (trl overlaps both with compute on a side stream).
    offloaded_per_token: f64,
}

impl Overhead {
    /// `param_bytes`: the model's parameters as gathered; `grad_bytes`: the trainable
    /// gradients as reduced; `layer_bytes`: the largest unit gathered (what prefetch cannot
    /// hide); `trainable`: trainable parameters (CPU Adam).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: &crate::plan::Plan,
        gpu_name: &str,
        cc: Option<&str>,
        param_bytes: u64,
        grad_bytes: u64,
        layer_bytes: u64,
        trainable: u64,
        offloaded_per_token: u64,
    ) -> Self {
        use crate::plan::Distributed;
        let n = plan.num_gpus;
        let link = link_of(gpu_name, cc);
        let comm = match plan.distributed {
            Distributed::None => StepComm::default(),
            Distributed::Ddp => ddp(grad_bytes, n),
            Distributed::Zero2 => zero2(grad_bytes, param_bytes, n),
            Distributed::Fsdp | Distributed::Zero3 => fully_sharded(param_bytes, grad_bytes, n),
        };
        let sharded = matches!(plan.distributed, Distributed::Fsdp | Distributed::Zero3);
        let local = |b: u64| b as f64 / n.max(1) as f64;
        // offload_params: each gather reads the shard from the host (forward and backward);
        // offload_optimizer / FSDP's offload: grads down, updated params up, once per step
        let host_per_micro_batch = if plan.offload_params { 2.0 * local(param_bytes) } else { 0.0 };
        let cpu_step = plan.offload_optimizer || (plan.offload_params && plan.distributed == Distributed::Fsdp);
        let host_per_step = if cpu_step { local(grad_bytes) + local(param_bytes) } else { 0.0 };
        let cpu_optimizer_s = if cpu_step { crate::levers::cpu_adam_seconds(trainable / n.max(1), HOST_MEMORY_BYTES_PER_S / 1e9) } else { 0.0 };
        Overhead {
            comm,
            bus: bus_bytes_per_s(link),
            overlap: sharded,
            first_unit_bytes: if sharded { ring(layer_bytes as f64, n) } else { 0.0 },
            host_per_micro_batch,
            host_per_step,
            host: host_bytes_per_s(link, cc),
            cpu_optimizer_s,
            offloaded_per_token: offloaded_per_token as f64,
        }
    }

    /// Seconds added to a step of `micro_batches` micro-batches of `micro_tokens` tokens
    /// computing `compute_s` in all.
    pub fn seconds(&self, compute_s: f64, micro_batches: u64, micro_tokens: u64) -> f64 {
        let comm = exposed_seconds(self.comm, micro_batches, compute_s, self.bus, self.overlap, self.first_unit_bytes);
        let host = crate::levers::pcie_seconds((self.host_per_micro_batch * micro_batches as f64 + self.host_per_step) as u64, self.host / 1e9);
        // activations: down in forward, up in backward; hidden behind compute where it can be
        let acts = 2.0 * self.offloaded_per_token * micro_tokens as f64 * micro_batches as f64 / self.host;
        let acts = if self.host > 0.0 { (acts - compute_s).max(0.0) } else { 0.0 };
        comm + host + self.cpu_optimizer_s + acts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_by_form_factor() {
        assert_eq!(link_of("H100 SXM", Some("9.0")), Link::NvLink { generation: 4 });
        assert_eq!(link_of("H200", Some("9.0")), Link::NvLink { generation: 4 });
        assert_eq!(link_of("A100 80GB SXM", Some("8.0")), Link::NvLink { generation: 3 });
        assert_eq!(link_of("V100 32GB SXM2", Some("7.0")), Link::NvLink { generation: 2 });
        assert_eq!(link_of("B200", Some("10.0")), Link::NvLink { generation: 5 });
        assert_eq!(link_of("H100 PCIe", Some("9.0")), Link::Pcie { generation: 5, peer_to_peer: true });
        assert_eq!(link_of("RTX 4090", Some("8.9")), Link::Pcie { generation: 4, peer_to_peer: false });
        assert_eq!(link_of("RTX A6000", Some("8.6")), Link::Pcie { generation: 4, peer_to_peer: true });
        assert_eq!(link_of("T4", Some("7.5")), Link::Pcie { generation: 3, peer_to_peer: true });
    }

    #[test]
    fn bandwidths() {
        assert_eq!(bus_bytes_per_s(Link::NvLink { generation: 4 }), 450e9);
        assert_eq!(bus_bytes_per_s(Link::Pcie { generation: 4, peer_to_peer: true }), 24e9);
        assert_eq!(bus_bytes_per_s(Link::Pcie { generation: 4, peer_to_peer: false }), 12e9);
    }

    #[test]
    fn volumes() {
        // DDP of 1 GB of grads over 8 GPUs: 2 × 7/8 GB
        assert_eq!(ddp(1_000_000_000, 8).per_step, 1.75e9);
        assert_eq!(ddp(1_000_000_000, 1).per_step, 0.0);
        // FSDP: 16 GB of bf16 params on 4 GPUs: 2 × 12 GB per micro-batch
        let c = fully_sharded(16_000_000_000, 32_000_000_000, 4);
        assert_eq!(c.per_micro_batch, 24e9);
        assert_eq!(c.per_step, 24e9);
        assert_eq!(zero2(4, 4, 2).per_step, 4.0);
    }

    #[test]
    fn overhead_of_plans() {
        use crate::plan::{Distributed, Plan};
        let single = Plan::default();
        assert_eq!(Overhead::new(&single, "RTX 4090", Some("8.9"), 16, 16, 1, 1, 0).seconds(1.0, 4, 4096), 0.0);
        // DDP on two 4090s (PCIe 4 through the host, 12 GB/s): 12 GB of grads all-reduced
        let ddp = Plan { num_gpus: 2, distributed: Distributed::Ddp, ..Plan::default() };
        let o = Overhead::new(&ddp, "RTX 4090", Some("8.9"), 0, 12_000_000_000, 0, 0, 0);
        assert!((o.seconds(10.0, 4, 4096) - 2.0 * 6e9 / 12e9).abs() < 1e-9);
        // ZeRO-3 + offload_optimizer on H100 SXM: CPU Adam over 1e9 params / 2 GPUs at 50 GB/s
        let z = Plan { num_gpus: 2, distributed: Distributed::Zero3, offload_optimizer: true, ..Plan::default() };
        let o = Overhead::new(&z, "H100 SXM", Some("9.0"), 0, 0, 0, 1_000_000_000, 0);
        assert!((o.seconds(1.0, 1, 4096) - 5e8 * 32.0 / 50e9).abs() < 1e-9);
        // activation offloading on a 4090 (PCIe 4, 24 GB/s): 1 MB per token × 4096 tokens
        // down and up = 8.2 GB = 0.34 s per micro-batch; 0.2 s of compute hides 0.2 s of it
        let a = Plan { activation_offloading: true, ..Plan::default() };
        let o = Overhead::new(&a, "RTX 4090", Some("8.9"), 0, 0, 0, 0, 1_000_000);
        assert!((o.seconds(0.2, 1, 4096) - (2.0 * 1e6 * 4096.0 / 24e9 - 0.2)).abs() < 1e-9);
    }

    #[test]
    fn overlap_hides_what_compute_covers() {
        let c = StepComm { per_micro_batch: 450e9, per_step: 0.0 };
        // 1 s of traffic per micro-batch at 450 GB/s; 4 micro-batches of 2 s compute each
        assert_eq!(exposed_seconds(c, 4, 8.0, 450e9, false, 0.0), 4.0);
        assert_eq!(exposed_seconds(c, 4, 8.0, 450e9, true, 0.0), 0.0);
        assert!((exposed_seconds(c, 4, 2.0, 450e9, true, 4.5e9) - (2.0 + 0.04)).abs() < 1e-12);
    }
}
