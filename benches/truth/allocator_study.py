"""Replay recorded training steps through the caching-allocator model: how much does PyTorch
reserve beyond the tensors, for one batch shape, and when batch lengths vary?

    python -m benches.truth.allocator_study [--cache DIR]   # writes benches/results/allocator_replay.{md,json}

Each plan runs the fake-tensor harness (``benches.truth.faketensor``: real transformers/peft
training steps, full width, a few decoder layers, on a fake CUDA device) with
``record_allocations=True`` at a short and a long padded length, and replays the allocation
sequences through ``benches.truth.allocator`` (PyTorch's default caching-allocator rules):

- ``fixed``: the run at the long length alone (every step the same length, as with packing
  or padding to ``max_length``);
- ``short then long``: a step at the short length, then steps at the long length on the same
  allocator (dynamic padding: the default collator pads each batch to its longest sample, so
  a long batch meets a cache whose segments were cut for shorter batches);
- ``just shorter then long``: a step at 97% of the long length first, the worst predecessor
  (each of its segments is a little too small for the long batch's matching request);
- ``long first``: the long batch first, then short, then long (what preflight does).

The packed plan (``batching="packing"``: trl's padding-free collator flattens B packed rows
into one row with position_ids restarting per record) asks whether packed steps are "one
length": best-fit rows fall short of max_length by a few tokens, so a flattened step of
97% of the longest before a full one is the packed analogue of the worst predecessor.

The reserve is ``max_memory_reserved − max_memory_allocated`` of the steps replayed (what a
GPU with room to spare shows). "Needed without OOM" replays the same sequence under a
capacity limit, where a failing ``cudaMalloc`` releases the cached segments and retries as
PyTorch does, and finds the least limit that runs (what a GPU must have), less the allocated
peak. Next to them, the estimator's ``allocator_reserve`` for the same plan at the same depth
(``device::allocator_reserve``): the one-length term against ``fixed``, with the
variable-length term against ``just shorter then long``. The replay is the truth; the formula
is not fitted to it (see ``rust/src/device.rs`` for its derivation). Recording needs the
fake-tensor harness (~15–40 s a run); ``--cache DIR`` keeps the recordings between runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from benches.results_io import write_results
from benches.truth.allocator import Allocator, OutOfMemory, replay
from benches.truth.faketensor import config_at_depth, measure

GiB = 1 << 30
MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


def _case_config(name: str) -> dict[str, Any]:
    cases = json.loads((ROOT / "benches" / "cases_accuracy.json").read_text())
    return next(c["config"] for c in cases if c["name"] == name)


def _catalog_config(model: str) -> dict[str, Any]:
    cat = json.loads((ROOT / "forge_advisor" / "catalog" / "models.json").read_text())
    return next(m["config"] for m in cat["models"] if m["id"] == model)


LORA_QV = {"method": "lora", "lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.0, "lora_target_modules": ["q_proj", "v_proj"]}
# (label, config source, layers, plan, batch, (short length, long length))
PLANS: list[tuple[str, tuple[str, str], int, dict[str, Any], int, tuple[int, int]]] = [
    ("Llama-3.2-3B LoRA r32 q,v", ("catalog", "meta-llama/Llama-3.2-3B"), 2, {**LORA_QV, "gradient_checkpointing": False}, 4, (209, 585)),
    ("Llama-3.2-3B full", ("catalog", "meta-llama/Llama-3.2-3B"), 2, {"method": "full", "gradient_checkpointing": False}, 4, (209, 585)),
    ("Llama-3.2-1B LoRA", ("case", "l1b-lora-nogc"), 2, {"method": "lora", "gradient_checkpointing": False}, 4, (128, 256)),
    ("Llama-3.2-1B LoRA, checkpointing", ("case", "l1b-lora-nogc"), 2, {"method": "lora", "gradient_checkpointing": True}, 4, (128, 256)),
    ("Llama-3.2-1B full, 4 layers", ("case", "l1b-lora-nogc"), 4, {"method": "full", "gradient_checkpointing": False}, 2, (256, 512)),
    ("Qwen2.5-7B LoRA", ("case", "q25-7b-lora"), 2, {"method": "lora", "gradient_checkpointing": False}, 2, (256, 512)),
    ("Gemma-2-2B LoRA, eager", ("case", "g2-2b-lora-sdpa"), 2, {"method": "lora", "gradient_checkpointing": False, "attn_implementation": "eager"}, 2, (128, 256)),
    ("Mistral-7B LoRA, checkpointing", ("case", "mistral-7b-lora"), 2, {"method": "lora", "gradient_checkpointing": True}, 2, (512, 1024)),
    ("Phi-3-mini full", ("case", "phi3-mini-lora"), 2, {"method": "full", "gradient_checkpointing": False}, 1, (256, 512)),
    ("Pythia-1.4B LoRA", ("case", "pythia-1.4b-lora"), 2, {"method": "lora", "gradient_checkpointing": False}, 4, (256, 512)),
    ("Llama-3.2-1B LoRA, packed rows", ("case", "l1b-lora-nogc"), 2,
     {"method": "lora", "gradient_checkpointing": False, "batching": "packing"}, 4, (128, 256)),
]


def plan_dict(plan: dict[str, Any], batch: int, length: int) -> dict[str, Any]:
    return {"per_device_train_batch_size": batch, "max_length": length, "optim": "adamw_torch", "dtype": "bf16",
            "gradient_accumulation_steps": 1, **plan}


def config_for(source: tuple[str, str]) -> dict[str, Any]:
    kind, name = source
    return _catalog_config(name) if kind == "catalog" else _case_config(name)


def record(config: dict[str, Any], layers: int, plan: dict[str, Any], cache: Path | None) -> list[list[Any]]:
    """The recorded allocation events of one run (cached by config, layers and plan)."""
    key = hashlib.sha1(json.dumps([config, layers, plan], sort_keys=True).encode()).hexdigest()[:16]
    path = cache / f"{key}.json" if cache else None
    if path and path.exists():
        return json.loads(path.read_text())
    events = measure(config, plan, layers, record_allocations=True)["allocation_events"]
    if path:
        path.write_text(json.dumps(events))
    return events


def _step2(events: list[list[Any]], offset: int) -> list[list[Any]]:
    i = events.index(["m", "step2.forward"])
    return [e if e[0] == "m" else [e[0], e[1] + offset, *e[2:]] for e in events[i:]]


def _last(r: dict[str, Any]) -> tuple[int, int]:
    steps = [v for k, v in r["phases"].items() if k.startswith("step2.")]
    return max(v["allocated"] for v in steps), max(v["reserved"] for v in steps)


def chain(first: list[list[Any]], later: list[list[list[Any]]], capacity: int | None = None) -> tuple[int, int]:
    """(max allocated, max reserved) of the last step after replaying `first` (two steps) and
    the second step of each of `later`, on one allocator (that may reserve at most `capacity`)."""
    r = replay(first, Allocator(capacity=capacity))
    for i, ev in enumerate(later, 1):
        r = replay(_step2(ev, 10**8 * i), r["allocator"], live=r["live"], ignore_unknown_frees=True)
    return _last(r)


def formula(config: dict[str, Any], layers: int, plan: dict[str, Any], lengths_vary: bool) -> int:
    """The estimator's `allocator_reserve` for the plan at the harness's depth: with the plan's
    own batching when lengths vary (padding to the longest by default), and padded to
    max_length (one shape per step) for the one-length term (plan.rs `Batching::lengths_vary`)."""
    from forge_advisor.estimate import estimate  # noqa: PLC0415
    from forge_advisor.plan import Plan  # noqa: PLC0415
    from forge_advisor.shapes import shape_from_config  # noqa: PLC0415

    mode = plan.get("batching", "longest") if lengths_vary else "max_length"
    est = estimate(shape_from_config(config_at_depth(config, layers), "replay"), Plan.from_dict({**plan, "batching": mode}))
    return est.raw["device"]["allocator_reserve"]


def least_capacity(first: list[list[Any]], later: list[list[list[Any]]]) -> int:
    """The least memory the allocator may reserve for the sequence to run without an
    out-of-memory error (a failing cudaMalloc releases the cached segments and retries), to
    16 MiB: what a GPU must have free, as opposed to what a roomy GPU shows reserved."""
    lo, hi = 0, 1 << 40
    while hi - lo > 16 << 20:
        mid = (lo + hi) // 2
        try:
            chain(first, later, mid)
            hi = mid
        except OutOfMemory:
            lo = mid
    return hi


def near_length(long_: int) -> int:
    """A batch just shorter than the longest (97%): the worst predecessor, whose segments are
    each a little too small for the longest batch's requests."""
    return round(0.97 * long_)


def run(cache: Path | None, only: list[str] | None = None, previous: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every plan of PLANS; with ``only``, those labels, the other rows kept from ``previous``."""
    rows = []
    kept = {r["plan"]: r for r in previous or []}
    for label, source, layers, plan, batch, (short, long_) in PLANS:
        if only is not None and label not in only and label in kept:
            rows.append(kept[label])
            continue
        cfg = config_for(source)
        near = near_length(long_)
        rec = {n: record(cfg, layers, plan_dict(plan, batch, n), cache) for n in (short, near, long_)}
        sequences = {
            "fixed": (rec[long_], []),
            "short then long": (rec[short], [rec[long_]]),
            "just shorter then long": (rec[near], [rec[long_]]),
            "long first": (rec[long_], [rec[short], rec[long_]]),
        }
        out: dict[str, Any] = {"plan": label, "layers": layers, "batch": batch, "short": short, "long": long_}
        for name, (first, later) in sequences.items():
            alloc, res = chain(first, later)
            need = least_capacity(first, later)
            out[name] = {"max_allocated": alloc, "max_reserved": res, "reserve": res - alloc,
                         "least_capacity": need, "reserve_needed": need - alloc}
        long_plan = plan_dict(plan, batch, long_)
        out["formula_one_length"] = formula(cfg, layers, long_plan, lengths_vary=False)
        out["formula_lengths_vary"] = formula(cfg, layers, long_plan, lengths_vary=True)
        out["error_one_length"] = out["formula_one_length"] / out["fixed"]["reserve"] - 1
        out["error_lengths_vary"] = out["formula_lengths_vary"] / out["just shorter then long"]["reserve"] - 1
        rows.append(out)
    summary = {k: {"median_abs_error": statistics.median(abs(r[k]) for r in rows),
                   "median_signed_error": statistics.median(r[k] for r in rows),
                   "max_abs_error": max(abs(r[k]) for r in rows)} for k in ("error_one_length", "error_lengths_vary")}
    return {"command": "python -m benches.truth.allocator_study", "rows": rows, "summary": summary}


def _gib(x: int) -> str:
    return f"{x / GiB:.2f}"


def to_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        "Caching-allocator replay of recorded training steps (fake-tensor harness at full width, a few layers, "
        "bf16, AdamW, accumulation 1; `benches/truth/allocator.py`) against the estimator's "
        f"`allocator_reserve` at the same depth. `{report['command']}`. Reserve = max reserved − max "
        "allocated of the last step, GiB.",
        "",
        f"One length: median |error| {100 * s['error_one_length']['median_abs_error']:.0f}%, median signed "
        f"{100 * s['error_one_length']['median_signed_error']:+.0f}%, max {100 * s['error_one_length']['max_abs_error']:.0f}%. "
        f"Lengths vary (formula: the worst predecessor, against the replay of a batch of 97% of the longest before it): median |error| "
        f"{100 * s['error_lengths_vary']['median_abs_error']:.0f}%, median signed "
        f"{100 * s['error_lengths_vary']['median_signed_error']:+.0f}%, max {100 * s['error_lengths_vary']['max_abs_error']:.0f}%.",
        "",
        "| plan | layers | batch × (short, just shorter, long) | max allocated (long) | reserve: fixed | formula, one length | "
        "short then long | just shorter then long | formula, lengths vary | long first | needed without OOM: fixed / "
        "just shorter then long |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['plan']} | {r['layers']} | {r['batch']} × ({r['short']}, {near_length(r['long'])}, {r['long']}) | "
            f"{_gib(r['fixed']['max_allocated'])} | "
            f"{_gib(r['fixed']['reserve'])} | {_gib(r['formula_one_length'])} ({100 * r['error_one_length']:+.0f}%) | "
            f"{_gib(r['short then long']['reserve'])} | {_gib(r['just shorter then long']['reserve'])} | "
            f"{_gib(r['formula_lengths_vary'])} ({100 * r['error_lengths_vary']:+.0f}%) | "
            f"{_gib(r['long first']['reserve'])} | {_gib(r['fixed']['reserve_needed'])} / "
            f"{_gib(r['just shorter then long']['reserve_needed'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches.truth.allocator_study", allow_abbrev=False)
    ap.add_argument("--cache", type=Path, default=None, help="folder that keeps the recorded allocation events")
    ap.add_argument("--only", nargs="+", metavar="PLAN", help="rerun these plans (labels); keep the other rows")
    args = ap.parse_args(argv)
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    previous = None
    if args.only:
        unknown = [x for x in args.only if x not in {p[0] for p in PLANS}]
        if unknown:
            ap.error(f"unknown plan {unknown[0]!r}")
        path = ROOT / "benches" / "results" / "allocator_replay.json"
        previous = json.loads(path.read_text())["rows"] if path.exists() else None
    report = run(args.cache, args.only, previous)
    write_results("allocator_replay", report, to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
