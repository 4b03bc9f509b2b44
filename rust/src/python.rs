//! The only file that knows about Python. Errors become `ValueError` with the
//! core's one-line message; nothing panics across the boundary.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::Error;
use crate::shape::ModelShape;

fn to_py(err: Error) -> PyErr {
    PyValueError::new_err(err.to_string())
}

/// A validated model shape held natively, built once and reused by every estimate.
#[pyclass(name = "Shape", module = "forge_advisor._native", frozen)]
struct PyShape {
    inner: ModelShape,
}

#[pymethods]
impl PyShape {
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Self> {
        Ok(PyShape { inner: ModelShape::from_json(text).map_err(to_py)? })
    }

    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn num_parameters(&self) -> PyResult<u64> {
        self.inner.num_parameters().map_err(to_py)
    }

    fn active_parameters(&self) -> PyResult<u64> {
        self.inner.active_parameters().map_err(to_py)
    }

    fn embedding_parameters(&self) -> u64 {
        self.inner.embedding_parameters()
    }

    fn non_layer_parameters(&self) -> PyResult<u64> {
        self.inner.non_layer_parameters().map_err(to_py)
    }

    fn layer_parameters(&self) -> PyResult<Vec<u64>> {
        self.inner.layer_parameters().map_err(to_py)
    }

    fn __repr__(&self) -> String {
        format!("Shape(name={:?}, layers={})", self.inner.name, self.inner.layers.len())
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyShape>()?;
    Ok(())
}
