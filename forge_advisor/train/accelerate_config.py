"""Accelerate launcher configs for a plan's ``distributed`` field.

``ddp`` -> MULTI_GPU; ``fsdp`` -> FSDP v2 (full sharding, transformer-block auto-wrap,
sharded state dicts); ``zero2``/``zero3`` -> DeepSpeed ZeRO stage 2/3. ``offload_params`` ->
``fsdp_offload_params`` / ``offload_param_device: cpu``; ``offload_optimizer`` ->
``offload_optimizer_device: cpu``. QLoRA shards (FSDP-QLoRA, ZeRO-3 + QLoRA) when the plan
stores the 4-bit weights in a float dtype (``bnb_4bit_quant_storage``, peft's FSDP-QLoRA guide). Write the YAML and run
``accelerate launch --config_file accelerate.yaml -m forge_advisor.cli.main train …``.
Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forge_advisor.errors import ForgeError
from forge_advisor.plan import Plan

__all__ = ["accelerate_config", "accelerate_config_yaml", "write_accelerate_config"]

_MIXED = {"bf16": "bf16", "amp-bf16": "bf16", "fp16": "fp16", "amp-fp16": "fp16", "fp32": "no"}


def accelerate_config(plan: Plan, *, num_machines: int = 1, layer_cls: str | None = None) -> dict[str, Any]:
    """The ``accelerate config`` dict for ``plan`` (``plan.num_gpus`` processes per machine)."""
    if plan.distributed == "none":
        raise ForgeError("plan.distributed='none': a single process needs no accelerate config (use num_gpus > 1)")
    if plan.method == "lora_8bit" and plan.distributed in ("fsdp", "zero3"):
        raise ForgeError(
            f"distributed={plan.distributed!r} with method='lora_8bit': an int8 base cannot be sharded; "
            "use qlora with bnb_4bit_quant_storage=bfloat16, or ddp/zero2"
        )
    if plan.method == "qlora" and plan.distributed in ("fsdp", "zero3") and plan.bnb_4bit_quant_storage == "uint8":
        raise ForgeError(
            f"distributed={plan.distributed!r} with method='qlora' needs bnb_4bit_quant_storage="
            f"{'bfloat16' if plan.dtype == 'bf16' else 'float16'} (the compute dtype): uint8 4-bit weights cannot be sharded"
        )
    cfg: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "machine_rank": 0,
        "main_training_function": "main",
        "mixed_precision": _MIXED[plan.dtype],
        "num_machines": num_machines,
        "num_processes": plan.num_gpus * num_machines,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
        "downcast_bf16": "no",
    }
    if plan.distributed == "ddp":
        cfg["distributed_type"] = "MULTI_GPU"
    elif plan.distributed == "fsdp":
        cfg["distributed_type"] = "FSDP"
        cfg["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            **({"fsdp_transformer_layer_cls_to_wrap": layer_cls} if layer_cls else {}),
            "fsdp_reshard_after_forward": True,
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": plan.offload_params,
            "fsdp_activation_checkpointing": plan.gradient_checkpointing,
        }
    else:
        stage = 2 if plan.distributed == "zero2" else 3
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["deepspeed_config"] = {
            "zero_stage": stage,
            "gradient_accumulation_steps": plan.gradient_accumulation_steps,
            "gradient_clipping": 1.0,
            "offload_optimizer_device": "cpu" if plan.offload_optimizer else "none",
            "offload_param_device": "cpu" if plan.offload_params else "none",
            **({"zero3_init_flag": True, "zero3_save_16bit_model": True} if stage == 3 else {}),
        }
    return cfg


def accelerate_config_yaml(plan: Plan, **kwargs: Any) -> str:
    import yaml

    return yaml.safe_dump(accelerate_config(plan, **kwargs), sort_keys=False)


def write_accelerate_config(plan: Plan, path: str | Path, **kwargs: Any) -> Path:
    """Written whole (temp file + rename); an unwritable place is one clear error."""
    from forge_advisor.errors import ForgeError
    from forge_advisor.train.saving import atomic_write_text

    path = Path(path).expanduser()
    if path.is_dir():
        raise ForgeError(f"{path}: --write-accelerate-config names a folder; give a file path like accelerate.yaml")
    text = accelerate_config_yaml(plan, **kwargs)
    try:
        return atomic_write_text(path, text)
    except OSError as exc:
        raise ForgeError(f"{path}: cannot write the accelerate config ({exc.strerror or exc})") from None
