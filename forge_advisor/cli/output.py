"""Shared output plumbing for commands: JSON for scripts, rich for people."""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["emit_json", "console"]


def emit_json(obj: Any) -> None:
    """One JSON document on stdout (scripts parse it; nothing else is printed there)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False)
