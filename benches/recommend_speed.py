"""``recommend`` against ``estimate``, side by side in one run, and ``auto_preset`` over 100
models (targets of the exact-ranking issue: recommend within 1.5× of estimate; 100
``auto_preset`` calls under 2 s).

    python -m benches.recommend_speed     # writes benches/results/recommend_speed.{md,json}

Fresh processes, interleaved (estimate, recommend, estimate, …) so that both see the same
machine load; the medians are compared. Nothing asserts a time.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benches.results_io import write_results

BIN = Path(sys.executable).parent
FORGE = str(BIN / "forge-advisor") if (BIN / "forge-advisor").exists() else "forge-advisor"
MODEL = "meta-llama/Llama-3.1-8B"
GPU = "RTX 4090"
RUNS = 15
COMMANDS = {
    "estimate": [FORGE, "estimate", "--model", MODEL, "--gpu", GPU, "--json"],
    "recommend": [FORGE, "recommend", "--model", MODEL, "--gpu", GPU, "--json"],
}


def _once(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def side_by_side() -> dict[str, Any]:
    for argv in COMMANDS.values():  # warm the file cache
        _once(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(RUNS):
        for name, argv in COMMANDS.items():
            times[name].append(_once(argv))
    med = {name: statistics.median(t) for name, t in times.items()}
    return {"runs": RUNS, "median_s": med, "min_s": {n: min(t) for n, t in times.items()},
            "ratio": med["recommend"] / med["estimate"], "commands": {n: shlex.join(a[1:]) for n, a in COMMANDS.items()}}


def auto_presets() -> dict[str, Any]:
    code = """
import json, time
from forge_advisor import auto_preset, ForgeError
from forge_advisor.shapes.catalog import catalog_models
models = [m.id for m in catalog_models()]
models = (models * 3)[:100]
t0 = time.perf_counter()
found = 0
for m in models:
    try:
        auto_preset(m, "H100 SXM")
        found += 1
    except ForgeError:
        pass
print(json.dumps({"calls": len(models), "distinct_models": len(set(models)), "presets": found, "seconds": time.perf_counter() - t0}))
"""
    import json

    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    load_before = os.getloadavg()
    sbs = side_by_side()
    auto = auto_presets()
    report = {
        "side_by_side": sbs,
        "auto_preset": auto,
        "targets": {
            "recommend_over_estimate": {"value": sbs["ratio"], "target": 1.5, "met": sbs["ratio"] <= 1.5},
            "auto_preset_100_s": {"value": auto["seconds"], "target": 2.0, "met": auto["seconds"] < 2.0},
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "command": "python -m benches.recommend_speed",
    }
    t = report["targets"]
    yes = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731
    md = "\n".join([
        f"`{report['command']}` on {report['machine']}; load average before {report['load_before']}, after "
        f"{report['load_after']} (a shared machine). Fresh processes, interleaved, {sbs['runs']} runs each.",
        "",
        "| what | measured | target | |",
        "|---|---|---|---|",
        f"| `forge-advisor {sbs['commands']['recommend']}` / `forge-advisor {sbs['commands']['estimate']}` (medians) | "
        f"{sbs['median_s']['recommend'] * 1000:.0f} ms / {sbs['median_s']['estimate'] * 1000:.0f} ms = "
        f"{sbs['ratio']:.2f}× | ≤ 1.5× | {yes(t['recommend_over_estimate']['met'])} |",
        f"| `auto_preset(model, \"H100 SXM\")` for {auto['calls']} models ({auto['distinct_models']} distinct catalog models, "
        f"one process) | {auto['seconds']:.2f} s | < 2 s | {yes(t['auto_preset_100_s']['met'])} |",
        "",
    ])
    write_results("recommend_speed", report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
