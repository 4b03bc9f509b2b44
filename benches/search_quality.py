"""Search quality: ``recommend``'s first plan against an independent exhaustive search over
the same space, for every catalog model × 4 GPUs × 3 objectives.

The brute force here shares nothing with the ranking but the space and the estimator's
single-plan path: it enumerates every plan of the space in Python (every outer choice ×
every per-device batch that divides the global batch × checkpointing), prices each with
``Estimator.estimate`` (the phase walk, not the ranking's affine lines), keeps those that fit
and takes the best value per objective. The ranking is exact, so the ratio must be 1.

    python -m benches.search_quality      # writes benches/results/search_quality.{md,json}
"""

from __future__ import annotations

import itertools
import os
import platform
import sys
import time
from types import SimpleNamespace
from typing import Any

from benches.results_io import write_results

from forge_advisor import core
from forge_advisor.advisor import recommend
from forge_advisor.advisor.request import SearchRequest
from forge_advisor.advisor.search import build_space
from forge_advisor.estimate import native_estimator
from forge_advisor.gpus import find_gpu
from forge_advisor.shapes import load_shape
from forge_advisor.shapes.catalog import catalog_models

GPUS = ["T4", "RTX 4090", "A100 80GB SXM", "H100 SXM"]
OBJECTIVES = ("balanced", "fastest", "quality")


# the boolean levers, searched as inner knobs (forge_advisor/levers.py); an empty axis is the base's value
LEVERS = ("use_liger_kernel", "activation_offloading", "offload_optimizer", "offload_params")


def _storage(space: dict[str, Any], method: str, distributed: str, dtype: str) -> str:
    """FSDP-QLoRA: a 4-bit base sharded by fsdp/zero3 stores its weights in the compute dtype
    (peft's FSDP-QLoRA guide), unless the request pinned the storage."""
    base = space["base"]
    sharded = base["num_gpus"] > 1 and distributed in ("fsdp", "zero3")
    if method == "qlora" and sharded and space.get("shard_quantized", True) and base["bnb_4bit_quant_storage"] == "uint8":
        return {"bf16": "bfloat16", "fp16": "float16"}[dtype]
    return str(base["bnb_4bit_quant_storage"])


def every_plan(space: dict[str, Any]) -> list[SimpleNamespace]:
    """Every plan of ``space`` (rust/src/search.rs ``Space``), written out loop by loop."""
    base = space["base"]
    out = []
    for method in space["methods"]:
        full = method == "full"
        dtype = {"bf16": "amp-bf16", "fp16": "amp-fp16"}.get(base["dtype"], base["dtype"]) if full else base["dtype"]
        for r in [base["lora_r"]] if full else space["lora_r"]:
            for t in [None] if full else space["targets"]:
                for f in space["freeze"]:
                    for o in space["optim"]:
                        for a in space["attn"]:
                            for d in space["distributed"]:
                                for b in space["batch"]:
                                    per_step = b * base["num_gpus"]
                                    if space["global_batch"] % per_step:
                                        continue
                                    for ckpt in space["gradient_checkpointing"]:
                                        for levers in itertools.product(*(space.get(n) or [base[n]] for n in LEVERS)):
                                            out.append(SimpleNamespace(**{
                                                **base, "method": method, "dtype": dtype, "lora_r": r, "lora_target_modules": t,
                                                "freeze_ratio": f, "optim": o, "attn_implementation": a, "distributed": d,
                                                "per_device_train_batch_size": b,
                                                "gradient_accumulation_steps": space["global_batch"] // per_step,
                                                "gradient_checkpointing": ckpt, **dict(zip(LEVERS, levers)),
                                                "bnb_4bit_quant_storage": _storage(space, method, d, dtype),
                                            }))
    # what the runtime cannot run is not part of the space (rust/src/plan.rs Plan::unsupported)
    return [p for p in out if core.unsupported(p) is None]


def brute_force(model: str, gpu_name: str) -> tuple[dict[str, float | None], int, float]:
    """The best value per objective over every plan of the default space, plans priced, seconds."""
    shape, gpu = load_shape(model), find_gpu(gpu_name)
    # the request recommend makes by default (2048 text tokens + a sample's image tokens,
    # within the position limit)
    space = build_space(shape, gpu, SearchRequest(seq_len=shape.default_length({})))
    est = native_estimator(shape, gpu)
    t0 = time.perf_counter()
    best: dict[str, float | None] = dict.fromkeys(OBJECTIVES)
    plans = every_plan(space)
    for plan in plans:
        try:
            e = est.estimate(plan)
        except ValueError:
            continue  # e.g. a rank above a layer's width: not a plan
        if not core.fits(e.peak_reserved_upper_bytes, space["usable_bytes"]):
            continue
        for o in OBJECTIVES:
            v = core.objective_value(o, e.tokens_per_second, e.quality)
            cur = best[o]
            if cur is None or v > cur:
                best[o] = v
    return best, len(plans), time.perf_counter() - t0


def one(model: str, gpu_name: str) -> list[dict[str, Any]]:
    best, priced, brute_seconds = brute_force(model, gpu_name)
    rows = []
    for objective in OBJECTIVES:
        t0 = time.perf_counter()
        rec = recommend(model, gpu_name, objective=objective)
        seconds = time.perf_counter() - t0
        got = rec.recommendations[0].objective_value if rec.recommendations else None
        opt = best[objective]
        rows.append({
            "model": model, "gpu": gpu_name, "objective": objective, "optimum": opt, "advisor": got,
            "equal": got == opt, "plans_brute_force": priced, "brute_force_seconds": round(brute_seconds, 3),
            "advisor_seconds": round(seconds, 4), "rank_seconds": rec.search["rank_seconds"],
        })
    return rows


def run(models: list[str] | None = None) -> dict[str, Any]:
    models = models or [m.id for m in catalog_models()]
    rows = [r for model in models for gpu in GPUS for r in one(model, gpu)]
    fitting = [r for r in rows if r["optimum"] is not None]
    summary = {
        "cases": len(rows),
        "models": len(models),
        "gpus": GPUS,
        "equal": sum(r["equal"] for r in rows),
        "with_a_fit": len(fitting),
        "nothing_fits_agreed": sum(r["optimum"] is None and r["advisor"] is None for r in rows),
        "median_advisor_seconds": sorted(r["advisor_seconds"] for r in rows)[len(rows) // 2],
        "max_rank_seconds": max(r["rank_seconds"] for r in rows),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "python -m benches.search_quality",
    }
    return {"summary": summary, "rows": rows}


def to_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        f"`recommend`'s first plan against an independent brute force (every plan of the space priced one by one): "
        f"{s['cases']} cases ({s['models']} catalog models × {', '.join(s['gpus'])} × 3 objectives), "
        f"**{s['equal']}/{s['cases']} equal to the optimum** ({s['with_a_fit']} with a fitting plan, "
        f"{s['nothing_fits_agreed']} where both find that nothing fits). Median `recommend` call "
        f"{s['median_advisor_seconds'] * 1000:.0f} ms, of which the core's ranking at most {s['max_rank_seconds'] * 1000:.1f} ms. "
        f"`{s['command']}` on {s['machine']}.",
        "",
        "| GPU | objective | models | equal to the optimum | nothing fits (both) | median ranking ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for gpu in s["gpus"]:
        for objective in OBJECTIVES:
            rows = [r for r in report["rows"] if r["gpu"] == gpu and r["objective"] == objective]
            ms = sorted(r["rank_seconds"] * 1000 for r in rows)[len(rows) // 2]
            lines.append(f"| {gpu} | {objective} | {len(rows)} | {sum(r['equal'] for r in rows)} | "
                         f"{sum(r['optimum'] is None and r['advisor'] is None for r in rows)} | {ms:.2f} |")
    lines.append("")
    lines.append("Every row per model, with both values: `benches/results/search_quality.json`.")
    return "\n".join(lines) + "\n"


def main() -> int:
    report = run()
    write_results("search_quality", report, to_markdown(report))
    return 0 if report["summary"]["equal"] == report["summary"]["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
