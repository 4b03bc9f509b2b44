"""Measure a file of cases with the fake-tensor truth harness, caching results by case hash.

    python -m benches.truth.run_cases benches/cases_accuracy.json \
        [--out benches/results/truth_faketensor.json] [--jobs 1] [--force] [--only NAME ...]

The cases file is a JSON list of ``{"name", "config", "plan", "num_layers"}`` (``config`` a
Hugging Face config dict). Each case runs in its own subprocess (a crash or an unsupported
plan costs only that case); its result or its error is stored under ``case_key`` (a hash of
config, resolved plan, layers and harness version), so a rerun skips measured cases. Errors
are retried on rerun unless they are ``NotImplementedError`` (a known limit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from benches.truth.faketensor import REPO_ROOT, case_key, check_supported, measure_subprocess, resolve_plan

DEFAULT_OUT = REPO_ROOT / "benches" / "results" / "truth_faketensor.json"


def load_cases(path: str | os.PathLike) -> list[dict]:
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):  # {"configs": {...}, "cases": [...]} with string config refs
        configs = data.get("configs", {})
        cases = data["cases"]
        for c in cases:
            if isinstance(c["config"], str):
                c["config"] = configs[c["config"]]
        return cases
    return data


def _write(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, out)


def run(cases: list[dict], out: Path = DEFAULT_OUT, *, jobs: int = 1, force: bool = False, timeout: float = 600) -> dict:
    results: dict = json.loads(out.read_text()) if out.exists() else {}
    lock = threading.Lock()
    todo = []
    for case in cases:
        key = case_key(case["config"], case.get("plan") or {}, case.get("num_layers"))
        prev = results.get(key)
        if prev and not force and ("result" in prev or prev.get("error", {}).get("type") == "NotImplementedError"):
            continue
        todo.append((key, case))
    print(f"{len(cases)} cases, {len(cases) - len(todo)} cached, {len(todo)} to measure", flush=True)

    def one(key: str, case: dict) -> tuple[str, dict]:
        t0 = time.time()
        entry: dict = {
            "name": case["name"],
            "model_type": case["config"].get("model_type"),
            "plan": resolve_plan(case.get("plan") or {}),
            "num_layers": case.get("num_layers"),
            "config": case["config"],
        }
        try:
            check_supported(entry["plan"])
            entry["result"] = measure_subprocess(case["config"], entry["plan"], case.get("num_layers"), timeout=timeout)
        except NotImplementedError as exc:
            entry["error"] = {"type": "NotImplementedError", "message": str(exc)}
        except Exception as exc:  # noqa: BLE001
            entry["error"] = {"type": type(exc).__name__, "message": str(exc)[-3000:]}
        entry["wall_seconds"] = round(time.time() - t0, 1)
        entry["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        return key, entry

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futs = [pool.submit(one, k, c) for k, c in todo]
        for fut in as_completed(futs):
            key, entry = fut.result()
            with lock:
                results[key] = entry
                _write(out, results)
            if "result" in entry:
                r = entry["result"]
                print(
                    f"ok   {entry['name']:<28} peak {r['peak_allocated_bytes'] / 2**20:10.1f} MiB "
                    f"({r['peak_phase']}) {entry['wall_seconds']}s",
                    flush=True,
                )
            else:
                print(f"FAIL {entry['name']:<28} {entry['error']['type']}: {entry['error']['message'][:200]}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches.truth.run_cases")
    ap.add_argument("cases", help="cases JSON file")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="re-measure cached cases")
    ap.add_argument("--only", nargs="*", help="case names to run")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    cases = load_cases(args.cases)
    if args.only:
        cases = [c for c in cases if c["name"] in set(args.only)]
    run(cases, Path(args.out), jobs=args.jobs, force=args.force, timeout=args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
