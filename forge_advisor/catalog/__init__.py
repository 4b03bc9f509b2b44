"""The embedded catalogs (models.json, gpus.json), loaded lazily and once."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["load_catalog"]


@lru_cache(maxsize=None)
def load_catalog(name: str) -> Any:
    """Parsed contents of ``forge_advisor/catalog/<name>.json``."""
    text = resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)
