"""``forge-advisor probe``: what NVML sees on this machine. No GPU is not an error (exit 0)."""

from __future__ import annotations

import argparse
from typing import Any

from forge_advisor.cli.output import console, emit_json
from forge_advisor.units import fmt_bytes


def add_parser(sub: Any) -> None:
    p = sub.add_parser("probe", help="show the GPUs, memory and driver NVML sees on this machine")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(run=run)


def compute() -> dict[str, Any]:
    from forge_advisor.gpus import probe

    return probe().to_dict()


def render(report: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    con = console()
    if not report["available"]:
        con.print(f"[bold]No GPU visible:[/] {report['reason']}.")
        con.print("Name your GPU instead, e.g. '4090' or 'H100 SXM' ('forge-advisor gpus' lists them).")
        for note in report["notes"]:
            con.print(f"[dim]{note}[/]")
        return
    con.print(
        f"driver {report['driver_version'] or '?'}, CUDA {report['cuda_driver_version'] or '?'} (highest the driver supports), "
        f"{report['count']} GPU{'s' if report['count'] != 1 else ''}"
    )
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("#", justify="right")
    table.add_column("NVML name")
    table.add_column("total", justify="right", no_wrap=True)
    table.add_column("free", justify="right", no_wrap=True)
    table.add_column("CC", justify="right")
    table.add_column("catalog")
    for d in report["devices"]:
        table.add_row(
            str(d["index"]), d["name"], fmt_bytes(d["memory_total_bytes"]), fmt_bytes(d["memory_free_bytes"]),
            d["compute_capability"] or "?", d["catalog_name"] or "[yellow]not in catalog (FLOP/s unknown)[/]",
        )
    con.print(table)
    for note in report["notes"]:
        con.print(f"[dim]{note}[/]")


def run(args: argparse.Namespace) -> int:
    report = compute()
    if args.json:
        emit_json(report)
    else:
        render(report)
    return 0
