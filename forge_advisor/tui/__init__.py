"""``forge-advisor tui``: turn the plan's knobs and watch the memory bar move.

Layout of this package:

* pure modules, no textual (unit-tested, reusable): :mod:`~forge_advisor.export` (shared with the advisor)
  (train command, plan JSON/YAML, ``get_preset`` snippet), :mod:`~forge_advisor.tui.state`
  (knobs, parsing, one estimate, memory groups), :mod:`~forge_advisor.tui.train_log`
  (the runtime's output -> monitor events);
* the Textual app: :mod:`~forge_advisor.tui.app`, ``screens/`` (one Screen per module),
  ``widgets/``, ``messages.py``; styling in ``.tcss`` files next to them.

Importing this package does not import textual; :func:`run` does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run"]


def run(model: str | None = None, gpu: str | None = None, **kwargs: Any) -> int:
    """Start the TUI (blocks until the user quits); returns the exit code."""
    from forge_advisor.tui.app import ForgeApp

    app = ForgeApp(model=model, gpu=gpu, **kwargs)
    app.run()
    return int(app.return_code or 0)
