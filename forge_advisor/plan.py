"""`Plan`: one fully resolved training configuration, the unit the estimator prices and
the advisor searches. Field names are Hugging Face's (TrainingArguments, LoraConfig,
BitsAndBytesConfig, trl's SFTConfig/DPOConfig) wherever one exists.

Validation happens in ``__post_init__``; every error names the field, the bad value and
what is allowed (peft-style).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal, get_args

from forge_advisor.core import PLAN_CHOICES, PLAN_FLOAT_RANGES, PLAN_INT_RANGES
from forge_advisor.errors import ForgeError, did_you_mean

__all__ = ["Plan", "VISION_FIELDS", "VIDEO_FIELDS", "METHODS", "DTYPES", "OPTIMIZERS", "ATTENTION", "DISTRIBUTED", "TRAINERS", "QUANT_STORAGES", "BATCHING"]

Method = Literal["full", "lora", "qlora", "lora_8bit"]
Trainer = Literal["sft", "dpo"]
Dtype = Literal["bf16", "fp16", "amp-bf16", "amp-fp16", "fp32"]
# transformers.training_args.OptimizerNames values
Optim = Literal[
    "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "adafactor", "sgd"
]
Attention = Literal["sdpa", "flash_attention_2", "eager"]
Distributed = Literal["none", "ddp", "fsdp", "zero2", "zero3"]
# transformers.BitsAndBytesConfig(bnb_4bit_quant_storage=...) spellings
QuantStorage = Literal["uint8", "bfloat16", "float16", "float32"]
# how the runtime forms a micro-batch (forge_advisor/dataplan/batching.py maps the preset's
# trl/transformers fields padding / packing / padding_free to it, and back)
Batching = Literal["longest", "max_length", "packing", "padding_free"]

# the choices and ranges are the core's (rust/src/plan.rs CHOICES, INT_RANGES, FLOAT_RANGES);
# the Literal types above spell the same names for type checkers (tests/test_native_surface.py)
METHODS: tuple[str, ...] = PLAN_CHOICES["method"]
TRAINERS: tuple[str, ...] = PLAN_CHOICES["trainer"]
DTYPES: tuple[str, ...] = PLAN_CHOICES["dtype"]
OPTIMIZERS: tuple[str, ...] = PLAN_CHOICES["optim"]
ATTENTION: tuple[str, ...] = PLAN_CHOICES["attn_implementation"]
DISTRIBUTED: tuple[str, ...] = PLAN_CHOICES["distributed"]
QUANT_STORAGES: tuple[str, ...] = PLAN_CHOICES["bnb_4bit_quant_storage"]
BATCHING: tuple[str, ...] = PLAN_CHOICES["batching"]
LITERALS: dict[str, tuple[str, ...]] = {
    "method": get_args(Method), "trainer": get_args(Trainer), "dtype": get_args(Dtype), "optim": get_args(Optim),
    "attn_implementation": get_args(Attention), "distributed": get_args(Distributed),
    "bnb_4bit_quant_storage": get_args(QuantStorage), "batching": get_args(Batching),
}

# the fields only a model taking videos reads (Qwen2-VL, Qwen2.5-VL, Qwen3-VL; rust/src/video.rs):
# videos per sample, frames per video after sampling (the video processor's `num_frames`), and
# the video processor's `max_pixels` (LLaMA-Factory's `video_max_pixels`; per frame in
# Qwen2-VL/2.5-VL, per video in Qwen3-VL; None: the processor's default)
VIDEO_FIELDS: tuple[str, ...] = ("videos_per_sample", "num_frames", "video_max_pixels")
# the fields only a vision-language model reads (a text-only model refuses them when given)
VISION_FIELDS: tuple[str, ...] = ("max_pixels", "images_per_sample", "freeze_vision_tower", *VIDEO_FIELDS)

MAX_BATCH = PLAN_INT_RANGES["per_device_train_batch_size"][1]
MAX_LENGTH = PLAN_INT_RANGES["max_length"][1]


def _choice(name: str, value: Any) -> None:
    allowed = PLAN_CHOICES[name]
    if value not in allowed:
        raise ForgeError(f"{name}={value!r} is not one of {', '.join(allowed)}{did_you_mean(str(value), allowed)}",
                         field=name, value=repr(value), allowed=", ".join(allowed))


def _int_range(name: str, value: Any) -> None:
    lo, hi = PLAN_INT_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ForgeError(f"{name}={value!r} must be an integer in [{lo}, {hi}]", field=name, value=repr(value), allowed=f"[{lo}, {hi}]")
    if not lo <= value <= hi:
        raise ForgeError(f"{name}={value} is out of range: allowed [{lo}, {hi}]", field=name, value=str(value), allowed=f"[{lo}, {hi}]")


def _fraction(name: str, value: Any) -> None:
    lo, hi = PLAN_FLOAT_RANGES[name]
    allowed = f"[{lo:g}, {hi:g})"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ForgeError(f"{name}={value!r} must be a number in {allowed}", field=name, value=repr(value), allowed=allowed)
    if not lo <= value < hi:
        raise ForgeError(f"{name}={value} is out of range: allowed {allowed}", field=name, value=str(value), allowed=allowed)


@dataclass(frozen=True)
class Plan:
    """A training configuration. Defaults are LoRA on bf16 weights, as the ``lora`` preset."""

    method: Method = "lora"
    trainer: Trainer = "sft"
    dtype: Dtype = "bf16"
    # LoRA (peft.LoraConfig names); ignored for method="full"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] | Literal["all-linear"] | None = None  # None: attention q/k/v/o
    # peft `target_parameters`: fused expert tensors (nn.Parameter [E, out, in]) wrapped by
    # peft's ParamWrapper; "experts" = every routed expert tensor; None: none
    lora_target_parameters: tuple[str, ...] | Literal["experts"] | None = None
    # 4-bit (transformers.BitsAndBytesConfig names); only for method="qlora"
    bnb_4bit_use_double_quant: bool = True
    # batch (TrainingArguments names); max_length as in trl's SFTConfig/DPOConfig
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    max_length: int = 1024
    freeze_ratio: float = 0.0
    gradient_checkpointing: bool = True
    attn_implementation: Attention = "sdpa"
    optim: Optim = "adamw_torch_fused"  # TrainingArguments default with torch >= 2.8
    # DPO: a separate frozen reference model unless PEFT lets the base serve as reference
    dpo_beta: float = 0.1
    # several GPUs
    num_gpus: int = 1
    distributed: Distributed = "none"
    # FSDP-QLoRA / ZeRO-3 + QLoRA: the packed 4-bit weights stored in a float dtype (the
    # compute dtype) shard like any parameter; "uint8" (bitsandbytes' default) cannot shard
    bnb_4bit_quant_storage: QuantStorage = "uint8"
    # memory levers: TrainingArguments `use_liger_kernel`, trl `activation_offloading`,
    # DeepSpeed `offload_optimizer` (zero2/zero3), FSDP `offload_params` / ZeRO-3 `offload_param`
    use_liger_kernel: bool = False
    activation_offloading: bool = False
    offload_optimizer: bool = False
    offload_params: bool = False
    # vision-language models (ignored by text-only ones; rust/src/vision.rs): the largest image
    # of a sample in pixels after the processor's resize (None: the processor's default),
    # images per sample, and whether the vision tower stays frozen (LLaMA-Factory's name)
    max_pixels: int | None = None
    images_per_sample: int = 1
    freeze_vision_tower: bool = True
    videos_per_sample: int = 0
    num_frames: int = 16
    video_max_pixels: int | None = None
    # the batching mode (rust/src/plan.rs `Batching`): padding to the batch's longest record
    # (transformers' default collator), to max_length, trl packing, padding-free rows
    batching: Batching = "longest"

    def __post_init__(self) -> None:
        for name in PLAN_CHOICES:
            _choice(name, getattr(self, name))
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "num_gpus"):
            _int_range(name, getattr(self, name))
        if self.uses_lora:
            _int_range("lora_r", self.lora_r)
            _int_range("lora_alpha", self.lora_alpha)
            _fraction("lora_dropout", self.lora_dropout)
        if isinstance(self.lora_target_modules, list):
            object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))
        if isinstance(self.lora_target_modules, tuple) and not self.lora_target_modules:
            raise ForgeError("lora_target_modules=() is empty: name modules or use 'all-linear'",
                             field="lora_target_modules", value="()", allowed="module names or 'all-linear'")
        self._check_target_parameters()
        _fraction("freeze_ratio", self.freeze_ratio)
        if self.method == "qlora" and self.dtype in ("fp32", "amp-bf16", "amp-fp16"):
            raise ForgeError(f"dtype={self.dtype!r} with method='qlora': 4-bit training computes in bf16 or fp16",
                             field="dtype", value=repr(self.dtype), allowed="bf16, fp16")
        if self.distributed == "none" and self.num_gpus > 1:
            object.__setattr__(self, "distributed", "ddp")
        if self.distributed != "none" and self.num_gpus == 1:
            object.__setattr__(self, "distributed", "none")
        if self.max_pixels is not None:
            _int_range("max_pixels", self.max_pixels)
        _int_range("images_per_sample", self.images_per_sample)
        _int_range("videos_per_sample", self.videos_per_sample)
        _int_range("num_frames", self.num_frames)
        if self.video_max_pixels is not None:
            _int_range("video_max_pixels", self.video_max_pixels)
        for name in ("use_liger_kernel", "activation_offloading", "offload_optimizer", "offload_params", "freeze_vision_tower"):
            if not isinstance(getattr(self, name), bool):
                raise ForgeError(f"{name}={getattr(self, name)!r} must be true or false", field=name,
                                 value=repr(getattr(self, name)), allowed="true or false")
        if self.trainer == "dpo" and self.batching in ("packing", "padding_free"):
            raise ForgeError(f"batching={self.batching!r} with trainer='dpo': DPO batches pad (longest or max_length)",
                             field="batching", value=repr(self.batching), allowed="longest, max_length")
        if self.offload_optimizer and self.distributed not in ("zero2", "zero3"):
            raise ForgeError(
                f"offload_optimizer=True with distributed={self.distributed!r}: DeepSpeed zero2/zero3 offloads "
                "the optimizer (FSDP does it with offload_params)"
            )
        if self.offload_params and self.distributed not in ("fsdp", "zero3"):
            raise ForgeError(
                f"offload_params=True with distributed={self.distributed!r}: only sharded parameters are "
                "offloaded (fsdp or zero3)"
            )

    def _check_target_parameters(self) -> None:
        """`lora_target_parameters`: a tuple of names or "experts"; peft's ParamWrapper
        refuses dropout ("does not work with lora_dropout != 0", peft/tuners/lora/layer.py)."""
        tp = self.lora_target_parameters
        if isinstance(tp, list):
            object.__setattr__(self, "lora_target_parameters", tp := tuple(tp))
        if tp is None:
            return
        if isinstance(tp, str) and tp != "experts":
            raise ForgeError(f"lora_target_parameters={tp!r}: a list of parameter names or 'experts'",
                             field="lora_target_parameters", value=repr(tp), allowed="parameter names or 'experts'")
        if isinstance(tp, tuple) and (not tp or not all(isinstance(n, str) and n for n in tp)):
            raise ForgeError(f"lora_target_parameters={tp!r}: name parameters (e.g. experts.gate_up_proj) or use 'experts'",
                             field="lora_target_parameters", value=repr(tp), allowed="parameter names or 'experts'")
        if self.uses_lora and self.lora_dropout != 0:
            raise ForgeError(
                f"lora_dropout={self.lora_dropout} with lora_target_parameters: peft's ParamWrapper does not work "
                "with lora_dropout != 0 (set lora_dropout=0)",
                field="lora_dropout", value=str(self.lora_dropout), allowed="0 with lora_target_parameters")

    @property
    def uses_lora(self) -> bool:
        return self.method != "full"

    @property
    def global_batch_size(self) -> int:
        """per-device × accumulation × GPUs, e.g. 4 × 4 × 1 = 16 sequences per optimizer step."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_gpus

    @property
    def tokens_per_step(self) -> int:
        """Global batch × length, e.g. 16 seqs × 1024 tokens = 16,384 tokens per optimizer step."""
        return self.global_batch_size * self.max_length

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The plan's fields, in order."""
        return _FIELD_NAMES

    def to_dict(self) -> dict[str, Any]:
        # field by field: `dataclasses.asdict` deep-copies and costs ~20 µs, most of an estimate
        d = {name: getattr(self, name) for name in _FIELD_NAMES}
        for name in ("lora_target_modules", "lora_target_parameters"):
            if isinstance(d[name], tuple):
                d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        known = set(_FIELD_NAMES)
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ForgeError(f"unknown plan field '{unknown[0]}'{did_you_mean(unknown[0], known)}")
        return cls(**data)

    def with_(self, **changes: Any) -> Plan:
        """A copy with some fields changed (validated again)."""
        unknown = [k for k in changes if k not in {f.name for f in fields(self)}]
        if unknown:
            raise ForgeError(f"unknown plan field '{unknown[0]}'{did_you_mean(unknown[0], [f.name for f in fields(self)])}")
        return replace(self, **changes)


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Plan))
