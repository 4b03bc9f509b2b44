"""``forge-advisor estimate --model X --preset P [overrides]``: peak memory and speed of one plan."""

from __future__ import annotations

import argparse
from typing import Any

from forge_advisor.cli.output import console, emit_json
from forge_advisor.cli.plan_args import BATCHING_FIELDS, PLAN_FLAGS, add_plan_arguments, add_preset_arguments, plan_overrides, preset_field_overrides
from forge_advisor.dataplan.cli_args import add_data_argument, apply_data
from forge_advisor.errors import ForgeError
from forge_advisor.levers import refuse_lever_problem
from forge_advisor.units import fmt_bytes


def add_parser(sub: Any) -> None:
    from forge_advisor.estimate import DEFAULT_HEADROOM
    from forge_advisor.presets import list_presets

    p = sub.add_parser("estimate", help="peak GPU memory and speed of one training plan")
    p.add_argument("--model", required=True, help="catalog id, local config.json / model directory, or Hub id")
    p.add_argument("--preset", default="lora", help=f"starting preset: {', '.join(list_presets())} (default: lora)")
    p.add_argument("--gpu", help="GPU to check against: a catalog name or 'auto' (NVML)")
    p.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM, metavar="F",
                   help=f"fraction of GPU memory kept free; the plan fits within the rest (default {DEFAULT_HEADROOM})")
    p.add_argument("--dataset-tokens", type=int, metavar="N", help="tokens in the data set, for time per epoch")
    add_plan_arguments(p, title="plan (Hugging Face names; short aliases in brackets)")
    # the preset's other fields, as train takes them: a printed train command prices here
    add_preset_arguments(p, skip={"method", "trainer", *(f.field for f in PLAN_FLAGS), *BATCHING_FIELDS},
                         title="other preset fields")
    add_data_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(run=run)


def compute(args: argparse.Namespace) -> dict[str, Any]:
    from forge_advisor.estimate import estimate
    from forge_advisor.shapes import load_shape

    apply_data(args)
    shape = load_shape(args.model)
    overrides = {**preset_field_overrides(args), **plan_overrides(args)}
    if overrides.get("lora_target_modules") == ():
        raise ForgeError("--lora-target-modules is empty: name modules or use all-linear")
    result = estimate(shape, args.preset, gpu=args.gpu, dataset_tokens=args.dataset_tokens, headroom=args.headroom,
                      **overrides)
    refuse_lever_problem(result.plan, training=False)  # a plan for any machine: the plan's own levers
    return result.to_dict()


_LABELS = {
    "weights": "model weights",
    "quant_state": "quantisation state",
    "lora_adapters": "LoRA adapters (fp32)",
    "reference_model": "DPO reference model",
    "gradients": "gradients",
    "optimizer_states": "optimizer states",
    "optimizer_temporaries": "optimizer temporaries",
    "activations": "saved activations",
    "autocast_copies": "autocast weight copies",
    "logits_and_loss": "logits and loss",
    "backward_buffers": "backward buffers",
    "distributed_buffers": "distributed buffers",
}


def _bar(used: int, capacity: int, width: int = 40) -> str:
    filled = min(width, round(width * used / capacity)) if capacity else 0
    colour = "green" if used <= capacity else "red"
    return f"[{colour}]{'█' * filled}[/]{'░' * (width - filled)}"


def render(report: dict[str, Any]) -> None:
    from rich.table import Table

    con = console()
    plan, mem, thr = report["plan"], report["memory"], report["throughput"]
    con.print(
        f"[bold]{report['model']}[/] · {plan['method']} ({plan['trainer']}) · {plan['dtype']} · "
        f"batch {plan['per_device_train_batch_size']} × accum {plan['gradient_accumulation_steps']} × {plan['max_length']} tokens"
    )
    table = Table(title=f"peak memory (at {mem['peak_phase'].replace('_', ' ')})")
    table.add_column("term")
    table.add_column("bytes", justify="right")
    vision = report.get("vision")
    for key, value in mem["breakdown"].items():
        if value:
            table.add_row(_LABELS.get(key, key), fmt_bytes(value))
            if key == "activations" and vision and vision["kept_bytes"]:
                table.add_row("  of which vision tower", fmt_bytes(min(vision["kept_bytes"], value)))
    table.add_row("[bold]peak allocated[/]", f"[bold]{fmt_bytes(mem['peak_allocated_bytes'])}[/]")
    for key, value in mem["device"].items():
        if value:
            table.add_row(f"+ {key.replace('_', ' ')}", fmt_bytes(value))
    table.add_row("[bold]peak reserved[/]", f"[bold]{fmt_bytes(mem['peak_reserved_bytes'])}[/]")
    con.print(table)
    cap = mem["gpu_memory_bytes"]
    if cap:
        verdict = "[green]fits[/]" if report["fits"] else "[red]does not fit[/]"
        con.print(f"{report['gpu']}: {_bar(mem['peak_reserved_bytes'], mem['usable_bytes'])} {fmt_bytes(mem['peak_reserved_bytes'])} / "
                  f"{fmt_bytes(mem['usable_bytes'])} usable ({fmt_bytes(cap)} less {mem['headroom']:.0%} headroom) — {verdict}")
    if vision:
        trains = f"{vision['tower_trainable_parameters']:,} trainable" if vision["tower_trainable_parameters"] else "frozen"
        con.print(f"vision tower: {vision['tower_parameters'] / 1e6:,.0f}M parameters ({trains}) + projector "
                  f"{vision['projector_parameters'] / 1e6:,.0f}M · {plan['images_per_sample']} image(s)"
                  + (f" + {plan['videos_per_sample']} video(s) of {plan['num_frames']} frames" if plan.get("videos_per_sample") else "")
                  + f" per sample = {vision['patches_per_sample']:,} patches in the tower, "
                  f"{vision['image_tokens_per_sample'] + vision.get('video_tokens_per_sample', 0):,} of the {plan['max_length']:,} tokens"
                  + (f"; cross-attention over {vision['vision_states_per_sample']:,} vision states"
                     if vision.get("vision_states_per_sample") else ""))
        for note in vision["notes"]:
            con.print(f"[yellow]note:[/] {note}")
    if report.get("unsupported"):
        con.print(f"[yellow]warning:[/] the training runtime cannot run this plan: {report['unsupported']}")
    if thr["tokens_per_second"]:
        cal = thr["calibration"]
        how = f"calibrated on this GPU from {cal['samples']} measured trials" if cal else "uncalibrated: run recommend --measure on the GPU to calibrate"
        line = f"≈ {thr['tokens_per_second']:,.0f} tokens/s, {thr['step_seconds']:.2f} s per step of {thr['tokens_per_step']:,} tokens ({how})"
        if thr["epoch_seconds"]:
            line += f", {thr['epoch_seconds'] / 3600:.2f} h per epoch"
        con.print(line)
    elif report["gpu"] is None:
        con.print("No --gpu given: memory only. Add --gpu NAME for fit and speed.")


def run(args: argparse.Namespace) -> int:
    import sys

    report = compute(args)
    for line in report["warnings"]:
        print(f"warning: {line}", file=sys.stderr)  # one line each, on stderr: --json stays clean
    if args.json:
        emit_json(report)
    else:
        render(report)
    return 0
