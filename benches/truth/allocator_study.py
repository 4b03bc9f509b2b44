"""Replay recorded training steps through the caching-allocator model: how much does PyTorch
reserve beyond the tensors, for one batch shape, and when batch lengths vary?

    python -m benches.truth.allocator_study     # writes benches/results/allocator_replay.{md,json}

Each case runs the fake-tensor harness (``benches.truth.faketensor``: real transformers/peft
training steps, full width, 2 decoder layers, on a fake CUDA device) with
``record_allocations=True`` and replays the allocation sequence through
``benches.truth.allocator`` (PyTorch's default caching-allocator rules). Three replays:

- ``fixed``: the recorded run alone (every step the same length, as with packing or
  padding to ``max_length``);
- ``short then long``: the run at the short length, then the second step at the long
  length on the same allocator (dynamic padding, a long batch after short ones, no
  ``empty_cache`` between: the cache holds segments cut for the short batch);
- ``long then short then long``: the long batch first, as preflight does (worst case first).

The reserve is ``max_memory_reserved − max_memory_allocated`` of the last step (what a GPU
with room to spare shows); "least memory without OOM" replays the same sequence under a
capacity limit, where a failing ``cudaMalloc`` releases the cached segments and retries as
PyTorch does, and finds the least limit that runs (what a GPU must have). The model's
depth barely matters (the largest transients are the logits and loss tensors and, for full
fine-tuning, parameter-sized gradients and optimizer temporaries), which is why 2 layers are
enough to see the mechanism.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benches.results_io import write_results
from benches.truth.allocator import Allocator, OutOfMemory, replay
from benches.truth.faketensor import measure

MODEL = "meta-llama/Llama-3.2-3B"
LAYERS = 2
BATCH = 4
LENGTHS = (209, 585)  # PEFT MetaMathQA's mean and longest padded length (benches/published_gpu)
GiB = 1 << 30


def _config() -> dict[str, Any]:
    cat = json.loads((Path(__file__).resolve().parents[2] / "forge_advisor" / "catalog" / "models.json").read_text())
    return next(m["config"] for m in cat["models"] if m["id"] == MODEL)


PLANS = {
    "LoRA r32 q,v": {"method": "lora", "lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.0,
                     "lora_target_modules": ["q_proj", "v_proj"]},
    "full": {"method": "full"},
}


def _step2(events: list[list[Any]], offset: int) -> list[list[Any]]:
    i = events.index(["m", "step2.forward"])
    return [e if e[0] == "m" else [e[0], e[1] + offset, *e[2:]] for e in events[i:]]


def _last(r: dict[str, Any]) -> tuple[int, int]:
    steps = [v for k, v in r["phases"].items() if k.startswith("step2.")]
    return max(v["allocated"] for v in steps), max(v["reserved"] for v in steps)


def _chain(first: list[list[Any]], later: list[list[list[Any]]], capacity: int | None = None) -> tuple[int, int]:
    r = replay(first, Allocator(capacity=capacity))
    for i, ev in enumerate(later, 1):
        r = replay(_step2(ev, 10**8 * i), r["allocator"], live=r["live"], ignore_unknown_frees=True)
    return _last(r)


def _least_capacity(first: list[list[Any]], later: list[list[list[Any]]]) -> int:
    """The least memory the allocator may reserve for the sequence to run without an
    out-of-memory error (a failing cudaMalloc releases the cached segments and retries),
    to 16 MiB: what a GPU must have free, as opposed to what a roomy GPU shows reserved."""
    lo, hi = 0, 1 << 40
    while hi - lo > 16 << 20:
        mid = (lo + hi) // 2
        try:
            _chain(first, later, mid)
            hi = mid
        except OutOfMemory:
            lo = mid
    return hi


def run() -> dict[str, Any]:
    cfg = _config()
    rows = []
    for name, extra in PLANS.items():
        rec = {}
        for length in LENGTHS:
            plan = {"per_device_train_batch_size": BATCH, "max_length": length, "gradient_checkpointing": False,
                    "optim": "adamw_torch", "dtype": "bf16", **extra}
            rec[length] = measure(cfg, plan, LAYERS, record_allocations=True)["allocation_events"]
        short, long_ = (rec[x] for x in LENGTHS)
        for label, (first, later) in {
            f"fixed {LENGTHS[0]}": (short, []),
            f"fixed {LENGTHS[1]}": (long_, []),
            f"{LENGTHS[0]} then {LENGTHS[1]}": (short, [long_]),
            f"{LENGTHS[1]} then {LENGTHS[0]} then {LENGTHS[1]}": (long_, [short, long_]),
        }.items():
            alloc, res = _chain(first, later)
            least = _least_capacity(first, later)
            rows.append({"plan": name, "sequence": label, "max_allocated": alloc, "max_reserved": res,
                         "reserve": res - alloc, "reserve_fraction": (res - alloc) / alloc,
                         "least_capacity": least, "reserve_needed": least - alloc})
    return {"command": "python -m benches.truth.allocator_study", "model": MODEL, "layers": LAYERS, "batch": BATCH,
            "rows": rows}


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Caching-allocator replay of recorded training steps ({report['model']}, {report['layers']} layers at full "
        f"width, batch {report['batch']}, bf16, AdamW, no checkpointing; fake-tensor harness + "
        f"`benches/truth/allocator.py`). `{report['command']}`.",
        "",
        "| plan | lengths, in order | max allocated | max reserved | reserve | least memory without OOM | reserve needed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['plan']} | {r['sequence']} | {r['max_allocated'] / GiB:.2f} GiB | "
                     f"{r['max_reserved'] / GiB:.2f} GiB | {r['reserve'] / GiB:.2f} GiB ({100 * r['reserve_fraction']:.0f}%) | "
                     f"{r['least_capacity'] / GiB:.2f} GiB | {r['reserve_needed'] / GiB:.2f} GiB |")
    return "\n".join(lines) + "\n"


def main() -> int:
    report = run()
    write_results("allocator_replay", report, to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
