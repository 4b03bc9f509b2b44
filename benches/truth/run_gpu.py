"""Measure the accuracy cases on a real CUDA GPU: the GPU half of the estimator's truth.

    python -m benches.truth.run_gpu benches/cases_accuracy.json [--with-qlora] \
        [--out benches/results/truth_gpu.json] [--steps 3] [--only NAME ...] [--force]

Each case runs ``python -m forge_advisor.train.trial`` in its own process (fresh CUDA
memory statistics, and an OOM costs only that case): the real model of the case's config
at its ``num_layers`` depth with random weights, loaded by the runtime's own loader
(quantised where the plan says), one warm-up step, then timed steps. Recorded per case:
``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` over the timed steps, NVML's
used memory, tokens/s and the device's name. ``--with-qlora`` adds a QLoRA twin of every
single-GPU LoRA case (bitsandbytes cannot run on fake tensors, so QLoRA has GPU truth only).

The file has the layout of ``truth_faketensor.json`` (keyed by ``case_key``), so
``python -m benches.accuracy`` reads it as the ``gpu`` source. Without CUDA this exits 2
with one line: nothing is written.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benches.truth.faketensor import REPO_ROOT, case_key, config_at_depth, resolve_plan
from benches.truth.run_cases import load_cases
from benches.truth.run_cases import _write as write_atomic

DEFAULT_OUT = REPO_ROOT / "benches" / "results" / "truth_gpu.json"
def gpu_cases(cases: list[dict[str, Any]], *, with_qlora: bool) -> list[dict[str, Any]]:
    """The cases a GPU can measure, plus a QLoRA twin of each single-GPU LoRA case."""
    out = []
    for case in cases:
        plan = resolve_plan(case.get("plan") or {})
        if plan["num_gpus"] != 1 or plan["distributed"] != "none":
            continue  # one GPU measures one device
        out.append({**case, "plan": plan})
        if with_qlora and plan["method"] == "lora" and plan["dtype"] in ("bf16", "fp16"):
            out.append({**case, "name": f"{case['name']}-qlora", "plan": {**plan, "method": "qlora"}})
    return out


def require_cuda() -> str:
    """The CUDA device's name; without one, a one-line error and exit 2 (a GPU-only bench)."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        why = "torch is not installed (pip install -e '.[train]')" if torch is None else "no CUDA device"
        print(f"run_gpu: {why}: this bench measures on a GPU (the fake-tensor truth is benches/truth/run_cases.py)", file=sys.stderr)
        raise SystemExit(2)
    return str(torch.cuda.get_device_name(0))


def measure(case: dict[str, Any], steps: int, timeout: float) -> dict[str, Any]:
    """One trial in a fresh process: its JSON result, or ``{"oom": true, ...}``."""
    with tempfile.TemporaryDirectory(prefix="forge-gpu-truth-") as tmp:
        cfg, plan = Path(tmp) / "config.json", Path(tmp) / "plan.json"
        cfg.write_text(json.dumps(config_at_depth(case["config"], case.get("num_layers"))))
        plan.write_text(json.dumps(case["plan"]))
        proc = subprocess.run(
            [sys.executable, "-m", "forge_advisor.train.trial", str(cfg), str(plan), str(steps)],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout,
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"trial failed (rc={proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def run(cases: list[dict[str, Any]], out: Path, *, steps: int, force: bool, timeout: float) -> dict[str, Any]:
    device = require_cuda()
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    for case in cases:
        key = case_key(case["config"], case["plan"], case.get("num_layers"))
        if key in results and "result" in results[key] and not force:
            continue
        t0 = time.time()
        entry: dict[str, Any] = {
            "name": case["name"],
            "model_type": case["config"].get("model_type"),
            "plan": case["plan"],
            "num_layers": case.get("num_layers"),
            "config": case["config"],
            "device_name": device,
        }
        try:
            r = measure(case, steps, timeout)
            if r.get("oom"):
                entry["error"] = {"type": "OutOfMemory", "message": r.get("error", "")}
            else:
                entry["result"] = r
        except Exception as exc:  # noqa: BLE001 — one case's failure is recorded, the rest go on
            entry["error"] = {"type": type(exc).__name__, "message": str(exc)[-3000:]}
        entry["wall_seconds"] = round(time.time() - t0, 1)
        entry["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        results[key] = entry
        write_atomic(out, results)  # an interrupted run keeps every case measured so far
        if "result" in entry:
            r = entry["result"]
            print(f"ok   {case['name']:<32} allocated {r['peak_allocated_bytes'] / 2**20:10.1f} MiB  "
                  f"reserved {r['peak_reserved_bytes'] / 2**20:10.1f} MiB  {r['tokens_per_second']:9.0f} tok/s", flush=True)
        else:
            print(f"FAIL {case['name']:<32} {entry['error']['type']}: {entry['error']['message'][:200]}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches.truth.run_gpu")
    ap.add_argument("cases", help="cases JSON file (benches/cases_accuracy.json)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--with-qlora", action="store_true", help="add a QLoRA twin of every LoRA case")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up step")
    ap.add_argument("--only", nargs="*", help="case names to run")
    ap.add_argument("--force", action="store_true", help="re-measure cases already in the file")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args(argv)
    cases = gpu_cases(load_cases(args.cases), with_qlora=args.with_qlora)
    if args.only:
        cases = [c for c in cases if c["name"] in set(args.only)]
    run(cases, Path(args.out), steps=args.steps, force=args.force, timeout=args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
