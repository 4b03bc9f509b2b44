"""Crash-safe saves: a result folder is complete or absent, never half there.

Every folder this runtime writes (``adapter/``, ``ema/``, ``checkpoint-N/``) is written under a
hidden temporary name in the same parent folder and renamed into place last; ``rename(2)`` within
one file system is atomic, so a ``kill -9`` at any instant leaves either the previous folder or
a hidden leftover (``.NAME.tmp-*``). Deleting goes the other way round: rename to a hidden
``.NAME.deleting-*`` first, then remove, so a half-deleted folder never carries a real name.
Leftovers are removed by :func:`clean_leftovers` when the next run takes the output folder.

Torch-free: the runner and the checks import it before anything heavy.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forge_advisor.fileio import atomic_write_text

__all__ = [
    "CHECKPOINT_FILES",
    "atomic_dir",
    "atomic_save_pretrained",
    "atomic_write_text",
    "checkpoint_step",
    "clean_leftovers",
    "complete_checkpoints",
    "last_checkpoint",
    "remove_dir",
    "replace_dir",
    "rotate_checkpoints",
]

# what a checkpoint of this runtime holds once complete: the Trainer's state and the EMA's
CHECKPOINT_FILES = ("trainer_state.json", "ema_state.pt")
# hidden names of unfinished work: temp folders/files, folders moved aside or being deleted
_LEFTOVER_MARKS = (".tmp-", ".tmp", ".old-", ".deleting-")


def atomic_dir(directory: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a fresh temp folder next to ``directory``, then swap it in."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        write(tmp)
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def atomic_save_pretrained(model: Any, directory: Path, **save_kwargs: Any) -> Path:
    """``model.save_pretrained`` into a temp sibling folder, then swap it in by renames.

    A crash leaves either the old folder or a ``.tmp-*`` folder, never half of ``directory``.
    """
    return atomic_dir(directory, lambda tmp: model.save_pretrained(tmp, **save_kwargs))


def remove_dir(path: Path) -> None:
    """Delete a folder by renaming it to a hidden ``.NAME.deleting-PID`` first: a kill during
    the removal leaves a hidden leftover, never a half folder under its real name."""
    path = Path(path)
    if not path.exists():
        return
    doomed = path.with_name(f".{path.name}.deleting-{os.getpid()}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` is moved aside first and deleted after."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _is_leftover(name: str) -> bool:
    return name.startswith(".") and any(m in name for m in _LEFTOVER_MARKS)


def clean_leftovers(out: Path) -> list[Path]:
    """Remove hidden unfinished work in ``out`` and in its checkpoint folders (call it only
    while holding the output lock: then no live writer owns them). Returns what was removed."""
    out = Path(out)
    if not out.is_dir():
        return []
    removed = []
    folders = [out] + [p for p in out.iterdir()
                       if p.is_dir() and (checkpoint_step(p) is not None or p.name == "demo-inputs")]
    for folder in folders:
        for p in folder.iterdir():
            if not _is_leftover(p.name):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def checkpoint_step(path: Path) -> int | None:
    """``checkpoint-120`` -> 120; any other name -> None."""
    name = Path(path).name
    digits = name[len("checkpoint-"):]
    return int(digits) if name.startswith("checkpoint-") and digits.isdigit() else None


def _complete(path: Path, step: int, required: tuple[str, ...]) -> bool:
    if not all((path / f).is_file() for f in required):
        return False
    if "trainer_state.json" in required:
        try:
            state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(state, dict) and state.get("global_step") == step
    return True


def complete_checkpoints(out: Path, required: tuple[str, ...] = CHECKPOINT_FILES) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every complete checkpoint in ``out``, oldest first. Complete: every
    file of ``required`` present and ``trainer_state.json``'s ``global_step`` equal to N."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        step = checkpoint_step(p)
        if step is not None and p.is_dir() and _complete(p, step, required):
            found.append((step, p))
    return sorted(found)


def last_checkpoint(out: Path, required: tuple[str, ...] = CHECKPOINT_FILES) -> Path | None:
    """The newest complete checkpoint in ``out`` (see :func:`complete_checkpoints`)."""
    found = complete_checkpoints(out, required)
    return found[-1][1] if found else None


def rotate_checkpoints(out: Path, keep: int | None) -> list[Path]:
    """Keep the newest ``keep`` checkpoints (None or 0: keep all); older ones are deleted
    rename-first (:func:`remove_dir`). Incomplete ones are never counted as kept."""
    if not keep:
        return []
    out = Path(out)
    steps = sorted((s, p) for p in out.iterdir() if (s := checkpoint_step(p)) is not None and p.is_dir())
    complete = {p for _, p in complete_checkpoints(out)}
    kept = [p for _, p in steps if p in complete][-keep:]
    doomed = [p for _, p in steps if p not in kept and (p in complete or _older_than(p, kept))]
    for p in doomed:
        remove_dir(p)
    return doomed


def _older_than(path: Path, kept: list[Path]) -> bool:
    # an incomplete checkpoint older than every kept one is garbage; a newer one is left alone
    step = checkpoint_step(path)
    return bool(kept) and step is not None and all(step < (checkpoint_step(k) or 0) for k in kept)
