//! Recurrent stacks (HRM: transformers 5's modeling_hrm_text.py): what autograd keeps
//! beyond the layers it runs several times (those are priced per run: `LayerType::passes`,
//! estimator.rs).
//!
//! `HrmTextStack.forward` ends every run of a stack with `final_norm`, a weightless
//! `HrmTextRMSNorm`: `self._norm(x.float()).type_as(x)`, whose `pow` and `mul` keep the fp32
//! input and the rsqrt (4 · H + 4 bytes per token; no weight, so no normed copy). The runs
//! with autograd are the L stack's last `L_bp_cycles` runs of each high cycle and every H
//! stack run (shapes/families/hrm.py); the last H run's norm is the model's final norm
//! (the estimator's tail), the others are `Hints::stack_norm_runs`. They sit outside the
//! layers, so gradient checkpointing does not drop them.

use crate::shape::ModelShape;

/// Bytes per token the stacks' final norms keep beyond the model's final norm.
pub fn stack_norms_per_token(shape: &ModelShape) -> u64 {
    (4 * shape.hidden_size + 4).saturating_mul(shape.hints.stack_norm_runs)
}
