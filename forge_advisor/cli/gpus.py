"""``forge-advisor gpus [NAME]``: the embedded GPU catalog, or one GPU in detail."""

from __future__ import annotations

import argparse
from typing import Any

from forge_advisor.cli.output import console, emit_json
from forge_advisor.units import GiB


def add_parser(sub: Any) -> None:
    p = sub.add_parser("gpus", help="list the embedded GPU catalog (memory, bf16, TFLOP/s, bandwidth)")
    p.add_argument("name", nargs="*", metavar="NAME", help="show one GPU in detail ('4090', 'h100 sxm', 'a100 80gb pcie')")
    p.add_argument("--search", metavar="TEXT", help="only GPUs whose name, aliases or NVML name contain every word")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(run=run)


def compute(search: str | None) -> list[dict[str, Any]]:
    from forge_advisor.gpus import search_gpus

    return [g.to_dict() for g in search_gpus(search)]


def compute_one(name: str) -> dict[str, Any]:
    from forge_advisor.gpus import find_gpu

    return find_gpu(name).to_dict()


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _gib(n: int) -> str:
    v = n / GiB
    return f"{v:.0f} GiB" if v == int(v) else f"{v:.1f} GiB"


def _tbs(bw: int | None) -> str:
    return "-" if bw is None else f"{bw / 1e12:.2f}"


def render(rows: list[dict[str, Any]], search: str | None) -> None:
    from rich import box
    from rich.table import Table

    title = f"{len(rows)} GPUs in the catalog" + (f" matching '{search}'" if search else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, caption="dense TFLOP/s; tensor rates with FP32 accumulate")
    table.add_column("GPU", no_wrap=True)
    table.add_column("memory", justify="right", no_wrap=True)
    table.add_column("CC", justify="right")
    table.add_column("bf16", justify="center")
    for col in ("BF16", "FP16", "TF32", "FP32", "TB/s"):
        table.add_column(col, justify="right")
    for r in rows:
        p = r["peak_tflops"]
        table.add_row(
            r["name"], _gib(r["memory_bytes"]), r["compute_capability"] or "?",
            "yes" if r["bf16"] else "[red]no[/]",
            _num(p["bf16"]), _num(p["fp16"]), _num(p["tf32"]), _num(p["fp32"]),
            _tbs(r["bandwidth_bytes_per_s"]),
        )
    con = console()
    con.print(table)
    if not rows:
        con.print("No match. Try a shorter word ('h100', '4090'), or no --search.")


def render_one(r: dict[str, Any]) -> None:
    from rich.table import Table

    con = console()
    con.print(f"[bold]{r['name']}[/]")
    t = Table(show_header=False, box=None)
    t.add_column(style="dim", no_wrap=True)
    t.add_column(overflow="fold")
    t.add_row("memory", f"{r['memory']} = {r['memory_bytes']:,} bytes ({_gib(r['memory_bytes'])})")
    t.add_row("compute capability", r["compute_capability"] or "?")
    t.add_row("bf16", "yes" if r["bf16"] else "no (use fp16 mixed precision)")
    for dtype, label in (("bf16", "BF16 tensor"), ("fp16", "FP16 tensor"), ("tf32", "TF32 tensor"), ("fp32", "FP32")):
        v = r["peak_tflops"][dtype]
        kind = "non-tensor" if dtype == "fp32" else "dense, FP32 accumulate"
        t.add_row(label, "-" if v is None else f"{v:g} TFLOP/s ({kind})")
    bw = r["bandwidth_bytes_per_s"]
    t.add_row("bandwidth", "-" if bw is None else f"{bw / 1e9:,.0f} GB/s")
    t.add_row("NVML name", ", ".join(r["nvml_names"]) or "-")
    if r["aliases"]:
        t.add_row("aliases", ", ".join(r["aliases"]))
    t.add_row("source", r["source"])
    if r["notes"]:
        t.add_row("notes", r["notes"])
    con.print(t)


def run(args: argparse.Namespace) -> int:
    if args.name:
        one = compute_one(" ".join(args.name))
        if args.json:
            emit_json({"gpu": one})
        else:
            render_one(one)
        return 0
    rows = compute(args.search)
    if args.json:
        emit_json({"gpus": rows})
    else:
        render(rows, args.search)
    return 0
