"""``forge-advisor recommend --model X --gpu G``: the best ways to fine-tune X on G."""

from __future__ import annotations

import argparse
from typing import Any

from forge_advisor.cli.output import console, emit_json
from forge_advisor.cli.plan_args import add_plan_arguments, plan_overrides
from forge_advisor.dataplan.cli_args import add_data_argument, apply_data
from forge_advisor.units import fmt_bytes, fmt_duration


def _kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE")
    key, value = text.split("=", 1)
    v: Any = value
    low = value.strip().lower()
    if low in ("true", "false"):
        v = low == "true"
    else:
        for cast in (int, float):
            try:
                v = cast(value)
                break
            except ValueError:
                pass
    if key.strip() == "lora_target_modules" and isinstance(v, str) and v != "all-linear":
        v = tuple(x for x in v.split(",") if x)
    return key.strip(), v


def add_parser(sub: Any) -> None:
    from forge_advisor.advisor.request import DEFAULT_HEADROOM, OBJECTIVES
    from forge_advisor.presets import list_presets

    p = sub.add_parser("recommend", help="find the best way to fine-tune a model on a GPU")
    p.add_argument("--model", required=True, help="catalog id, local config.json / model directory, or Hub id")
    p.add_argument("--gpu", default="auto", help="catalog name, or 'auto' to probe NVML (default)")
    p.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM, metavar="F",
                   help=f"fraction of GPU memory kept free (default {DEFAULT_HEADROOM})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--global-batch", type=int, metavar="N", help="sequences per optimizer step (default 16)")
    g.add_argument("--global-batch-tokens", type=int, metavar="N", help="tokens per optimizer step")
    p.add_argument("--dataset-tokens", type=int, metavar="N", help="tokens in the data set, for time per epoch")
    p.add_argument("--dpo", action="store_true", help="preference training (chosen/rejected pairs) with trl's DPOTrainer")
    p.add_argument("--objective", choices=OBJECTIVES, default="balanced",
                   help="balanced (default): quality⁸ × tokens/s; fastest; quality")
    p.add_argument("--presets", metavar="a,b", help=f"allowed presets (default all: {','.join(list_presets())})")
    p.add_argument("--min-lora-r", type=int, metavar="R")
    p.add_argument("--max-freeze-ratio", type=float, metavar="F")
    p.add_argument("--fix", type=_kv, action="append", default=[], metavar="FIELD=VALUE",
                   help="pin a plan field, e.g. --fix optim=adamw_8bit --fix gradient_checkpointing=true")
    p.add_argument("--seed", type=int, default=0, help="seed of the measured trials (--measure)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--storage", metavar="URL|PATH",
                   help="record every ranked plan as a trial of an Optuna study (sqlite:///x.db or a journal file); "
                        "a later run with the same inputs reads it back")
    p.add_argument("--measure", action="store_true",
                   help="run the best candidates for a few real steps on this GPU (needs [train]); calibrates later estimates")
    p.add_argument("--measure-top", type=int, default=3, metavar="N", help="how many candidates --measure runs (default 3)")
    add_plan_arguments(p, title="plan fields to pin (as --fix FIELD=VALUE; --max-length/--seq-len default 2048, --num-gpus 1)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_data_argument(p)
    p.set_defaults(run=run)


def compute(args: argparse.Namespace, progress: Any = None) -> Any:
    from forge_advisor.advisor import recommend

    data = apply_data(args, search=True)
    presets = None if args.presets is None else tuple(x.strip() for x in args.presets.split(",") if x.strip())
    pinned = plan_overrides(args)
    num_gpus, seq_len = pinned.pop("num_gpus", 1), pinned.pop("max_length", None)  # None: 2048, or the model's limit
    fractions: tuple[tuple[str, int, float], ...] = ()
    if data is not None and seq_len is not None:  # the data's padding per batching mode and batch
        from forge_advisor.advisor.request import BATCHES
        from forge_advisor.dataplan.advise import real_token_fractions

        fractions = real_token_fractions(data.report, "dpo" if args.dpo else "sft", seq_len, BATCHES, num_gpus)
    return recommend(
        args.model, args.gpu, num_gpus=num_gpus, objective=args.objective, seq_len=seq_len,
        global_batch=args.global_batch, global_batch_tokens=args.global_batch_tokens,
        dataset_tokens=args.dataset_tokens, headroom=args.headroom, trainer="dpo" if args.dpo else "sft",
        allowed_presets=presets, min_lora_r=args.min_lora_r, max_freeze_ratio=args.max_freeze_ratio,
        fixed={**pinned, **dict(args.fix)}, seed=args.seed, top=args.top, storage=args.storage,
        progress=progress, measure=args.measure, measure_top=args.measure_top, real_token_fraction=fractions,
    )


def _overrides_text(overrides: dict[str, Any]) -> str:
    short = {"per_device_train_batch_size": "batch", "gradient_accumulation_steps": "accum",
             "gradient_checkpointing": "ckpt", "lora_target_modules": "targets", "max_length": "len"}
    skip = {"attn_implementation"}
    return " ".join(f"{short.get(k, k)}={v}" for k, v in overrides.items() if k not in skip)


def render(rec: Any) -> None:
    from rich.table import Table

    con = console()
    req = rec.request
    con.print(
        f"[bold]{rec.model}[/] on {req.num_gpus} × {rec.gpu.name} ({fmt_bytes(rec.usable_bytes)} usable after "
        f"{req.headroom:.0%} headroom) · objective {req.objective} · {req.global_batch} seqs × {req.seq_len} tokens per step"
    )
    if not rec.recommendations:
        con.print(f"[red]Nothing fits.[/] {rec.suggestion}")
        return
    table = Table(title="recommendations", show_lines=True)
    for col, justify in (("#", "right"), ("preset", "left"), ("overrides", "left"), ("peak", "right"),
                         ("tok/s", "right"), ("epoch", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for i, c in enumerate(rec.recommendations, 1):
        e = c.estimate
        epoch = fmt_duration(e.epoch_seconds) if e.epoch_seconds else "-"
        tps = f"{e.tokens_per_second:,.0f}" if e.tokens_per_second else "?"
        table.add_row(str(i), c.preset, _overrides_text(c.overrides), fmt_bytes(e.peak_reserved_bytes), tps, epoch)
    con.print(table)
    for i, c in enumerate(rec.recommendations, 1):
        con.print(f"[bold]{i}.[/] {c.why}")
    if rec.pareto:
        front = Table(title="Pareto front: tokens/s against quality score")
        for col in ("preset", "overrides", "tok/s", "quality", "peak"):
            front.add_column(col)
        for c in rec.pareto[:10]:
            front.add_row(c.preset, _overrides_text(c.overrides), f"{(c.estimate.tokens_per_second or 0):,.0f}",
                          f"{c.quality:.3f}", fmt_bytes(c.estimate.peak_reserved_bytes))
        con.print(front)
    if rec.measured:
        meas = Table(title=f"measured on this GPU ({len(rec.measured)} trials)")
        for col in ("preset", "overrides", "tok/s", "peak allocated", "peak reserved"):
            meas.add_column(col)
        for m in rec.measured:
            if m["oom"]:
                meas.add_row(m["preset"], _overrides_text(m["overrides"]), "[red]out of memory[/]", "-", "-")
            else:
                meas.add_row(m["preset"], _overrides_text(m["overrides"]), f"{m['tokens_per_second']:,.0f}",
                             fmt_bytes(m["peak_allocated_bytes"]), fmt_bytes(m["peak_reserved_bytes"]))
        con.print(meas)
    best = rec.recommendations[0]
    con.print("\n[bold]Run it:[/]")
    con.print(best.command(rec.model), soft_wrap=True, markup=False)
    con.print("\n[bold]Or from Python:[/]")
    con.print(best.python(rec.model), soft_wrap=True, markup=False)
    s = rec.search
    how = (f"read back from study {s['study']['name']}" if s.get("study") and s["study"]["resumed"]
           else f"every plan ranked: {s['outer_space']:,} choices × their batch and checkpointing, {s['plans_priced']:,} plans "
                f"priced in {s['rank_seconds'] * 1000:.1f} ms")
    calibrated = rec.recommendations and rec.recommendations[0].estimate.calibration
    con.print(f"\n[dim]{how}; " + ("speed calibrated from measured trials on this GPU[/]" if calibrated else "estimates uncalibrated[/]"))


def _warn(rec: Any) -> None:
    """A pinned dtype or attention the GPU cannot run: one line each on stderr."""
    import sys

    from forge_advisor.estimate import hardware_warnings

    for c in rec.recommendations[:1]:
        for line in hardware_warnings(c.plan, rec.gpu):
            print(f"warning: {line}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.json:
        rec = compute(args)
        _warn(rec)
        emit_json(rec.to_dict())
        return 0
    from rich.console import Console
    from rich.progress import Progress

    # the bar on stderr, and only on a terminal: stdout carries the answer alone
    err = Console(stderr=True)
    with Progress(transient=True, console=err, disable=not err.is_terminal) as bar:
        task = bar.add_task("searching", total=None)
        rec = compute(args, progress=lambda done, total: bar.update(task, completed=done, total=total))
    _warn(rec)
    render(rec)
    return 0
