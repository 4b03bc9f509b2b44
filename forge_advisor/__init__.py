"""forge-advisor: find the best way to fine-tune a language model on your GPU.

The package's face — ``estimate``, ``recommend``, ``fit``, ``auto_preset``, ``get_preset``,
``load_shape`` — imports none of torch, transformers or textual; the advisor and the presets
load on first use. The training runtime lives in :mod:`forge_advisor.train`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from forge_advisor.core import VERSION as __version__
from forge_advisor.errors import ForgeError

# eager, and after its submodule is loaded: `forge_advisor.estimate` is the function, never
# the module the import system would otherwise bind to that name
from forge_advisor.estimate import estimate  # noqa: E402
from forge_advisor.plan import Plan  # noqa: E402
from forge_advisor.shapes import ModelShape, load_shape, shape_from_config  # noqa: E402

if TYPE_CHECKING:
    from forge_advisor.advisor import auto_preset, fit, recommend
    from forge_advisor.presets import get_preset, list_presets, register_preset

__all__ = [
    "ForgeError",
    "ModelShape",
    "Plan",
    "__version__",
    "auto_preset",
    "estimate",
    "fit",
    "get_preset",
    "list_presets",
    "load_shape",
    "recommend",
    "register_preset",
    "shape_from_config",
]

# name -> module that defines it, imported on first access (PEP 562)
_LAZY = {
    "recommend": "forge_advisor.advisor",
    "fit": "forge_advisor.advisor",
    "auto_preset": "forge_advisor.advisor",
    "get_preset": "forge_advisor.presets",
    "list_presets": "forge_advisor.presets",
    "register_preset": "forge_advisor.presets",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'forge_advisor' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value
