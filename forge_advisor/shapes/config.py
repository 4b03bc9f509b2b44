"""Typed, validated reads from a Hugging Face ``config.json`` dict.

Every failure is a :class:`ForgeError` naming the file, the field and the bad value.
Upper bounds keep absurd inputs from allocating absurd Python structures before the
Rust core's overflow checks see them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from forge_advisor.errors import ForgeError

__all__ = ["ConfigReader", "MAX_LAYERS", "MAX_DIM"]

MAX_LAYERS = 10_000  # deepest published transformer has < 200 layers
MAX_DIM = 1 << 40  # any single size past 1.1e12 is a typo
_MISSING = object()


class ConfigReader:
    """Read fields of one config dict; ``source`` names it in errors."""

    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        if not isinstance(data, Mapping):
            raise ForgeError(f"{source}: expected a JSON object, got {type(data).__name__}")
        self.data = data
        self.source = source

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def _first(self, names: tuple[str, ...]) -> tuple[str, Any]:
        for name in names:
            value = self.data.get(name)
            if value is not None:
                return name, value
        return names[0], _MISSING

    def int(self, *names: str, default: Any = _MISSING, minimum: int = 1, maximum: int = MAX_DIM) -> int:
        name, value = self._first(names)
        if value is _MISSING:
            if default is _MISSING:
                alias = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
                raise ForgeError(f"{self.source}: field '{name}'{alias} is missing")
            return int(default)
        # bools are ints in Python; NaN and ±Infinity parse from JSON as floats
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))
            or value != int(value)
        ):
            raise ForgeError(f"{self.source}: field '{name}'={value!r} must be an integer")
        ivalue = int(value)
        if ivalue < minimum:
            raise ForgeError(f"{self.source}: field '{name}'={ivalue} must be at least {minimum}")
        if ivalue > maximum:
            raise ForgeError(f"{self.source}: field '{name}'={ivalue} is absurdly large (at most {maximum})")
        return ivalue

    def layers(self, *names: str, default: Any = _MISSING) -> int:
        return self.int(*names, default=default, minimum=1, maximum=MAX_LAYERS)

    def bool(self, *names: str, default: bool) -> bool:
        name, value = self._first(names)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise ForgeError(f"{self.source}: field '{name}'={value!r} must be true or false")
        return value

    def str(self, *names: str, default: Any = _MISSING) -> str:
        name, value = self._first(names)
        if value is _MISSING:
            if default is _MISSING:
                raise ForgeError(f"{self.source}: field '{name}' is missing")
            return str(default)
        if not isinstance(value, str):
            raise ForgeError(f"{self.source}: field '{name}'={value!r} must be a string")
        return value

    def int_list(self, name: str) -> list[int]:
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ForgeError(f"{self.source}: field '{name}'={value!r} must be a list of integers")
        return list(value)

    def sub(self, name: str) -> ConfigReader:
        value = self.data.get(name)
        if not isinstance(value, Mapping):
            raise ForgeError(f"{self.source}: field '{name}' must be an object")
        return ConfigReader(value, f"{self.source} [{name}]")
