"""What the user asks the advisor: validated once, in ``__post_init__``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from forge_advisor.core import OBJECTIVES, PLAN_INT_RANGES
from forge_advisor.errors import ForgeError, did_you_mean
from forge_advisor.estimate import DEFAULT_HEADROOM
from forge_advisor.plan import OPTIMIZERS, Plan

__all__ = ["SearchRequest", "OBJECTIVES", "DEFAULT_HEADROOM", "RANKS", "FREEZE_RATIOS", "BATCHES"]

RANKS = (4, 8, 16, 32, 64, 128, 256)
FREEZE_RATIOS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)
BATCHES = (1, 2, 4, 8, 16, 32, 64)
# Optimizers the advisor considers (SGD trains LLMs poorly; fused AdamW is Trainer's default).
SEARCH_OPTIMIZERS = ("adamw_torch_fused", "adamw_torch", "adamw_8bit", "paged_adamw_8bit", "adafactor")


@dataclass(frozen=True)
class SearchRequest:
    num_gpus: int = 1
    objective: Literal["balanced", "fastest", "quality"] = "balanced"
    seq_len: int = 2048
    global_batch: int = 16
    dataset_tokens: int | None = None
    headroom: float = DEFAULT_HEADROOM
    trainer: Literal["sft", "dpo"] = "sft"
    allowed_presets: tuple[str, ...] | None = None
    min_lora_r: int | None = None
    max_freeze_ratio: float | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    top: int = 5
    # from the user's data (forge_advisor.dataplan.advise.real_token_fractions): (batching mode,
    # per-device batch, real / processed tokens); given, the batching mode is a knob of the
    # search ranked by real tokens/s, unless fixed
    real_token_fraction: tuple[tuple[str, int, float], ...] = ()

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ForgeError(f"objective={self.objective!r} is not one of {', '.join(OBJECTIVES)}{did_you_mean(str(self.objective), OBJECTIVES)}")
        for name, value, lo, hi in (
            ("num_gpus", self.num_gpus, *PLAN_INT_RANGES["num_gpus"]),
            ("seq_len", self.seq_len, *PLAN_INT_RANGES["max_length"]),
            ("global_batch", self.global_batch, 1, 1 << 20),
            ("top", self.top, 1, 100),
            ("seed", self.seed, 0, 2**31 - 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                hint = " (a global batch of 0 trains nothing; e.g. --global-batch 16)" if name == "global_batch" else ""
                raise ForgeError(f"{name}={value!r} is out of range: allowed [{lo}, {hi}]{hint}")
        if self.global_batch % self.num_gpus:
            raise ForgeError(
                f"global_batch={self.global_batch} is not a multiple of num_gpus={self.num_gpus}: "
                f"try {self.global_batch - self.global_batch % self.num_gpus or self.num_gpus}"
            )
        if not 0.0 <= self.headroom < 0.9:
            raise ForgeError(f"headroom={self.headroom} is out of range: allowed [0, 0.9) (a fraction of GPU memory)")
        if self.dataset_tokens is not None and (not isinstance(self.dataset_tokens, int) or self.dataset_tokens < 1):
            raise ForgeError(f"dataset_tokens={self.dataset_tokens!r} must be a positive integer")
        if self.trainer not in ("sft", "dpo"):
            raise ForgeError(f"trainer={self.trainer!r} is not one of sft, dpo")
        from forge_advisor.presets import list_presets

        presets = list_presets()
        if self.allowed_presets is not None:
            if not self.allowed_presets:
                raise ForgeError("allowed presets is empty: name at least one of " + ", ".join(presets))
            for p in self.allowed_presets:
                if p not in presets:
                    raise ForgeError(f"unknown preset '{p}'{did_you_mean(p, presets)}: allowed {', '.join(presets)}")
        if self.min_lora_r is not None and not (isinstance(self.min_lora_r, int) and 1 <= self.min_lora_r <= max(RANKS)):
            raise ForgeError(f"min_lora_r={self.min_lora_r!r} is out of range: allowed [1, {max(RANKS)}]")
        if self.max_freeze_ratio is not None and not 0.0 <= self.max_freeze_ratio < 1.0:
            raise ForgeError(f"max_freeze_ratio={self.max_freeze_ratio} is out of range: allowed [0, 1)")
        known = set(Plan.field_names())
        for key in self.fixed:
            if key not in known:
                raise ForgeError(f"cannot fix unknown field '{key}'{did_you_mean(key, known)}")
        if "optim" in self.fixed and self.fixed["optim"] not in OPTIMIZERS:
            raise ForgeError(f"optim={self.fixed['optim']!r} is not one of {', '.join(OPTIMIZERS)}")

    @cached_property
    def method_presets(self) -> dict[str, str]:
        """Each training method the space searches and the registered preset its plans start
        from: the first allowed preset (registration order) of that method, preferring one
        whose trainer is the request's. ``--fix method=…`` keeps that method alone."""
        from forge_advisor.presets import get_preset, list_presets

        presets = [get_preset(name) for name in (self.allowed_presets or list_presets())]
        by_method: dict[str, str] = {}
        for p in sorted(presets, key=lambda p: p.trainer != self.trainer):  # stable: the request's trainer first
            by_method.setdefault(p.method, p.name)
        out = {p.method: by_method[p.method] for p in presets}  # methods in the presets' order
        if "method" in self.fixed:
            m = str(self.fixed["method"])
            out = {m: out[m]} if m in out else {m: next(iter(out.values()))}
        return out
