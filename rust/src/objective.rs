//! What the advisor optimises: throughput, a quality score for the training method, and
//! their combination per objective.
//!
//! The quality score ranks methods by how closely they are reported to match full
//! fine-tuning; it is a heuristic, documented here, not a measurement:
//! - full fine-tuning: 1.0;
//! - LoRA: 0.90, rising with rank to 0.94 at r=256 (Biderman et al. 2024, "LoRA Learns
//!   Less and Forgets Less": the gap to full fine-tuning narrows with rank), +0.03 when every
//!   linear layer is adapted (Dettmers et al. 2023, QLoRA §4: adapting all linear layers is
//!   what matches 16-bit full fine-tuning);
//! - QLoRA: LoRA − 0.01 (QLoRA: NF4 with double quantisation matches 16-bit LoRA); 8-bit
//!   base: LoRA − 0.005;
//! - freezing the lowest layers: × (1 − 0.2 · ratio²) — a quarter frozen costs ~1%, nine
//!   tenths ~16% (lower layers adapt least, but freezing most of the stack forfeits capacity);
//! - 8-bit AdamW − 0.005 (Dettmers et al. 2022, 8-bit optimizers), Adafactor − 0.01,
//!   SGD − 0.05.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::{names, Method, Optim, Plan, Targets};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Highest tokens/s (quality breaks ties).
    Fastest,
    /// Highest quality score (tokens/s breaks ties).
    Quality,
    /// quality⁸ × tokens/s: a 3% lower quality score needs 1.28× the speed to win, a 10%
    /// lower one 2.3×.
    Balanced,
}

names!(Objective { Balanced = "balanced", Fastest = "fastest", Quality = "quality" });

pub fn quality_score(plan: &Plan, all_linear: bool) -> f64 {
    let mut q = match plan.method {
        Method::Full => 1.0,
        Method::Lora | Method::Qlora | Method::Lora8bit => {
            // 2 (r=4) .. 8 (r=256); a power of two's log2 is its exponent, exactly
            let r = if plan.lora_r.is_power_of_two() { plan.lora_r.trailing_zeros() as f64 } else { (plan.lora_r.max(1) as f64).log2() };
            let mut q = 0.90 + 0.04 * ((r - 3.0) / 5.0).clamp(-0.5, 1.0);
            if all_linear {
                q += 0.03;
            }
            match plan.method {
                Method::Qlora => q - 0.01,
                Method::Lora8bit => q - 0.005,
                _ => q,
            }
        }
    };
    q *= 1.0 - 0.2 * plan.freeze_ratio * plan.freeze_ratio;
    q -= match plan.optim {
        Optim::Adamw8bit | Optim::PagedAdamw8bit => 0.005,
        Optim::Adafactor => 0.01,
        Optim::Sgd => 0.05,
        _ => 0.0,
    };
    q
}

/// Whether the plan's targets cover every linear layer (`all-linear` or all names).
pub fn targets_all_linear(plan: &Plan, mask: u64, all_mask: u64) -> bool {
    matches!(&plan.lora_target_modules, Some(Targets::Keyword(k)) if k == "all-linear") || (mask != 0 && mask == all_mask)
}

/// The scalar the advisor maximises. Without a throughput (unknown GPU FLOP/s) only
/// quality can rank plans.
pub fn objective_value(objective: Objective, tokens_per_second: Option<f64>, quality: f64) -> f64 {
    match (objective, tokens_per_second) {
        (Objective::Fastest, Some(t)) => t * (1.0 + 1e-6 * quality),
        (Objective::Balanced, Some(t)) => quality.powi(8) * t,
        (Objective::Quality, Some(t)) => quality + 1e-12 * t,
        (_, None) => quality,
    }
}
