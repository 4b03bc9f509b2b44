"""Estimator accuracy against measured truth.

Truth comes from ``benches/results/truth_faketensor.json`` (exact tensor bytes of real
transformers + peft training steps under FakeTensorMode, written by
``benches/truth/run_cases.py``) and, where a GPU session measured them,
``benches/results/truth_gpu.json``. For each case this prints and writes the estimate,
the measured peak and the % error, next to accelerate's estimate (its meta-device model
size and its "Adam needs 4× the model" training rule) and llm-analysis's (cli99's
``llm-analysis`` package, run in its own venv by ``benches/peers/llm_analysis_peer.py``;
full fine-tunes only, it has no LoRA support).

    python -m benches.accuracy            # writes benches/results/accuracy.{md,json}
    python -m benches.accuracy --no-peers # our estimator only

Peer setup (optional; without it the llm-analysis column reads ``-``). llm-analysis pins
old libraries, so it lives in its own venv, never in the project one::

    python3 -m venv .venv-peers/llm-analysis && .venv-peers/llm-analysis/bin/pip install llm-analysis
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benches.results_io import RESULTS, write_results
from benches.truth.faketensor import config_at_depth

from forge_advisor.estimate import estimate
from forge_advisor.plan import Plan
from forge_advisor.shapes import shape_from_config

TRUTH_FILES = {"fake-tensor": RESULTS / "truth_faketensor.json", "gpu": RESULTS / "truth_gpu.json"}
_PLAN_FIELDS = set(Plan.__dataclass_fields__) - {"extra"}
ROOT = Path(__file__).resolve().parent.parent
LLM_ANALYSIS_PYTHON = ROOT / ".venv-peers" / "llm-analysis" / "bin" / "python"
LLM_ANALYSIS_SCRIPT = Path(__file__).resolve().parent / "peers" / "llm_analysis_peer.py"


def _shape(case: dict[str, Any]) -> Any:
    return shape_from_config(_config(case), case["name"])


def _config(case: dict[str, Any]) -> dict[str, Any]:
    """The case's config with its depth set to the number of layers the harness built."""
    return config_at_depth(case["config"], case.get("num_layers"))


def accelerate_estimate(case: dict[str, Any]) -> int | None:
    """accelerate's `estimate-memory` training figure: model bytes × 4 (weights, grads, Adam ×2)."""
    try:
        import torch
        from accelerate import init_empty_weights
        from accelerate.utils import calculate_maximum_sizes
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        return None
    from transformers import AutoModelForImageTextToText

    cfg = AutoConfig.for_model(**_config(case))
    # a vision-language model outside the causal-LM mapping (Qwen2.5-VL) builds as itself
    auto = AutoModelForCausalLM if type(cfg) in AutoModelForCausalLM._model_mapping else AutoModelForImageTextToText
    with init_empty_weights():
        model = auto.from_config(cfg, dtype=torch.float32)
    total, _ = calculate_maximum_sizes(model)
    dtype = case["plan"].get("dtype", "bf16")
    bytes_per = 2 if dtype in ("bf16", "fp16") else 4
    return int(total / 4 * bytes_per * 4)


def _previous_peer_rows() -> dict[str, dict[str, Any]]:
    """llm-analysis's columns of the committed results, by case name, for a machine without
    the peer's venv: its estimate depends only on the case (config, plan), not on ours."""
    path = RESULTS / "accuracy.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text()).get("rows", [])
    return {r["case"]: r for r in rows if r.get("llm_analysis_bytes") is not None or r.get("llm_analysis_note")}


def llm_analysis_estimates(cases: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """llm-analysis's peak-per-GPU training estimate for each case, in one subprocess.

    Runs ``benches/peers/llm_analysis_peer.py`` with the peer venv's python; returns its
    output (``{key: bytes | None, "error": {key: why}, ...}``), or None when the venv is
    missing or the run fails (the column then reads ``-``).
    """
    if not LLM_ANALYSIS_PYTHON.exists():
        return None
    payload = [
        {"key": key, "config": _config(case), "num_layers": case.get("num_layers"), "plan": case["plan"]}
        for key, case in cases.items()
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["TRANSFORMERS_VERBOSITY"] = "error"
    try:
        proc = subprocess.run(
            [str(LLM_ANALYSIS_PYTHON), str(LLM_ANALYSIS_SCRIPT)],
            input=json.dumps(payload), capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip()[-2000:])
        return json.loads(proc.stdout)
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        print(f"llm-analysis peer failed, column skipped: {exc}", file=sys.stderr)
        return None


def _previous_peer_rows() -> dict[tuple[str, int], dict[str, Any]]:
    path = RESULTS / "accuracy.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text()).get("rows", [])
    return {(r["case"], r["measured_bytes"]): r for r in rows if "llm_analysis_bytes" in r}


def _median_abs(values: list[float]) -> float | None:
    return round(statistics.median(abs(v) for v in values), 2) if values else None


def run(with_peers: bool = True) -> dict[str, Any]:
    rows = []
    peer_cases: dict[str, dict[str, Any]] = {}
    for source, path in TRUTH_FILES.items():
        if not path.exists():
            continue
        for key, case in json.loads(path.read_text()).items():
            result = case.get("result") or {}
            measured = result.get("peak_allocated_bytes")
            if not measured:
                continue
            plan = Plan.from_dict({k: v for k, v in case["plan"].items() if k in _PLAN_FIELDS})
            shape = _shape(case)
            est = estimate(shape, plan)
            err = (est.peak_allocated_bytes - measured) / measured * 100
            acc = accelerate_estimate(case) if with_peers else None
            peer_cases[f"{source}:{key}"] = case
            rows.append({
                "_peer_key": f"{source}:{key}",
                "case": case["name"],
                "source": source,
                "model_type": case.get("model_type", case["config"].get("model_type")),
                # the decoder layers built (a vision-language case shrinks its config itself)
                "layers": case.get("num_layers") or shape.num_hidden_layers,
                "method": plan.method,
                "dtype": plan.dtype,
                "batch": plan.per_device_train_batch_size,
                "seq": plan.max_length,
                "ckpt": plan.gradient_checkpointing,
                "batching": case["plan"].get("batching"),  # None: B full rows, no padding
                "estimate_bytes": est.peak_allocated_bytes,
                "measured_bytes": measured,
                "error_pct": round(err, 2),
                "estimate_phase": est.raw["peak_phase"],
                "measured_phase": result.get("peak_phase"),
                "accelerate_bytes": acc,
                "accelerate_error_pct": None if acc is None else round((acc - measured) / measured * 100, 2),
            })
    peer = llm_analysis_estimates(peer_cases) if with_peers else None
    # without the peer's venv, its figures for cases measured as before come from the last run
    # that had it (benches/results/accuracy.json), so the column is not lost
    previous = {} if peer is not None or not with_peers else _previous_peer_rows()
    for r in rows:
        key = r.pop("_peer_key")
        old = previous.get((r["case"], r["measured_bytes"]))
        if old is not None:
            r.update({k: old[k] for k in ("llm_analysis_bytes", "llm_analysis_error_pct", "llm_analysis_note")})
            continue
        la = None if peer is None else peer.get(key)
        r["llm_analysis_bytes"] = la
        r["llm_analysis_error_pct"] = (
            None if la is None else round((la - r["measured_bytes"]) / r["measured_bytes"] * 100, 2)
        )
        why = None
        if peer is not None:
            why = (peer.get("error") or {}).get(key) or "; ".join((peer.get("notes") or {}).get(key, []))
        r["llm_analysis_note"] = why or None
        if r["case"] in previous:  # the peer's venv is absent here: its numbers from the last run, same case
            for k in ("llm_analysis_bytes", "llm_analysis_error_pct", "llm_analysis_note"):
                r[k] = previous[r["case"]].get(k)
    errs = [abs(r["error_pct"]) for r in rows]
    acc_errs = [abs(r["accelerate_error_pct"]) for r in rows if r["accelerate_error_pct"] is not None]
    la_rows = [r for r in rows if r["llm_analysis_error_pct"] is not None]
    summary = {
        "cases": len(rows),
        "median_abs_error_pct": round(statistics.median(errs), 2) if errs else None,
        "max_abs_error_pct": round(max(errs), 2) if errs else None,
        "accelerate_median_abs_error_pct": round(statistics.median(acc_errs), 2) if acc_errs else None,
        "llm_analysis_cases": len(la_rows),
        "llm_analysis_median_abs_error_pct": _median_abs([r["llm_analysis_error_pct"] for r in la_rows]),
        # ours over the same cases llm-analysis covers (full fine-tunes, 16-bit / amp)
        "median_abs_error_pct_on_llm_analysis_cases": _median_abs([r["error_pct"] for r in la_rows]),
        "machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
        "command": "python -m benches.accuracy",
    }
    return {"summary": summary, "rows": rows}


def to_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        f"Estimator vs measured peak allocated memory: {s['cases']} cases, median |error| "
        f"{s['median_abs_error_pct']}%, max {s['max_abs_error_pct']}% "
        f"(accelerate's estimate: median {s['accelerate_median_abs_error_pct']}%; "
        f"llm-analysis: median {s['llm_analysis_median_abs_error_pct']}% over the "
        f"{s['llm_analysis_cases']} full fine-tunes it covers, ours "
        f"{s['median_abs_error_pct_on_llm_analysis_cases']}% on those). "
        f"`{s['command']}` on {s['machine']}.",
        "",
        "| case | truth | type | layers | method | dtype | batch×seq | ckpt | measured | estimate | error "
        "| accelerate | llm-analysis |",
        "|---|---|---|---:|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
        acc = "-" if r["accelerate_error_pct"] is None else f"{r['accelerate_error_pct']:+.1f}%"
        la = "-" if r["llm_analysis_error_pct"] is None else f"{r['llm_analysis_error_pct']:+.1f}%"
        lines.append(
            f"| {r['case']} | {r['source']} | {r['model_type']} | {r['layers']} | {r['method']} | {r['dtype']} | "
            f"{r['batch']}×{r['seq']}{' ' + r['batching'] if r.get('batching') else ''} | {'on' if r['ckpt'] else 'off'} | {gib(r['measured_bytes'])} | "
            f"{gib(r['estimate_bytes'])} | {r['error_pct']:+.1f}% | {acc} | {la} |"
        )
    lines += [
        "",
        "llm-analysis `-`: LoRA/QLoRA (it has no adapter support) and fp32 (it models only "
        "4/8/16-bit weights); it ignores freeze_ratio and DPO (estimates those as plain full "
        "fine-tunes). Mapping and summed fields: `benches/peers/llm_analysis_peer.py`. A batching mode after "
        "batch×seq is that mode's worst micro-batch (`benches/truth/faketensor.py`, `batching`): `longest` / "
        "`max_length` padded rows with an attention mask, `packing` / `padding_free` one flattened row of "
        "batch × seq tokens with position_ids restarting per record (sdpa: a block-diagonal mask).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    report = run(with_peers="--no-peers" not in sys.argv)
    write_results("accuracy", report, to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
