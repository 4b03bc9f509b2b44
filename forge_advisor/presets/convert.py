"""Preset -> library objects: TrainingArguments, LoraConfig, BitsAndBytesConfig, DPOConfig.

Only :func:`args_dict` is torch-free; the others import their library inside the function.
Field names follow the installed versions: transformers 5 removed ``warmup_ratio``
(``warmup_steps`` < 1 is now a fraction), renamed ``evaluation_strategy`` ->
``eval_strategy``, ``no_cuda`` -> ``use_cpu``, and ``gradient_checkpointing`` ->
``activation_checkpointing`` (old name a deprecated alias until v6); trl 1.x DPOConfig
dropped ``max_prompt_length`` (the runner truncates prompts itself).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from forge_advisor.errors import ForgeError, did_you_mean

if TYPE_CHECKING:
    from forge_advisor.presets.base import BasePreset

__all__ = ["args_dict", "adapt_fields", "training_args", "dpo_config", "lora_config", "bnb_config", "print_info"]

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]  # Llama spelling, when no model is given

# old name -> new name; the new name wins wherever the installed class has it
_RENAMED = {
    "evaluation_strategy": "eval_strategy",
    "no_cuda": "use_cpu",
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}


def args_dict(preset: BasePreset, output_dir: str, **extra: Any) -> dict[str, Any]:
    """Canonical TrainingArguments names (as documented through transformers 4.x), plain values."""
    precision = preset.resolved_precision()
    d: dict[str, Any] = {
        "output_dir": str(output_dir),
        "learning_rate": preset.learning_rate,
        "num_train_epochs": preset.num_train_epochs,
        "max_steps": preset.max_steps,
        "per_device_train_batch_size": preset.per_device_train_batch_size,
        "gradient_accumulation_steps": preset.gradient_accumulation_steps,
        "warmup_ratio": preset.warmup_ratio,
        "weight_decay": preset.weight_decay,
        "lr_scheduler_type": preset.lr_scheduler_type,
        "max_grad_norm": preset.max_grad_norm,
        "optim": preset.optim,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "gradient_checkpointing": preset.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if preset.gradient_checkpointing else None,
        "seed": preset.seed,
        "use_liger_kernel": preset.use_liger_kernel,  # Liger's fused CE, RMSNorm, SwiGLU, RoPE (levers.rs)
        "logging_steps": preset.logging_steps,
        "save_strategy": "steps",
        "save_steps": preset.save_steps,
        "save_total_limit": preset.save_total_limit,
        # a NaN loss must reach the monitor, not be replaced by the running mean
        "logging_nan_inf_filter": False,
        "report_to": "none",
    }
    d.update(extra)
    return d


def adapt_fields(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Rename/convert canonical names to what dataclass ``cls`` (installed version) accepts."""
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _RENAMED and _RENAMED[key] in names:
            out[_RENAMED[key]] = value
        elif key in names:
            out[key] = value
        elif key == "warmup_ratio":
            # transformers >= 5: warmup_steps accepts a float; values < 1 are a fraction of the steps
            if value and not kwargs.get("warmup_steps"):
                out["warmup_steps"] = float(value)
        elif key == "max_prompt_length":
            continue  # trl >= 1.0 DPOConfig: the runner truncates prompts (forge_advisor.train.data)
        else:
            raise ForgeError(f"{cls.__name__} (installed version) has no field '{key}'{did_you_mean(key, names)}")
    if out.get("activation_checkpointing_kwargs", 0) is None:
        out.pop("activation_checkpointing_kwargs")
    if out.get("gradient_checkpointing_kwargs", 0) is None:
        out.pop("gradient_checkpointing_kwargs")
    return out


def training_args(preset: BasePreset, output_dir: str, **extra: Any) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(**adapt_fields(TrainingArguments, args_dict(preset, output_dir, **extra)))


def dpo_config(preset: BasePreset, output_dir: str, **extra: Any) -> Any:
    if preset.trainer != "dpo":
        raise ForgeError(f"get_dpo_config() on preset '{preset.name}' with trainer={preset.trainer!r}: use trainer='dpo'")
    from trl import DPOConfig

    d = args_dict(preset, output_dir)
    d.update(beta=preset.beta, max_length=preset.max_length, max_prompt_length=preset.max_prompt_length)
    d.update(extra)
    return DPOConfig(**adapt_fields(DPOConfig, d))


def target_modules_for(preset: BasePreset, model: Any = None) -> list[str] | str:
    """The LoRA targets: explicit names, ``"all-linear"``, or the model's q/k/v/o spelling."""
    t = preset.lora_target_modules
    if t == "all-linear":
        shape = _shape_of(model)
        if shape is not None and shape.peft_excluded_names():
            # peft's "all-linear" would include out_proj, which it then refuses on Mamba-based
            # models (tuners_utils._check_lora_target_modules_mamba): name the others instead
            return shape.linear_names()
        return "all-linear"
    if t is not None:
        return list(t)
    shape = _shape_of(model)
    if shape is None:
        return list(DEFAULT_TARGETS)
    names = shape.attention_linear_names()
    if not names:
        raise ForgeError(f"{shape.name}: no attention projections found for LoRA; set lora_target_modules")
    return names


def _shape_of(model: Any) -> Any:
    from forge_advisor.shapes import ModelShape, load_shape, shape_from_config

    if model is None:
        return None
    if isinstance(model, ModelShape):
        return model
    if isinstance(model, str):
        return load_shape(model)
    if isinstance(model, dict):
        return shape_from_config(model, model.get("_name_or_path") or model.get("model_type", "model"))
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        d = config.to_dict()
        return shape_from_config(d, d.get("_name_or_path") or d.get("model_type", "model"))
    raise ForgeError(f"cannot read a model shape from {type(model).__name__}: pass an id, a config or a model")


def lora_config(preset: BasePreset, model: Any = None) -> Any:
    if not preset.uses_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=preset.lora_r,
        lora_alpha=preset.lora_alpha,
        lora_dropout=preset.lora_dropout,
        bias=preset.lora_bias,
        target_modules=target_modules_for(preset, model),
        target_parameters=target_parameters_for(preset, model),
        task_type="CAUSAL_LM",
    )


def target_parameters_for(preset: BasePreset, model: Any = None) -> list[str] | None:
    """peft's ``target_parameters``: explicit names, or for ``"experts"`` every fused expert
    tensor — a live model's 3-D parameters under an ``experts`` module, else the shape's
    (``ModelShape.fused_expert_names``), else transformers 5's spelling."""
    t = preset.lora_target_parameters
    if t is None:
        return None
    if t != "experts":
        return list(t)
    if hasattr(model, "named_parameters"):
        names: dict[str, None] = {}
        for full, param in model.named_parameters():
            module, _, leaf = full.rpartition(".")
            if param.dim() == 3 and module.rsplit(".", 1)[-1] == "experts":
                names.setdefault(f"experts.{leaf}", None)
        if not names:
            raise ForgeError("lora_target_parameters='experts': the model has no fused expert tensors")
        return list(names)
    shape = _shape_of(model)
    if shape is None:
        return ["experts.gate_up_proj", "experts.down_proj"]
    names_ = shape.fused_expert_names()
    if not names_:
        raise ForgeError(f"lora_target_parameters='experts': {shape.name} has no fused expert tensors")
    return names_


def compute_dtype_name(preset: BasePreset) -> str:
    """bf16 compute as asked, except on GPUs without bf16 (compute capability < 8.0): float16."""
    from forge_advisor.presets.detect import detect_hardware

    hw = detect_hardware()
    if preset.bnb_4bit_compute_dtype == "bfloat16" and hw.device == "cuda" and not hw.supports_bf16:
        return "float16"
    return preset.bnb_4bit_compute_dtype


def bnb_config(preset: BasePreset) -> Any:
    if not (preset.load_in_4bit or preset.load_in_8bit):
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if preset.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=preset.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=preset.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype_name(preset)),
        # FSDP-QLoRA / ZeRO-3 + QLoRA: the packed weights in a float dtype shard like any parameter
        bnb_4bit_quant_storage=getattr(torch, preset.bnb_4bit_quant_storage),
    )


def print_info(preset: BasePreset, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    con = console or Console(highlight=False)
    defaults = type(preset)()
    table = Table(title=f"preset '{preset.name}': {preset.description}")
    table.add_column("field")
    table.add_column("value")
    table.add_column("note")
    precision = preset.resolved_precision()
    for key, value in preset.to_dict().items():
        if not preset.uses_lora and key.startswith("lora_"):
            continue
        if not (preset.load_in_4bit or preset.load_in_8bit) and key.startswith("bnb_"):
            continue
        if preset.trainer != "dpo" and key in ("beta", "max_prompt_length"):
            continue
        note = "" if getattr(defaults, key) == getattr(preset, key) else "overridden"
        if key in ("bf16", "fp16") and value is None:
            value, note = precision == key, "auto-detected"
        elif key == "attn_implementation" and value is None:
            value, note = "sdpa", "auto: eager where the architecture lacks SDPA (gemma2)"
        elif key == "lora_target_modules" and value is None:
            value, note = "q/k/v/o", "the model's own attention projection names"
        table.add_row(key, str(value), note)
    con.print(table)
