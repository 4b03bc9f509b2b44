"""Search quality: the advisor's analytic recommendation against the exhaustive optimum
over the same discrete space, computed by brute force in Rust.

    python -m benches.search_quality      # writes benches/results/search_quality.{md,json}
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any

from benches.results_io import write_results

from forge_advisor import _native
from forge_advisor.advisor import recommend
from forge_advisor.advisor.request import SearchRequest
from forge_advisor.advisor.search import build_space
from forge_advisor.estimate import native_estimator
from forge_advisor.gpus import find_gpu
from forge_advisor.shapes import load_shape


MODELS = [
    "Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-3B", "meta-llama/Llama-3.1-8B",
    "mistralai/Mistral-7B-v0.3", "google/gemma-2-9b", "Qwen/Qwen2.5-14B", "mistralai/Mixtral-8x7B-v0.1",
    "meta-llama/Llama-3.1-70B",
]
GPUS = ["RTX 4090", "A100 80GB SXM", "H100 SXM", "L4"]
OBJECTIVES = ["balanced", "fastest", "quality"]


def triples() -> list[tuple[str, str, str]]:
    out = []
    for i, model in enumerate(MODELS):
        for j, gpu in enumerate(GPUS):
            out.append((model, gpu, OBJECTIVES[(i + j) % 3]))
    return out


def one(model: str, gpu_name: str, objective: str) -> dict[str, Any]:
    shape, gpu = load_shape(model), find_gpu(gpu_name)
    req = SearchRequest(objective=objective)  # type: ignore[arg-type]
    search = _native.Search(native_estimator(shape, gpu), json.dumps(build_space(shape, gpu, req)))
    best, evaluated, brute_seconds = search.brute_force()
    t0 = time.perf_counter()
    rec = recommend(shape, gpu, objective=objective)
    advisor_seconds = time.perf_counter() - t0
    got = rec.recommendations[0].objective_value if rec.recommendations else None
    opt = best["value"] if best else None
    ratio = None if opt is None else (1.0 if got is None and opt is None else (got or 0.0) / opt)
    return {
        "model": model, "gpu": gpu_name, "objective": objective,
        "optimum": opt, "advisor": got, "ratio": None if ratio is None else round(ratio, 5),
        "plans_brute_force": evaluated, "brute_force_seconds": round(brute_seconds, 4),
        "advisor_seconds": round(advisor_seconds, 4), "sampler": rec.search["sampler"], "trials": rec.search["trials"],
        "both_find_nothing": best is None and not rec.recommendations,
    }


def run() -> dict[str, Any]:
    rows = [one(*t) for t in triples()]
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    summary = {
        "triples": len(rows),
        "with_a_fit": len(ratios),
        "nothing_fits_agreed": sum(r["both_find_nothing"] for r in rows),
        "min_ratio": min(ratios) if ratios else None,
        "median_ratio": statistics.median(ratios) if ratios else None,
        "at_least_99pct": sum(r >= 0.99 for r in ratios),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "python -m benches.search_quality",
    }
    return {"summary": summary, "rows": rows}


def to_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        f"Advisor vs exhaustive optimum (Rust brute force over the same space): {s['triples']} triples, "
        f"{s['at_least_99pct']}/{s['with_a_fit']} at ≥ 99% of the optimum (min {s['min_ratio']}, median {s['median_ratio']}); "
        f"{s['nothing_fits_agreed']} where both find that nothing fits. `{s['command']}` on {s['machine']}.",
        "",
        "| model | GPU | objective | advisor / optimum | sampler, trials | advisor s | brute-force plans | brute-force s |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in report["rows"]:
        ratio = "nothing fits (both)" if r["both_find_nothing"] else f"{r['ratio']:.4f}"
        lines.append(f"| {r['model']} | {r['gpu']} | {r['objective']} | {ratio} | {r['sampler']}, {r['trials']} | "
                     f"{r['advisor_seconds']:.3f} | {r['plans_brute_force']:,} | {r['brute_force_seconds']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    report = run()
    write_results("search_quality", report, to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
