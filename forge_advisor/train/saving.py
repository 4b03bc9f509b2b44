"""Atomic saves: write into a temporary sibling folder, then rename into place.

A crash at any moment leaves the previous folder or a ``.tmp-*`` leftover, never a
half-written result.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_dir", "atomic_save_pretrained", "replace_dir"]


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
