//! forge-advisor's core: exact model-shape arithmetic and the training-memory and
//! throughput estimator. Pure Rust; the Python wiring lives in `python.rs` alone,
//! behind the `python` feature that maturin turns on.

pub mod activations;
pub mod activations_conv;
pub mod analysis;
pub mod device;
pub mod comm;
pub mod cross;
pub mod error;
pub mod estimator;
pub mod fsdp;
pub mod levers;
pub mod gpu;
pub mod objective;
pub mod plan;
pub mod recurrent;
pub mod search;
pub mod shape;
pub mod throughput;
pub mod timeline;
pub mod video;
pub mod vision;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
pub use estimator::{Breakdown, Estimate, Estimator, Phase};
pub use timeline::{Evaluation, Prepared};
pub use gpu::GpuSpec;
pub use plan::Plan;
pub use shape::{LayerType, Linear, ModelShape, NormKind, Param, ParamRole, Role, Stack};
