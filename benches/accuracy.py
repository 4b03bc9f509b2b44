"""Estimator accuracy against measured truth.

Truth comes from ``benches/results/truth_faketensor.json`` (exact tensor bytes of real
transformers + peft training steps under FakeTensorMode, written by
``benches/truth/run_cases.py``) and, where a GPU session measured them,
``benches/results/truth_gpu.json``. For each case this prints and writes the estimate,
the measured peak and the % error, next to accelerate's estimate (its meta-device model
size and its "Adam needs 4× the model" training rule).

    python -m benches.accuracy            # writes benches/results/accuracy.{md,json}
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

from forge_advisor.estimate import estimate
from forge_advisor.plan import Plan
from forge_advisor.shapes import shape_from_config

RESULTS = Path(__file__).resolve().parent / "results"
TRUTH_FILES = {"fake-tensor": RESULTS / "truth_faketensor.json", "gpu": RESULTS / "truth_gpu.json"}
_PLAN_FIELDS = set(Plan.__dataclass_fields__) - {"extra"}


def _shape(case: dict[str, Any]) -> Any:
    return shape_from_config(_config(case), case["name"])


# every spelling of the depth a config may use (gpt2 `n_layer`, t5 `num_layers`…)
_DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "num_decoder_layers")


def _config(case: dict[str, Any]) -> dict[str, Any]:
    """The case's config with its depth set to the number of layers the harness built."""
    config = dict(case["config"])
    n = case.get("num_layers")
    if n:
        present = [k for k in _DEPTH_KEYS if k in config]
        for key in present or ["num_hidden_layers"]:
            config[key] = n
    return config


def accelerate_estimate(case: dict[str, Any]) -> int | None:
    """accelerate's `estimate-memory` training figure: model bytes × 4 (weights, grads, Adam ×2)."""
    try:
        import torch
        from accelerate import init_empty_weights
        from accelerate.utils import calculate_maximum_sizes
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        return None
    cfg = AutoConfig.for_model(**_config(case))
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    total, _ = calculate_maximum_sizes(model)
    dtype = case["plan"].get("dtype", "bf16")
    bytes_per = 2 if dtype in ("bf16", "fp16") else 4
    return int(total / 4 * bytes_per * 4)


def run(with_peers: bool = True) -> dict[str, Any]:
    rows = []
    for source, path in TRUTH_FILES.items():
        if not path.exists():
            continue
        for key, case in json.loads(path.read_text()).items():
            result = case.get("result") or {}
            measured = result.get("peak_allocated_bytes")
            if not measured:
                continue
            plan = Plan.from_dict({k: v for k, v in case["plan"].items() if k in _PLAN_FIELDS})
            est = estimate(_shape(case), plan)
            err = (est.peak_allocated_bytes - measured) / measured * 100
            acc = accelerate_estimate(case) if with_peers else None
            rows.append({
                "case": case["name"],
                "source": source,
                "model_type": case.get("model_type", case["config"].get("model_type")),
                "layers": case.get("num_layers"),
                "method": plan.method,
                "dtype": plan.dtype,
                "batch": plan.per_device_train_batch_size,
                "seq": plan.max_length,
                "ckpt": plan.gradient_checkpointing,
                "estimate_bytes": est.peak_allocated_bytes,
                "measured_bytes": measured,
                "error_pct": round(err, 2),
                "estimate_phase": est.raw["peak_phase"],
                "measured_phase": result.get("peak_phase"),
                "accelerate_bytes": acc,
                "accelerate_error_pct": None if acc is None else round((acc - measured) / measured * 100, 2),
            })
    errs = [abs(r["error_pct"]) for r in rows]
    acc_errs = [abs(r["accelerate_error_pct"]) for r in rows if r["accelerate_error_pct"] is not None]
    summary = {
        "cases": len(rows),
        "median_abs_error_pct": round(statistics.median(errs), 2) if errs else None,
        "max_abs_error_pct": round(max(errs), 2) if errs else None,
        "accelerate_median_abs_error_pct": round(statistics.median(acc_errs), 2) if acc_errs else None,
        "machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
        "command": "python -m benches.accuracy",
    }
    return {"summary": summary, "rows": rows}


def to_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        f"Estimator vs measured peak allocated memory: {s['cases']} cases, median |error| "
        f"{s['median_abs_error_pct']}%, max {s['max_abs_error_pct']}% "
        f"(accelerate's estimate: median {s['accelerate_median_abs_error_pct']}%). "
        f"`{s['command']}` on {s['machine']}.",
        "",
        "| case | truth | type | layers | method | dtype | batch×seq | ckpt | measured | estimate | error | accelerate |",
        "|---|---|---|---:|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
        acc = "-" if r["accelerate_error_pct"] is None else f"{r['accelerate_error_pct']:+.1f}%"
        lines.append(
            f"| {r['case']} | {r['source']} | {r['model_type']} | {r['layers']} | {r['method']} | {r['dtype']} | "
            f"{r['batch']}×{r['seq']} | {'on' if r['ckpt'] else 'off'} | {gib(r['measured_bytes'])} | "
            f"{gib(r['estimate_bytes'])} | {r['error_pct']:+.1f}% | {acc} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    report = run(with_peers="--no-peers" not in sys.argv)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "accuracy.json").write_text(json.dumps(report, indent=1) + "\n")
    md = to_markdown(report)
    (RESULTS / "accuracy.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
