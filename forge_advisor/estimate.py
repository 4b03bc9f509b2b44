"""``estimate(model, plan_or_preset, gpu=None, ...)``: price one plan with the Rust estimator.

The native estimator is built once per (model, GPU) and cached on the shape, so a repeated
call costs a JSON dump of the plan and one native call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from forge_advisor.calibration import Calibration, load_calibration
from forge_advisor.errors import ForgeError, did_you_mean
from forge_advisor.plan import Plan
from forge_advisor.shapes import ModelShape, load_shape

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU

__all__ = ["EstimateResult", "estimate", "resolve_plan", "native_estimator"]

_PLAN_FIELDS = frozenset(f.name for f in fields(Plan)) - {"extra"}
_JSON = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True)
class EstimateResult:
    model: str
    gpu: GPU | None
    plan: Plan
    raw: dict[str, Any]
    dataset_tokens: int | None = None
    calibration: Calibration | None = None

    @property
    def peak_allocated_bytes(self) -> int:
        return int(self.raw["peak_allocated_bytes"])

    @property
    def device_terms(self) -> dict[str, int]:
        terms = dict(self.raw["device"])
        if self.calibration is not None:  # the allocator reserve as measured on this device
            terms["allocator_reserve"] = int(terms["allocator_reserve"] * self.calibration.reserve_factor)
        return terms

    @property
    def peak_reserved_bytes(self) -> int:
        if self.calibration is None:
            return int(self.raw["peak_reserved_bytes"])
        return self.peak_allocated_bytes + sum(self.device_terms.values())

    @property
    def peak_reserved_upper_bytes(self) -> int:
        """The fit bound: peak reserved plus the error band measured on the published-GPU set
        (Rust `device::reserved_upper`); a plan fits when this stays under the GPU's memory."""
        upper = int(self.raw["peak_reserved_upper_bytes"])
        return upper + (self.peak_reserved_bytes - int(self.raw["peak_reserved_bytes"]))

    @property
    def default_headroom(self) -> float:
        """Headroom derived from the measured error distribution (Rust `device::DEFAULT_HEADROOM`)."""
        return float(self.raw["default_headroom"])

    @property
    def breakdown(self) -> dict[str, int]:
        return dict(self.raw["breakdown"])

    @property
    def tokens_per_second(self) -> float | None:
        tps = self.raw["tokens_per_second"]
        return tps * self.calibration.speed_factor if tps is not None and self.calibration else tps

    @property
    def step_seconds(self) -> float | None:
        step = self.raw["step_seconds"]
        return step / self.calibration.speed_factor if step is not None and self.calibration else step

    @property
    def headroom_bytes(self) -> int | None:
        return None if self.gpu is None else self.gpu.memory_bytes - self.peak_reserved_bytes

    @property
    def fits(self) -> bool | None:
        return None if self.gpu is None else self.peak_reserved_bytes <= self.gpu.memory_bytes

    @property
    def epoch_seconds(self) -> float | None:
        """dataset tokens / tokens per second (one pass over the data)."""
        tps = self.tokens_per_second
        if self.dataset_tokens is None or not tps:
            return None
        return self.dataset_tokens / tps

    def to_dict(self) -> dict[str, Any]:
        raw = self.raw
        return {
            "model": self.model,
            "gpu": None if self.gpu is None else self.gpu.name,
            "plan": self.plan.to_dict(),
            "memory": {
                "peak_allocated_bytes": self.peak_allocated_bytes,
                "peak_reserved_bytes": self.peak_reserved_bytes,
                "peak_reserved_upper_bytes": self.peak_reserved_upper_bytes,
                "peak_phase": raw["peak_phase"],
                "breakdown": self.breakdown,
                "device": self.device_terms,
                "gpu_memory_bytes": None if self.gpu is None else self.gpu.memory_bytes,
            },
            "parameters": {
                "total": raw["total_parameters"],
                "trainable": raw["trainable_parameters"],
                "frozen_layers": raw["frozen_layers"],
            },
            "throughput": {
                "tokens_per_second": self.tokens_per_second,
                "step_seconds": self.step_seconds,
                "tokens_per_step": raw["tokens_per_step"],
                "flops_per_token": raw["flops_per_token"],
                "mfu": None if raw["mfu"] is None else raw["mfu"] * (self.calibration.speed_factor if self.calibration else 1.0),
                "epoch_seconds": self.epoch_seconds,
                "calibrated": self.calibration is not None,
                "calibration": None if self.calibration is None else self.calibration.to_dict(),
            },
            "fits": self.fits,
            "headroom_bytes": self.headroom_bytes,
        }


def _gpu_json(gpu: GPU | None) -> str | None:
    if gpu is None:
        return None
    d = gpu.to_dict()
    keep = ("name", "memory_bytes", "peak_tflops", "bandwidth_bytes_per_s", "compute_capability")
    return json.dumps({k: d[k] for k in keep})


def native_estimator(shape: ModelShape, gpu: GPU | None) -> Any:
    """The cached native ``Estimator`` for this shape and GPU."""
    cache: dict[str | None, Any] = shape.__dict__.setdefault("_estimators", {})
    key = None if gpu is None else gpu.name + str(gpu.memory_bytes)
    est = cache.get(key)
    if est is None:
        from forge_advisor import _native

        try:
            est = _native.Estimator(shape.to_json(), _gpu_json(gpu))
        except ValueError as exc:
            raise ForgeError(f"{shape.name}: {exc}") from None
        cache[key] = est
    return est


def resolve_plan(plan_or_preset: Any, gpu: GPU | None = None, **overrides: Any) -> Plan:
    """A :class:`Plan` from a Plan, a preset name or a preset object, plus overrides.

    Overrides that are Plan fields apply to the plan; others go to the preset
    (``learning_rate``…), which rejects unknown names with a suggestion."""
    plan_over = {k: v for k, v in overrides.items() if k in _PLAN_FIELDS}
    preset_over = {k: v for k, v in overrides.items() if k not in _PLAN_FIELDS}
    if isinstance(plan_or_preset, Plan):
        if preset_over:
            name = next(iter(preset_over))
            raise ForgeError(f"unknown plan field '{name}'{did_you_mean(name, _PLAN_FIELDS)}")
        return plan_or_preset.with_(**plan_over) if plan_over else plan_or_preset
    from forge_advisor.presets import get_preset
    from forge_advisor.presets.base import BasePreset

    preset = plan_or_preset if isinstance(plan_or_preset, BasePreset) else get_preset(str(plan_or_preset), **preset_over)
    precision = "bf16" if gpu is None or gpu.bf16 else "fp16"
    plan = preset.to_plan(precision=precision)
    return plan.with_(**plan_over) if plan_over else plan


def estimate(
    model: str | ModelShape,
    plan_or_preset: Plan | str | Any = "lora",
    gpu: str | GPU | None = None,
    num_gpus: int = 1,
    dataset_tokens: int | None = None,
    **overrides: Any,
) -> EstimateResult:
    """Peak memory and speed of one plan. ``gpu`` is a catalog name, ``"auto"`` (NVML) or
    a :class:`~forge_advisor.gpus.GPU`; ``overrides`` use Hugging Face names."""
    shape = model if isinstance(model, ModelShape) else load_shape(model)
    if isinstance(gpu, str):
        from forge_advisor.gpus import resolve_gpu

        gpu = resolve_gpu(gpu)
    if num_gpus != 1:
        overrides["num_gpus"] = num_gpus
    plan = resolve_plan(plan_or_preset, gpu, **overrides)
    if dataset_tokens is not None and (isinstance(dataset_tokens, bool) or not isinstance(dataset_tokens, int) or dataset_tokens < 1):
        raise ForgeError(f"dataset_tokens={dataset_tokens!r} must be a positive integer")
    try:
        raw = native_estimator(shape, gpu).estimate(_JSON(plan.to_dict()))
    except ValueError as exc:
        raise ForgeError(str(exc)) from None
    return EstimateResult(shape.name, gpu, plan, raw, dataset_tokens, load_calibration(gpu))
