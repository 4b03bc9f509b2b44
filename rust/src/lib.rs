//! forge-advisor's core: exact model-shape arithmetic and the training-memory and
//! throughput estimator. Pure Rust; the Python wiring lives in `python.rs` alone,
//! behind the `python` feature that maturin turns on.

pub mod error;
pub mod shape;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
pub use shape::{LayerType, Linear, ModelShape, NormKind, Param, ParamRole, Role, Stack};
