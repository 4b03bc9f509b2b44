"""Stand-ins for the TUI tests (no tests here): an advisor with the agreed API, NVML probes, a train program."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path
from typing import Any

from forge_advisor.advisor import OBJECTIVES, Candidate, Recommendation, SearchRequest
from forge_advisor.estimate import estimate
from forge_advisor.gpus import GPU, Probe, ProbedDevice, find_gpu


def fake_advisor(calls: list[dict[str, Any]] | None = None, nothing_fits: bool = False) -> types.ModuleType:
    """``forge_advisor.advisor`` with a fixed ``recommend(...)``: the real API and result types
    (Candidate, Recommendation), three fixed candidates instead of a search, so the TUI's
    tests and snapshots do not move when the search does. ``nothing_fits`` answers as the
    advisor does when no plan fits: no candidates and a suggestion."""
    mod = types.ModuleType("forge_advisor.advisor")

    def recommend(model, gpu=None, *, num_gpus=1, objective="balanced", seq_len=2048, global_batch=None,
                  dataset_tokens=None, headroom=0.08, allowed_presets=None, min_lora_r=None, max_freeze_ratio=None,
                  fixed=None, seed=0, top=5, progress=None):
        if calls is not None:
            calls.append({"objective": objective, "seq_len": seq_len, "headroom": headroom, "gpu": gpu})
        trials = [("qlora", {"lora_r": 64}), ("memory_efficient", {"lora_r": 8, "gradient_checkpointing": True}),
                  ("lora", {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 16})]
        out = []
        for i, (preset, over) in enumerate(trials if not nothing_fits else []):
            over = {**over, "max_length": seq_len}
            est = estimate(model, preset, gpu=gpu, num_gpus=num_gpus, dataset_tokens=dataset_tokens, **over)
            out.append(Candidate(preset, est.plan, est, f"{preset}: fits with room to spare",
                                 quality=est.quality, objective_value=0.0))
            if progress is not None:
                progress(i + 1, len(trials))
        g = gpu if isinstance(gpu, GPU) else find_gpu(gpu or "RTX 4090")
        request = SearchRequest(objective=objective, seq_len=seq_len, headroom=headroom)
        suggestion = "QLoRA needs at least 30.00 GiB; the smallest catalog GPU that fits it is the A100 40GB SXM" if nothing_fits else None
        return Recommendation(str(model), g, request, int(g.memory_bytes * (1 - headroom)), out,
                              [out[1], out[0]] if out else [], suggestion)

    mod.recommend = recommend  # type: ignore[attr-defined]
    mod.OBJECTIVES = OBJECTIVES  # type: ignore[attr-defined]
    mod.Candidate, mod.Recommendation = Candidate, Recommendation  # type: ignore[attr-defined]
    return mod


def no_gpu_probe() -> Probe:
    return Probe(reason="no NVIDIA driver (NVML library libnvidia-ml not found)")


def rtx4090_probe() -> Probe:
    gpu: GPU = find_gpu("RTX 4090")
    dev = ProbedDevice(0, "NVIDIA GeForce RTX 4090", gpu.memory_bytes, gpu.memory_bytes, (8, 9), None, gpu.name, gpu)
    return Probe(devices=(dev,), driver_version="570.00", cuda_driver_version="12.8")


TRAIN_SCRIPT = r'''
import json, sys, time
from pathlib import Path
Path(sys.argv[1]).write_text("\n".join(sys.argv[2:]))
out, err = sys.stdout, sys.stderr
def event(kind, **fields):  # the runtime's event stream (--events -): one JSON object per line
    out.write(json.dumps({"event": kind, "v": 1, **fields}) + "\n"); out.flush()
event("start", model="demo", preset="lora", plan={}, max_steps=10, predicted_peak_bytes=2 << 30)
for step in (5, 10):
    err.write(f" {step * 3}%|###   | {step}/10 [00:01<00:02,  2.00it/s]\r"); err.flush()
    event("step", step=step, loss=6 - step / 10, grad_norm=0.5 / step, tokens_per_second=1234.0, max_steps=10)
    err.write(f"[monitor] step {step} | loss {6 - step / 10:.4f}\n"); err.flush()
    time.sleep(0.05)
event("checkpoint", step=10, path="out/checkpoint-10", ema_updates=10)
event("alert", step=11, reason="nonfinite_skipped", message="step 11: non-finite gradient in 'layers.0.q_proj.lora_A', step skipped")
event("end", status="completed", global_step=10, final_loss=5.0, peak_allocated_bytes=1 << 30,
      predicted_peak_bytes=2 << 30)
'''


def train_program(tmp: Path) -> tuple[tuple[str, ...], Path]:
    """An argv prefix that stands in for ``forge-advisor`` and records the argv it got."""
    script = tmp / "fake_train.py"
    script.write_text(textwrap.dedent(TRAIN_SCRIPT))
    record = tmp / "argv.txt"
    return (sys.executable, str(script), str(record)), record
