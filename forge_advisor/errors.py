"""The one error type users see.

Every bad input becomes a :class:`ForgeError` whose message is a single line; the CLI
prints it as ``error: <message>`` and exits with code 2, never with a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ForgeError", "did_you_mean"]


class ForgeError(ValueError):
    """A user-facing error: one line, with a suggestion where one fits. When one field of a
    plan is at fault, ``field`` names it, ``value`` is the bad value as text and ``allowed``
    says what is allowed (the CLI, the Python API and the TUI read the same three)."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None, value: str | None = None, allowed: str | None = None) -> None:
        super().__init__(" ".join(str(message).split()))
        self.field = field
        self.value = value
        self.allowed = allowed


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """``" (did you mean 'x'?)"`` for the closest choices, or ``""``."""
    pool = list(choices)
    close = difflib.get_close_matches(word, pool, n=n, cutoff=0.5)
    if not close:
        lowered = {c.lower(): c for c in pool}
        close = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.5)
        close = [lowered[c] for c in close]
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
