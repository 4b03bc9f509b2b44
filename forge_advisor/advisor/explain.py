"""One line of why for each recommendation, from the numbers that decided it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from forge_advisor.units import fmt_bytes

if TYPE_CHECKING:
    from forge_advisor.advisor.search import Evaluated

__all__ = ["describe", "why"]

_NAMES = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA (4-bit base)", "lora_8bit": "LoRA on an 8-bit base"}


def describe(ev: Evaluated) -> str:
    """``QLoRA (4-bit base) r=8 on attention, lowest 90% of layers frozen``."""
    return _method(ev)


def _method(ev: Evaluated) -> str:
    p = ev.plan
    name = _NAMES[p.method]
    if p.uses_lora:
        targets = "all linear layers" if p.lora_target_modules == "all-linear" else "attention"
        name += f" r={p.lora_r} on {targets}"
    if p.freeze_ratio:
        name += f", lowest {p.freeze_ratio:.0%} of layers frozen"
    return name


def why(ev: Evaluated, best_full: Evaluated | None, leanest_full_bytes: int | None, usable: int, best_tps: float) -> str:
    """One line: the plan, its memory, against the best full fine-tune (or the least any
    full fine-tune of the space needs when none fits), its speed and its inner knobs."""
    p, e = ev.plan, ev.estimate
    parts = [f"{_method(ev)}: {fmt_bytes(e.peak_reserved_bytes)} of {fmt_bytes(usable)} usable"]
    if p.method != "full":
        if best_full is None and leanest_full_bytes is not None:
            parts.append(f"full fine-tuning needs ≥ {fmt_bytes(leanest_full_bytes)}")
        elif best_full is not None and best_full.estimate.tokens_per_second and e.tokens_per_second:
            ratio = e.tokens_per_second / best_full.estimate.tokens_per_second
            parts.append(f"{ratio:.1f}× the speed of the best full fine-tune at quality {ev.quality:.2f} vs {best_full.quality:.2f}")
    if e.tokens_per_second:
        share = e.tokens_per_second / best_tps if best_tps else 1.0
        parts.append(f"{e.tokens_per_second:,.0f} tok/s ({share:.0%} of the fastest fit)")
    knobs = [f"batch {p.per_device_train_batch_size}×{p.gradient_accumulation_steps}"]
    knobs.append("checkpointing" if p.gradient_checkpointing else "no checkpointing")
    knobs.append(p.optim)
    parts.append(", ".join(knobs))
    return "; ".join(parts)
