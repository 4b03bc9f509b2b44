"""Kill/resume bench: ``train --demo`` SIGKILLed at random moments, resumed each time.

    python -m benches.kill_resume [--kills 200] [--seed 0]

One training of the demo model (LoRA, a checkpoint after every step and ``save_total_limit 2``,
so that most steps end in a checkpoint write and a rotation) is
started, killed with SIGKILL after a random delay, checked, and resumed (started over with
``--overwrite`` while no complete checkpoint exists), ``--kills`` times; the run's ``max_steps``
grows with the number of kills so that the kills keep landing in training. Half of the delays
count from the process start (0-10 s: kills during imports, demo building, the lock), half
from the run's ``start`` event (0-4 s: steps, checkpoint writes, rotations).

After every kill: each ``checkpoint-N`` under its real name must be complete (trainer state of
step N, an EMA of N updates, adapter and optimizer). After the last resume: the run completes,
the EMA's update count equals the global step, and no hidden leftover remains. Writes
``benches/results/kill_resume.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benches.results_io import write_results

ROOT = Path(__file__).resolve().parents[1]


def _cmd(out: Path, max_steps: int, mode: str) -> list[str]:
    return [sys.executable, "-m", "forge_advisor.cli.main", "train", "--demo", "--output", str(out),
            "--max-steps", str(max_steps), "--save-steps", "1", "--save-total-limit", "2", "--logging-steps", "1",
            "--events", "-", mode]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


def check(out: Path) -> tuple[list[int], list[str]]:
    """(complete checkpoint steps, violations) of ``out`` right now."""
    import torch

    from forge_advisor.train.saving import checkpoint_step

    steps, bad = [], []
    for p in out.glob("checkpoint-*"):
        step = checkpoint_step(p)
        if step is None:
            continue
        try:
            state = json.loads((p / "trainer_state.json").read_text())
            ema = torch.load(p / "ema_state.pt", weights_only=True)
            ok = (state["global_step"] == step and ema["num_updates"] == step
                  and (p / "adapter_model.safetensors").is_file() and (p / "optimizer.pt").is_file())
        except Exception as exc:  # a missing or torn file: exactly what must never happen
            ok = False
            bad.append(f"{p.name}: {type(exc).__name__}")
        if ok:
            steps.append(step)
        elif not bad or not bad[-1].startswith(p.name):
            bad.append(f"{p.name}: incomplete")
    return sorted(steps), bad


def _hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob(".*") if p.name != ".forge-train.lock") if out.exists() else []


def one_kill(out: Path, rng: random.Random, max_steps: int) -> dict[str, Any]:
    from forge_advisor.train.events import decode

    mode = "--resume" if check(out)[0] else "--overwrite"
    from_start = rng.random() < 0.5
    delay = rng.uniform(0.0, 4.0) if from_start else rng.uniform(0.0, 10.0)
    t0 = time.monotonic()
    proc = subprocess.Popen(_cmd(out, max_steps, mode), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=_env())
    seen: list[str] = []
    assert proc.stdout is not None
    if from_start:
        for line in proc.stdout:
            ev = decode(line)
            if ev is not None and ev.kind == "start":
                break
        t0 = time.monotonic()

    def read() -> None:  # the events the run emits until it is killed
        for line in proc.stdout:  # type: ignore[union-attr]
            ev = decode(line)
            if ev is not None:
                seen.append(ev.kind)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while time.monotonic() - t0 < delay and proc.poll() is None:
        time.sleep(0.01)
    finished = proc.poll() is not None
    proc.kill()
    proc.wait()
    reader.join(timeout=5)
    last = seen[-1] if seen else ("start" if from_start else "launch")
    hidden = _hidden(out)
    steps, bad = check(out)
    return {"mode": mode[2:], "clock": "start event" if from_start else "launch", "delay_s": round(delay, 3),
            "last_event": last, "exited_before_kill": finished, "mid_save": any(".tmp" in h or ".deleting-" in h
                                                                              or ".old-" in h for h in hidden),
            "checkpoints": steps, "violations": bad}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop killing after this many seconds (the table then says how many kills ran)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    max_steps = 12 + args.kills
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="kill-resume-") as tmp:
        out = Path(tmp) / "run"
        kills = []
        for i in range(args.kills):
            if args.budget_s is not None and time.time() - t0 > args.budget_s:
                print(f"budget of {args.budget_s:.0f} s spent after {i} kills", flush=True)
                break
            kills.append(one_kill(out, rng, max_steps))
            k = kills[-1]
            print(f"kill {i + 1}/{args.kills}: {k['clock']} +{k['delay_s']} s, last event {k['last_event']}, "
                  f"checkpoints {k['checkpoints']}, violations {k['violations']}", flush=True)
        mode = "--resume" if check(out)[0] else "--overwrite"
        final = subprocess.run(_cmd(out, max_steps, mode), capture_output=True, text=True, env=_env())
        summary = json.loads((out / "train_summary.json").read_text()) if (out / "train_summary.json").is_file() else {}
        steps, bad = check(out)
        leftovers = _hidden(out)
    violations = sum(bool(k["violations"]) for k in kills) + bool(bad)
    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}",
        "command": f"python -m benches.kill_resume --kills {args.kills} --seed {args.seed}"
                   + (f" --budget-s {args.budget_s:.0f}" if args.budget_s is not None else ""),
        "kills_planned": args.kills,
        "seconds": round(time.time() - t0, 1),
        "kills": len(kills),
        "kills_after_start_event": sum(k["clock"] == "start event" for k in kills),
        "kills_mid_save": sum(k["mid_save"] for k in kills),
        "kills_after_exit": sum(k["exited_before_kill"] for k in kills),
        "runs_with_violations": violations,
        "final_returncode": final.returncode,
        "final_global_step": summary.get("global_step"),
        "final_ema_updates": summary.get("ema_updates"),
        "max_steps": max_steps,
        "final_checkpoints": steps,
        "leftovers_after_final_run": leftovers,
        "per_kill": kills,
    }
    ok = (violations == 0 and final.returncode == 0 and summary.get("global_step") == max_steps
          and summary.get("ema_updates") == max_steps and not leftovers)
    md = (
        f"{len(kills)} of {args.kills} planned kills ran.\n\n" if len(kills) < args.kills else ""
    ) + (
        "| kills | after start event | mid-save | incomplete checkpoints | final run | EMA updates = step | leftovers |\n"
        "|---:|---:|---:|---:|:--|:--|---:|\n"
        f"| {len(kills)} | {report['kills_after_start_event']} | {report['kills_mid_save']} | {violations} | "
        f"exit {final.returncode}, step {summary.get('global_step')}/{max_steps} | "
        f"{summary.get('ema_updates')} = {summary.get('global_step')}: {'yes' if summary.get('ema_updates') == summary.get('global_step') else 'NO'} | "
        f"{len(leftovers)} |\n\n"
        f"{report['machine']}; `{report['command']}`, {report['seconds']} s. "
        f"Verdict: {'nothing lost' if ok else 'FAILED'}.\n"
    )
    write_results("kill_resume", report, md)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
