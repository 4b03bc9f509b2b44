"""The preset registry: ``register_preset``, ``get_preset``, ``list_presets``."""

from __future__ import annotations

from typing import Any, TypeVar

from forge_advisor.errors import ForgeError, did_you_mean
from forge_advisor.presets.base import BasePreset, check_override_names

__all__ = ["register_preset", "get_preset", "get_preset_class", "list_presets"]

_REGISTRY: dict[str, type[BasePreset]] = {}

P = TypeVar("P", bound=type[BasePreset])


def register_preset(cls: P, *, replace: bool = False) -> P:
    """Register a :class:`BasePreset` subclass under ``cls.name`` (usable as a decorator)."""
    if not isinstance(cls, type) or not issubclass(cls, BasePreset):
        raise ForgeError(f"register_preset({cls!r}): expected a subclass of BasePreset")
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name or name == BasePreset.name:
        raise ForgeError(f"{cls.__name__}: set a class attribute name = '...' before registering")
    if name in _REGISTRY and _REGISTRY[name] is not cls and not replace:
        raise ForgeError(f"preset '{name}' is already registered by {_REGISTRY[name].__name__} (pass replace=True)")
    _REGISTRY[name] = cls
    return cls


def list_presets() -> list[str]:
    """Registered preset names, built-ins first in registration order."""
    return list(_REGISTRY)


def get_preset_class(name: str) -> type[BasePreset]:
    if name == "auto":
        raise ForgeError(
            "'auto' is not a registered preset: it asks the advisor for the best plan for a model and GPU "
            f"(train --preset auto, or forge_advisor.auto_preset(model, gpu)); registered: {', '.join(_REGISTRY)}"
        )
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ForgeError(
            f"unknown preset '{name}'{did_you_mean(name, _REGISTRY)}: available presets are {', '.join(_REGISTRY)}"
        ) from None


def get_preset(name: str, **overrides: Any) -> BasePreset:
    """An instance of preset ``name`` with HF-named ``overrides`` applied and validated.

    >>> get_preset("lora", lora_r=8).lora_r
    8
    >>> get_preset("lora", lora_r=128).lora_alpha  # α/r kept: 32/16 = 256/128
    256
    """
    from forge_advisor.presets.planning import with_derived

    cls = get_preset_class(name)
    check_override_names(cls, overrides)
    # a new lora_r alone keeps the preset's α/r; a new method/trainer its learning rate
    # (presets/planning.py with_derived)
    return cls(**with_derived(cls, overrides))
