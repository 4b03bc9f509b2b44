"""A chosen plan as the things a person runs: the preset name, its overrides (Hugging Face
names), the ``forge-advisor train`` command and the Python ``get_preset(...)`` call."""

from __future__ import annotations

import shlex
from typing import Any

from forge_advisor.plan import Plan

__all__ = ["preset_and_overrides", "train_command", "python_snippet"]

# preset fields never worth repeating on a command line
_QUIET = {"bf16", "fp16", "tf32", "output_dir", "logging_steps", "save_steps", "report_to"}


def preset_and_overrides(plan: Plan) -> tuple[str, dict[str, Any]]:
    """The preset that runs ``plan`` and the fields that differ from that preset's defaults."""
    from forge_advisor.presets import get_preset
    from forge_advisor.presets.planning import preset_from_plan

    preset = preset_from_plan(plan)
    chosen = preset.to_dict()
    default = get_preset(preset.name).to_dict()
    overrides = {k: v for k, v in chosen.items() if k not in _QUIET and default.get(k) != v and k in default}
    if overrides.get("attn_implementation") == "sdpa":
        overrides.pop("attn_implementation")  # what the preset picks by itself where supported
    return preset.name, overrides


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def train_command(model: str, preset: str, overrides: dict[str, Any], data: str = "DATA.jsonl", output: str = "out") -> str:
    parts = ["forge-advisor", "train", "--model", model, "--data", data, "--preset", preset]
    for key, value in overrides.items():
        if value is None:
            continue
        parts += [f"--{key.replace('_', '-')}", _flag_value(value)]
    parts += ["--output", output]
    return " ".join(shlex.quote(p) for p in parts)


def python_snippet(preset: str, overrides: dict[str, Any]) -> str:
    args = [repr(preset)] + [f"{k}={v!r}" for k, v in overrides.items()]
    return "from forge_advisor.presets import get_preset\n\npreset = get_preset(" + ", ".join(args) + ")"
