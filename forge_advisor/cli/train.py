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
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
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


def run(args: argparse.Namespace) -> int:
    from forge_advisor.errors import ForgeError
    from forge_advisor.presets import get_preset, load_preset

    overrides = _overrides(args)
    if args.preset_file:
        preset: Any = load_preset(args.preset_file)
        preset = preset.replace(**overrides) if overrides else preset
    elif args.preset == "auto":
        from forge_advisor.train.runner import _resolve_preset

        preset = _resolve_preset("auto", overrides, args.model, args.gpu)
    else:
        preset = get_preset(args.preset, **overrides)  # unknown names / bad values fail here
    if args.show:
        preset.print_info(console())
        return 0
    if args.write_accelerate_config:
        from forge_advisor.train.accelerate_config import write_accelerate_config

        path = write_accelerate_config(preset.to_plan(), args.write_accelerate_config)
        console().print(f"wrote {path}: accelerate launch --config_file {path} -m forge_advisor.cli.main train …")
        return 0
    if not args.demo:
        missing = [n for n in ("model", "data", "output") if not getattr(args, n)]
        if missing:
            raise ForgeError(f"--{missing[0]} is required (or use --demo)")
    if args.demo and not args.output:
        raise ForgeError("--output is required: name a folder for the demo run (e.g. --output forge-demo)")
    import contextlib
    import sys

    from forge_advisor.train.runner import run as train

    peak = int(args.predicted_peak_gib * (1 << 30)) if args.predicted_peak_gib else None
    # with --json, stdout carries only the result document: training chatter goes to stderr
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet_stdout:
        result = _train(args, preset, overrides, train, peak)
    if args.json:
        emit_json(result.to_dict())
        return 0
    return _report(result)


def _train(args: argparse.Namespace, preset: Any, overrides: dict[str, Any], train: Any, peak: int | None) -> Any:
    return train(
        args.model, args.data, preset if (args.preset_file or args.preset == "auto") else args.preset, args.output,
        overrides={} if args.preset == "auto" else overrides,
        resume=args.resume, demo=args.demo, ema_decay=args.ema_decay, ema_cpu_offload=args.ema_cpu,
        on_nonfinite="skip" if args.skip_nonfinite else "stop", predicted_peak_bytes=peak, quiet=args.json,
    )


def _report(result: Any) -> int:
    con = console()
    if result.status == "interrupted":
        con.print(f"interrupted at step {result.global_step}: checkpoint {result.checkpoint}; continue with --resume")
        return 130
    con.print(f"[bold]done[/]: {result.global_step} steps, final loss {result.final_loss:.4f}" if result.final_loss
              is not None else f"[bold]done[/]: {result.global_step} steps")
    con.print(f"trainable {result.trainable_parameters:,} of {result.total_parameters:,} parameters")
    con.print(f"saved {result.adapter_dir} and EMA weights {result.ema_dir}")
    return 0
