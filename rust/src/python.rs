//! The only file that knows about Python. Plans and GPUs are read from the caller's objects
//! by attribute (no JSON per call); estimates, plans and rankings come back as frozen
//! classes with getters. A bad field raises `PlanError(ValueError)` carrying `.field`,
//! `.value` and `.allowed`; other errors are `ValueError` with the core's one-line
//! message; nothing panics across the boundary.

use std::time::Instant;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::error::Error;
use crate::estimator::{Estimate, Estimator};
use crate::gpu::{GpuSpec, PeakTflops};
use crate::objective::{objective_value, Objective};
use crate::plan::{Attention, Batching, Distributed, Dtype, Method, Optim, Plan, QuantStorage, Targets, Trainer, CHOICES, FLOAT_RANGES, INT_RANGES};
use crate::search::{self, Ranked, Ranking, Shortfall, Space};
use crate::shape::ModelShape;

create_exception!(
    forge_advisor._native,
    PlanError,
    PyValueError,
    "A plan field with a value outside what is allowed: `.field`, `.value` and `.allowed` name them."
);

fn to_py(err: Error) -> PyErr {
    let message = err.to_string();
    match err {
        Error::InvalidField { field, value, allowed } => Python::attach(|py| {
            let e = PlanError::new_err(message);
            let v = e.value(py);
            for (k, x) in [("field", field), ("value", value), ("allowed", allowed)] {
                if let Err(set) = v.setattr(k, x) {
                    return set;
                }
            }
            e
        }),
        _ => PyValueError::new_err(message),
    }
}

// ---------------------------------------------------------------------------------------
// Plans in: read from any object with the Plan's attributes (forge_advisor.plan.Plan, or a
// Plan this module returned)

/// A plan read from a Python object by attribute and validated.
struct PlanArg(Plan);

fn attr<'py>(obj: &Bound<'py, PyAny>, name: &Bound<'py, pyo3::types::PyString>) -> PyResult<Bound<'py, PyAny>> {
    obj.getattr(name)
}

fn text(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<String> {
    let v = obj.getattr(field)?;
    v.extract::<String>().map_err(|_| to_py(Error::field(field, v.repr().map(|r| r.to_string()).unwrap_or_default(), "a string")))
}

fn int(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<u64> {
    let v = obj.getattr(field)?;
    if v.is_instance_of::<pyo3::types::PyBool>() {
        return Err(to_py(Error::field(field, v.to_string(), "an integer")));
    }
    v.extract::<u64>().map_err(|_| to_py(Error::field(field, v.to_string(), "a non-negative integer")))
}

fn optional_int(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Option<u64>> {
    if obj.getattr(field)?.is_none() {
        Ok(None)
    } else {
        int(obj, field).map(Some)
    }
}

fn float(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<f64> {
    let v = obj.getattr(field)?;
    v.extract::<f64>().map_err(|_| to_py(Error::field(field, v.to_string(), "a number")))
}

fn boolean(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<bool> {
    let v = obj.getattr(field)?;
    v.extract::<bool>().map_err(|_| to_py(Error::field(field, v.to_string(), "true or false")))
}

/// `lora_target_modules` (None, "all-linear" or names) or `lora_target_parameters` (None,
/// "experts" or names), read by attribute.
fn targets<'py>(obj: &Bound<'py, PyAny>, name: &Bound<'py, pyo3::types::PyString>, keyword: &str) -> PyResult<Option<Targets>> {
    let v = attr(obj, name)?;
    let field = name.to_string();
    let field = field.as_str();
    if v.is_none() {
        return Ok(None);
    }
    if let Ok(s) = v.extract::<String>() {
        return Ok(Some(Targets::Keyword(s)));
    }
    v.extract::<Vec<String>>()
        .map(|names| Some(Targets::Names(names)))
        .map_err(|_| to_py(Error::field(field, v.to_string(), format!("None, '{keyword}' or names"))))
}

fn targets_py<'py>(py: Python<'py>, t: &Option<Targets>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match t {
        None => py.None().into_bound(py),
        Some(Targets::Keyword(k)) => k.into_pyobject(py)?.into_any(),
        Some(Targets::Names(n)) => PyTuple::new(py, n)?.into_any(),
    })
}

fn choice<T>(r: crate::error::Result<T>) -> PyResult<T> {
    r.map_err(to_py)
}

fn read_plan(obj: &Bound<'_, PyAny>) -> PyResult<Plan> {
    if let Ok(p) = obj.cast::<PyPlan>() {
        return Ok(p.get().inner.clone());
    }
    let plan = Plan {
        method: choice(Method::from_name("method", &text(obj, "method")?))?,
        trainer: choice(Trainer::from_name("trainer", &text(obj, "trainer")?))?,
        dtype: choice(Dtype::from_name("dtype", &text(obj, "dtype")?))?,
        lora_r: int(obj, "lora_r")?,
        lora_alpha: int(obj, "lora_alpha")?,
        lora_dropout: float(obj, "lora_dropout")?,
        lora_target_modules: targets(obj, intern!(obj.py(), "lora_target_modules"), "all-linear")?,
        lora_target_parameters: targets(obj, intern!(obj.py(), "lora_target_parameters"), "experts")?,
        bnb_4bit_use_double_quant: boolean(obj, "bnb_4bit_use_double_quant")?,
        per_device_train_batch_size: int(obj, "per_device_train_batch_size")?,
        gradient_accumulation_steps: int(obj, "gradient_accumulation_steps")?,
        max_length: int(obj, "max_length")?,
        freeze_ratio: float(obj, "freeze_ratio")?,
        gradient_checkpointing: boolean(obj, "gradient_checkpointing")?,
        attn_implementation: choice(Attention::from_name("attn_implementation", &text(obj, "attn_implementation")?))?,
        optim: choice(Optim::from_name("optim", &text(obj, "optim")?))?,
        dpo_beta: float(obj, "dpo_beta")?,
        num_gpus: int(obj, "num_gpus")?,
        distributed: choice(Distributed::from_name("distributed", &text(obj, "distributed")?))?,
        bnb_4bit_quant_storage: choice(QuantStorage::from_name("bnb_4bit_quant_storage", &text(obj, "bnb_4bit_quant_storage")?))?,
        use_liger_kernel: boolean(obj, "use_liger_kernel")?,
        activation_offloading: boolean(obj, "activation_offloading")?,
        offload_optimizer: boolean(obj, "offload_optimizer")?,
        offload_params: boolean(obj, "offload_params")?,
        max_pixels: optional_int(obj, "max_pixels")?,
        images_per_sample: int(obj, "images_per_sample")?,
        freeze_vision_tower: boolean(obj, "freeze_vision_tower")?,
        videos_per_sample: int(obj, "videos_per_sample")?,
        num_frames: int(obj, "num_frames")?,
        video_max_pixels: optional_int(obj, "video_max_pixels")?,
        batching: choice(Batching::from_name("batching", &text(obj, "batching")?))?,
    };
    plan.validate().map_err(to_py)?;
    Ok(plan)
}

impl<'a, 'py> FromPyObject<'a, 'py> for PlanArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        read_plan(&obj.to_owned()).map(PlanArg)
    }
}

/// A GPU read from a Python object by attribute: `name`, `memory_bytes`, `peak_tflops`
/// (a dict of dtype → TFLOP/s or None), `bandwidth_bytes_per_s`, `compute_capability`
/// (`(major, minor)` or None), as `forge_advisor.gpus.GPU` has them.
struct GpuArg(GpuSpec);

impl<'a, 'py> FromPyObject<'a, 'py> for GpuArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let obj = obj.to_owned();
        let peak = obj.getattr("peak_tflops")?;
        let tf = |k: &str| -> PyResult<Option<f64>> {
            match peak.get_item(k) {
                Ok(v) => v.extract::<Option<f64>>(),
                Err(_) => Ok(None),
            }
        };
        let cc = obj.getattr("compute_capability")?;
        let compute_capability = if cc.is_none() {
            None
        } else {
            let (major, minor): (u32, u32) = cc.extract()?;
            Some(format!("{major}.{minor}"))
        };
        let gpu = GpuSpec {
            name: text(&obj, "name")?,
            memory_bytes: int(&obj, "memory_bytes")?,
            peak_tflops: PeakTflops { bf16: tf("bf16")?, fp16: tf("fp16")?, tf32: tf("tf32")?, fp32: tf("fp32")? },
            bandwidth_bytes_per_s: obj.getattr("bandwidth_bytes_per_s")?.extract::<Option<f64>>()?,
            compute_capability,
        };
        if gpu.memory_bytes == 0 {
            return Err(to_py(Error::field("memory_bytes", 0, "a positive number of bytes")));
        }
        Ok(GpuArg(gpu))
    }
}

// ---------------------------------------------------------------------------------------
// Classes out

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

    /// Language-model tokens of one video of `num_frames` frames at `video_max_pixels`
    /// (`None`: the processor's default), the largest the video processor makes (video.rs);
    /// 0 for a model that takes no videos.
    #[pyo3(signature = (num_frames, video_max_pixels=None))]
    fn video_tokens(&self, num_frames: u64, video_max_pixels: Option<u64>) -> PyResult<u64> {
        let Some(v) = self.inner.vision.as_ref() else { return Ok(0) };
        let Some(rule) = v.videos.as_ref() else { return Ok(0) };
        rule.per_video(&v.images, num_frames, video_max_pixels, None).map(|p| p.tokens).map_err(to_py)
    }

    fn __repr__(&self) -> String {
        format!("Shape(name={:?}, layers={})", self.inner.name, self.inner.layers.len())
    }
}

/// A training plan as the core holds it (what `rank` returns); every field a getter with
/// the Hugging Face name.
#[pyclass(name = "Plan", module = "forge_advisor._native", frozen)]
struct PyPlan {
    inner: Plan,
}

#[pymethods]
impl PyPlan {
    #[getter]
    fn method(&self) -> &'static str {
        self.inner.method.name()
    }
    #[getter]
    fn trainer(&self) -> &'static str {
        self.inner.trainer.name()
    }
    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.dtype.name()
    }
    #[getter]
    fn lora_r(&self) -> u64 {
        self.inner.lora_r
    }
    #[getter]
    fn lora_alpha(&self) -> u64 {
        self.inner.lora_alpha
    }
    #[getter]
    fn lora_dropout(&self) -> f64 {
        self.inner.lora_dropout
    }
    /// None (the attention projections), "all-linear", or a tuple of module names.
    #[getter]
    fn lora_target_modules<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        targets_py(py, &self.inner.lora_target_modules)
    }
    /// None, "experts", or a tuple of parameter names (peft `target_parameters`).
    #[getter]
    fn lora_target_parameters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        targets_py(py, &self.inner.lora_target_parameters)
    }
    #[getter]
    fn bnb_4bit_use_double_quant(&self) -> bool {
        self.inner.bnb_4bit_use_double_quant
    }
    #[getter]
    fn per_device_train_batch_size(&self) -> u64 {
        self.inner.per_device_train_batch_size
    }
    #[getter]
    fn gradient_accumulation_steps(&self) -> u64 {
        self.inner.gradient_accumulation_steps
    }
    #[getter]
    fn max_length(&self) -> u64 {
        self.inner.max_length
    }
    #[getter]
    fn freeze_ratio(&self) -> f64 {
        self.inner.freeze_ratio
    }
    #[getter]
    fn gradient_checkpointing(&self) -> bool {
        self.inner.gradient_checkpointing
    }
    #[getter]
    fn attn_implementation(&self) -> &'static str {
        self.inner.attn_implementation.name()
    }
    #[getter]
    fn optim(&self) -> &'static str {
        self.inner.optim.name()
    }
    #[getter]
    fn dpo_beta(&self) -> f64 {
        self.inner.dpo_beta
    }
    #[getter]
    fn num_gpus(&self) -> u64 {
        self.inner.num_gpus
    }
    #[getter]
    fn distributed(&self) -> &'static str {
        self.inner.distributed.name()
    }
    #[getter]
    fn bnb_4bit_quant_storage(&self) -> &'static str {
        self.inner.bnb_4bit_quant_storage.name()
    }
    #[getter]
    fn use_liger_kernel(&self) -> bool {
        self.inner.use_liger_kernel
    }
    #[getter]
    fn activation_offloading(&self) -> bool {
        self.inner.activation_offloading
    }
    #[getter]
    fn offload_optimizer(&self) -> bool {
        self.inner.offload_optimizer
    }
    #[getter]
    fn offload_params(&self) -> bool {
        self.inner.offload_params
    }
    #[getter]
    fn max_pixels(&self) -> Option<u64> {
        self.inner.max_pixels
    }
    #[getter]
    fn images_per_sample(&self) -> u64 {
        self.inner.images_per_sample
    }
    #[getter]
    fn freeze_vision_tower(&self) -> bool {
        self.inner.freeze_vision_tower
    }
    #[getter]
    fn videos_per_sample(&self) -> u64 {
        self.inner.videos_per_sample
    }
    #[getter]
    fn num_frames(&self) -> u64 {
        self.inner.num_frames
    }
    #[getter]
    fn video_max_pixels(&self) -> Option<u64> {
        self.inner.video_max_pixels
    }
    #[getter]
    fn batching(&self) -> &'static str {
        self.inner.batching.name()
    }
    fn __repr__(&self) -> String {
        format!("Plan({:?})", self.inner)
    }
}

/// Peak memory by named term, in bytes.
#[pyclass(name = "Breakdown", module = "forge_advisor._native", frozen, get_all)]
struct PyBreakdown {
    weights: u64,
    quant_state: u64,
    lora_adapters: u64,
    reference_model: u64,
    gradients: u64,
    optimizer_states: u64,
    optimizer_temporaries: u64,
    activations: u64,
    autocast_copies: u64,
    logits_and_loss: u64,
    backward_buffers: u64,
    distributed_buffers: u64,
}

#[pymethods]
impl PyBreakdown {
    /// `{term: bytes}` in the order `estimate --json` prints them.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in [
            ("weights", self.weights),
            ("quant_state", self.quant_state),
            ("lora_adapters", self.lora_adapters),
            ("reference_model", self.reference_model),
            ("gradients", self.gradients),
            ("optimizer_states", self.optimizer_states),
            ("optimizer_temporaries", self.optimizer_temporaries),
            ("activations", self.activations),
            ("autocast_copies", self.autocast_copies),
            ("logits_and_loss", self.logits_and_loss),
            ("backward_buffers", self.backward_buffers),
            ("distributed_buffers", self.distributed_buffers),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }
}

/// One plan's estimate.
#[pyclass(name = "Estimate", module = "forge_advisor._native", frozen)]
struct PyEstimate {
    inner: Estimate,
}

fn phase_name(e: &Estimate) -> Option<String> {
    serde_json::to_value(e.peak_phase).ok().and_then(|v| v.as_str().map(str::to_owned))
}

#[pymethods]
impl PyEstimate {
    #[getter]
    fn peak_allocated_bytes(&self) -> u64 {
        self.inner.peak_allocated_bytes
    }
    #[getter]
    fn peak_reserved_bytes(&self) -> u64 {
        self.inner.peak_reserved_bytes
    }
    /// The fit bound: peak reserved raised by the error band measured on the published-GPU
    /// set (`device::reserved_upper`).
    #[getter]
    fn peak_reserved_upper_bytes(&self) -> u64 {
        self.inner.peak_reserved_upper_bytes
    }
    /// Host (CPU) memory the plan's offloading levers use, in bytes (0 without offloading).
    #[getter]
    fn host_memory_bytes(&self) -> u64 {
        self.inner.host_memory_bytes
    }
    #[getter]
    fn peak_phase(&self) -> Option<String> {
        phase_name(&self.inner)
    }
    #[getter]
    fn breakdown(&self) -> PyBreakdown {
        let b = &self.inner.breakdown;
        PyBreakdown {
            weights: b.weights,
            quant_state: b.quant_state,
            lora_adapters: b.lora_adapters,
            reference_model: b.reference_model,
            gradients: b.gradients,
            optimizer_states: b.optimizer_states,
            optimizer_temporaries: b.optimizer_temporaries,
            activations: b.activations,
            autocast_copies: b.autocast_copies,
            logits_and_loss: b.logits_and_loss,
            backward_buffers: b.backward_buffers,
            distributed_buffers: b.distributed_buffers,
        }
    }
    /// Memory beyond tensors, `{term: bytes}`: cuda_context, cublas_workspace,
    /// allocator_reserve, paged_optimizer_states.
    #[getter]
    fn device<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let dev = &self.inner.device;
        d.set_item("cuda_context", dev.cuda_context)?;
        d.set_item("cublas_workspace", dev.cublas_workspace)?;
        d.set_item("allocator_reserve", dev.allocator_reserve)?;
        d.set_item("paged_optimizer_states", dev.paged_optimizer_states)?;
        Ok(d)
    }
    #[getter]
    fn total_parameters(&self) -> u64 {
        self.inner.total_parameters
    }
    #[getter]
    fn trainable_parameters(&self) -> u64 {
        self.inner.trainable_parameters
    }
    #[getter]
    fn frozen_layers(&self) -> u64 {
        self.inner.frozen_layers
    }
    #[getter]
    fn flops_per_token(&self) -> f64 {
        self.inner.flops_per_token
    }
    #[getter]
    fn tokens_per_step(&self) -> u64 {
        self.inner.tokens_per_step
    }
    #[getter]
    fn tokens_per_second(&self) -> Option<f64> {
        self.inner.tokens_per_second
    }
    #[getter]
    fn step_seconds(&self) -> Option<f64> {
        self.inner.step_seconds
    }
    #[getter]
    fn mfu(&self) -> Option<f64> {
        self.inner.mfu
    }
    #[getter]
    fn quality(&self) -> f64 {
        self.inner.quality
    }
    /// A vision-language model's images (`None` for text-only models): patches and
    /// image tokens per sample, tower and projector parameters, the tower's trainable
    /// parameters and the bytes it keeps for backward per micro-batch.
    #[getter]
    fn vision<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(v) = self.inner.vision else { return Ok(None) };
        let d = PyDict::new(py);
        d.set_item("patches_per_sample", v.patches_per_sample)?;
        d.set_item("image_tokens_per_sample", v.image_tokens_per_sample)?;
        d.set_item("video_tokens_per_sample", v.video_tokens_per_sample)?;
        d.set_item("tower_parameters", v.tower_parameters)?;
        d.set_item("projector_parameters", v.projector_parameters)?;
        d.set_item("tower_trainable_parameters", v.tower_trainable_parameters)?;
        d.set_item("kept_bytes", v.kept_bytes)?;
        d.set_item("vision_states_per_sample", v.vision_states_per_sample)?;
        Ok(Some(d))
    }
    /// Every getter as one dict (breakdown and device as dicts).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let e = &self.inner;
        let d = PyDict::new(py);
        d.set_item("peak_allocated_bytes", e.peak_allocated_bytes)?;
        d.set_item("peak_reserved_bytes", e.peak_reserved_bytes)?;
        d.set_item("peak_reserved_upper_bytes", e.peak_reserved_upper_bytes)?;
        d.set_item("host_memory_bytes", e.host_memory_bytes)?;
        d.set_item("vision", self.vision(py)?)?;
        d.set_item("peak_phase", phase_name(e))?;
        d.set_item("breakdown", self.breakdown().to_dict(py)?)?;
        d.set_item("device", self.device(py)?)?;
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
}

/// One outer choice of a ranking with its best batch, accumulation and checkpointing.
#[pyclass(name = "Ranked", module = "forge_advisor._native", frozen)]
struct PyRanked {
    inner: Ranked,
}

#[pymethods]
impl PyRanked {
    #[getter]
    fn plan(&self) -> PyPlan {
        PyPlan { inner: self.inner.plan.clone() }
    }
    #[getter]
    fn estimate(&self) -> PyEstimate {
        PyEstimate { inner: self.inner.estimate.clone() }
    }
    /// Peak reserved bytes the fit was judged by (with a calibrated allocator reserve).
    #[getter]
    fn reserved_bytes(&self) -> u64 {
        self.inner.reserved_bytes
    }
    #[getter]
    fn fits(&self) -> bool {
        self.inner.fits
    }
    #[getter]
    fn quality(&self) -> f64 {
        self.inner.quality()
    }
    #[getter]
    fn tokens_per_second(&self) -> Option<f64> {
        self.inner.tokens_per_second()
    }
    /// Real tokens / processed tokens of the plan's batching on the user's data (1 without).
    #[getter]
    fn real_fraction(&self) -> f64 {
        self.inner.real_fraction
    }
    fn value(&self, objective: &str) -> PyResult<f64> {
        Ok(self.inner.value(Objective::from_name("objective", objective).map_err(to_py)?))
    }
}

/// Why nothing fits: the leanest plan and how far over the usable memory it is.
#[pyclass(name = "Shortfall", module = "forge_advisor._native", frozen)]
struct PyShortfall {
    inner: Shortfall,
}

#[pymethods]
impl PyShortfall {
    #[getter]
    fn leanest(&self) -> Option<PyRanked> {
        self.inner.leanest.clone().map(|inner| PyRanked { inner })
    }
    #[getter]
    fn usable_bytes(&self) -> u64 {
        self.inner.usable_bytes
    }
    #[getter]
    fn over_bytes(&self) -> Option<u64> {
        self.inner.over_bytes
    }
}

/// The exact ranking of a search space (rust/src/search.rs `Estimator::rank`).
#[pyclass(name = "Ranking", module = "forge_advisor._native", frozen)]
struct PyRanking {
    inner: Ranking,
    fitting: Vec<Py<PyRanked>>,
    seconds: f64,
}

#[pymethods]
impl PyRanking {
    /// Every fitting outer choice with its best inner choice, in the space's order.
    #[getter]
    fn fitting<'py>(&self, py: Python<'py>) -> Vec<Py<PyRanked>> {
        self.fitting.iter().map(|r| r.clone_ref(py)).collect()
    }
    /// Indices into `fitting`: the best N distinct alternatives for `objective`, best first.
    fn top(&self, objective: &str) -> PyResult<Vec<usize>> {
        Ok(self.inner.top(Objective::from_name("objective", objective).map_err(to_py)?).to_vec())
    }
    /// Indices into `fitting`: the Pareto front of tokens/s against quality, fastest first.
    #[getter]
    fn pareto(&self) -> Vec<usize> {
        self.inner.pareto.clone()
    }
    #[getter]
    fn nothing_fits(&self) -> Option<PyShortfall> {
        self.inner.nothing_fits.clone().map(|inner| PyShortfall { inner })
    }
    /// Outer choices in the space.
    #[getter]
    fn outer(&self) -> u64 {
        self.inner.outer
    }
    /// Plans (outer × batch × checkpointing) priced.
    #[getter]
    fn evaluated(&self) -> u64 {
        self.inner.evaluated
    }
    /// Seconds the ranking took in the core.
    #[getter]
    fn seconds(&self) -> f64 {
        self.seconds
    }
}

/// Estimates plans for one model (and optionally one GPU).
#[pyclass(name = "Estimator", module = "forge_advisor._native", frozen)]
struct PyEstimator {
    inner: Estimator,
    gpu: Option<GpuSpec>,
}

#[pymethods]
impl PyEstimator {
    #[new]
    #[pyo3(signature = (shape, gpu=None))]
    fn new(shape: &Bound<'_, PyShape>, gpu: Option<GpuArg>) -> PyResult<Self> {
        let inner = Estimator::new(shape.get().inner.clone()).map_err(to_py)?;
        Ok(PyEstimator { inner, gpu: gpu.map(|g| g.0) })
    }

    /// Estimate one plan (any object with the Plan's attributes).
    fn estimate(&self, plan: PlanArg) -> PyResult<PyEstimate> {
        Ok(PyEstimate { inner: self.inner.estimate(&plan.0, self.gpu.as_ref()).map_err(to_py)? })
    }

    /// Estimate many plans: `(peak allocated, peak reserved, tokens/s or None)` per plan.
    /// A plan that cannot be estimated raises its error, prefixed with its index.
    fn estimate_batch(&self, py: Python<'_>, plans: Vec<PlanArg>) -> PyResult<Vec<(u64, u64, Option<f64>)>> {
        let plans: Vec<Plan> = plans.into_iter().map(|p| p.0).collect();
        let gpu = self.gpu.as_ref();
        let results = py.detach(|| self.inner.evaluate_many(&plans, gpu));
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                Ok(e) => Ok((e.peak_allocated_bytes, e.peak_reserved_bytes, e.tokens_per_second)),
                Err(Error::InvalidField { field, value, allowed }) => {
                    Err(to_py(Error::InvalidField { field, value: format!("{value} (plan {i})"), allowed }))
                }
                Err(e) => Err(to_py(e)),
            })
            .collect()
    }

    /// Rank every plan of a search space (`Space` as JSON, rust/src/search.rs) exactly.
    #[pyo3(signature = (space_json, top=5))]
    fn rank(&self, py: Python<'_>, space_json: &str, top: usize) -> PyResult<PyRanking> {
        let space = Space::from_json(space_json).map_err(to_py)?;
        let t0 = Instant::now();
        let inner = py.detach(|| self.inner.rank(&space, self.gpu.as_ref(), top)).map_err(to_py)?;
        let seconds = t0.elapsed().as_secs_f64();
        let fitting = inner
            .fitting
            .iter()
            .map(|r| Py::new(py, PyRanked { inner: r.clone() }))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyRanking { inner, fitting, seconds })
    }
}

/// The one fit rule (search.rs `fits`): peak reserved ≤ usable.
#[pyfunction]
fn fits(reserved: u64, usable: u64) -> bool {
    search::fits(reserved, usable)
}

/// The fit bound of a reserved-memory figure (device.rs `reserved_upper`): for a reserve a
/// calibration measured on the device.
#[pyfunction]
fn reserved_upper(peak_reserved: u64, cuda_context: u64) -> u64 {
    crate::device::reserved_upper(peak_reserved, cuda_context)
}

/// GPU memory minus the headroom (search.rs `usable_bytes`).
#[pyfunction]
fn usable_bytes(memory_bytes: u64, headroom: f64) -> PyResult<u64> {
    search::usable_bytes(memory_bytes, headroom).map_err(to_py)
}

/// The scalar an objective maximises (objective.rs).
#[pyfunction(name = "objective_value")]
#[pyo3(signature = (objective, tokens_per_second, quality))]
fn objective_value_of(objective: &str, tokens_per_second: Option<f64>, quality: f64) -> PyResult<f64> {
    Ok(objective_value(Objective::from_name("objective", objective).map_err(to_py)?, tokens_per_second, quality))
}

/// Why the training runtime cannot run this plan, or None (plan.rs `Plan::unsupported`).
#[pyfunction]
fn unsupported(plan: PlanArg) -> Option<&'static str> {
    plan.0.unsupported()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PlanError", py.get_type::<PlanError>())?;
    let choices = PyDict::new(py);
    for (field, names) in CHOICES {
        choices.set_item(field, PyTuple::new(py, names)?)?;
    }
    m.add("PLAN_CHOICES", choices)?;
    let ints = PyDict::new(py);
    for (field, lo, hi) in INT_RANGES {
        ints.set_item(field, (lo, hi))?;
    }
    m.add("PLAN_INT_RANGES", ints)?;
    let floats = PyDict::new(py);
    for (field, lo, hi) in FLOAT_RANGES {
        floats.set_item(field, (lo, hi))?;
    }
    m.add("PLAN_FLOAT_RANGES", floats)?;
    m.add("VARLEN_ATTENTION", PyTuple::new(py, crate::plan::VARLEN_ATTENTION)?)?;
    m.add("OBJECTIVES", PyTuple::new(py, Objective::NAMES)?)?;
    m.add("DEFAULT_HEADROOM", crate::device::DEFAULT_HEADROOM)?;
    m.add("RESERVED_ERROR_BAND", crate::device::RESERVED_ERROR_BAND)?;
    m.add_class::<PyShape>()?;
    m.add_class::<PyPlan>()?;
    m.add_class::<PyBreakdown>()?;
    m.add_class::<PyEstimate>()?;
    m.add_class::<PyEstimator>()?;
    m.add_class::<PyRanked>()?;
    m.add_class::<PyShortfall>()?;
    m.add_class::<PyRanking>()?;
    m.add_function(wrap_pyfunction!(fits, m)?)?;
    m.add_function(wrap_pyfunction!(usable_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(reserved_upper, m)?)?;
    m.add_function(wrap_pyfunction!(objective_value_of, m)?)?;
    m.add_function(wrap_pyfunction!(unsupported, m)?)?;
    Ok(())
}
