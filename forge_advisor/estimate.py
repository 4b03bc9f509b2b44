"""``estimate(model, plan_or_preset, gpu=None, ...)``: price one plan with the Rust estimator.

The native estimator is built once per (model, GPU) and cached on the shape; the core reads
the plan's fields by attribute and returns a typed ``Estimate``, so a repeated call is one
native call.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from forge_advisor import core
from forge_advisor.calibration import Calibration, load_calibration
from forge_advisor.errors import ForgeError, did_you_mean
from forge_advisor.plan import Plan
from forge_advisor.presets.planning import with_scaled_alpha
from forge_advisor.shapes import ModelShape, load_shape

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU

__all__ = ["DEFAULT_HEADROOM", "EstimateResult", "estimate", "resolve_plan", "native_estimator"]

_PLAN_FIELDS = frozenset(Plan.field_names())

# Fraction of the GPU's memory kept free on top of the fit bound, for what the estimate cannot
# see (rust/src/device.rs): 2% of 24 GiB = 0.48 GiB. Every command judges fit by the same rule:
# peak reserved upper bound ≤ memory × (1 − headroom) (core.fits).
DEFAULT_HEADROOM = core.DEFAULT_HEADROOM


@dataclass(frozen=True)
class EstimateResult:
    model: str
    gpu: GPU | None
    plan: Plan
    native: core.Estimate
    dataset_tokens: int | None = None
    calibration: Calibration | None = None
    headroom: float = DEFAULT_HEADROOM
    vision_notes: tuple[str, ...] = ()
    # real tokens / processed tokens of the plan's batching at its batch, from the user's data
    # (forge_advisor.dataplan.advise.real_token_fractions); 1.0 without data, where
    # ``dataset_tokens`` are taken as the tokens the steps process
    real_token_fraction: float = 1.0

    @property
    def raw(self) -> dict[str, Any]:
        """The core's estimate as a dict (every getter of ``native``)."""
        return dict(self.native.to_dict())

    @property
    def quality(self) -> float:
        return float(self.native.quality)

    @property
    def peak_allocated_bytes(self) -> int:
        return int(self.native.peak_allocated_bytes)

    @property
    def device_terms(self) -> dict[str, int]:
        terms = dict(self.native.device)
        if self.calibration is not None:  # the allocator reserve as measured on this device
            terms["allocator_reserve"] = int(terms["allocator_reserve"] * self.calibration.reserve_factor)
        return terms

    @property
    def peak_reserved_bytes(self) -> int:
        if self.calibration is None:
            return int(self.native.peak_reserved_bytes)
        return self.peak_allocated_bytes + sum(self.device_terms.values())

    @property
    def peak_reserved_upper_bytes(self) -> int:
        """The fit bound: peak reserved plus the error band measured on the published-GPU set
        (Rust `device::reserved_upper`); a plan fits when this stays under the GPU's memory."""
        if self.calibration is None:
            return int(self.native.peak_reserved_upper_bytes)
        # with a calibration the reserve is the device's measured one: bound that, as the core's
        # search does (rust/src/search.rs `judged_reserved`)
        return core.reserved_upper(self.peak_reserved_bytes, self.device_terms["cuda_context"])

    @property
    def breakdown(self) -> dict[str, int]:
        return dict(self.native.breakdown.to_dict())

    @property
    def tokens_per_second(self) -> float | None:
        tps = self.native.tokens_per_second
        return tps * self.calibration.speed_factor if tps is not None and self.calibration else tps

    @property
    def step_seconds(self) -> float | None:
        step = self.native.step_seconds
        return step / self.calibration.speed_factor if step is not None and self.calibration else step

    @property
    def headroom_bytes(self) -> int | None:
        """GPU memory left beside the peak reserved memory (negative: over)."""
        return None if self.gpu is None else self.gpu.memory_bytes - self.peak_reserved_bytes

    @property
    def usable_bytes(self) -> int | None:
        """GPU memory minus the headroom: what a plan must stay within to fit."""
        return None if self.gpu is None else core.usable_bytes(self.gpu.memory_bytes, self.headroom)

    @property
    def fits(self) -> bool | None:
        """The one fit rule every command uses (core.fits): the fit bound ≤ usable."""
        usable = self.usable_bytes
        return None if usable is None else core.fits(self.peak_reserved_upper_bytes, usable)

    @property
    def warnings(self) -> list[str]:
        """What this GPU cannot run of the plan (:func:`hardware_warnings`)."""
        return hardware_warnings(self.plan, self.gpu)

    @property
    def vision(self) -> dict[str, Any] | None:
        """A vision-language model's images (rust/src/vision.rs ``VisionReport``): patches and
        image tokens per sample, tower/projector parameters, the tower's trainable parameters
        and ``kept_bytes`` it keeps for backward per micro-batch (inside ``activations``),
        ``vision_states_per_sample`` (what Llama 3.2 Vision's cross-attention layers read; 0
        elsewhere); and
        ``notes`` on how the plan's image fields were read. ``None`` for text-only models."""
        v = self.native.vision
        return None if v is None else {**v, "notes": list(self.vision_notes)}

    @property
    def unsupported(self) -> str | None:
        """Why the training runtime cannot run this plan, or None."""
        return core.unsupported(self.plan)

    @property
    def epoch_seconds(self) -> float | None:
        """One pass over the data: dataset tokens / real tokens per second, where the real
        tokens/s is the processed tokens/s x ``real_token_fraction`` (padding is processed
        but is not data: 1M real tokens padded to 60% real take 1M / (0.6 x tokens/s))."""
        tps = self.tokens_per_second
        if self.dataset_tokens is None or not tps:
            return None
        return self.dataset_tokens / (tps * self.real_token_fraction)

    def to_dict(self) -> dict[str, Any]:
        raw = self.native
        return {
            "model": self.model,
            "gpu": None if self.gpu is None else self.gpu.name,
            "plan": self.plan.to_dict(),
            "memory": {
                "peak_allocated_bytes": self.peak_allocated_bytes,
                "peak_reserved_bytes": self.peak_reserved_bytes,
                "peak_reserved_upper_bytes": self.peak_reserved_upper_bytes,
                "peak_phase": raw.peak_phase,
                "breakdown": self.breakdown,
                "device": self.device_terms,
                "gpu_memory_bytes": None if self.gpu is None else self.gpu.memory_bytes,
                "usable_bytes": self.usable_bytes,
                "headroom": self.headroom,
            },
            "parameters": {
                "total": raw.total_parameters,
                "trainable": raw.trainable_parameters,
                "frozen_layers": raw.frozen_layers,
            },
            "throughput": {
                "tokens_per_second": self.tokens_per_second,
                "step_seconds": self.step_seconds,
                "tokens_per_step": raw.tokens_per_step,
                "flops_per_token": raw.flops_per_token,
                "mfu": None if raw.mfu is None else raw.mfu * (self.calibration.speed_factor if self.calibration else 1.0),
                "real_token_fraction": self.real_token_fraction,
                "epoch_seconds": self.epoch_seconds,
                "calibrated": self.calibration is not None,
                "calibration": None if self.calibration is None else self.calibration.to_dict(),
            },
            "vision": self.vision,
            "fits": self.fits,
            "headroom_bytes": self.headroom_bytes,
            "unsupported": self.unsupported,
            "warnings": self.warnings,
        }


# bf16 tensor cores and FlashAttention-2 both need compute capability 8.0 (Ampere) or newer
# (CUDA programming guide, "Compute Capabilities"; flash-attention's README, "Requirements").
_AMPERE = (8, 0)


def hardware_warnings(plan: Plan, gpu: GPU | None) -> list[str]:
    """One line per plan choice the GPU cannot run (compute capability < 8.0: no bf16, no
    FlashAttention-2). Warnings, not errors: the plan is still priced."""
    if gpu is None or gpu.compute_capability is None:
        return []
    cc = gpu.compute_capability
    where = f"{gpu.name} (compute capability {cc[0]}.{cc[1]})"
    out = []
    if "bf16" in plan.dtype and not gpu.bf16:
        out.append(f"dtype={plan.dtype}: {where} has no bf16; use fp16 ({plan.dtype.replace('bf16', 'fp16')})")
    if plan.attn_implementation == "flash_attention_2" and cc < _AMPERE:
        out.append(f"attn_implementation=flash_attention_2: {where} cannot run FlashAttention-2 (needs 8.0+); use sdpa")
    return out


def native_estimator(shape: ModelShape, gpu: GPU | None) -> core.Estimator:
    """The cached native ``Estimator`` for this shape and GPU."""
    cache: dict[tuple[str, int] | None, core.Estimator] = shape.__dict__.setdefault("_estimators", {})
    key = None if gpu is None else (gpu.name, gpu.memory_bytes)
    est = cache.get(key)
    if est is None:
        est = core.call(core.Estimator, shape.native, gpu, prefix=f"{shape.name}: ")
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
        plan_over = with_scaled_alpha(plan_or_preset.lora_alpha, plan_or_preset.lora_r, plan_over)
        return plan_or_preset.with_(**plan_over) if plan_over else plan_or_preset
    from forge_advisor.presets import get_preset
    from forge_advisor.presets.base import BasePreset

    preset = plan_or_preset if isinstance(plan_or_preset, BasePreset) else get_preset(str(plan_or_preset), **preset_over)
    precision = "bf16" if gpu is None or gpu.bf16 else "fp16"
    plan = preset.to_plan(precision=precision)
    # a new lora_r alone keeps the preset's α/r (presets/planning.py scaled_alpha)
    plan_over = with_scaled_alpha(plan.lora_alpha, plan.lora_r, plan_over)
    return plan.with_(**plan_over) if plan_over else plan


def estimate(
    model: str | ModelShape,
    plan_or_preset: Plan | str | Any = "lora",
    gpu: str | GPU | None = None,
    num_gpus: int = 1,
    dataset_tokens: int | None = None,
    headroom: float = DEFAULT_HEADROOM,
    **overrides: Any,
) -> EstimateResult:
    """Peak memory and speed of one plan. ``gpu`` is a catalog name, ``"auto"`` (NVML) or
    a :class:`~forge_advisor.gpus.GPU`; ``overrides`` use Hugging Face names. The plan
    fits when its peak reserved memory is within the GPU's memory less ``headroom``."""
    shape = model if isinstance(model, ModelShape) else load_shape(model)
    if isinstance(gpu, str):
        from forge_advisor.gpus import resolve_gpu

        gpu = resolve_gpu(gpu)
    if num_gpus != 1:
        overrides["num_gpus"] = num_gpus
    shape.check_vision_fields(overrides)
    plan = resolve_plan(plan_or_preset, gpu, **overrides)
    if dataset_tokens is not None and (isinstance(dataset_tokens, bool) or not isinstance(dataset_tokens, int) or dataset_tokens < 1):
        raise ForgeError(f"dataset_tokens={dataset_tokens!r} must be a positive integer")
    if not 0.0 <= headroom < 0.9:
        raise ForgeError(f"headroom={headroom} is out of range: allowed [0, 0.9) (a fraction of GPU memory)",
                         field="headroom", value=str(headroom), allowed="[0, 0.9)")
    shape.check_length(plan.max_length)
    native = core.call(native_estimator(shape, gpu).estimate, plan)
    return EstimateResult(shape.name, gpu, plan, native, dataset_tokens, load_calibration(gpu), headroom,
                          vision_notes(shape, plan) + video_notes(shape, plan))


def video_notes(shape: ModelShape, plan: Plan) -> tuple[str, ...]:
    """How a plan's video fields were read (rust/src/video.rs `video_plan`): an unset
    ``video_max_pixels`` whose processor default does not fit ``max_length``."""
    if plan.videos_per_sample == 0 or plan.video_max_pixels is not None:
        return ()
    tokens = shape.video_tokens({**plan.to_dict(), "videos_per_sample": 1})
    if tokens * plan.videos_per_sample <= plan.max_length:
        return ()
    return (f"video_max_pixels unset: the video processor's default makes {tokens:,} tokens per video of "
            f"{plan.num_frames} frames, more than max_length={plan.max_length:,} holds with {plan.videos_per_sample} "
            "video(s), which trl refuses; priced at the largest video that fits; pass --video-max-pixels for your data",)


def vision_notes(shape: ModelShape, plan: Plan) -> tuple[str, ...]:
    """How a vision-language plan's image fields were read (rust/src/vision.rs `image_plan`)."""
    v = shape.vision
    if v is None or plan.images_per_sample == 0:
        return ()
    rule = v.images
    if rule.kind == "fixed":
        if plan.max_pixels is not None:
            return (f"max_pixels={plan.max_pixels:,} does not change this model's images: its processor resizes every "
                    f"image to one size ({rule.patches:,} encoder patches, {rule.tokens:,} tokens per image)",)
        return ()
    if rule.kind == "cross":
        # MllamaImageProcessor pads every image to max_image_tiles tiles (pad_batches_and_tiles)
        # and the model requires that count (families/mllama.py): max_pixels changes nothing
        if plan.max_pixels is not None:
            return (f"max_pixels={plan.max_pixels:,} does not change this model's images: its processor pads every image "
                    f"to {rule.tiles} tiles ({rule.patches:,} tower positions, {rule.vision_tokens:,} vision states the "
                    f"cross-attention layers read, 1 <|image|> token per image)",)
        return ()
    tokens = rule.per_image(plan.max_pixels)[1]
    if plan.max_pixels is None and tokens * plan.images_per_sample > plan.max_length:
        fit = plan.max_length // plan.images_per_sample
        return (f"max_pixels unset: the processor default ({rule.max_pixels:,} px, {tokens:,} tokens per image) exceeds "
                f"max_length={plan.max_length:,} with {plan.images_per_sample} image(s), which trl refuses; priced at the "
                f"largest image that fits ({fit:,} tokens); pass --max-pixels for your data",)
    return ()
