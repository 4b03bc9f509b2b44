"""``forge-advisor models``: list or search the embedded model catalog."""

from __future__ import annotations

import argparse
from typing import Any

from forge_advisor.cli.output import console, emit_json


def add_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="list the embedded model catalog")
    p.add_argument("--search", metavar="TEXT", help="only models whose id, family or type contain every word")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(run=run)


def compute(search: str | None) -> list[dict[str, Any]]:
    from forge_advisor.shapes.catalog import search_catalog

    return [
        {
            "id": m.id,
            "family": m.family,
            "model_type": m.config.get("model_type"),
            "published_parameters": m.published_parameters,
            "aliases": list(m.aliases),
            "source": m.source,
        }
        for m in search_catalog(search)
    ]


def run(args: argparse.Namespace) -> int:
    rows = compute(args.search)
    if args.json:
        emit_json({"models": rows})
        return 0
    from rich.table import Table

    table = Table(title=f"{len(rows)} models in the catalog" + (f" matching '{args.search}'" if args.search else ""))
    for col in ("id", "family", "model_type", "parameters"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for r in rows:
        table.add_row(r["id"], r["family"], r["model_type"], r["published_parameters"])
    console().print(table)
    if not rows:
        console().print("No match. A local config.json path or a Hub id works too.")
    return 0
