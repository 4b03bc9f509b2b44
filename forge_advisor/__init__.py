"""forge-advisor: find the best way to fine-tune a language model on your GPU.

The advisor path (this module, shapes, estimates, search, probe) never imports torch,
transformers or textual; the training runtime lives in :mod:`forge_advisor.train`.
"""

from forge_advisor._native import __version__
from forge_advisor.errors import ForgeError
from forge_advisor.shapes import ModelShape, load_shape, shape_from_config

__all__ = ["ForgeError", "ModelShape", "__version__", "load_shape", "shape_from_config"]
