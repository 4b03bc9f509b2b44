"""``forge-advisor inspect --model X``: parameters, layer shapes and linear modules."""

from __future__ import annotations

import argparse
from typing import Any

from forge_advisor.cli.output import console, emit_json
from forge_advisor.shapes.model import ModelShape
from forge_advisor.units import fmt_count


def add_parser(sub: Any) -> None:
    p = sub.add_parser("inspect", help="show a model's exact parameter inventory")
    p.add_argument("--model", required=True, help="catalog id, local config.json / model directory, or Hub id")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(run=run)


def compute(shape: ModelShape) -> dict[str, Any]:
    per_layer = shape.layer_parameters
    layer_counts: dict[int, int] = {}
    for t in shape.layers:
        layer_counts[t] = layer_counts.get(t, 0) + 1
    linears = []
    for t, lt in enumerate(shape.layer_types):
        for lin in lt.linears:
            linears.append(
                {
                    "name": lin.name,
                    "stack": lt.stack,
                    "layers": layer_counts.get(t, 0),
                    "in_features": lin.in_features,
                    "out_features": lin.out_features,
                    "bias": lin.bias,
                    "count": lin.count,
                    "role": lin.role,
                    "lora_targetable": lin.lora_targetable,
                    "parameters": lin.num_parameters,
                }
            )
    return {
        "model": shape.name,
        "source": shape.source,
        "model_type": shape.model_type,
        "num_parameters": shape.num_parameters,
        "active_parameters": shape.active_parameters,
        "embedding_parameters": shape.embedding_parameters,
        "non_layer_parameters": int(shape.native.non_layer_parameters()),
        "config": {
            "hidden_size": shape.hidden_size,
            "num_hidden_layers": shape.num_hidden_layers,
            "num_encoder_layers": shape.num_encoder_layers,
            "num_attention_heads": shape.num_attention_heads,
            "num_key_value_heads": shape.num_key_value_heads,
            "head_dim": shape.head_dim,
            "intermediate_size": shape.intermediate_size,
            "vocab_size": shape.vocab_size,
            "tie_word_embeddings": shape.tie_word_embeddings,
            "norm": shape.norm,
            "gated_mlp": shape.gated_mlp,
            "num_experts": shape.num_experts,
            "num_experts_per_tok": shape.num_experts_per_tok,
            "is_encoder_decoder": shape.is_encoder_decoder,
        },
        "layers": [
            {"index": i, "stack": shape.layer_types[t].stack, "type": t, "parameters": per_layer[i]}
            for i, t in enumerate(shape.layers)
        ],
        "non_layer_params": [{"name": p.name, "numel": p.numel, "role": p.role} for p in shape.params],
        "linear_modules": linears,
    }


_ROLE = {"attention": "attn", "shared_expert": "shared", "expert": "expert", "router": "router", "mlp": "mlp", "other": "other"}


def render(report: dict[str, Any]) -> None:
    from rich.table import Table

    con = console()
    cfg = report["config"]
    con.print(f"[bold]{report['model']}[/] ({report['model_type']}, from {report['source']})")
    summary = Table(show_header=False, box=None)
    summary.add_row("parameters", f"{report['num_parameters']:,} ({fmt_count(report['num_parameters'])})")
    if report["active_parameters"] != report["num_parameters"]:
        summary.add_row("active per token", f"{report['active_parameters']:,} ({fmt_count(report['active_parameters'])})")
    summary.add_row("embedding", f"{report['embedding_parameters']:,}")
    summary.add_row("outside layers", f"{report['non_layer_parameters']:,}")
    types = sorted({(lay["type"], lay["stack"], lay["parameters"]) for lay in report["layers"]})
    for t, stack, n in types:
        count = sum(1 for lay in report["layers"] if lay["type"] == t)
        summary.add_row(f"per {stack} layer" + (f" (type {t})" if len(types) > 1 else ""), f"{n:,} × {count}")
    shape_line = (
        f"hidden {cfg['hidden_size']}, layers {cfg['num_hidden_layers']}"
        + (f"+{cfg['num_encoder_layers']} enc" if cfg["num_encoder_layers"] else "")
        + f", heads {cfg['num_attention_heads']}/{cfg['num_key_value_heads']} kv × {cfg['head_dim']}"
        + f", intermediate {cfg['intermediate_size']}, vocab {cfg['vocab_size']}"
        + (f", experts {cfg['num_experts']} top-{cfg['num_experts_per_tok']}" if cfg["num_experts"] else "")
        + (", tied embeddings" if cfg["tie_word_embeddings"] else "")
    )
    summary.add_row("shape", shape_line)
    con.print(summary)

    lins = report["linear_modules"]
    show_stack = any(lin["stack"] != "decoder" for lin in lins)
    show_count = any(lin["count"] > 1 for lin in lins)
    show_bias = any(lin["bias"] for lin in lins)
    table = Table(title="linear modules per layer (n: layers that have it; LoRA: targetable by name)")
    table.add_column("module", no_wrap=True)
    if show_stack:
        table.add_column("stack")
    for col in ("n", "in", "out"):
        table.add_column(col, justify="right", no_wrap=True)
    if show_bias:
        table.add_column("bias")
    if show_count:
        table.add_column("×", justify="right")
    table.add_column("role", no_wrap=True)
    table.add_column("LoRA", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    for lin in lins:
        row = [lin["name"]]
        if show_stack:
            row.append(lin["stack"])
        row += [str(lin["layers"]), str(lin["in_features"]), str(lin["out_features"])]
        if show_bias:
            row.append("yes" if lin["bias"] else "")
        if show_count:
            row.append(str(lin["count"]) if lin["count"] > 1 else "")
        row += [_ROLE.get(lin["role"], lin["role"]), "yes" if lin["lora_targetable"] else "no", fmt_count(lin["parameters"])]
        table.add_row(*row)
    con.print(table)


def run(args: argparse.Namespace) -> int:
    from forge_advisor.shapes import load_shape

    report = compute(load_shape(args.model))
    if args.json:
        emit_json(report)
    else:
        render(report)
    return 0
