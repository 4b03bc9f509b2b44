"""``resolve_preset``: the one place a preset spec becomes the preset a run trains.

The CLI (``train``), the runner and the TUI's train screen all call it; ``auto`` is handled
here and nowhere else. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forge_advisor.errors import ForgeError
from forge_advisor.presets.base import BasePreset

__all__ = ["AUTO", "resolve_preset"]

AUTO = "auto"


def resolve_preset(
    spec: str | BasePreset | Path,
    overrides: dict[str, Any] | None = None,
    model: str | None = None,
    gpu: str | None = None,
) -> BasePreset:
    """The preset to train.

    ``spec`` is a registered preset name, ``"auto"`` (the advisor's best plan for ``model`` on
    ``gpu``, or the GPU NVML finds), a :class:`BasePreset`, or a :class:`~pathlib.Path` to a
    preset file (``presets.io``). ``overrides`` (Hugging Face names) apply last, to every kind.
    """
    overrides = dict(overrides or {})
    if isinstance(spec, BasePreset):
        base = spec
    elif isinstance(spec, Path):
        from forge_advisor.presets.io import load_preset

        base = load_preset(spec)
    elif isinstance(spec, str) and spec == AUTO:
        from forge_advisor.advisor import auto_preset

        if model is None:
            raise ForgeError("--preset auto needs --model (the advisor plans for a named model)")
        base = auto_preset(model, gpu or "auto")
    elif isinstance(spec, str):
        from forge_advisor.presets import get_preset

        return get_preset(spec, **overrides)  # unknown names / bad values fail here
    else:
        raise ForgeError(f"preset={spec!r} must be a preset name, 'auto', a preset file or a BasePreset")
    return base.replace(**overrides) if overrides else base
