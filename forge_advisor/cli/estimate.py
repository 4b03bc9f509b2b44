"""``forge-advisor estimate --model X --preset P [overrides]``: peak memory and speed of one plan."""

from __future__ import annotations

import argparse
from typing import Any

from forge_advisor.cli.output import console, emit_json
from forge_advisor.dataplan.cli_args import add_data_argument, apply_data
from forge_advisor.errors import ForgeError
from forge_advisor.plan import ATTENTION, DTYPES, OPTIMIZERS
from forge_advisor.units import fmt_bytes

PRESETS = ("sft", "lora", "qlora", "dpo", "memory_efficient")

# CLI flag -> Hugging Face / Plan field name
_FLAGS = {
    "lora_r": "lora_r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "lora_target_modules",
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "seq_len": "max_length",
    "freeze_ratio": "freeze_ratio",
    "gradient_checkpointing": "gradient_checkpointing",
    "attn": "attn_implementation",
    "optimizer": "optim",
    "dtype": "dtype",
    "num_gpus": "num_gpus",
    "distributed": "distributed",
}


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    """The plan knobs shared by estimate (and train)."""
    p.add_argument("--lora-r", type=int, metavar="R", help="LoRA rank")
    p.add_argument("--lora-alpha", type=int, metavar="A", help="LoRA alpha")
    p.add_argument("--lora-dropout", type=float, metavar="P", help="LoRA dropout probability")
    p.add_argument("--lora-target-modules", metavar="a,b|all-linear", help="modules to adapt (default: attention q/k/v/o)")
    p.add_argument("--batch-size", type=int, metavar="N", help="per-device train batch size")
    p.add_argument("--grad-accum", type=int, metavar="N", help="gradient accumulation steps")
    p.add_argument("--seq-len", type=int, metavar="T", help="sequence length in tokens (max_length)")
    p.add_argument("--freeze-ratio", type=float, metavar="F", help="freeze embeddings and this fraction of the lowest layers")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--attn", choices=ATTENTION, help="attention implementation")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="optimizer (TrainingArguments.optim)")
    p.add_argument("--dtype", choices=DTYPES, help="weights dtype: bf16/fp16 pure half, amp-* fp32 master + autocast, fp32")
    p.add_argument("--num-gpus", type=int, metavar="N", help="number of GPUs")
    p.add_argument("--distributed", choices=("none", "ddp", "fsdp", "zero2", "zero3"), help="multi-GPU strategy")


def plan_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flag, name in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if name == "lora_target_modules":
            value = "all-linear" if value == "all-linear" else tuple(v.strip() for v in value.split(",") if v.strip())
        out[name] = value
    return out


def add_parser(sub: Any) -> None:
    p = sub.add_parser("estimate", help="peak GPU memory and speed of one training plan")
    p.add_argument("--model", required=True, help="catalog id, local config.json / model directory, or Hub id")
    p.add_argument("--preset", default="lora", choices=PRESETS, help="starting preset (default: lora)")
    p.add_argument("--gpu", help="GPU to check against: a catalog name or 'auto' (NVML)")
    p.add_argument("--dataset-tokens", type=int, metavar="N", help="tokens in the data set, for time per epoch")
    add_plan_arguments(p)
    add_data_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(run=run)


def compute(args: argparse.Namespace) -> dict[str, Any]:
    from forge_advisor.estimate import estimate
    from forge_advisor.shapes import load_shape

    apply_data(args)
    shape = load_shape(args.model)
    overrides = plan_overrides(args)
    if overrides.get("lora_target_modules") == ():
        raise ForgeError("--lora-target-modules is empty: name modules or use all-linear")
    return estimate(shape, args.preset, gpu=args.gpu, dataset_tokens=args.dataset_tokens, **overrides).to_dict()


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
    for key, value in mem["breakdown"].items():
        if value:
            table.add_row(_LABELS.get(key, key), fmt_bytes(value))
    table.add_row("[bold]peak allocated[/]", f"[bold]{fmt_bytes(mem['peak_allocated_bytes'])}[/]")
    for key, value in mem["device"].items():
        if value:
            table.add_row(f"+ {key.replace('_', ' ')}", fmt_bytes(value))
    table.add_row("[bold]peak reserved[/]", f"[bold]{fmt_bytes(mem['peak_reserved_bytes'])}[/]")
    con.print(table)
    cap = mem["gpu_memory_bytes"]
    if cap:
        verdict = "[green]fits[/]" if report["fits"] else "[red]does not fit[/]"
        con.print(f"{report['gpu']}: {_bar(mem['peak_reserved_bytes'], cap)} {fmt_bytes(mem['peak_reserved_bytes'])} / {fmt_bytes(cap)} — {verdict}, headroom {fmt_bytes(report['headroom_bytes'])}")
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
    report = compute(args)
    if args.json:
        emit_json(report)
    else:
        render(report)
    return 0
