"""Training presets: named, validated recipes with Hugging Face field names.

>>> from forge_advisor.presets import get_preset
>>> p = get_preset("qlora", lora_r=8, learning_rate=1e-4)
>>> p.get_args_dict()["learning_rate"]
0.0001

Light by design: importing this package imports neither torch nor transformers.
"""

from forge_advisor.presets.base import BasePreset
from forge_advisor.presets.registry import get_preset, get_preset_class, list_presets, register_preset

# built-ins register themselves on import, in this order
from forge_advisor.presets import sft, lora, qlora, dpo, memory_efficient  # noqa: E402,F401,I001
from forge_advisor.presets.detect import detect_hardware  # noqa: E402
from forge_advisor.presets.io import load_preset, save_preset  # noqa: E402
from forge_advisor.presets.planning import preset_from_plan as from_plan  # noqa: E402

__all__ = [
    "BasePreset",
    "detect_hardware",
    "from_plan",
    "get_preset",
    "get_preset_class",
    "list_presets",
    "load_preset",
    "register_preset",
    "save_preset",
]
