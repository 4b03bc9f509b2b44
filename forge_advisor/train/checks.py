"""Pre-flight checks: everything that can be wrong with the inputs, found before any model
weight is read and before anything is written.

Torch-free: the model is judged from its ``config.json`` through :mod:`forge_advisor.shapes`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forge_advisor.errors import ForgeError, did_you_mean
from forge_advisor.presets.base import BasePreset
from forge_advisor.shapes.model import ModelShape
from forge_advisor.train.saving import last_checkpoint

__all__ = ["ModelInfo", "check_hardware", "check_model", "check_lora_rank", "check_output_dir", "last_checkpoint"]


@dataclass(frozen=True)
class ModelInfo:
    name: str  # what from_pretrained gets: a local folder or a Hub id
    shape: ModelShape
    config: dict[str, Any]
    local: bool


def check_model(model: str) -> ModelInfo:
    """A local folder needs a config.json (and weights); a Hub/catalog id is read offline first,
    and its weights must be in the local Hugging Face cache or downloadable now."""
    from forge_advisor.shapes import load_config, shape_from_config

    if model is None or not str(model).strip():
        raise ForgeError("--model is missing: give a model folder or a Hub id (or use --demo)")
    if len(str(model)) > 1024 or any(len(part.encode()) > 255 for part in str(model).split("/")):
        raise ForgeError(f"--model of {len(str(model))} characters is not a folder or a Hub id "
                         "(names are at most 255 bytes per path part)")
    path = Path(model).expanduser()
    if path.is_file():
        raise ForgeError(f"{path}: training needs a model folder (config.json and weights), not a file")
    config, name, source = load_config(str(model))
    shape = shape_from_config(config, name, source)
    if path.is_dir():
        weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]
        if not weights:
            raise ForgeError(f"{path}: config.json but no weights (*.safetensors or *.bin)")
    else:
        check_hub_weights(str(model))
    return ModelInfo(str(path) if path.is_dir() else str(model), shape, config, path.is_dir())


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_weights(repo: str, timeout: float = 5.0) -> None:
    """Training reads the weights, not only the config the advisor needs: they must be in the
    local cache, or the Hub must answer now (one short request, no retries) and, for a gated
    model, a login must be present. Each failure is one line saying what to do."""
    need = ("training needs the model's weights: download them first "
            f"(huggingface-cli download {repo}) or pass a local model folder")
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        raise ForgeError(f"{repo}: {need}") from None
    if any(isinstance(try_to_load_from_cache(repo, f), str) for f in _WEIGHT_FILES):
        return
    if _offline():
        raise ForgeError(f"{repo}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {need}")
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        info = HfApi().model_info(repo, timeout=timeout)
    except GatedRepoError:
        info = None
    except RepositoryNotFoundError:
        raise ForgeError(f"{repo}: no such model on the Hugging Face Hub (or it is private: log in with "
                         "huggingface-cli login)") from None
    except Exception as exc:  # no network, DNS, proxy, timeout: the Hub did not answer
        raise ForgeError(f"{repo}: the Hugging Face Hub did not answer ({type(exc).__name__}); {need}") from None
    gated = info is None or bool(getattr(info, "gated", False))
    if gated and not get_token():
        raise ForgeError(f"{repo} is a gated model: accept its license on https://huggingface.co/{repo} and log in "
                         "(huggingface-cli login) before training, or pass a local model folder")


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
    check_target_parameters(preset, shape)
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


def check_target_parameters(preset: BasePreset, shape: ModelShape) -> None:
    """``lora_target_parameters`` must name fused expert tensors of the model (peft only warns
    "no parameter was matched" and trains without them): the core's rule (analysis.rs
    ``param_mask``), asked with a one-token plan so that nothing else is judged here."""
    if preset.lora_target_parameters is None:
        return
    from forge_advisor.estimate import estimate
    from forge_advisor.plan import Plan

    estimate(shape, Plan(lora_target_parameters=preset.lora_target_parameters, lora_dropout=0.0, max_length=1))


def check_output_dir(output_dir: str | Path | None, resume: bool, overwrite: bool = False) -> Path:
    """A fresh run needs an empty or new folder (nothing written earlier is overwritten unless
    ``overwrite``); ``--resume`` needs a complete ``checkpoint-N`` in it. The folder (or its
    nearest existing parent) must be writable. Nothing is created here."""
    if output_dir is None or not str(output_dir).strip():
        raise ForgeError("--output is missing: name a folder for checkpoints, the adapter and EMA weights")
    if resume and overwrite:
        raise ForgeError("--resume continues the run in --output and --overwrite replaces it: choose one")
    out = Path(output_dir).expanduser()
    if len(out.name.encode()) > 255:
        raise ForgeError(f"--output: folder name of {len(out.name.encode())} bytes is too long (at most 255)")
    if out.exists() and not out.is_dir():
        raise ForgeError(f"{out}: --output is a file, not a folder")
    _check_writable(out)
    if resume:
        if last_checkpoint(out) is None:
            raise ForgeError(f"{out}: --resume found no complete checkpoint-N folder to continue from")
    elif not overwrite and out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise ForgeError(f"{out}: folder is not empty; pass --resume to continue that run, --overwrite to replace it, "
                         "or choose a new --output")
    return out


def _check_writable(out: Path) -> None:
    import os

    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ForgeError(f"{out}: --output cannot be created: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ForgeError(f"{out}: --output is not writable (no write permission on {probe})")


def check_hardware(preset: BasePreset) -> None:
    """What this machine cannot run, said before torch loads: bf16/fp16 without a GPU that
    has them, FlashAttention-2 without the flash-attn package or a CUDA GPU."""
    import importlib.util

    from forge_advisor.presets.detect import detect_hardware

    hw = detect_hardware()
    if preset.bf16 and not hw.supports_bf16:
        where = "a CPU" if hw.device == "cpu" else hw.name
        raise ForgeError(f"bf16=True needs a GPU with bfloat16 (compute capability >= 8.0); this machine has {where}: "
                         "set --bf16 false (fp32), or --fp16 true on a GPU without bf16")
    if preset.fp16 and hw.device != "cuda":
        raise ForgeError(f"fp16=True needs a CUDA GPU; this machine has {hw.name}: set --fp16 false")
    if preset.attn_implementation == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            raise ForgeError("attn_implementation='flash_attention_2' needs the flash-attn package "
                             "(pip install flash-attn); or use --attn-implementation sdpa")
        if hw.device != "cuda":
            raise ForgeError("attn_implementation='flash_attention_2' needs a CUDA GPU; use --attn-implementation sdpa")
