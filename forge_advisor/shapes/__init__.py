"""Model shapes: parse a Hugging Face config into an exact parameter inventory."""

from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture, supported_model_types
from forge_advisor.shapes.resolve import load_config, load_shape, shape_from_config

__all__ = [
    "LayerType",
    "Linear",
    "ModelShape",
    "Param",
    "load_config",
    "load_shape",
    "register_architecture",
    "shape_from_config",
    "supported_model_types",
]
