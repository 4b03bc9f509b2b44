"""The torch-free pieces of crash safety: complete-or-absent checkpoints, rename-first deletion,
leftover cleanup and the output lock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from forge_advisor.errors import ForgeError
from forge_advisor.train import saving
from forge_advisor.train.lock import LOCK_NAME, OutputLock


def _ckpt(out, step, *, ema=True, state_step=None):
    p = out / f"checkpoint-{step}"
    p.mkdir(parents=True)
    (p / "trainer_state.json").write_text(json.dumps({"global_step": step if state_step is None else state_step}))
    if ema:
        (p / "ema_state.pt").write_bytes(b"x")
    return p


def test_newest_complete_checkpoint_wins(tmp_path):
    _ckpt(tmp_path, 2)
    _ckpt(tmp_path, 4)
    _ckpt(tmp_path, 6, ema=False)  # the case: killed between trainer state and EMA
    _ckpt(tmp_path, 8, state_step=7)  # a state that belongs to another step
    (tmp_path / "checkpoint-10").mkdir()  # empty
    assert saving.last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert [s for s, _ in saving.complete_checkpoints(tmp_path)] == [2, 4]


def test_remove_dir_renames_before_deleting(tmp_path, monkeypatch):
    target = _ckpt(tmp_path, 3)
    seen = []
    real = shutil.rmtree

    def watch(path, *a, **k):
        seen.append((str(path), target.exists()))  # the real name must be gone before any file is
        return real(path, *a, **k)

    monkeypatch.setattr(saving.shutil, "rmtree", watch)
    saving.remove_dir(target)
    # rmtree never touches the real name; the removal of the contents runs after the rename
    assert not target.exists() and all(p != str(target) and ".deleting-" in p for p, _ in seen)
    assert seen[-1][1] is False


def test_rotation_keeps_the_newest_complete(tmp_path):
    for s in (1, 2, 3):
        _ckpt(tmp_path, s)
    _ckpt(tmp_path, 4, ema=False)  # incomplete and newest: never counted as kept, never deleted
    removed = saving.rotate_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in removed) == ["checkpoint-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]


def test_leftovers_are_cleaned(tmp_path):
    _ckpt(tmp_path, 2)
    for name in (".ema.tmp-x1", ".adapter.old-12", ".checkpoint-3.tmp", ".checkpoint-1.deleting-9"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-2" / ".ema.abc.tmp").write_text("half")
    (tmp_path / ".keep-me").write_text("user's")
    removed = saving.clean_leftovers(tmp_path)
    assert len(removed) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep-me", "checkpoint-2"]


def test_atomic_dir_failure_leaves_the_old_folder(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "w").write_text("old")

    def half(tmp):
        (tmp / "w").write_text("new, half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        saving.atomic_dir(tmp_path / "adapter", half)
    assert (tmp_path / "adapter" / "w").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from pathlib import Path; from forge_advisor.train.lock import OutputLock;"
         "l = OutputLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ForgeError, match=rf"another training \(pid {holder.pid} on "):
            OutputLock(out).acquire()
    finally:
        holder.kill()  # SIGKILL: no cleanup ran, the lock file stays with a dead pid
        holder.wait()
    assert (out / LOCK_NAME).read_text().split()[0] == str(holder.pid)
    with OutputLock(out):  # the kernel dropped the dead holder's flock: taken over
        assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert not (out / LOCK_NAME).exists()


def test_lock_removes_the_folder_it_created_when_nothing_was_written(tmp_path):
    out = tmp_path / "new"
    with OutputLock(out):
        assert out.is_dir()
    assert not out.exists()


def test_corrupt_or_foreign_records_are_skipped_with_one_warning(tmp_path, caplog):
    from forge_advisor.train.records import RECORDS_FILE, append_record, read_records

    append_record(tmp_path, "preflight", model="m", measured={"peak_allocated_bytes": 5})
    with (tmp_path / RECORDS_FILE).open("a") as fh:
        fh.write('{"record": "measured_vs_estimated", "v": 99}\n{"torn": \n' + "[" * 5000 + "\n")
    append_record(tmp_path, "run", model="m", measured={})
    with caplog.at_level("WARNING"):
        recs = read_records(tmp_path)
    assert [r["phase"] for r in recs] == ["preflight", "run"] and recs[0]["versions"]["forge-advisor"]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "ignored 3" in warnings[0].getMessage()
