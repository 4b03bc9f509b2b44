"""Architecture registry: each family module registers the ``model_type``s it parses
(peft-style: the parts fill the registry, nothing here lists them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.hints import hints_for
from forge_advisor.shapes.model import ModelShape

__all__ = ["register_architecture", "supported_model_types", "build_shape", "Builder"]

Builder = Callable[[ConfigReader, str], ModelShape]
_BUILDERS: dict[str, Builder] = {}


def register_architecture(*model_types: str) -> Callable[[Builder], Builder]:
    """Register ``builder(config_reader, name) -> ModelShape`` for these model types."""

    def deco(builder: Builder) -> Builder:
        for mt in model_types:
            if mt in _BUILDERS:
                raise RuntimeError(f"model_type {mt!r} registered twice")
            _BUILDERS[mt] = builder
        return builder

    return deco


def _load_families() -> None:
    from forge_advisor.shapes import families  # noqa: F401  (registers on import)


def supported_model_types() -> list[str]:
    _load_families()
    return sorted(_BUILDERS)


def builder_for(model_type: str) -> Builder | None:
    _load_families()
    return _BUILDERS.get(model_type)


def build_shape(config: Mapping[str, Any], name: str, source: str | None = None) -> ModelShape:
    """Parse a config dict. Raises :class:`UnsupportedArchitecture` for unknown types."""
    reader = ConfigReader(config, source or name)
    model_type = reader.str("model_type", default="")
    if not model_type:
        raise ForgeError(f"{reader.source}: field 'model_type' is missing; is this a Hugging Face config.json?")
    builder = builder_for(model_type)
    if builder is None:
        raise UnsupportedArchitecture(model_type, reader.source, remote_code=bool(reader.data.get("auto_map")))
    shape = builder(reader, name)
    if not shape.hints:
        object.__setattr__(shape, "hints", hints_for(reader, model_type))
    return shape


class UnsupportedArchitecture(ForgeError):
    """A ``model_type`` without a torch-free parser; ``reason`` names the mechanism the
    parser does not model (forge_advisor/shapes/unsupported.py)."""

    def __init__(self, model_type: str, source: str, remote_code: bool = False) -> None:
        from forge_advisor.shapes.unsupported import reason_for

        self.model_type = model_type
        self.source = source
        self.reason = reason_for(model_type)
        self.remote_code = remote_code
        if remote_code:
            # config.json's auto_map points at modeling code shipped with the checkpoint
            # (trust_remote_code); only transformers' own classes are ever instantiated
            super().__init__(
                f"{source}: model_type '{model_type}' ships its own modeling code (auto_map), which forge-advisor "
                f"never executes; {self.reason} (with the [train] extra, a model_type that transformers itself "
                f"ships is counted with its built-in class on the meta device)"
            )
        else:
            super().__init__(
                f"{source}: model_type '{model_type}' is unsupported without torch: {self.reason} "
                f"(install the [train] extra to count it on the meta device)"
            )
