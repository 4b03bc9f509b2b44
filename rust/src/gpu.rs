//! What the estimator needs to know about a GPU. The catalog and NVML probe live in
//! Python (`forge_advisor.gpus`); they hand this over as JSON.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::ComputeKind;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeakTflops {
    #[serde(default)]
    pub bf16: Option<f64>,
    #[serde(default)]
    pub fp16: Option<f64>,
    #[serde(default)]
    pub tf32: Option<f64>,
    #[serde(default)]
    pub fp32: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSpec {
    pub name: String,
    pub memory_bytes: u64,
    #[serde(default)]
    pub peak_tflops: PeakTflops,
    #[serde(default)]
    pub bandwidth_bytes_per_s: Option<f64>,
    /// "9.0" for Hopper; decides which SDPA kernel PyTorch picks.
    #[serde(default)]
    pub compute_capability: Option<String>,
}

impl GpuSpec {
    pub fn from_json(text: &str) -> Result<Self> {
        let gpu: GpuSpec = serde_json::from_str(text).map_err(|e| Error::Decode { message: format!("bad GPU spec: {e}") })?;
        if gpu.memory_bytes == 0 {
            return Err(Error::field("memory_bytes", 0, "a positive number of bytes"));
        }
        Ok(gpu)
    }

    /// Compute capability major version (9 for H100/H200), if known.
    pub fn cc_major(&self) -> Option<u32> {
        self.compute_capability.as_deref()?.split('.').next()?.trim().parse().ok()
    }

    /// Dense tensor-core peak in FLOP/s for this kind of compute, if known.
    pub fn peak_flops(&self, kind: ComputeKind) -> Option<f64> {
        let t = match kind {
            ComputeKind::Bf16 => self.peak_tflops.bf16,
            ComputeKind::Fp16 => self.peak_tflops.fp16.or(self.peak_tflops.bf16),
            ComputeKind::Tf32 => self.peak_tflops.tf32.or(self.peak_tflops.fp32),
        };
        t.filter(|v| v.is_finite() && *v > 0.0).map(|v| v * 1e12)
    }
}
