"""``forge-advisor train``: fine-tune with a preset (LoRA, QLoRA, full, DPO…) and save the result.

Every preset field is also a flag (``--lora-r 8``, ``--learning-rate 1e-4``,
``--freeze-ratio 0.25``); ``--demo`` trains a tiny random model on shipped text in seconds.
torch is imported only inside :func:`run`, after the inputs are checked.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from forge_advisor.cli.output import console, emit_json

# preset fields that are not flags: the preset name and method/trainer pick them
_NOT_FLAGS = {"method", "trainer"}


# one definition of the flags' value types for every command (cli/plan_args.py)
from forge_advisor.cli.plan_args import parser_for as _parser_for  # noqa: E402


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="fine-tune a model with a preset and save adapter + EMA weights")
    p.add_argument("--model", help="model folder (config.json + weights) or Hub id")
    p.add_argument("--data", help=".jsonl (text / messages / prompt,chosen,rejected) or a save_to_disk folder")
    from forge_advisor.cli.plan_args import add_preset_arguments
    from forge_advisor.presets import list_presets

    p.add_argument("--preset", default="lora", help=f"{', '.join(list_presets())} (default lora), or auto: ask the advisor")
    p.add_argument("--gpu", help="with --preset auto: the GPU to plan for (catalog name; default: probe NVML)")
    p.add_argument("--preset-file", metavar="PATH", help="a preset saved as .json/.yaml (overrides --preset)")
    p.add_argument("--output", help="folder for checkpoints, adapter/, ema/ and preset.json")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in --output")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output (never a running one)")
    p.add_argument("--events", metavar="PATH", help="write the typed event stream as JSON lines to PATH ('-': stdout)")
    p.add_argument("--demo", action="store_true", help="tiny random Llama + shipped text, on CPU in seconds")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any preset field by its Hugging Face name, e.g. --set lora_r=8 (repeatable)")
    p.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay (default 0.999)")
    p.add_argument("--ema-cpu", action="store_true", help="keep the EMA copy in CPU memory")
    p.add_argument("--skip-nonfinite", action="store_true", help="skip steps with NaN/Inf gradients instead of stopping")
    p.add_argument("--predicted-peak-gib", type=float, help="the estimator's peak, reported against the measured one")
    p.add_argument("--write-accelerate-config", metavar="PATH",
                   help="write an accelerate config for --num-gpus/--distributed and exit")
    p.add_argument("--show", action="store_true", help="print the resolved preset and exit")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_preset_arguments(p, skip=_NOT_FLAGS, title="preset overrides (Hugging Face names; the plan's short aliases as in every command)")
    p.set_defaults(run=run)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from forge_advisor.errors import ForgeError
    from forge_advisor.presets.base import BasePreset, check_override_names

    out = {k[3:]: v for k, v in vars(args).items() if k.startswith("ov_") and v is not None}
    types = {f.name: str(f.type) for f in dataclasses.fields(BasePreset)}
    for item in args.set:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ForgeError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set lora_r=8")
        check_override_names(BasePreset, {key: None})
        try:
            out[key] = _parser_for(types[key])(text.strip())
        except (ValueError, argparse.ArgumentTypeError):
            raise ForgeError(f"--set {key}={text!r}: expected a value of type {types[key]}") from None
    return out


_TRAIN_PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets")


def _check_train_extra() -> None:
    """Training needs the [train] extra; say how to get it before anything tries to import it."""
    import importlib.util
    import sys

    from forge_advisor.errors import ForgeError

    def absent(name: str) -> bool:
        if name in sys.modules:
            return sys.modules[name] is None  # None: blocked, the way Python marks a failed import
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    missing = [m for m in _TRAIN_PACKAGES if absent(m)]
    if missing:
        raise ForgeError(f"training needs {', '.join(missing)}, from the [train] extra: pip install \"forge-advisor[train]\"")


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _check_numbers(args: argparse.Namespace) -> int | None:
    """Flags checked before any heavy import; returns the predicted peak in bytes."""
    import math

    from forge_advisor.errors import ForgeError
    from forge_advisor.train.runner import check_ema_decay

    check_ema_decay(args.ema_decay)
    gib = args.predicted_peak_gib
    if gib is None:
        return None
    if not math.isfinite(gib) or gib <= 0:
        raise ForgeError(f"--predicted-peak-gib {gib!r}: expected a positive number of GiB, e.g. 21.5")
    return max(1, int(gib * (1 << 30)))


def resolve_args_preset(args: argparse.Namespace, overrides: dict[str, Any]) -> Any:
    """The preset this command line trains: ``--preset-file`` (any file the advisor or TUI exports),
    ``--preset auto`` or a preset name, with the flags' overrides applied last."""
    from pathlib import Path

    from forge_advisor.train.resolve import resolve_preset

    spec: Any = Path(args.preset_file) if args.preset_file else args.preset
    return resolve_preset(spec, overrides, args.model, args.gpu)


def run(args: argparse.Namespace) -> int:
    from forge_advisor.errors import ForgeError

    overrides = _overrides(args)
    if args.json and args.events == "-":
        raise ForgeError("--json and --events - would both write to stdout: give --events a file path")
    if args.demo:
        from forge_advisor.train.demo import DEMO_OVERRIDES

        overrides = {**DEMO_OVERRIDES, **overrides}  # the demo's small steps, under the user's flags
    preset = resolve_args_preset(args, overrides)
    if args.model and not args.demo:
        from forge_advisor.shapes.resolve import offline_shape

        shape = offline_shape(args.model)  # a local or catalog config: no network before training
        if shape is not None:
            shape.check_length(preset.max_length)
            shape.check_vision_fields(overrides)
    if args.show:
        preset.print_info(console())
        return 0
    from forge_advisor.levers import refuse_lever_problem

    if args.write_accelerate_config:
        from forge_advisor.train.accelerate_config import write_accelerate_config

        plan = preset.to_plan()
        refuse_lever_problem(plan, training=False)  # the launch machine may not be this one
        path = write_accelerate_config(plan, args.write_accelerate_config)
        console().print(f"wrote {path}: accelerate launch --config_file {path} -m forge_advisor.cli.main train …")
        return 0
    if not args.demo:
        missing = [n for n in ("model", "data", "output") if not getattr(args, n)]
        if missing:
            raise ForgeError(f"--{missing[0]} is required (or use --demo)")
    if args.demo and not args.output:
        raise ForgeError("--output is required: name a folder for the demo run (e.g. --output forge-demo)")
    peak = _check_numbers(args)
    _check_train_extra()
    plan = preset.to_plan()
    refuse_lever_problem(plan, training=True, has_cuda=_has_cuda() if plan.use_liger_kernel else None)
    import contextlib
    import sys

    from forge_advisor.train.runner import run as train

    # with --json (or --events -), stdout carries only the document/events: chatter goes to stderr
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if args.json and args.events != "-" else contextlib.nullcontext()
    with quiet_stdout:
        result = train(
            args.model, args.data, preset, args.output, resume=args.resume, overwrite=args.overwrite, demo=args.demo,
            ema_decay=args.ema_decay, ema_cpu_offload=args.ema_cpu, on_nonfinite="skip" if args.skip_nonfinite else "stop",
            predicted_peak_bytes=peak, quiet=args.json, gpu=args.gpu, events=args.events, hold_interrupt=True,
        )
    if args.json:
        emit_json(result.to_dict())
        code = 0
    else:
        code = _report(result, to_stderr=args.events == "-")
    if result.status == "interrupted":
        from forge_advisor.train.interrupt import EXIT_INTERRUPTED, exit_now

        exit_now(EXIT_INTERRUPTED)  # a second Ctrl-C still lands in the runtime's handler, not in shutdown
    return code


def _report(result: Any, to_stderr: bool = False) -> int:
    from rich.console import Console

    con = Console(highlight=False, stderr=True) if to_stderr else console()  # --events -: stdout holds events only
    if result.status == "interrupted":
        con.print(f"interrupted at step {result.global_step}: checkpoint {result.checkpoint}; continue with --resume")
        return 130
    con.print(f"[bold]done[/]: {result.global_step} steps, final loss {result.final_loss:.4f}" if result.final_loss
              is not None else f"[bold]done[/]: {result.global_step} steps")
    con.print(f"trainable {result.trainable_parameters:,} of {result.total_parameters:,} parameters")
    con.print(f"saved {result.adapter_dir} and EMA weights {result.ema_dir}")
    return 0
