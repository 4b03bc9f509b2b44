"""One training per ``--output``: an exclusive lock on ``OUTPUT/.forge-train.lock``.

The lock is ``flock(2)`` on a file that also records the holder's pid and host. The kernel
drops a flock when its process dies, however it dies (``kill -9`` included), so a lock left
by a dead run is taken over without guessing from pids; the recorded pid only serves the
message. Torch-free.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import TracebackType

from forge_advisor.errors import ForgeError

__all__ = ["LOCK_NAME", "OutputLock"]

LOCK_NAME = ".forge-train.lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").split()
    except OSError:
        return "another process"
    return f"pid {text[0]} on {text[1]}" if len(text) >= 2 else "another process"


class OutputLock:
    """``with OutputLock(out):`` — refuses with one line while another run holds ``out``.

    A folder it had to create is removed again on exit if nothing but the lock was written
    into it (a run that failed before writing leaves no empty folder behind)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> OutputLock:
        import fcntl

        self._created = not self.out.exists()
        while True:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ForgeError(f"{self.out}: cannot write into --output ({exc.strerror or exc})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise ForgeError(
                    f"{self.out}: another training ({_holder(self.path)}) is writing into this --output; "
                    "wait for it to finish or choose another folder"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder unlinked the file between our open and flock: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # before unlocking: a waiter then creates a fresh file
        os.close(self._fd)  # closing drops the flock
        self._fd = None
        if self._created:
            try:
                self.out.rmdir()  # only succeeds when nothing was written
            except OSError:
                pass

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
