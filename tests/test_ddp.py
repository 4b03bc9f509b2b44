"""The runner under ``accelerate launch``: 2 CPU processes (gloo), DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from forge_advisor.train.demo import build_demo_model


@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "accelerate")), reason="accelerate CLI missing")
def test_two_process_ddp_on_cpu(tmp_path):
    model = build_demo_model(tmp_path / "model")  # built once, before the ranks start
    out = tmp_path / "out"
    launcher = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [launcher, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "forge_advisor.cli.main", "train", "--demo", "--model", str(model),
           "--output", str(out), "--max-steps", "3", "--save-steps", "2", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["status"] == "completed"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "ema" / "adapter_model.safetensors").is_file()
    assert (out / "checkpoint-2" / "ema_state.pt").is_file()
