"""``forge-advisor fit --model X [--gpu G]``: the least memory each method needs, and where it fits."""

from __future__ import annotations

import argparse
from typing import Any

from forge_advisor.cli.output import console, emit_json
from forge_advisor.cli.plan_args import add_plan_arguments, plan_overrides
from forge_advisor.plan import VISION_FIELDS
from forge_advisor.dataplan.cli_args import add_data_argument, apply_data
from forge_advisor.units import fmt_bytes


def add_parser(sub: Any) -> None:
    from forge_advisor.estimate import DEFAULT_HEADROOM

    p = sub.add_parser("fit", help="which fine-tuning methods fit a model on a GPU")
    p.add_argument("--model", required=True, help="catalog id, local config.json / model directory, or Hub id")
    p.add_argument("--gpu", help="catalog name or 'auto'; without it: the local GPU, else common GPUs")
    p.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM, metavar="F")
    from forge_advisor.levers import LEVER_FIELDS

    add_plan_arguments(p, ("max_length", "num_gpus", "distributed", "batching", *LEVER_FIELDS, *VISION_FIELDS),
                       title="plan (--max-length/--seq-len default 2048, --num-gpus 1)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_data_argument(p)
    p.set_defaults(run=run)


def compute(args: argparse.Namespace) -> Any:
    from forge_advisor.advisor import fit

    apply_data(args, search=True)
    plan = plan_overrides(args)
    return fit(args.model, args.gpu, seq_len=plan.pop("max_length", None), num_gpus=plan.pop("num_gpus", 1),
               headroom=args.headroom, **plan)


def render(report: Any) -> None:
    from rich.table import Table

    con = console()
    title = f"{report.model}: least memory per preset"
    table = Table(title=title)
    table.add_column("preset")
    table.add_column("its defaults\n(batch 1, ckpt)", justify="right")
    table.add_column("any plan\n(recommend's space)", justify="right")
    least = [fmt_bytes(m.least_bytes) if m.least_bytes is not None else "-" for m in report.methods]
    if report.gpu is not None:
        table.add_column(f"{report.gpu.name} ({fmt_bytes(report.usable_bytes)} usable)", justify="center")
        for m, lb in zip(report.methods, least):
            table.add_row(m.preset, fmt_bytes(m.estimate.peak_reserved_bytes), lb, "[green]fits[/]" if m.fits else "[red]no[/]")
    else:
        gpus = list(next(iter(report.table.values())).keys())
        for g in gpus:
            table.add_column(g, justify="center")
        for m, lb in zip(report.methods, least):
            marks = ["[green]✓[/]" if report.table[m.preset][g] else "[red]✗[/]" for g in gpus]
            table.add_row(m.preset, fmt_bytes(m.estimate.peak_reserved_bytes), lb, *marks)
    con.print(table)
    if report.gpu is not None:
        for m in report.methods:
            line = m.levers_line(report.gpu)
            if line:
                con.print(f"{line} (its defaults, batch 1)", markup=False)
    if report.gpu is None:
        con.print("No GPU named or found: compared with common GPUs. Add --gpu NAME for yours.")
    if report.suggestion:
        con.print(f"[red]Nothing fits.[/] {report.suggestion}")


def run(args: argparse.Namespace) -> int:
    report = compute(args)
    if args.json:
        emit_json(report.to_dict())
    else:
        render(report)
    return 0
