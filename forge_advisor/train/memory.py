"""Memory helpers on a live model, priced by the Rust estimator (``forge_advisor.estimate``).

Every helper goes through :func:`_estimate`, which imports the estimator lazily; until that
module exists they raise ``NotImplementedError`` saying so. The shape comes from the live
model's config, the plan from the model's state (LoRA? 4-bit? checkpointing?). Results
are ``forge_advisor.estimate.EstimateResult`` objects (peak bytes, breakdown, speed).
"""

from __future__ import annotations

from typing import Any

from forge_advisor.plan import Plan
from forge_advisor.shapes.model import ModelShape

__all__ = ["get_memory_savings_estimate", "print_model_info", "estimate_model_memory", "shape_of", "plan_of"]


def _estimate(shape: ModelShape, plan: Plan) -> Any:
    """The Rust estimator's answer for ``(shape, plan)``: the same numbers as ``forge-advisor estimate``."""
    from forge_advisor.estimate import estimate

    return estimate(shape, plan)


def shape_of(model: Any) -> ModelShape:
    from forge_advisor.shapes import shape_from_config

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    d = base.config.to_dict()
    return shape_from_config(d, d.get("_name_or_path") or d.get("model_type", "model"))


def plan_of(model: Any, **changes: Any) -> Plan:
    """The plan a live model is set up for: LoRA rank/targets from its peft config, 4-bit if
    quantized, gradient checkpointing if enabled."""
    peft_cfg = getattr(model, "peft_config", {}).get("default") if hasattr(model, "peft_config") else None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    quantized4 = getattr(base, "is_loaded_in_4bit", False)
    quantized8 = getattr(base, "is_loaded_in_8bit", False)
    method = "full" if peft_cfg is None else "qlora" if quantized4 else "lora_8bit" if quantized8 else "lora"
    fields: dict[str, Any] = {"method": method, "dtype": "bf16" if method != "full" else "amp-bf16",
                              "gradient_checkpointing": bool(getattr(base, "is_activation_checkpointing",
                                                                 getattr(base, "is_gradient_checkpointing", False)))}
    if peft_cfg is not None:
        targets = peft_cfg.target_modules
        params = getattr(peft_cfg, "target_parameters", None)
        fields.update(lora_r=peft_cfg.r, lora_alpha=int(peft_cfg.lora_alpha), lora_dropout=float(peft_cfg.lora_dropout),
                      lora_target_modules=targets if isinstance(targets, str) else tuple(sorted(targets or ())) or None,
                      lora_target_parameters=tuple(sorted(params)) if params else None)
    fields.update(changes)
    return Plan(**fields)


def estimate_model_memory(model: Any, batch_size: int = 1, sequence_length: int = 1024) -> Any:
    """Predicted training memory of ``model`` at this batch and length."""
    return _estimate(shape_of(model), plan_of(model, per_device_train_batch_size=batch_size,
                                               gradient_accumulation_steps=1, max_length=sequence_length))


def get_memory_savings_estimate(model: Any) -> dict[str, Any]:
    """Predicted peak (reserved) bytes of full fine-tuning, LoRA and QLoRA for this model, and
    each one's saving against full, e.g. {"full": 6.1e10, "lora": 1.9e10, ..., "saving": {"lora": 0.69}}."""
    shape = shape_of(model)
    peaks = {m: _estimate(shape, Plan(method=m, dtype="amp-bf16" if m == "full" else "bf16")).peak_reserved_bytes
             for m in ("full", "lora", "qlora")}
    # saving = 1 − peak / full peak
    return {**peaks, "saving": {m: 1.0 - peaks[m] / peaks["full"] for m in ("lora", "qlora")}}


def print_model_info(model: Any, show_breakdown: bool = True) -> None:
    """Parameter counts and the predicted memory (with its breakdown)."""
    from rich.console import Console

    from forge_advisor.train.freezing import count_parameters

    from rich.table import Table

    from forge_advisor.units import fmt_bytes

    result = _estimate(shape_of(model), plan_of(model))
    trainable, total = count_parameters(model)
    con = Console(highlight=False)
    # e.g. 14,336 / 121,536 = 11.8% trainable
    con.print(f"parameters: {total:,}, trainable {trainable:,} ({100 * trainable / max(total, 1):.2f}%)")
    con.print(f"predicted peak: {fmt_bytes(result.peak_reserved_bytes)} reserved, "
              f"{fmt_bytes(result.peak_allocated_bytes)} allocated ({result.plan.method}, batch "
              f"{result.plan.per_device_train_batch_size} × {result.plan.max_length} tokens)")
    if show_breakdown:
        table = Table(title="memory breakdown")
        table.add_column("part")
        table.add_column("bytes", justify="right")
        for part, n in result.breakdown.items():
            table.add_row(part, fmt_bytes(n))
        con.print(table)
