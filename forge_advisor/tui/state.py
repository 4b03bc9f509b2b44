"""The editor's model, without textual: the knobs, how typed text becomes a value, one
estimate of the current plan, and its memory breakdown grouped for the stacked bar.

Everything here is a thin layer over :func:`forge_advisor.estimate.estimate`; the numbers and
the error messages are the estimator's and the Plan's own (:class:`ForgeError`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forge_advisor.errors import ForgeError
from forge_advisor.estimate import DEFAULT_HEADROOM as _DEFAULT_HEADROOM
from forge_advisor.units import fmt_duration

if TYPE_CHECKING:
    from forge_advisor.estimate import EstimateResult
    from forge_advisor.gpus import GPU
    from forge_advisor.shapes import ModelShape

__all__ = [
    "DEFAULT_DATASET_TOKENS",
    "DEFAULT_HEADROOM",
    "KNOBS",
    "Evaluation",
    "KnobSpec",
    "MemoryGroup",
    "PRESET_KNOB",
    "TOKENS_KNOB",
    "format_value",
    "knob_choices",
    "evaluate",
    "fmt_duration",
    "group_memory",
    "parse_tokens",
    "parse_value",
    "step_value",
]

DEFAULT_HEADROOM = _DEFAULT_HEADROOM  # the advisor's default (forge_advisor.estimate)
DEFAULT_DATASET_TOKENS = 10_000_000


@dataclass(frozen=True)
class KnobSpec:
    """One editable Plan field. ``kind``: int | float | bool | choice."""

    field: str
    label: str
    kind: str
    choices: tuple[str, ...] = ()
    ladder: tuple[float, ...] = ()  # values +/- step through (ints: powers of two)
    help: str = ""


def _choices(name: str) -> tuple[str, ...]:
    from forge_advisor import plan

    return {"optim": plan.OPTIMIZERS, "attn_implementation": plan.ATTENTION, "dtype": plan.DTYPES}[name]


_POW2 = tuple(float(1 << i) for i in range(0, 17))
KNOBS: tuple[KnobSpec, ...] = (
    KnobSpec("lora_r", "LoRA rank", "int", ladder=_POW2[:11], help="LoRA rank r (peft LoraConfig.r)"),
    KnobSpec("per_device_train_batch_size", "batch/device", "int", ladder=_POW2[:11], help="per-device train batch size"),
    KnobSpec("gradient_accumulation_steps", "grad accum", "int", ladder=_POW2[:11], help="gradient accumulation steps"),
    KnobSpec("freeze_ratio", "freeze ratio", "float", ladder=(0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875),
         help="freeze embeddings and this fraction of the lowest layers"),
    KnobSpec("max_length", "seq length", "int", ladder=tuple(float(1 << i) for i in range(7, 18)),
         help="tokens per sequence (max_length)"),
    KnobSpec("gradient_checkpointing", "grad ckpt", "bool", help="gradient checkpointing"),
    KnobSpec("optim", "optimizer", "choice", help="TrainingArguments.optim"),
    KnobSpec("attn_implementation", "attention", "choice", help="attention implementation"),
    KnobSpec("dtype", "dtype", "choice",
             help="bf16/fp16 pure half, amp-* fp32 master + autocast, fp32 (fp16 on GPUs without bf16)"),
)
KNOB_BY_FIELD = {k.field: k for k in KNOBS}
PRESET_KNOB = KnobSpec("preset", "preset", "choice", help="starting preset (forge_advisor.presets)")
TOKENS_KNOB = KnobSpec(
    "dataset_tokens", "data tokens", "tokens",
    ladder=tuple(float(m * 10**e) for e in range(5, 12) for m in (1, 2, 5)),
    help="tokens in the data set, for the time per epoch",
)


def knob_choices(knob: KnobSpec) -> tuple[str, ...]:
    if knob.choices:
        return knob.choices
    if knob.field == "preset":
        from forge_advisor.presets import list_presets

        return tuple(list_presets())
    return _choices(knob.field) if knob.kind == "choice" else ()


def format_value(knob: KnobSpec, value: Any) -> str:
    """How a knob shows its value: ``on``/``off``, ``0.25``, ``10M`` tokens, ``2048``."""
    if knob.kind == "bool":
        return "on" if value else "off"
    if knob.kind == "tokens" and isinstance(value, int):
        for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
            if value >= size:
                return f"{value / size:g}{unit}"
        return str(value)
    if knob.kind == "float" and isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_value(knob: KnobSpec, text: str) -> Any:
    """Typed text -> value. Text that is not a number is returned as it is, so that the Plan
    rejects it with its own message (``lora_r='abc' must be an integer in [1, 65536]``)."""
    t = text.strip().replace("_", "").replace(",", "")
    if knob.kind == "int":
        try:
            return int(t)
        except ValueError:
            try:
                f = float(t)
            except ValueError:
                return text.strip()
            return int(f) if f.is_integer() else f
    if knob.kind == "float":
        try:
            f = float(t)
        except ValueError:
            return text.strip()
        return f if math.isfinite(f) else text.strip()
    if knob.kind == "bool":
        return t.lower() in ("1", "true", "yes", "on")
    if knob.kind == "tokens":
        return parse_tokens(text)
    return text.strip()


def step_value(knob: KnobSpec, value: Any, direction: int) -> Any:
    """The next value up (+1) or down (-1) the knob's ladder, from any current value."""
    if knob.kind == "bool":
        return not bool(value)
    if knob.kind == "choice":
        opts = knob_choices(knob)
        i = opts.index(value) if value in opts else 0
        return opts[(i + direction) % len(opts)]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        value = knob.ladder[0]
    ladder = knob.ladder
    if direction > 0:
        nxt = next((v for v in ladder if v > value + 1e-12), ladder[-1])
    else:
        nxt = next((v for v in reversed(ladder) if v < value - 1e-12), ladder[0])
    return nxt if knob.kind == "float" else int(nxt)


_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_tokens(text: str) -> int | None:
    """``"10M"`` -> 10_000_000; blank -> None. Raises ForgeError on anything else."""
    t = text.strip().lower().replace(",", "").replace("_", "")
    if not t:
        return None
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([kmbgt]?)", t)
    if not m:
        raise ForgeError(f"dataset tokens {text.strip()!r}: write a number such as 50000000 or 50M")
    n = float(m.group(1)) * _SUFFIX.get(m.group(2), 1)
    if n < 1:
        raise ForgeError(f"dataset tokens {text.strip()!r} must be at least 1")
    return int(n)


@dataclass(frozen=True)
class MemoryGroup:
    key: str  # weights | gradients | optimizer | activations | logits | overhead
    label: str
    bytes: int
    terms: tuple[str, ...]


# bar segment -> estimator terms (breakdown, then device); together they sum to peak reserved
GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("weights", "weights", ("weights", "quant_state", "lora_adapters", "reference_model", "autocast_copies")),
    ("gradients", "grads", ("gradients",)),
    ("optimizer", "optimizer", ("optimizer_states", "optimizer_temporaries", "paged_optimizer_states")),
    ("activations", "activation", ("activations", "backward_buffers")),
    ("logits", "logits", ("logits_and_loss",)),
    ("overhead", "overhead", ("distributed_buffers", "cuda_context", "cublas_workspace", "allocator_reserve")),
)


def group_memory(report: Mapping[str, Any]) -> list[MemoryGroup]:
    """Group ``report["memory"]`` (``estimate().to_dict()``) into the bar's six segments.
    Terms not named in :data:`GROUPS` (a newer estimator's) land in ``overhead``, so the
    segments always add up to ``peak_reserved_bytes``."""
    mem = report["memory"]
    terms: dict[str, int] = {**mem["breakdown"], **mem["device"]}
    known = {t for _, _, ts in GROUPS for t in ts}
    out = []
    for key, label, names in GROUPS:
        total = sum(int(terms.get(n, 0) or 0) for n in names)
        extra: tuple[str, ...] = ()
        if key == "overhead":
            extra = tuple(k for k in terms if k not in known)
            total += sum(int(terms[k] or 0) for k in extra)
        out.append(MemoryGroup(key, label, total, tuple(n for n in names if terms.get(n)) + extra))
    return out




@dataclass
class Evaluation:
    """One estimate of the editor's plan, or the reason there is none."""

    result: EstimateResult | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    groups: list[MemoryGroup] = field(default_factory=list)
    headroom: float = DEFAULT_HEADROOM
    error_field: str | None = None  # the plan field a bad value is in (ForgeError.field)

    @property
    def ok(self) -> bool:
        return self.report is not None

    @property
    def capacity(self) -> int | None:
        return None if self.report is None else self.report["memory"]["gpu_memory_bytes"]

    @property
    def reserved(self) -> int:
        return 0 if self.report is None else int(self.report["memory"]["peak_reserved_bytes"])

    @property
    def verdict(self) -> str:
        """``fits`` | ``tight`` (fits, but inside the headroom) | ``no-fit`` | ``unknown`` (no GPU)."""
        if self.report is None or self.report["fits"] is None:
            return "unknown"
        if self.report["fits"]:  # the one fit rule: within the GPU's memory less the headroom
            return "fits"
        return "tight" if self.reserved <= (self.capacity or 0) else "no-fit"


def evaluate(
    shape: ModelShape,
    gpu: GPU | None,
    preset: str,
    overrides: Mapping[str, Any],
    *,
    num_gpus: int = 1,
    dataset_tokens: int | None = None,
    headroom: float = DEFAULT_HEADROOM,
) -> Evaluation:
    """Price the plan; a bad value gives ``Evaluation(error=<the ForgeError's message>)``."""
    from forge_advisor.estimate import estimate

    try:
        res = estimate(shape, preset, gpu=gpu, num_gpus=num_gpus, dataset_tokens=dataset_tokens, headroom=headroom,
                       **dict(overrides))
        report = res.to_dict()
        return Evaluation(res, report, None, group_memory(report), headroom)
    except ForgeError as exc:
        return Evaluation(error=str(exc), headroom=headroom, error_field=exc.field)
    except (TypeError, ValueError) as exc:  # a value of a type the Plan did not foresee
        return Evaluation(error=f"{type(exc).__name__}: {exc}", headroom=headroom)
