"""What the runtime says when the preflight step runs out of GPU memory: the nearest plan that
fits, asked of the advisor's public API (:func:`forge_advisor.advisor.recommend`) with the
run's own sequence length, global batch and trainer. Torch-free."""

from __future__ import annotations

from typing import Any

from forge_advisor.errors import ForgeError
from forge_advisor.presets.base import BasePreset

__all__ = ["nearest_fitting_plan", "plan_flags"]


def plan_flags(current: BasePreset, better: BasePreset) -> str:
    """The ``train`` flags that turn ``current``'s plan into ``better``'s: only the fields the
    advisor plans (the memory-relevant :class:`~forge_advisor.plan.Plan` fields); the learning
    rate, step counts and the half type (the machine's) stay the user's."""
    import dataclasses

    from forge_advisor.plan import Plan

    planned = {f.name for f in dataclasses.fields(Plan)} - {"method", "trainer", "dtype", "extra", "num_gpus",
                                                              "distributed", "attn_implementation"}
    a, b = current.to_dict(), better.to_dict()
    parts = []
    for name, value in b.items():
        if name in planned and a.get(name) != value:
            text = str(value).lower() if isinstance(value, bool) else ",".join(value) if isinstance(value, list) else str(value)
            parts.append(f"--{name.replace('_', '-')} {text}")
    return " ".join(parts)


def nearest_fitting_plan(preset: BasePreset, model: Any, gpu: str | None) -> str:
    """One sentence: the advisor's best plan on this GPU for the same method, length and global
    batch, as flags to add; or why there is none."""
    from forge_advisor.advisor import recommend
    from forge_advisor.presets.planning import preset_from_plan

    global_batch = preset.per_device_train_batch_size * preset.gradient_accumulation_steps
    asks: list[dict[str, Any]] = [{"allowed_presets": (preset.name,)}, {}]
    for extra in asks:
        try:
            rec = recommend(model.shape, gpu or "auto", top=1, seq_len=preset.max_length, global_batch=global_batch,
                            trainer=preset.trainer, **extra)
        except ForgeError as exc:
            return f"the advisor could not plan for this GPU ({exc})"
        if rec.recommendations:
            plan = rec.recommendations[0].plan
            better = preset_from_plan(plan)
            flags = plan_flags(preset, better) if better.name == preset.name else f"--preset {better.name} " + plan_flags(preset, better)
            return f"nearest plan that fits: {flags.strip() or '(the same plan: free GPU memory held by other processes)'}"
    return rec.suggestion or "no plan of this model fits this GPU"
