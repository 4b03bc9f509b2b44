"""Ctrl-C during training: the first one finishes the step, saves a checkpoint and stops; the
second one aborts at once with exit code 130 and one line.

Why the second one must not raise: a Python signal handler runs between two bytecodes of the
main thread, which may be anywhere: inside a tokenizer callback, between two writes of
``torch.save``, or while torch's intra-op threads are still working. Raising
``KeyboardInterrupt`` there unwinds through that code and then finalises the interpreter while
native threads may still run; the issue measured a crash (SIGSEGV, exit 139) in 3 of 25 tries
that way (exit 130 with no message otherwise). ``os._exit(130)`` skips both: no unwinding, no finalisation, no half-written file under a real name (every save
is rename-last, :mod:`forge_advisor.train.saving`), and the last complete checkpoint stays.
The handler writes with ``os.write`` on the raw descriptor: ``print`` from a handler can hit
the buffered stream it interrupted (``RuntimeError: reentrant call``). Torch-free.
"""

from __future__ import annotations

import os
import signal
from typing import Any

__all__ = ["ABORT_LINE", "EXIT_INTERRUPTED", "InterruptFlag", "exit_now", "interrupt_callback"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
FIRST_LINE = "\ninterrupt: saving a checkpoint after this step (Ctrl-C again to abort without saving)\n"
ABORT_LINE = "interrupt: aborted without saving; --resume continues from the last complete checkpoint\n"


class InterruptFlag:
    """``with InterruptFlag() as flag:`` installs the SIGINT handler (main thread only).

    ``hold=True`` (a process that exits after the run: the CLI) keeps the handler installed past
    the ``with`` once Ctrl-C was pressed, so a second Ctrl-C during the report or the
    interpreter's shutdown still ends in the one abort line and 130, never in SIGINT's default
    death. The CLI then leaves by :func:`exit_now`."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.requested = False
        self.announced = False  # the interrupt event was emitted (by the callback)
        self._old: Any = None
        self._installed = False

    def __enter__(self) -> InterruptFlag:
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        except ValueError:  # not the main thread: leave signals alone
            self._installed = False
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed and not (self.hold and self.requested):
            signal.signal(signal.SIGINT, self._old)
            self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            _write(2, "\n" + ABORT_LINE)
            os._exit(EXIT_INTERRUPTED)
        self.requested = True
        _write(2, FIRST_LINE)


def exit_now(code: int = EXIT_INTERRUPTED) -> None:
    """Flush what was printed and end the process without the interpreter's finalisation (in
    which Python resets SIGINT to its default, so a late Ctrl-C would kill it by signal)."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _write(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError:
        pass


def interrupt_callback(flag: InterruptFlag, on_request: Any = None) -> Any:
    """A TrainerCallback that turns a requested interrupt into save + stop at the step's end;
    ``on_request(step)`` is called once, from the training loop (not from the handler)."""
    from transformers import TrainerCallback

    class InterruptCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if flag.requested:
                if not flag.announced:
                    flag.announced = True
                    if on_request is not None:
                        on_request(state.global_step)
                control.should_save = True
                control.should_training_stop = True

    return InterruptCallback()
