//! The only file that knows about Python. Errors become `ValueError` with the
//! core's one-line message; nothing panics across the boundary.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::Error;
use crate::estimator::{Estimate, Estimator};
use crate::gpu::GpuSpec;
use crate::plan::Plan;
use crate::search::{Scored, Space};
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

/// Estimates plans for one model (and optionally one GPU).
#[pyclass(name = "Estimator", module = "forge_advisor._native", frozen)]
struct PyEstimator {
    inner: Estimator,
    gpu: Option<GpuSpec>,
}

fn estimate_dict<'py>(py: Python<'py>, e: &Estimate) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("peak_allocated_bytes", e.peak_allocated_bytes)?;
    d.set_item("peak_reserved_bytes", e.peak_reserved_bytes)?;
    d.set_item("peak_reserved_upper_bytes", e.peak_reserved_upper_bytes)?;
    d.set_item("default_headroom", crate::device::DEFAULT_HEADROOM)?;
    d.set_item("peak_phase", serde_json::to_value(e.peak_phase).ok().and_then(|v| v.as_str().map(str::to_owned)))?;
    let b = PyDict::new(py);
    for (k, v) in e.breakdown.entries() {
        b.set_item(k, v)?;
    }
    d.set_item("breakdown", b)?;
    let dev = PyDict::new(py);
    dev.set_item("cuda_context", e.device.cuda_context)?;
    dev.set_item("cublas_workspace", e.device.cublas_workspace)?;
    dev.set_item("allocator_reserve", e.device.allocator_reserve)?;
    dev.set_item("paged_optimizer_states", e.device.paged_optimizer_states)?;
    d.set_item("device", dev)?;
    d.set_item("total_parameters", e.total_parameters)?;
    d.set_item("trainable_parameters", e.trainable_parameters)?;
    d.set_item("frozen_layers", e.frozen_layers)?;
    d.set_item("flops_per_token", e.flops_per_token)?;
    d.set_item("tokens_per_step", e.tokens_per_step)?;
    d.set_item("tokens_per_second", e.tokens_per_second)?;
    d.set_item("step_seconds", e.step_seconds)?;
    d.set_item("mfu", e.mfu)?;
    d.set_item("quality", e.quality)?;
    Ok(d)
}

fn scored_dict<'py>(py: Python<'py>, s: &Scored) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("plan_json", serde_json::to_string(&s.plan).map_err(|e| PyValueError::new_err(e.to_string()))?)?;
    d.set_item("estimate", estimate_dict(py, &s.estimate)?)?;
    d.set_item("value", s.value)?;
    d.set_item("fits", s.fits)?;
    Ok(d)
}

#[pymethods]
impl PyEstimator {
    #[new]
    #[pyo3(signature = (shape_json, gpu_json=None))]
    fn new(shape_json: &str, gpu_json: Option<&str>) -> PyResult<Self> {
        let inner = Estimator::from_json(shape_json).map_err(to_py)?;
        let gpu = gpu_json.map(GpuSpec::from_json).transpose().map_err(to_py)?;
        Ok(PyEstimator { inner, gpu })
    }

    /// Estimate one plan given as JSON; returns a dict.
    fn estimate<'py>(&self, py: Python<'py>, plan_json: &str) -> PyResult<Bound<'py, PyDict>> {
        let plan = Plan::from_json(plan_json).map_err(to_py)?;
        let e = self.inner.estimate(&plan, self.gpu.as_ref()).map_err(to_py)?;
        estimate_dict(py, &e)
    }

    /// Estimate many plans; returns `(peak_allocated, peak_reserved, tokens_per_second or None)`
    /// per plan, or the error message in place of a tuple.
    fn estimate_batch(&self, py: Python<'_>, plans_json: Vec<String>) -> PyResult<Vec<Py<PyAny>>> {
        // the plans that parse, evaluated in one batch (consecutive plans of one structure
        // share its preparation), then put back among the parse errors
        let mut plans: Vec<Plan> = Vec::with_capacity(plans_json.len());
        let parse_errors: Vec<Option<String>> = plans_json
            .iter()
            .map(|t| match Plan::from_json(t) {
                Ok(p) => {
                    plans.push(p);
                    None
                }
                Err(e) => Some(e.to_string()),
            })
            .collect();
        let gpu = self.gpu.as_ref();
        let results: Vec<Result<(u64, u64, Option<f64>), String>> = py.detach(|| {
            let mut evaluated = self.inner.evaluate_many(&plans, gpu).into_iter();
            parse_errors
                .into_iter()
                .map(|err| match err {
                    None => evaluated
                        .next()
                        .expect("one evaluation per parsed plan")
                        .map(|e| (e.peak_allocated_bytes, e.peak_reserved_bytes, e.tokens_per_second))
                        .map_err(|e| e.to_string()),
                    Some(m) => Err(m),
                })
                .collect()
        });
        results
            .into_iter()
            .map(|r| match r {
                Ok(t) => Ok(t.into_pyobject(py)?.into_any().unbind()),
                Err(m) => Ok(m.into_pyobject(py)?.into_any().unbind()),
            })
            .collect()
    }
}

/// A search space bound to an estimator: the inner solve and the exhaustive search.
#[pyclass(name = "Search", module = "forge_advisor._native", frozen)]
struct PySearch {
    estimator: Py<PyEstimator>,
    space: Space,
}

#[pymethods]
impl PySearch {
    #[new]
    fn new(estimator: Py<PyEstimator>, space_json: &str) -> PyResult<Self> {
        Ok(PySearch { estimator, space: Space::from_json(space_json).map_err(to_py)? })
    }

    /// Number of outer choices (what the Optuna study searches).
    fn outer_count(&self) -> usize {
        self.space.outer_plans().len()
    }

    /// Best (batch, accumulation, checkpointing) for an outer plan; None if no batch divides.
    fn inner<'py>(&self, py: Python<'py>, outer_json: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let outer = Plan::from_json(outer_json).map_err(to_py)?;
        let est = self.estimator.get();
        match est.inner.best_inner(&outer, &self.space, est.gpu.as_ref()).map_err(to_py)? {
            Some(s) => Ok(Some(scored_dict(py, &s)?)),
            None => Ok(None),
        }
    }

    /// Exhaustive search over the whole space: (best or None, plans evaluated, seconds).
    fn brute_force<'py>(&self, py: Python<'py>) -> PyResult<(Option<Bound<'py, PyDict>>, u64, f64)> {
        let est = self.estimator.get();
        let t0 = std::time::Instant::now();
        let (best, n) = py.detach(|| est.inner.brute_force(&self.space, est.gpu.as_ref())).map_err(to_py)?;
        let secs = t0.elapsed().as_secs_f64();
        Ok((best.map(|s| scored_dict(py, &s)).transpose()?, n, secs))
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyShape>()?;
    m.add_class::<PyEstimator>()?;
    m.add_class::<PySearch>()?;
    Ok(())
}
