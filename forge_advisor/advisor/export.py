"""The advisor's side of exporting a plan: which preset runs it, and its overrides. The
commands and snippets themselves come from :mod:`forge_advisor.export` (shared with the TUI)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forge_advisor.export import launch_command, preset_overrides, preset_snippet, train_argv
from forge_advisor.plan import Plan

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU

__all__ = ["preset_and_overrides", "train_command", "python_snippet"]


def preset_and_overrides(plan: Plan, gpu: GPU | None = None) -> tuple[str, dict[str, Any]]:
    """The preset that runs ``plan`` and the ``get_preset`` keyword arguments that give it."""
    name = preset_from_plan_name(plan)
    return name, preset_overrides(name, plan.to_dict(), gpu)


def train_command(model: str, plan: Plan, gpu: GPU | None = None, data: str = "DATA.jsonl", output: str = "out") -> str:
    name = preset_from_plan_name(plan)
    argv = train_argv(model, name, plan.to_dict(), gpu=gpu, data=data, output=output)
    return launch_command(argv, plan.num_gpus)


def python_snippet(model: str, plan: Plan, gpu: GPU | None = None) -> str:
    return preset_snippet(model, preset_from_plan_name(plan), plan.to_dict(), gpu=gpu)


def preset_from_plan_name(plan: Plan) -> str:
    from forge_advisor.presets.planning import preset_from_plan

    return preset_from_plan(plan).name
