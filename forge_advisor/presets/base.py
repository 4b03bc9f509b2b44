"""`BasePreset`: a training recipe with Hugging Face field names, validated on creation.

A preset is a flat dataclass: TrainingArguments names (``learning_rate``,
``per_device_train_batch_size``…), peft's LoraConfig names with a ``lora_`` prefix
(``lora_r``, ``lora_alpha``…), BitsAndBytesConfig names (``load_in_4bit``,
``bnb_4bit_quant_type``…), trl's DPO names (``beta``, ``max_prompt_length``) and
forge-advisor's ``freeze_ratio``. ``None`` means "auto-detect" for ``bf16``/``fp16`` and
``attn_implementation`` and "the model's own q/k/v/o names" for ``lora_target_modules``.

This module imports neither torch nor transformers; conversions to library objects
(:mod:`forge_advisor.presets.convert`) import them lazily.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from forge_advisor.errors import ForgeError, did_you_mean
from forge_advisor.core import PLAN_FLOAT_RANGES, PLAN_INT_RANGES
from forge_advisor.plan import ATTENTION, DISTRIBUTED, METHODS, OPTIMIZERS, QUANT_STORAGES, TRAINERS

if TYPE_CHECKING:
    from forge_advisor.plan import Plan

__all__ = ["BasePreset", "LR_SCHEDULERS", "LORA_BIAS", "QUANT_TYPES", "COMPUTE_DTYPES"]

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
LORA_BIAS = ("none", "all", "lora_only")
QUANT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = ("bfloat16", "float16", "float32")
PADDING = ("longest", "max_length")


def _num(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> None:
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if not ok_type or not math.isfinite(value):
        raise ForgeError(f"{name}={value!r} must be a number in {interval}", field=name, value=repr(value), allowed=interval)
    below = value <= lo if lo_open else value < lo
    above = value >= hi if hi_open else value > hi
    if below or above:
        raise ForgeError(f"{name}={value} is out of range: allowed {interval}", field=name, value=str(value), allowed=interval)


def _int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ForgeError(f"{name}={value!r} must be an integer in [{lo}, {hi}]", field=name, value=repr(value), allowed=f"[{lo}, {hi}]")
    if not lo <= value <= hi:
        raise ForgeError(f"{name}={value} is out of range: allowed [{lo}, {hi}]", field=name, value=str(value), allowed=f"[{lo}, {hi}]")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ForgeError(f"{name}={value!r} is not one of {', '.join(allowed)}{did_you_mean(str(value), allowed)}",
                         field=name, value=repr(value), allowed=", ".join(allowed))


def _opt_bool(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ForgeError(f"{name}={value!r} must be true, false or null (auto-detect)", field=name, value=repr(value),
                         allowed="true, false, null")


@dataclass
class BasePreset:
    """Defaults are plain full fine-tuning (the ``sft`` preset). Subclass, set ``name``,
    change defaults, and :func:`~forge_advisor.presets.register_preset` it."""

    name: ClassVar[str] = "base"
    description: ClassVar[str] = "custom preset"

    # what is trained and how (forge_advisor.plan.Plan vocabulary)
    method: str = "full"  # full | lora | qlora | lora_8bit
    trainer: str = "sft"  # sft | dpo
    # optimisation (transformers.TrainingArguments names)
    learning_rate: float = 2e-5
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    warmup_ratio: float = 0.1  # transformers 5: passed as warmup_steps=0.1 (a fraction when < 1)
    weight_decay: float = 0.01
    lr_scheduler_type: str = "linear"
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    bf16: bool | None = None  # None: bf16 where compute capability >= 8.0
    fp16: bool | None = None  # None: fp16 on older GPUs and MPS
    gradient_checkpointing: bool = True
    attn_implementation: str | None = None  # None: what the architecture supports
    seed: int = 42
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2
    max_length: int = 1024  # tokens per sequence (trl's SFTConfig/DPOConfig name)
    # batching (trl SFTConfig names; ``padding`` as transformers' padding strategy): pad to the
    # longest record of a batch or to max_length, pack records into max_length rows, or flatten
    # a batch without padding (forge_advisor.dataplan.batching prices each)
    padding: str = "longest"
    packing: bool = False
    padding_free: bool = False
    # LoRA (peft.LoraConfig names, lora_ prefix as in Plan)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_bias: str = "none"
    lora_target_modules: tuple[str, ...] | str | None = None  # None: the model's q/k/v/o; or "all-linear"
    # peft LoraConfig.target_parameters: fused expert tensors (peft's ParamWrapper, no dropout);
    # "experts" = every routed expert tensor of the model; None: none
    lora_target_parameters: tuple[str, ...] | str | None = None
    # quantization (transformers.BitsAndBytesConfig names)
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: str = "bfloat16"
    # DPO (trl.DPOConfig names)
    beta: float = 0.1
    max_prompt_length: int = 512
    # forge-advisor: freeze embeddings and the lowest floor(freeze_ratio × layers) layers
    freeze_ratio: float = 0.0
    # several GPUs (Plan names)
    num_gpus: int = 1
    distributed: str = "none"
    # memory levers (Plan names: BitsAndBytesConfig / TrainingArguments / trl / DeepSpeed and FSDP;
    # forge_advisor/levers.py): a float 4-bit storage lets fsdp/zero3 shard a QLoRA base
    bnb_4bit_quant_storage: str = "uint8"
    use_liger_kernel: bool = False
    activation_offloading: bool = False
    offload_optimizer: bool = False
    offload_params: bool = False
    # vision-language models (ignored for text-only models): the largest image a sample carries,
    # in pixels after the processor's resize (Qwen2-VL image processor ``max_pixels``; None: the
    # model's processor default), images per sample, and whether the vision tower trains
    # (LLaMA-Factory's ``freeze_vision_tower``; the projector and language model follow ``method``)
    max_pixels: int | None = None
    images_per_sample: int = 1
    freeze_vision_tower: bool = True
    # videos (Qwen2-VL, Qwen2.5-VL, Qwen3-VL; forge_advisor/plan.py VIDEO_FIELDS)
    videos_per_sample: int = 0
    num_frames: int = 16
    video_max_pixels: int | None = None

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        _choice("trainer", self.trainer, TRAINERS)
        _num("learning_rate", self.learning_rate, 0.0, 1.0, lo_open=True)
        _num("num_train_epochs", self.num_train_epochs, 0.0, 1e6, lo_open=True)
        if self.max_steps != -1:
            _int("max_steps", self.max_steps, 1, 1 << 40)
        _int("per_device_train_batch_size", self.per_device_train_batch_size, *PLAN_INT_RANGES["per_device_train_batch_size"])
        _int("gradient_accumulation_steps", self.gradient_accumulation_steps, *PLAN_INT_RANGES["gradient_accumulation_steps"])
        _num("warmup_ratio", self.warmup_ratio, 0.0, 1.0, hi_open=True)
        _num("weight_decay", self.weight_decay, 0.0, 10.0)
        _choice("lr_scheduler_type", self.lr_scheduler_type, LR_SCHEDULERS)
        _num("max_grad_norm", self.max_grad_norm, 0.0, 1e6)
        _choice("optim", self.optim, OPTIMIZERS)
        _opt_bool("bf16", self.bf16)
        _opt_bool("fp16", self.fp16)
        if self.bf16 and self.fp16:
            raise ForgeError("bf16=True and fp16=True: choose one mixed precision")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ForgeError(f"gradient_checkpointing={self.gradient_checkpointing!r} must be true or false")
        if self.attn_implementation is not None:
            _choice("attn_implementation", self.attn_implementation, ATTENTION)
        _int("seed", self.seed, 0, 2**32 - 1)
        _int("logging_steps", self.logging_steps, 1, 1 << 30)
        _int("save_steps", self.save_steps, 1, 1 << 30)
        _int("save_total_limit", self.save_total_limit, 1, 1 << 20)
        _int("max_length", self.max_length, 8, PLAN_INT_RANGES["max_length"][1])  # a recipe trains ≥ 8 tokens
        self._check_batching()
        _int("lora_r", self.lora_r, *PLAN_INT_RANGES["lora_r"])
        _int("lora_alpha", self.lora_alpha, *PLAN_INT_RANGES["lora_alpha"])
        _num("lora_dropout", self.lora_dropout, *PLAN_FLOAT_RANGES["lora_dropout"], hi_open=True)
        _choice("lora_bias", self.lora_bias, LORA_BIAS)
        self._check_targets()
        self._check_target_parameters()
        for flag in ("load_in_4bit", "load_in_8bit", "bnb_4bit_use_double_quant"):
            if not isinstance(getattr(self, flag), bool):
                raise ForgeError(f"{flag}={getattr(self, flag)!r} must be true or false")
        _choice("bnb_4bit_quant_type", self.bnb_4bit_quant_type, QUANT_TYPES)
        _choice("bnb_4bit_compute_dtype", self.bnb_4bit_compute_dtype, COMPUTE_DTYPES)
        _num("beta", self.beta, 0.0, 1e3, lo_open=True)
        _int("max_prompt_length", self.max_prompt_length, 1, 1 << 24)
        _num("freeze_ratio", self.freeze_ratio, *PLAN_FLOAT_RANGES["freeze_ratio"], hi_open=True)
        _int("num_gpus", self.num_gpus, *PLAN_INT_RANGES["num_gpus"])
        _choice("distributed", self.distributed, DISTRIBUTED)
        _choice("bnb_4bit_quant_storage", self.bnb_4bit_quant_storage, QUANT_STORAGES)
        for flag in ("use_liger_kernel", "activation_offloading", "offload_optimizer", "offload_params"):
            if not isinstance(getattr(self, flag), bool):
                raise ForgeError(f"{flag}={getattr(self, flag)!r} must be true or false")
        self._check_vision()
        self._check_method_consistency()

    def _check_vision(self) -> None:
        # the core's ranges (rust/src/plan.rs INT_RANGES): 28×28 px (one merged Qwen2-VL token)
        # to 2^28 px (16384×16384); 0–1024 images per sample
        if self.max_pixels is not None:
            _int("max_pixels", self.max_pixels, *PLAN_INT_RANGES["max_pixels"])
        _int("images_per_sample", self.images_per_sample, *PLAN_INT_RANGES["images_per_sample"])
        if not isinstance(self.freeze_vision_tower, bool):
            raise ForgeError(f"freeze_vision_tower={self.freeze_vision_tower!r} must be true or false")
        _int("videos_per_sample", self.videos_per_sample, *PLAN_INT_RANGES["videos_per_sample"])
        _int("num_frames", self.num_frames, *PLAN_INT_RANGES["num_frames"])
        if self.video_max_pixels is not None:
            _int("video_max_pixels", self.video_max_pixels, *PLAN_INT_RANGES["video_max_pixels"])

    def _check_batching(self) -> None:
        _choice("padding", self.padding, PADDING)
        for flag in ("packing", "padding_free"):
            if not isinstance(getattr(self, flag), bool):
                raise ForgeError(f"{flag}={getattr(self, flag)!r} must be true or false")
        if self.padding == "max_length" and (self.packing or self.padding_free):
            raise ForgeError("padding='max_length' with packing/padding_free: packed and flattened batches have no padding")
        if self.trainer == "dpo" and (self.packing or self.padding_free):
            raise ForgeError("packing/padding_free apply to SFT here; DPO batches pad (padding='longest' or 'max_length')")

    def _check_targets(self) -> None:
        self._name_list("lora_target_modules", "all-linear", "module names, 'all-linear' or null (q/k/v/o)")

    def _check_target_parameters(self) -> None:
        self._name_list("lora_target_parameters", "experts", "parameter names, 'experts' or null")

    def _name_list(self, name: str, keyword: str, allowed: str) -> None:
        """peft's target lists: None, the keyword, or names — a list, or "a,b" from a command
        line — kept as a tuple."""
        t = getattr(self, name)
        if isinstance(t, list):
            t = tuple(t)
        elif isinstance(t, str) and t != keyword:
            t = tuple(s.strip() for s in t.split(",") if s.strip())
        setattr(self, name, t)
        if t is None or t == keyword:
            return
        if not isinstance(t, tuple) or not t or not all(isinstance(s, str) and s for s in t):
            raise ForgeError(f"{name}={t!r} must be {allowed}")

    def _check_method_consistency(self) -> None:
        # the quantization flags and the method say the same thing; the flags win when set explicitly
        if self.load_in_4bit and self.load_in_8bit:
            raise ForgeError("load_in_4bit=True and load_in_8bit=True: choose one")
        if self.load_in_4bit and self.method != "qlora":
            self.method = "qlora"
        elif self.load_in_8bit and self.method != "lora_8bit":
            self.method = "lora_8bit"
        elif self.method == "qlora":
            self.load_in_4bit = True
        elif self.method == "lora_8bit":
            self.load_in_8bit = True
        if self.method == "qlora" and self.bnb_4bit_compute_dtype == "float32":
            raise ForgeError("bnb_4bit_compute_dtype='float32' with 4-bit: compute in bfloat16 or float16")
        if self.distributed == "none" and self.num_gpus > 1:
            self.distributed = "ddp"

    # -- introspection ----------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @property
    def uses_lora(self) -> bool:
        return self.method != "full"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("lora_target_modules", "lora_target_parameters"):
            if isinstance(d[key], tuple):
                d[key] = list(d[key])
        return d

    def replace(self, **overrides: Any) -> BasePreset:
        """A copy with some fields changed, validated again (unknown names get a suggestion)."""
        from forge_advisor.presets.planning import with_derived

        check_override_names(type(self), overrides)
        # a new lora_r alone keeps this preset's α/r; a new method/trainer its learning rate
        # (presets/planning.py with_derived)
        return type(self)(**{**self.to_dict(), **with_derived(self, overrides)})

    # -- auto-detection ---------------------------------------------------------------------------
    def resolved_precision(self) -> str | None:
        """``"bf16"``, ``"fp16"`` or ``None`` (fp32): explicit flags first, else the hardware's."""
        if self.bf16:
            return "bf16"
        if self.fp16:
            return "fp16"
        if self.bf16 is False and self.fp16 is False:
            return None
        from forge_advisor.presets.detect import detect_hardware, mixed_precision_for

        auto = mixed_precision_for(detect_hardware())
        if auto == "bf16" and self.bf16 is False or auto == "fp16" and self.fp16 is False:
            return None
        return auto

    # -- conversions (lazy heavy imports) ---------------------------------------------------------
    def get_args_dict(self, output_dir: str = "forge-output", **extra: Any) -> dict[str, Any]:
        """TrainingArguments keyword arguments as a plain dict (no torch, no accelerate)."""
        from forge_advisor.presets.convert import args_dict

        return args_dict(self, output_dir, **extra)

    def get_training_args(self, output_dir: str = "forge-output", **extra: Any) -> Any:
        """A ``transformers.TrainingArguments`` (names adapted to the installed transformers)."""
        from forge_advisor.presets.convert import training_args

        return training_args(self, output_dir, **extra)

    def get_lora_config(self, model: Any = None) -> Any:
        """A ``peft.LoraConfig`` or ``None`` for full fine-tuning. ``model`` (a catalog id, a
        ModelShape, a config dict or a live model) names the q/k/v/o modules; without it the
        Llama spelling ``q_proj``… is used."""
        from forge_advisor.presets.convert import lora_config

        return lora_config(self, model)

    def get_bnb_config(self) -> Any:
        """A ``transformers.BitsAndBytesConfig`` for 4-/8-bit, else ``None``."""
        from forge_advisor.presets.convert import bnb_config

        return bnb_config(self)

    def get_dpo_config(self, output_dir: str = "forge-output", **extra: Any) -> Any:
        """A ``trl.DPOConfig`` (only for trainer='dpo')."""
        from forge_advisor.presets.convert import dpo_config

        return dpo_config(self, output_dir, **extra)

    def print_info(self, console: Any = None) -> None:
        from forge_advisor.presets.convert import print_info

        print_info(self, console)

    # -- plans ------------------------------------------------------------------------------------
    def to_plan(self, *, precision: str | None = "auto") -> Plan:
        from forge_advisor.presets.planning import preset_to_plan

        return preset_to_plan(self, precision=precision)

    @classmethod
    def from_plan(cls, plan: Plan) -> BasePreset:
        """This preset's defaults with every knob of ``plan`` (the registered preset of the
        plan's method and trainer when called on ``BasePreset`` itself)."""
        from forge_advisor.presets.planning import preset_from_plan

        return preset_from_plan(plan, None if cls.name == BasePreset.name else cls())

    # -- files ------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from forge_advisor.presets.io import save_preset

        return save_preset(self, path)


def check_override_names(cls: type[BasePreset], overrides: dict[str, Any]) -> None:
    names = cls.field_names()
    for key in overrides:
        if key not in names:
            raise ForgeError(f"unknown preset field '{key}'{did_you_mean(key, names)}")
