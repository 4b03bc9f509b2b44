"""Save and load presets as JSON or YAML, stamped with the forge-advisor version.

File layout::

    {"forge_advisor_version": "0.1.0", "preset": "lora", "config": {"lora_r": 16, ...}}

``config`` holds every field of the preset (its knobs applied), so the file means the same
plan whatever the preset's defaults become. A plan exported by ``recommend`` or the TUI
(:func:`forge_advisor.export.plan_document`) is such a file with more keys — ``overrides``
(what differs from the preset), ``model``, ``gpu``, ``plan`` (``Plan.to_dict()``),
``estimate`` — which are for people and scripts: loading reads ``preset`` and ``config``
only, so ``train --preset-file`` trains exactly the exported plan.

Loading looks ``preset`` up in the registry (a custom preset must be registered first) and
validates ``config`` like overrides, so a hand-edited file gets the same errors as a CLI flag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forge_advisor.errors import ForgeError
from forge_advisor.fileio import atomic_write_text

if TYPE_CHECKING:
    from forge_advisor.presets.base import BasePreset

__all__ = ["save_preset", "load_preset"]

_YAML = (".yaml", ".yml")


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in _YAML:
        return "yaml"
    raise ForgeError(f"{path}: unknown preset file type '{suffix}': use .json, .yaml or .yml")


def save_preset(preset: BasePreset, path: str | Path) -> Path:
    from forge_advisor import __version__

    path = Path(path)
    doc = {"forge_advisor_version": __version__, "preset": preset.name, "config": preset.to_dict()}
    if _format(path) == "json":
        text = json.dumps(doc, indent=2) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(doc, sort_keys=False)
    return atomic_write_text(path, text)  # a crash never leaves half a preset file


def load_preset(path: str | Path) -> BasePreset:
    from forge_advisor.presets.registry import get_preset

    path = Path(path)
    fmt = _format(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ForgeError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        if fmt == "json":
            doc: Any = json.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except Exception as exc:
        raise ForgeError(f"{path}: malformed {fmt.upper()}: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("preset"), str):
        raise ForgeError(f"{path}: expected a 'preset' name with 'config' (save_preset) or 'overrides' (an exported plan)")
    fields = doc.get("config", doc.get("overrides", {}))
    if not isinstance(fields, dict):
        raise ForgeError(f"{path}: 'config'/'overrides' must be a mapping of preset fields, got {type(fields).__name__}")
    return get_preset(doc["preset"], **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
