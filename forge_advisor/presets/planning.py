"""Preset <-> :class:`~forge_advisor.plan.Plan` (the estimator's input).

A plan always travels with the preset it starts from, ``(base_preset, plan)``: the preset
holds what a Plan has no slot for (learning rate, epochs, warm-up…), the plan every knob
the estimator prices. Going back is a diff against that preset, never a guess.

Mapping:

* ``method``/``trainer`` copy over: sft -> ("full", "sft"); lora -> ("lora", "sft");
  qlora and memory_efficient -> ("qlora", "sft"); dpo -> ("lora", "dpo").
* dtype: the runner loads frozen bases (LoRA/QLoRA) in the half type and trains full weights
  in fp32 with autocast, so lora + bf16 -> "bf16", full + bf16 -> "amp-bf16", no mixed
  precision -> "fp32" (qlora always computes in half: its compute dtype, bf16/fp16).
* ``beta`` -> ``dpo_beta``; ``attn_implementation`` None -> "sdpa".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forge_advisor.errors import ForgeError

if TYPE_CHECKING:
    from forge_advisor.plan import Plan
    from forge_advisor.presets.base import BasePreset

__all__ = ["preset_to_plan", "preset_overrides", "preset_with_plan", "preset_from_plan"]

# preset fields that are also Plan fields, same name
_SHARED = (
    "method", "trainer", "lora_r", "lora_alpha", "lora_dropout", "bnb_4bit_use_double_quant",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "freeze_ratio",
    "gradient_checkpointing", "optim", "num_gpus", "distributed",
)


def _dtype(preset: BasePreset, precision: str | None) -> str:
    if preset.method == "qlora":
        # 4-bit weights compute in bnb_4bit_compute_dtype; bfloat16 on a GPU without bf16
        # (precision "fp16": compute capability < 8.0) runs in float16, as the runner does
        # (presets/convert.py compute_dtype_name)
        return "fp16" if preset.bnb_4bit_compute_dtype == "float16" or precision == "fp16" else "bf16"
    if precision is None:
        return "fp32"
    return precision if preset.uses_lora else f"amp-{precision}"


def preset_to_plan(preset: BasePreset, *, precision: str | None = "auto") -> Plan:
    """``precision="auto"`` resolves bf16/fp16 on this machine; pass ``"bf16"``, ``"fp16"``
    or ``None`` to plan for another one."""
    from forge_advisor.plan import Plan

    if precision == "auto":
        precision = preset.resolved_precision()
    elif precision not in ("bf16", "fp16", None):
        raise ForgeError(f"precision={precision!r} is not one of auto, bf16, fp16, None")
    elif preset.bf16 or preset.fp16 or (preset.bf16 is False and preset.fp16 is False):
        precision = preset.resolved_precision()  # the preset's explicit flags win over the target's default
    data: dict[str, Any] = {k: getattr(preset, k) for k in _SHARED}
    data["dtype"] = _dtype(preset, precision)
    data["dpo_beta"] = preset.beta
    data["attn_implementation"] = preset.attn_implementation or "sdpa"
    t = preset.lora_target_modules
    data["lora_target_modules"] = tuple(t) if isinstance(t, (list, tuple)) else t
    return Plan(**data)


def preset_overrides(preset: BasePreset, plan: Plan, precision: str | None = "bf16") -> dict[str, Any]:
    """The :func:`~forge_advisor.presets.get_preset` keyword arguments (preset field names,
    in Plan order) that turn ``preset`` into ``plan`` where the preset resolves its automatic
    precision to ``precision`` (bf16, or fp16 on GPUs without bf16): the Plan fields where
    they differ. Plan names map 1:1 except ``dpo_beta`` -> ``beta`` and ``dtype`` ->
    ``bf16``/``fp16`` (``bnb_4bit_compute_dtype`` for QLoRA, whose weights compute in it); a
    method change carries the quantisation flags that go with it."""
    base = preset_to_plan(preset, precision=precision).to_dict()
    target = plan.to_dict()
    out: dict[str, Any] = {}
    for key, value in target.items():
        if value == base[key]:
            continue
        if key == "dpo_beta":
            out["beta"] = value
        elif key == "dtype":
            out.update(_dtype_fields(plan))
        elif key == "lora_target_modules" and isinstance(value, list):
            out[key] = tuple(value)
        else:
            out[key] = value
    if "method" in out:
        out["load_in_4bit"] = plan.method == "qlora"
        out["load_in_8bit"] = plan.method == "lora_8bit"
        # the new method reads its precision from other fields (QLoRA: the compute dtype)
        if preset_to_plan(preset.replace(**out), precision=precision).dtype != plan.dtype:
            out.update(_dtype_fields(plan))
    return out


def _dtype_fields(plan: Plan) -> dict[str, Any]:
    """The preset fields that give ``plan.dtype`` on any GPU."""
    half = plan.dtype.removeprefix("amp-")
    if plan.method == "qlora":
        return {"bnb_4bit_compute_dtype": "float16" if half == "fp16" else "bfloat16"}
    return {"bf16": half == "bf16", "fp16": half == "fp16"}


def preset_with_plan(preset: BasePreset, plan: Plan, precision: str | None = "bf16") -> BasePreset:
    """``preset`` with every knob of ``plan``: planned where its automatic precision is
    ``precision``, it is ``plan`` (tests/test_presets.py)."""
    return preset.replace(**preset_overrides(preset, plan, precision))


def preset_from_plan(plan: Plan, preset: BasePreset | str | None = None, precision: str | None = "bf16") -> BasePreset:
    """The preset that runs ``plan``, starting from ``preset`` (an object or a registered
    name). Without one, the first registered preset of the plan's method and trainer."""
    from forge_advisor.presets.registry import get_preset, list_presets

    if preset is None:
        candidates = [get_preset(n) for n in list_presets()]
        same = [p for p in candidates if p.method == plan.method and p.trainer == plan.trainer]
        same = same or [p for p in candidates if p.method == plan.method] or candidates
        preset = same[0]
    elif isinstance(preset, str):
        preset = get_preset(preset)
    return preset_with_plan(preset, plan, precision)
