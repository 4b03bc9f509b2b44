"""Estimator accuracy on activation offloading (trl ``activation_offloading``) against the
GPU-side bytes of real training steps measured on the fake CUDA device: the truth harness
(``benches/truth/faketensor.py``) runs trl's ``OffloadActivations`` around forward and
backward as ``SFTTrainer.training_step`` does, and MemTracker counts the offloaded tensors on
the CPU device, apart from the GPU's. Each case has its twin without offloading.

    python -m benches.truth.run_cases benches/cases_offload.json --out benches/results/truth_offload.json
    python -m benches.accuracy_levers     # benches/results/accuracy_levers.{md,json}
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
from typing import Any

from benches.results_io import RESULTS, write_results
from benches.truth.faketensor import config_at_depth

from forge_advisor.estimate import estimate
from forge_advisor.plan import Plan
from forge_advisor.shapes import shape_from_config

TRUTH = RESULTS / "truth_offload.json"
_PLAN_FIELDS = set(Plan.__dataclass_fields__) - {"extra"}


def run() -> dict[str, Any]:
    rows = []
    for case in sorted(json.loads(TRUTH.read_text()).values(), key=lambda c: c["name"]):
        result = case.get("result")
        if not result:
            continue
        plan = Plan.from_dict({k: v for k, v in case["plan"].items() if k in _PLAN_FIELDS})
        shape = shape_from_config(config_at_depth(case["config"], case.get("num_layers")), case["name"])
        est = estimate(shape, plan)
        measured = result["peak_allocated_bytes"]
        rows.append({
            "case": case["name"], "method": plan.method, "ckpt": plan.gradient_checkpointing,
            "activation_offloading": plan.activation_offloading, "batch": plan.per_device_train_batch_size,
            "seq": plan.max_length, "measured_bytes": measured, "estimate_bytes": est.peak_allocated_bytes,
            "error_pct": round((est.peak_allocated_bytes - measured) / measured * 100, 2),
            "measured_phase": result["peak_phase"], "estimate_phase": est.raw["peak_phase"],
        })
    errs = [abs(r["error_pct"]) for r in rows if r["activation_offloading"]]
    summary = {
        "cases": len(rows),
        "offloaded_cases": len(errs),
        "offloaded_median_abs_error_pct": round(statistics.median(errs), 2) if errs else None,
        "offloaded_max_abs_error_pct": round(max(errs), 2) if errs else None,
        "machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
        "command": "python -m benches.accuracy_levers",
    }
    return {"summary": summary, "rows": rows}


def to_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        f"Activation offloading, GPU-side peak allocated bytes (fake CUDA device): {s['offloaded_cases']} offloaded "
        f"cases, median |error| {s['offloaded_median_abs_error_pct']}%, max {s['offloaded_max_abs_error_pct']}% "
        f"(their twins without offloading alongside). `{s['command']}` on {s['machine']}.",
        "",
        "| case | method | ckpt | offload | batch×seq | measured | estimate | error | phase (measured/ours) |",
        "|---|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        gib = lambda b: f"{b / 2**30:.3f} GiB"  # noqa: E731
        lines.append(
            f"| {r['case']} | {r['method']} | {'on' if r['ckpt'] else 'off'} | {'on' if r['activation_offloading'] else 'off'} | "
            f"{r['batch']}×{r['seq']} | {gib(r['measured_bytes'])} | {gib(r['estimate_bytes'])} | {r['error_pct']:+.2f}% | "
            f"{r['measured_phase']}/{r['estimate_phase']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    report = run()
    write_results("accuracy_levers", report, to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
