"""Pre-flight checks: everything that can be wrong with the inputs, found before any model
weight is read and before anything is written.

Torch-free: the model is judged from its ``config.json`` through :mod:`forge_advisor.shapes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forge_advisor.errors import ForgeError, did_you_mean
from forge_advisor.presets.base import BasePreset
from forge_advisor.shapes.model import ModelShape

__all__ = ["ModelInfo", "check_model", "check_lora_rank", "check_output_dir"]


@dataclass(frozen=True)
class ModelInfo:
    name: str  # what from_pretrained gets: a local folder or a Hub id
    shape: ModelShape
    config: dict[str, Any]
    local: bool


def check_model(model: str) -> ModelInfo:
    """A local folder needs a config.json (and weights); a Hub/catalog id is read offline first."""
    from forge_advisor.shapes import load_config, shape_from_config

    if model is None or not str(model).strip():
        raise ForgeError("--model is missing: give a model folder or a Hub id (or use --demo)")
    path = Path(model).expanduser()
    if path.is_file():
        raise ForgeError(f"{path}: training needs a model folder (config.json and weights), not a file")
    config, name, source = load_config(str(model))
    shape = shape_from_config(config, name, source)
    if path.is_dir():
        weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]
        if not weights:
            raise ForgeError(f"{path}: config.json but no weights (*.safetensors or *.bin)")
    return ModelInfo(str(path) if path.is_dir() else str(model), shape, config, path.is_dir())


def check_lora_rank(preset: BasePreset, shape: ModelShape) -> list[str] | str:
    """The resolved LoRA targets; each must exist in the model and have min(in, out) >= lora_r."""
    from forge_advisor.presets.convert import target_modules_for

    targets = target_modules_for(preset, shape)
    available = shape.linear_names()
    if targets != "all-linear":
        for t in targets:
            if t not in available:
                raise ForgeError(
                    f"lora_target_modules: '{t}' is not a linear module of {shape.name}{did_you_mean(t, available)}; "
                    f"available: {', '.join(available)}"
                )
    wanted = set(available) if targets == "all-linear" else set(targets)
    for lt in shape.layer_types:
        for lin in lt.linears:
            if lin.lora_targetable and lin.leaf in wanted:
                # the adapter B·A has rank <= min(in, out); e.g. k_proj 4096 -> 1024 allows r <= 1024
                limit = min(lin.in_features, lin.out_features)
                if preset.lora_r > limit:
                    raise ForgeError(
                        f"lora_r={preset.lora_r} is larger than {lin.name}'s dimension min({lin.in_features}, "
                        f"{lin.out_features}) = {limit}: allowed [1, {limit}]"
                    )
    return targets


def check_output_dir(output_dir: str | Path | None, resume: bool) -> Path:
    """A fresh run needs an empty or new folder (nothing written earlier is overwritten);
    ``--resume`` needs a ``checkpoint-N`` in it."""
    if output_dir is None or not str(output_dir).strip():
        raise ForgeError("--output is missing: name a folder for checkpoints, the adapter and EMA weights")
    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ForgeError(f"{out}: --output is a file, not a folder")
    if resume:
        if last_checkpoint(out) is None:
            raise ForgeError(f"{out}: --resume found no checkpoint-N folder to continue from")
    elif out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise ForgeError(f"{out}: folder is not empty; pass --resume to continue that run or choose a new --output")
    return out


def last_checkpoint(out: Path) -> Path | None:
    if not out.is_dir():
        return None
    steps = []
    for p in out.iterdir():
        if p.is_dir() and p.name.startswith("checkpoint-") and p.name[11:].isdigit() and (p / "trainer_state.json").is_file():
            steps.append((int(p.name[11:]), p))
    return max(steps)[1] if steps else None
