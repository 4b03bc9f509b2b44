"""The training runtime: presets applied to a live model with transformers, peft and trl.

Importing this package is light; torch loads with the submodules that need it
(``forge_advisor.train.freezing``, ``.callbacks``, ``.session``). ``.events`` (the typed
event stream), ``.resolve``, ``.saving``, ``.lock`` and ``.checks`` are torch-free.

Layers run one way: cli/train → runner → session → trainer/callbacks; ``runner`` validates,
locks and hands over to ``session``, which never imports ``runner``.

>>> from forge_advisor.train import run
>>> result = run(demo=True, output_dir="demo-out")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from forge_advisor.train.resolve import resolve_preset

__all__ = ["resolve_preset", "run"]


def run(*args: Any, **kwargs: Any) -> Any:
    """See :func:`forge_advisor.train.runner.run`."""
    from forge_advisor.train.runner import run as _run

    return _run(*args, **kwargs)
