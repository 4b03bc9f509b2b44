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
* the batching fields ``padding`` / ``packing`` / ``padding_free`` (trl's names) -> the plan's
  one ``batching`` (forge_advisor/dataplan/batching.py ``mode_of``; back: ``MODE_FIELDS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forge_advisor.dataplan.batching import MODE_FIELDS, mode_of
from forge_advisor.errors import ForgeError
from forge_advisor.levers import LEVER_FIELDS
from forge_advisor.plan import VIDEO_FIELDS

if TYPE_CHECKING:
    from forge_advisor.plan import Plan
    from forge_advisor.presets.base import BasePreset

__all__ = ["preset_to_plan", "preset_overrides", "preset_with_plan", "preset_from_plan", "scaled_alpha", "with_scaled_alpha", "with_derived", "LEARNING_RATES"]

# preset fields that are also Plan fields, same name
_SHARED = (
    "method", "trainer", "lora_r", "lora_alpha", "lora_dropout", "bnb_4bit_use_double_quant",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "freeze_ratio",
    "gradient_checkpointing", "optim", "num_gpus", "distributed", *LEVER_FIELDS,
    "max_pixels", "images_per_sample", "freeze_vision_tower", *VIDEO_FIELDS,
)


def scaled_alpha(alpha: Any, r: Any, new_r: Any) -> Any:
    """``lora_alpha`` for rank ``new_r`` that keeps the LoRA scale α/r of (``alpha``, ``r``).

    peft scales the adapter's output by α/r (``LoraLayer.scaling``); a rank change with α
    held (r 16 -> 128 at α 32) would cut the scale 8×, an effective learning-rate cut
    nobody asked for. We keep α/r (the presets' 32/16 = 2: r 128 -> α 256) rather than
    switching to rsLoRA's α/√r, so a plan trains as the preset's learning rate was tuned.
    Values that are not positive integers pass through for the validation to name."""
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (alpha, r, new_r))
    return max(1, round(alpha * new_r / r)) if ok else alpha


def with_scaled_alpha(alpha: Any, r: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with ``lora_alpha`` added when they change ``lora_r`` alone (:func:`scaled_alpha`)."""
    if "lora_r" in overrides and "lora_alpha" not in overrides:
        return {**overrides, "lora_alpha": scaled_alpha(alpha, r, overrides["lora_r"])}
    return overrides


# The customary learning rate of each (trainer, adapters?) pair, with AdamW and a cosine or
# linear schedule:
# * SFT, full weights 2e-5; SFT, LoRA/QLoRA 2e-4: the QLoRA paper (Dettmers et al. 2023,
#   arXiv:2305.14314, Table 9: 2e-4 for 7B/13B) and the alignment-handbook's zephyr-7b-beta
#   sft/config_full.yaml (2e-5) and sft/config_qlora.yaml (2e-4);
# * DPO, full weights 5e-7; DPO, LoRA/QLoRA 5e-6: the same handbook's zephyr-7b-beta
#   dpo/config_full.yaml (5.0e-7) and dpo/config_qlora.yaml (5.0e-6) — adapters start at
#   zero and train ~10× fewer weights, so they take a ~10× larger step.
LEARNING_RATES: dict[tuple[str, bool], float] = {
    ("sft", False): 2e-5,
    ("sft", True): 2e-4,
    ("dpo", False): 5e-7,
    ("dpo", True): 5e-6,
}


def with_derived(current: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` of ``current`` (a preset, or a preset class for its defaults) with what
    follows from them unless given: ``lora_alpha`` for a new ``lora_r`` (:func:`scaled_alpha`),
    and the :data:`LEARNING_RATES` entry when the method or trainer moves the preset to
    another (trainer, adapters?) pair (``get_preset("sft", trainer="dpo")`` trains at 5e-7)."""
    out = with_scaled_alpha(current.lora_alpha, current.lora_r, overrides)
    if "learning_rate" not in out and ("method" in out or "trainer" in out):
        old = (current.trainer, current.method != "full")
        new = (out.get("trainer", current.trainer), out.get("method", current.method) != "full")
        if new != old and new in LEARNING_RATES:
            out = {**out, "learning_rate": LEARNING_RATES[new]}
    return out


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
    data["batching"] = mode_of({"padding": preset.padding, "packing": preset.packing, "padding_free": preset.padding_free})
    for key in ("lora_target_modules", "lora_target_parameters"):
        t = getattr(preset, key)
        data[key] = tuple(t) if isinstance(t, (list, tuple)) else t
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
        elif key == "batching":  # only the fields that differ from the preset's
            out.update({k: v for k, v in MODE_FIELDS[value].items() if getattr(preset, k) != v})
        elif key == "dtype":
            out.update(_dtype_fields(plan))
        elif key in ("lora_target_modules", "lora_target_parameters") and isinstance(value, list):
            out[key] = tuple(value)
        else:
            out[key] = value
    if "lora_r" in out:
        # a rank change alone scales α with it (scaled_alpha): α is written only when the
        # plan's differs from that
        if scaled_alpha(base["lora_alpha"], base["lora_r"], out["lora_r"]) == plan.lora_alpha:
            out.pop("lora_alpha", None)
        elif "lora_alpha" not in out:
            out = {**out, "lora_alpha": plan.lora_alpha}
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
