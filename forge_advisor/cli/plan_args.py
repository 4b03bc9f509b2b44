"""The plan's flags, defined once for every command (estimate, recommend, fit, tui, train).

Each Plan field is a flag under its Hugging Face name (``--per-device-train-batch-size``,
``--max-length``, ``--gradient-accumulation-steps``, ``--optim``,
``--attn-implementation``…) and answers to the same short aliases everywhere
(``--batch-size``, ``--seq-len``, ``--grad-accum``, ``--optimizer``, ``--attn``), so a command
printed by one command runs in every other where it makes sense. Choices come from the plan's
enums (the core's lists), never from a hand-written copy.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from forge_advisor.levers import LEVER_FIELDS
from forge_advisor.plan import ATTENTION, DISTRIBUTED, DTYPES, OPTIMIZERS, QUANT_STORAGES

__all__ = [
    "ALIASES", "BATCHING_FIELDS", "NEGATABLE", "PLAN_FLAGS", "PlanFlag", "add_plan_arguments", "add_preset_arguments", "flag_value", "parse_bool",
    "parser_for", "plan_overrides", "preset_field_overrides",
]


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _opt_bool(text: str) -> bool | None:
    return None if text.strip().lower() in ("auto", "none", "null") else parse_bool(text)


def _opt_int(text: str) -> int | None:
    return None if text.strip().lower() in ("auto", "none", "null") else int(text)


def _opt_str(text: str) -> str | None:
    return None if text.strip().lower() in ("auto", "none", "null") else text


def parser_for(type_text: str) -> Any:
    """The argparse type of a preset field from its annotation (a string here: the presets
    use ``from __future__ import annotations``)."""
    return {"int": int, "float": float, "bool": parse_bool, "bool | None": _opt_bool, "int | None": _opt_int,
            "str": str}.get(type_text, _opt_str)


def _targets(text: str) -> str | tuple[str, ...]:
    if text.strip() == "all-linear":
        return "all-linear"
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _param_targets(text: str) -> str | tuple[str, ...]:
    if text.strip() == "experts":
        return "experts"
    return tuple(v.strip() for v in text.split(",") if v.strip())


@dataclass(frozen=True)
class PlanFlag:
    field: str  # the Plan field (Hugging Face name)
    aliases: tuple[str, ...]  # short flags that mean the same
    type: Any
    metavar: str | None
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def flags(self) -> list[str]:
        return [self.flag, *self.aliases]


PLAN_FLAGS: tuple[PlanFlag, ...] = (
    PlanFlag("lora_r", (), int, "R", "LoRA rank"),
    PlanFlag("lora_alpha", (), int, "A", "LoRA alpha"),
    PlanFlag("lora_dropout", (), float, "P", "LoRA dropout probability"),
    PlanFlag("lora_target_modules", (), _targets, "a,b|all-linear", "modules to adapt (default: attention q/k/v/o)"),
    PlanFlag("lora_target_parameters", (), _param_targets, "experts|a,b",
             "peft target_parameters: fused MoE expert tensors to adapt ('experts' = all; needs --lora-dropout 0)"),
    PlanFlag("per_device_train_batch_size", ("--batch-size",), int, "N", "sequences per device per micro-batch"),
    PlanFlag("gradient_accumulation_steps", ("--grad-accum",), int, "N", "micro-batches per optimizer step"),
    PlanFlag("max_length", ("--seq-len",), int, "T", "sequence length in tokens"),
    PlanFlag("freeze_ratio", (), float, "F", "freeze embeddings and this fraction of the lowest layers"),
    PlanFlag("gradient_checkpointing", (), parse_bool, "BOOL",
             "recompute activations in backward (bare flag = true; --no-gradient-checkpointing = false)"),
    PlanFlag("attn_implementation", ("--attn",), str, None, "attention implementation", ATTENTION),
    PlanFlag("optim", ("--optimizer",), str, None, "optimizer (TrainingArguments.optim)", OPTIMIZERS),
    PlanFlag("dtype", (), str, None, "bf16/fp16 pure half, amp-* fp32 master + autocast, fp32", DTYPES),
    PlanFlag("num_gpus", (), int, "N", "number of GPUs"),
    PlanFlag("distributed", (), str, None, "multi-GPU strategy", DISTRIBUTED),
    # the memory levers (forge_advisor/levers.py), under their HF / trl / DeepSpeed names
    PlanFlag("bnb_4bit_quant_storage", (), str, None,
             "dtype the packed 4-bit weights are stored in; bfloat16/float16 lets fsdp/zero3 shard a QLoRA base",
             QUANT_STORAGES),
    PlanFlag("use_liger_kernel", (), parse_bool, "BOOL", "Liger-Kernel's fused linear cross-entropy, RMSNorm, SwiGLU, RoPE"),
    PlanFlag("activation_offloading", (), parse_bool, "BOOL", "trl: move saved activations to host memory in forward"),
    PlanFlag("offload_optimizer", (), parse_bool, "BOOL", "DeepSpeed zero2/zero3: optimizer states on the CPU"),
    PlanFlag("offload_params", (), parse_bool, "BOOL", "fsdp/zero3: parameter shards in host memory"),
    # vision-language models (rust/src/vision.rs); a text-only model refuses them
    PlanFlag("max_pixels", (), int, "PX",
             "vision-language models: the largest image in pixels after the processor's resize "
             "(Qwen2-VL max_pixels; default: the processor's; fixed-size processors ignore it)"),
    PlanFlag("images_per_sample", (), int, "N", "vision-language models: images per training sample"),
    PlanFlag("freeze_vision_tower", (), parse_bool, "BOOL",
             "vision-language models: keep the vision tower frozen (bare flag = true; --no-freeze-vision-tower = false)"),
    # videos (Qwen2-VL, Qwen2.5-VL, Qwen3-VL; rust/src/video.rs); other models refuse them
    PlanFlag("videos_per_sample", (), int, "N", "videos per training sample (Qwen2-VL, Qwen2.5-VL, Qwen3-VL)"),
    PlanFlag("num_frames", (), int, "N", "frames per video after sampling (the video processor's num_frames)"),
    PlanFlag("video_max_pixels", (), int, "PX",
             "the video processor's max_pixels: per frame (Qwen2-VL, Qwen2.5-VL) or per video (Qwen3-VL); "
             "default: the processor's"),
)

# bool fields whose flag has a `--no-` twin meaning false (the rest: `--flag false`)
NEGATABLE = ("gradient_checkpointing", "freeze_vision_tower")

# The batching mode (the plan's `batching`) is set with the preset's trl/transformers fields,
# the vocabulary `train` uses: --padding longest|max_length, --packing, --padding-free
# (forge_advisor/dataplan/batching.py maps them to the plan once).
BATCHING_FIELDS = ("padding", "packing", "padding_free")

# Plan field -> its short aliases (train adds them to its preset-field flags)
ALIASES: dict[str, tuple[str, ...]] = {f.field: f.aliases for f in PLAN_FLAGS if f.aliases}


def add_plan_arguments(p: argparse.ArgumentParser | Any, fields: Iterable[str] | None = None, *, title: str | None = None) -> None:
    """Add the plan's flags (all, or those of ``fields``) to ``p``; each stores into
    ``args.<field>`` (None when not given)."""
    wanted = None if fields is None else set(fields)
    g = p.add_argument_group(title) if title else p
    for f in PLAN_FLAGS:
        if wanted is not None and f.field not in wanted:
            continue
        if f.field in NEGATABLE:
            g.add_argument(f.flag, dest=f.field, nargs="?", const=True, default=None, type=parse_bool,
                           metavar=f.metavar, help=f.help)
            g.add_argument("--no-" + f.flag[2:], dest=f.field, action="store_false", help=argparse.SUPPRESS)
            continue
        if f.type is parse_bool:  # a bare lever flag means true: --use-liger-kernel
            g.add_argument(f.flag, dest=f.field, nargs="?", const=True, default=None, type=parse_bool,
                           metavar=f.metavar, help=f.help)
            continue
        g.add_argument(*f.flags, dest=f.field, type=f.type, metavar=f.metavar, choices=f.choices, default=None,
                       help=f.help + (f" (also {', '.join(f.aliases)})" if f.aliases else ""))
    if wanted is None or "batching" in wanted:
        _add_batching_arguments(g)


def _add_batching_arguments(g: Any) -> None:
    from forge_advisor.presets.base import PADDING

    g.add_argument("--padding", dest="padding", choices=PADDING, default=None,
                   help="pad each batch to its longest record (default) or to --max-length")
    g.add_argument("--packing", dest="packing", nargs="?", const=True, default=None, type=parse_bool, metavar="BOOL",
                   help="trl packing: records packed into rows of --max-length, flattened per micro-batch")
    g.add_argument("--padding-free", dest="padding_free", nargs="?", const=True, default=None, type=parse_bool,
                   metavar="BOOL", help="records of a micro-batch flattened into one row, no padding")


def add_preset_arguments(p: argparse.ArgumentParser | Any, *, skip: Iterable[str] = (), title: str | None = None) -> None:
    """Every preset field as a flag under its Hugging Face name (``--learning-rate``,
    ``--per-device-train-batch-size``…) with the plan's short aliases, storing into
    ``args.ov_<field>``; a bare boolean flag means true, ``--no-gradient-checkpointing`` false."""
    import dataclasses

    from forge_advisor.presets.base import BasePreset

    skipped = set(skip)
    g = p.add_argument_group(title) if title else p
    for f in dataclasses.fields(BasePreset):
        if f.name in skipped:
            continue
        kind = str(f.type)
        bare = {"nargs": "?", "const": True} if kind == "bool" else {}
        g.add_argument(f"--{f.name.replace('_', '-')}", *ALIASES.get(f.name, ()), dest=f"ov_{f.name}", type=parser_for(kind),
                       **bare, metavar=f.name.upper() if len(f.name) < 14 else "V",
                       help=argparse.SUPPRESS if f.name.startswith("bnb_") and f.name not in LEVER_FIELDS else None)
        if f.name in NEGATABLE:
            g.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f"ov_{f.name}", action="store_false",
                           help=argparse.SUPPRESS)


def preset_field_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The preset fields given as flags (``add_preset_arguments``)."""
    return {k[3:]: v for k, v in vars(args).items() if k.startswith("ov_") and v is not None}


def plan_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The Plan fields given on the command line, by Hugging Face name (the batching flags
    as the plan's ``batching``, when they pin a mode)."""
    from forge_advisor.dataplan.batching import mode_from_flags

    out = {f.field: getattr(args, f.field) for f in PLAN_FLAGS if getattr(args, f.field, None) is not None}
    mode = mode_from_flags(*(getattr(args, k, None) for k in BATCHING_FIELDS))
    if mode is not None:
        out["batching"] = mode
    return out


def flag_value(value: Any) -> str:
    """How a plan value is written on the command line (the inverse of the flags' types)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
