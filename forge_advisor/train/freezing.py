"""Freeze the bottom of a model: LP-LoRA style layer freezing for any architecture.

The decoder blocks are found generically: the ``nn.ModuleList`` holding the most
parameters (``model.layers``, ``transformer.h``, ``gpt_neox.layers``…, through PEFT
wrappers). The input embeddings come from ``get_input_embeddings()``; a tied LM head is
the same tensor, so it freezes with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch.nn as nn

from forge_advisor.errors import ForgeError

__all__ = ["FreezeReport", "find_layer_list", "setup_lp_lora_style", "count_parameters"]


@dataclass(frozen=True)
class FreezeReport:
    num_layers: int
    frozen_layers: tuple[int, ...]
    embeddings_frozen: bool
    head_tied: bool
    trainable_parameters: int
    total_parameters: int
    layer_list_name: str = field(default="")

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_parameters / self.total_parameters if self.total_parameters else 0.0


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` over unique parameter tensors (tied weights counted once)."""
    trainable = total = 0
    for p in model.parameters():  # parameters() already de-duplicates shared tensors
        n = p.numel()
        if type(p).__name__ == "Params4bit":
            n *= 2  # bitsandbytes Params4bit packs two 4-bit values per uint8 element
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's block list: the ``nn.ModuleList`` with the most parameters (a
    vision-language model's: its language model's)."""
    best: tuple[int, int, str, nn.ModuleList] | None = None
    from forge_advisor.shapes.meta import language_model_of

    for name, module in language_model_of(model).named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        numel = sum(p.numel() for p in module.parameters())
        key = (numel, len(module))
        if numel and (best is None or key > best[:2]):
            best = (numel, len(module), name, module)
    if best is None:
        raise ForgeError(f"{type(model).__name__}: no nn.ModuleList of layers found to freeze")
    return best[2], best[3]


def frozen_layer_count(freeze_ratio: float, num_layers: int) -> int:
    """floor(freeze_ratio × num_layers), e.g. floor(0.5 × 3) = 1; rounded to 9 places first so
    that 0.29 × 100 = 28.999999999999996 counts as 29."""
    return math.floor(round(freeze_ratio * num_layers, 9))


def setup_lp_lora_style(model: nn.Module, freeze_ratio: float) -> FreezeReport:
    """Freeze the input embeddings (and a tied head) and the lowest
    floor(freeze_ratio × num_layers) blocks, LoRA adapters inside them included.

    Returns what was frozen and the trainable/total counts afterwards.
    """
    if isinstance(freeze_ratio, bool) or not isinstance(freeze_ratio, (int, float)) or not 0.0 <= freeze_ratio < 1.0:
        raise ForgeError(f"freeze_ratio={freeze_ratio!r} is out of range: allowed [0, 1)")
    name, layers = find_layer_list(model)
    n_frozen = frozen_layer_count(freeze_ratio, len(layers))
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None:
        for p in emb.parameters():
            p.requires_grad_(False)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = bool(
        emb is not None and head is not None and getattr(head, "weight", None) is not None
        and head.weight is getattr(emb, "weight", None)
    )
    for layer in list(layers)[:n_frozen]:
        for p in layer.parameters():
            p.requires_grad_(False)
    trainable, total = count_parameters(model)
    return FreezeReport(
        num_layers=len(layers),
        frozen_layers=tuple(range(n_frozen)),
        embeddings_frozen=emb is not None,
        head_tied=tied,
        trainable_parameters=trainable,
        total_parameters=total,
        layer_list_name=name,
    )
