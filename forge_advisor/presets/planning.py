"""Preset <-> :class:`~forge_advisor.plan.Plan` (the estimator's input).

Mapping (decided here, documented in the README of issue 4):

* ``method``/``trainer`` copy over: sft -> ("full", "sft"); lora -> ("lora", "sft");
  qlora and memory_efficient -> ("qlora", "sft"); dpo -> ("lora", "dpo"), LoRA by default so the
  adapter-free base is the reference model.
* dtype: the runner loads frozen bases (LoRA/QLoRA) in the half type and trains full weights
  in fp32 with autocast, so lora + bf16 -> "bf16", full + bf16 -> "amp-bf16", no mixed
  precision -> "fp32" (qlora always computes in half: its compute dtype, bf16/fp16).
* ``beta`` -> ``dpo_beta``; ``attn_implementation`` None -> the architecture's ("sdpa" unless
  a shape says otherwise).
* Fields a Plan has no slot for (learning rate, epochs, warmup…) travel in ``Plan.extra``
  so that ``from_plan(to_plan(p))`` gives ``p`` back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forge_advisor.errors import ForgeError

if TYPE_CHECKING:
    from forge_advisor.plan import Plan
    from forge_advisor.presets.base import BasePreset

__all__ = ["preset_to_plan", "preset_from_plan"]

# preset fields that are also Plan fields, same name
_SHARED = (
    "method", "trainer", "lora_r", "lora_alpha", "lora_dropout", "bnb_4bit_use_double_quant",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "freeze_ratio",
    "gradient_checkpointing", "optim", "num_gpus", "distributed",
)
# handled specially: dtype <- bf16/fp16/bnb_4bit_compute_dtype, dpo_beta <- beta, targets, attention
_SPECIAL = ("bf16", "fp16", "beta", "lora_target_modules", "attn_implementation", "load_in_4bit", "load_in_8bit")


def _dtype(preset: BasePreset, precision: str | None) -> str:
    if preset.method == "qlora":
        from forge_advisor.presets.convert import compute_dtype_name

        return "fp16" if compute_dtype_name(preset) == "float16" else "bf16"
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
    data: dict[str, Any] = {k: getattr(preset, k) for k in _SHARED}
    data["dtype"] = _dtype(preset, precision)
    data["dpo_beta"] = preset.beta
    data["attn_implementation"] = preset.attn_implementation or "sdpa"
    t = preset.lora_target_modules
    data["lora_target_modules"] = tuple(t) if isinstance(t, (list, tuple)) else t
    plan = Plan(**data)
    rest = {k: v for k, v in preset.to_dict().items() if k not in _SHARED and k not in _SPECIAL}
    plan.extra.update(rest, preset=preset.name, bf16=preset.bf16, fp16=preset.fp16,
                      attn_implementation=preset.attn_implementation)
    return plan


def _preset_name_for(plan: Plan) -> str:
    from forge_advisor.presets.registry import list_presets

    named = plan.extra.get("preset")
    if isinstance(named, str) and named in list_presets():
        return named
    if plan.trainer == "dpo":
        return "dpo"
    if plan.method == "full":
        return "sft"
    if plan.method == "qlora":
        return "memory_efficient" if plan.optim.startswith("paged_") and plan.per_device_train_batch_size == 1 else "qlora"
    return "lora"  # lora and lora_8bit (load_in_8bit below)


def preset_from_plan(plan: Plan) -> BasePreset:
    """The preset that runs ``plan`` (the advisor's output) on this machine."""
    from forge_advisor.presets.base import BasePreset
    from forge_advisor.presets.registry import get_preset_class

    cls = get_preset_class(_preset_name_for(plan))
    fields = set(BasePreset.field_names())
    values: dict[str, Any] = {k: getattr(plan, k) for k in _SHARED}
    values["beta"] = plan.dpo_beta
    values["lora_target_modules"] = plan.lora_target_modules
    values["load_in_4bit"] = plan.method == "qlora"
    values["load_in_8bit"] = plan.method == "lora_8bit"
    values["attn_implementation"] = plan.extra.get("attn_implementation", plan.attn_implementation)
    half = plan.dtype.removeprefix("amp-")
    if plan.method == "qlora":
        values["bnb_4bit_compute_dtype"] = "float16" if half == "fp16" else "bfloat16"
    if "bf16" in plan.extra or "fp16" in plan.extra:
        values["bf16"], values["fp16"] = plan.extra.get("bf16"), plan.extra.get("fp16")
    elif plan.method != "qlora":
        values["bf16"], values["fp16"] = half == "bf16", half == "fp16"
    for key, value in plan.extra.items():
        if key in fields and key not in ("bf16", "fp16", "attn_implementation"):
            values[key] = value
    return cls(**values)
