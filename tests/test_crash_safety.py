"""Crash safety you can check: `train --demo` killed with SIGKILL at random moments, interrupted
twice with Ctrl-C, run twice into one folder, resumed after it finished.

Each kill lands after the run's ``start`` event (read from ``--events -``) plus a random delay,
with checkpoints every 3 steps and ``save_total_limit 2``, so kills hit steps, checkpoint
writes and rotations. Invariants after every kill: each ``checkpoint-N`` folder under its real
name is complete (trainer state of step N and an EMA with N updates); after the final resume
no hidden leftover remains and the EMA's count equals the global step.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from forge_advisor.train.events import decode
from forge_advisor.train.saving import checkpoint_step

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max-steps", "12", "--save-steps", "3", "--save-total-limit", "2", "--logging-steps", "1"]


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "forge_advisor.cli.main", "train", "--demo", "--output", str(out), *FAST,
            "--events", "-", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


def _start(out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(_cmd(out, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _wait_for(proc: subprocess.Popen[str], kind: str, timeout: float = 120.0) -> bool:
    """Read events until one of ``kind`` arrives (False: the run ended first)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return False
        ev = decode(line)
        if ev is not None and ev.kind == kind:
            return True
    raise AssertionError(f"no {kind} event within {timeout} s")


def check_checkpoints(out: Path) -> list[int]:
    """Every checkpoint-N under its real name is complete; returns the steps."""
    steps = []
    for p in sorted(out.glob("checkpoint-*"), key=lambda p: checkpoint_step(p) or -1):
        step = checkpoint_step(p)
        assert step is not None and p.is_dir(), p
        state = json.loads((p / "trainer_state.json").read_text())
        assert state["global_step"] == step, p
        ema = torch.load(p / "ema_state.pt", weights_only=True)
        assert ema["num_updates"] == step, (p, ema["num_updates"])  # EMA history intact
        assert any(p.glob("adapter_model.safetensors")) and (p / "optimizer.pt").is_file(), p
        steps.append(step)
    return steps


def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if p.name != ".forge-train.lock"]


def kill_and_resume_until_done(out: Path, rng: random.Random, kills: int) -> list[dict]:
    """Start, SIGKILL after a random delay, check, resume (or start over when no complete checkpoint
    exists yet), ``kills`` times; then let it finish. Returns one record per kill."""
    records = []
    for i in range(kills):
        started = (out / "checkpoint-3").exists() or any(out.glob("checkpoint-*"))
        proc = _start(out, "--resume" if started else "--overwrite")
        reached = _wait_for(proc, "start")
        delay = rng.uniform(0.0, 2.5)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        steps = check_checkpoints(out)
        records.append({"kill": i, "delay_s": round(delay, 3), "after_start": reached, "checkpoints": steps,
                        "leftovers": len(_leftovers(out))})
    started = any(out.glob("checkpoint-*"))
    final = subprocess.run(_cmd(out, "--resume" if started else "--overwrite"), capture_output=True, text=True,
                           env=_env(), timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    return records


def test_random_sigkills_lose_nothing(tmp_path):
    out = tmp_path / "run"
    records = kill_and_resume_until_done(out, random.Random(12), kills=3)
    assert len(records) == 3
    steps = check_checkpoints(out)
    assert steps and steps[-1] == 12 and len(steps) <= 2  # rotation kept the newest two
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 12
    assert summary["ema_updates"] == 12  # resumed EMA history: 12 updates, one per step
    assert _leftovers(out) == []  # temp/old/deleting folders of the killed runs are gone
    assert (out / "adapter").is_dir() and (out / "ema").is_dir()


@pytest.mark.parametrize("when", ["after_interrupt_event", "0.2s"])
def test_second_ctrl_c_exits_130_with_one_line(tmp_path, when):
    """The issue's case: a LoRA run, batch 16 × 256 tokens, SIGINT twice 0.2 s apart; and the
    second SIGINT right when the runtime starts saving (after its interrupt event)."""
    out = tmp_path / "run"
    proc = _start(out, "--max-steps", "400", "--per-device-train-batch-size", "16", "--max-length", "256")
    assert _wait_for(proc, "step")  # training is running
    proc.send_signal(signal.SIGINT)
    if when == "0.2s":
        time.sleep(0.2)
    else:
        assert _wait_for(proc, "interrupt")
    proc.send_signal(signal.SIGINT)  # a no-op if the run already left
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Segmentation" not in err and "Error" not in err, err
    aborted = [x for x in err.splitlines() if x.startswith("interrupt: aborted")]
    finished = [x for x in err.splitlines() if x.startswith("interrupted at step")]
    assert len(aborted) + len(finished) == 1, err  # one closing line, whichever Ctrl-C won
    check_checkpoints(out)  # whatever was published is complete


def test_one_ctrl_c_saves_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--max-steps", "400")
    assert _wait_for(proc, "step")
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    events = [e for e in map(decode, stdout.splitlines()) if e is not None]
    kinds = [e.kind for e in events]
    assert "interrupt" in kinds and kinds[-1] == "end" and events[-1].status == "interrupted"
    step = events[-1].global_step
    assert check_checkpoints(out)[-1] == step  # the checkpoint of the step it stopped at


def test_second_run_into_the_same_output_refuses(tmp_path):
    out = tmp_path / "run"
    first = _start(out, "--max-steps", "400")
    try:
        assert _wait_for(first, "start")
        second = subprocess.run(_cmd(out, "--overwrite"), capture_output=True, text=True, env=_env(), timeout=120)
        assert second.returncode == 2
        err = second.stderr.strip()
        assert len(err.splitlines()) == 1 and "another training (pid" in err and str(first.pid) in err, err
    finally:
        first.kill()
        first.wait()
    # the holder died (kill -9): its lock is stale and the next run takes it over
    third = subprocess.run(_cmd(out, "--overwrite", "--max-steps", "2"), capture_output=True, text=True, env=_env(),
                           timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]


def test_resuming_a_finished_run_trains_no_step_and_redoes_lost_final_folders(tmp_path):
    """A finished run resumed trains no extra step (the Trainer alone would train one). A run whose
    last checkpoint is its last step but whose final folders are missing (killed during the final
    save) gets them written from that checkpoint, again without training."""
    import shutil

    out = tmp_path / "run"
    done = subprocess.run(_cmd(out, "--max-steps", "3"), capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    again = subprocess.run(_cmd(out, "--max-steps", "3", "--resume"), capture_output=True, text=True, env=_env(),
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    events = [e for e in map(decode, again.stdout.splitlines()) if e is not None]
    assert [e.kind for e in events] == ["end"] and events[0].global_step == 3
    assert not any(out.glob("checkpoint-4"))
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 3

    shutil.rmtree(out / "ema")
    (out / "train_summary.json").unlink()
    (out / ".ema.tmp-abc").mkdir()  # what a kill during the EMA save leaves
    redo = subprocess.run(_cmd(out, "--max-steps", "3", "--resume"), capture_output=True, text=True, env=_env(),
                          timeout=300)
    assert redo.returncode == 0, redo.stderr[-2000:]
    kinds = [e.kind for e in map(decode, redo.stdout.splitlines()) if e is not None]
    assert kinds == ["end"]  # no start, no step: nothing trained
    assert (out / "ema" / "adapter_model.safetensors").is_file() and not (out / ".ema.tmp-abc").exists()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["ema_updates"] == 3
