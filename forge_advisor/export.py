"""Export a plan: the ``forge-advisor train`` / ``estimate`` commands, the plan as JSON or
YAML, and the Python ``get_preset(...)`` snippet.

Pure functions (no textual, no I/O): the advisor's recommendations, the TUI's export and
train screens all write their commands with them. A plan is given the way the editor holds it — a preset name plus
Plan-field overrides (Hugging Face names, as :func:`forge_advisor.estimate.estimate` takes
them) — and only what differs from the preset is written out::

    >>> train_argv("meta-llama/Llama-3.1-8B", "qlora", {"lora_r": 32}, data="d.jsonl", output="out")
    ['forge-advisor', 'train', '--model', 'meta-llama/Llama-3.1-8B', '--preset', 'qlora', '--data', 'd.jsonl', '--output', 'out', '--lora-r', '32']

``forge-advisor train`` takes every preset field as a flag (``--per-device-train-batch-size``,
``--max-length``…) and ``--set FIELD=VALUE`` for the rest (``method``, ``trainer``);
``forge-advisor estimate`` takes the same Hugging Face names for the plan's fields
(forge_advisor/cli/plan_args.py).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from forge_advisor.errors import ForgeError

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU
    from forge_advisor.plan import Plan
    from forge_advisor.presets.base import BasePreset

__all__ = [
    "launch_command",
    "estimate_argv",
    "format_command",
    "plan_diff",
    "plan_document",
    "plan_json",
    "plan_yaml",
    "preset_overrides",
    "preset_snippet",
    "train_argv",
]

PROGRAM = "forge-advisor"

# preset fields that `forge-advisor train` has no flag for (it takes them as --set FIELD=VALUE)
_SET_ONLY = ("method", "trainer")


def _resolve(preset: str, overrides: Mapping[str, Any] | Plan | None, gpu: GPU | None) -> tuple[BasePreset, Plan]:
    """The preset object and the plan it is to run: ``overrides`` is the plan itself, or
    Plan-field overrides of the preset (Hugging Face names, as the TUI's editor holds them)."""
    from forge_advisor.estimate import resolve_plan
    from forge_advisor.plan import Plan
    from forge_advisor.presets import get_preset

    if isinstance(overrides, Plan):
        return get_preset(preset), overrides
    over = dict(overrides or {})
    plan_fields = set(Plan.field_names())
    base = get_preset(preset, **{k: v for k, v in over.items() if k not in plan_fields})
    return base, resolve_plan(base, gpu, **{k: v for k, v in over.items() if k in plan_fields})


def plan_diff(preset: str, overrides: Mapping[str, Any] | Plan | None = None, gpu: GPU | None = None) -> dict[str, Any]:
    """Plan fields (in Plan order) where the plan differs from ``preset`` alone.

    ``gpu`` decides the preset's half type (bf16, or fp16 on GPUs without bf16), as in
    :func:`~forge_advisor.estimate.resolve_plan`. Raises :class:`ForgeError` on bad values."""
    from forge_advisor.estimate import resolve_plan

    from forge_advisor.presets.planning import scaled_alpha

    base_preset, plan = _resolve(preset, overrides, gpu)
    b, p = resolve_plan(base_preset, gpu).to_dict(), plan.to_dict()
    diff = {k: p[k] for k in p if p[k] != b[k]}
    if "lora_r" in diff and diff.get("lora_alpha") == scaled_alpha(b["lora_alpha"], b["lora_r"], diff["lora_r"]):
        del diff["lora_alpha"]  # the new rank alone gives this α (α/r kept)
    return diff


def preset_overrides(preset: str, overrides: Mapping[str, Any] | Plan | None = None, gpu: GPU | None = None) -> dict[str, Any]:
    """The :func:`~forge_advisor.presets.get_preset` keyword arguments (preset field names)
    that give this plan, diffed once against the preset
    (:func:`forge_advisor.presets.planning.preset_overrides`), plus preset-only fields given
    by name (``learning_rate``…) that differ from the preset's own."""
    from forge_advisor.plan import Plan
    from forge_advisor.presets import get_preset
    from forge_advisor.presets.planning import preset_overrides as diff

    _, plan = _resolve(preset, overrides, gpu)
    out = diff(get_preset(preset), plan, "bf16" if gpu is None or gpu.bf16 else "fp16")
    if not isinstance(overrides, Plan):
        default = get_preset(preset).to_dict()
        for key, value in (overrides or {}).items():
            if key not in Plan.field_names() and key not in out and default.get(key) != value:
                out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if value is None:
        return "auto"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def train_argv(
    model: str | None,
    preset: str,
    overrides: Mapping[str, Any] | Plan | None = None,
    *,
    gpu: GPU | None = None,
    data: str | None = None,
    output: str = "forge-output",
    predicted_peak_bytes: int | None = None,
    demo: bool = False,
    program: Sequence[str] = (PROGRAM,),
) -> list[str]:
    """argv of ``forge-advisor train`` for this plan. ``demo=True`` (or no ``data``) adds
    ``--demo``: the runtime's tiny model and shipped text, with only the knobs that mean the
    same on it (LoRA targets, freeze ratio) — its own small batch, length and rank (its layers
    are 64 wide) are what make a demo quick. ``predicted_peak_bytes`` is
    passed as ``--predicted-peak-gib`` so the monitor reports measured / predicted."""
    if not preset:
        from forge_advisor.presets import list_presets

        raise ForgeError(f"no preset: choose one of {', '.join(list_presets())}")
    argv = [*program, "train"]
    demo = demo or not data
    if model and not demo:
        argv += ["--model", model]
    argv += ["--preset", preset]
    if demo:
        argv.append("--demo")
    else:
        argv += ["--data", str(data)]
    argv += ["--output", output]
    over = preset_overrides(preset, overrides, gpu)
    if demo:
        keep = ("lora_dropout", "lora_target_modules", "freeze_ratio")
        over = {k: v for k, v in over.items() if k in keep}
    for key, value in over.items():
        if key in _SET_ONLY:
            argv += ["--set", f"{key}={_cli_value(value)}"]
        else:
            argv += [f"--{key.replace('_', '-')}", _cli_value(value)]
    if predicted_peak_bytes and not demo:
        argv += ["--predicted-peak-gib", f"{predicted_peak_bytes / (1 << 30):.2f}"]
    return argv


def estimate_argv(
    model: str,
    preset: str,
    overrides: Mapping[str, Any] | Plan | None = None,
    *,
    gpu: GPU | None = None,
    gpu_name: str | None = None,
    dataset_tokens: int | None = None,
    program: Sequence[str] = (PROGRAM,),
) -> list[str]:
    """argv of ``forge-advisor estimate`` that prices the same plan."""
    argv = [*program, "estimate", "--model", model, "--preset", preset]
    name = gpu_name or (gpu.name if gpu is not None else None)
    if name:
        argv += ["--gpu", name]
    if dataset_tokens:
        argv += ["--dataset-tokens", str(dataset_tokens)]
    from forge_advisor.cli.plan_args import PLAN_FLAGS, flag_value

    flags = {f.field: f.flag for f in PLAN_FLAGS}  # the same Hugging Face names train takes
    for key, value in plan_diff(preset, overrides, gpu).items():
        if key not in flags:
            continue  # method / trainer / dpo_beta / 4-bit double quant: the preset decides
        argv += [flags[key], flag_value(value)]
    return argv


def format_command(argv: Sequence[str], width: int = 88) -> str:
    """A shell command, quoted; broken with `` \\`` before flags when longer than ``width``."""
    words = [shlex.quote(str(a)) for a in argv]
    one = " ".join(words)
    if len(one) <= width:
        return one
    lines: list[str] = []
    cur: list[str] = []
    for w in words:
        if w.startswith("--") and cur and (len(lines) > 0 or len(cur) >= 2):
            lines.append(" ".join(cur))
            cur = []
        cur.append(w)
    lines.append(" ".join(cur))
    return " \\\n    ".join(lines)


def plan_document(
    model: str,
    preset: str,
    overrides: Mapping[str, Any] | Plan | None = None,
    *,
    gpu: GPU | None = None,
    estimate: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The plan as a preset file that ``forge-advisor train --preset-file`` reads back as
    exactly this plan (:func:`forge_advisor.presets.load_preset`)::

        {"forge_advisor_version", "preset", "config", "overrides", "model", "gpu", "plan"[, "estimate"]}

    ``preset`` + ``config`` is what train reads (every preset field, the plan's knobs
    applied); ``overrides`` the preset fields that differ from the preset's defaults;
    ``plan`` is :meth:`Plan.to_dict` and ``estimate`` the headline figures of
    ``estimate --json`` — both for people and scripts, train ignores them."""
    from forge_advisor.core import VERSION

    over = preset_overrides(preset, overrides, gpu)
    _, plan = _resolve(preset, overrides, gpu)
    from forge_advisor.presets import get_preset

    config = get_preset(preset, **over).to_dict()
    doc: dict[str, Any] = {
        "forge_advisor_version": VERSION,
        "preset": preset,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()},
        "overrides": {k: (list(v) if isinstance(v, tuple) else v) for k, v in over.items()},
        "model": model,
        "gpu": None if gpu is None else gpu.name,
        "plan": plan.to_dict(),
    }
    if estimate is not None:
        mem, thr = estimate.get("memory", {}), estimate.get("throughput", {})
        doc["estimate"] = {
            "peak_reserved_bytes": mem.get("peak_reserved_bytes"),
            "peak_allocated_bytes": mem.get("peak_allocated_bytes"),
            "fits": estimate.get("fits"),
            "tokens_per_second": thr.get("tokens_per_second"),
            "epoch_seconds": thr.get("epoch_seconds"),
        }
    return doc


def plan_json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def plan_yaml(doc: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False)


def preset_snippet(
    model: str, preset: str, overrides: Mapping[str, Any] | Plan | None = None, *, gpu: GPU | None = None,
    output: str = "forge-output",
) -> str:
    """Python that builds this plan with :func:`forge_advisor.presets.get_preset`."""
    over = preset_overrides(preset, overrides, gpu)
    args = [repr(preset)] + [f"{k}={v!r}" for k, v in over.items()]
    one = f"preset = get_preset({', '.join(args)})"
    call = one if len(one) <= 88 else "preset = get_preset(\n" + "".join(f"    {a},\n" for a in args) + ")"
    return (
        "from forge_advisor.presets import get_preset\n"
        "\n"
        f"{call}\n"
        f"training_args = preset.get_training_args(output_dir={output!r})\n"
        f"lora_config = preset.get_lora_config({model!r})  # None for full fine-tuning\n"
        "bnb_config = preset.get_bnb_config()  # None unless 4-/8-bit\n"
    )


def launch_command(argv: Sequence[str], num_gpus: int, config_path: str = "accelerate.yaml") -> str:
    """Several GPUs: write the plan's accelerate config (FSDP / DeepSpeed ZeRO / DDP) with
    the same flags, then run the same training under ``accelerate launch``."""
    argv = list(argv)
    if num_gpus <= 1:
        return shlex.join(argv)
    write = [*argv, "--write-accelerate-config", config_path]
    launch = ["accelerate", "launch", "--config_file", config_path, "--num_processes", str(num_gpus),
              "-m", "forge_advisor.cli.main", *argv[1:]]
    return shlex.join(write) + " && \\\n  " + shlex.join(launch)
