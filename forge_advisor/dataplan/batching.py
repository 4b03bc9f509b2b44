"""Batching modes as a plan knob, simulated on the real lengths and priced by the estimator.

The four ways the runtime (forge_advisor.train.data) can form a micro-batch of B records:

* ``longest`` — pad to the longest record of the batch (transformers' default collator);
* ``max_length`` — pad every record to max_length;
* ``packing`` — trl's best-fit-decreasing packing (``trl.data_utils.pack_dataset``, what
  ``SFTConfig(packing=True)`` does): records into rows of at most max_length tokens, B rows per
  micro-batch, flattened without padding (trl's padding-free collator, position_ids restart
  at each record);
* ``padding_free`` — B records flattened into one row with no padding
  (transformers' ``DataCollatorWithFlattening``, trl's ``padding_free``).

Each mode is the plan field ``batching`` (rust/src/plan.rs ``Batching``), priced by the
estimator at its WORST micro-batch: B records of the longest length (``longest``,
``padding_free``: the B longest records together) or of max_length (``max_length``,
``packing``: B full packed rows) — the estimator knows what each shape costs (a flattened row
under a masked attention is one sequence of B × length tokens; the allocator reserve of
fixed-length steps). Speed is priced on the EXPECTED tokens: the tokens each mode really
processes (padding included where there is padding), at its mean row length.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from forge_advisor.core import PLAN_CHOICES, VARLEN_ATTENTION
from forge_advisor.errors import ForgeError, did_you_mean

__all__ = ["MODES", "MODE_FIELDS", "BatchSim", "simulate", "pack_bfd", "mode_of", "mode_from_flags", "steps_per_epoch",
           "VARLEN_ATTENTION", "FLATTENED"]

MODES: tuple[str, ...] = PLAN_CHOICES["batching"]  # the plan's field (rust/src/plan.rs Batching)
FLATTENED = ("packing", "padding_free")  # one row per micro-batch, position_ids restart per record
# The one map between the plan's `batching` and the preset fields (trl/transformers names)
# that select each mode in the runtime: preset -> plan is mode_of, plan -> preset MODE_FIELDS.
MODE_FIELDS: dict[str, dict[str, Any]] = {
    "longest": {"padding": "longest", "packing": False, "padding_free": False},
    "max_length": {"padding": "max_length", "packing": False, "padding_free": False},
    "packing": {"padding": "longest", "packing": True, "padding_free": False},
    "padding_free": {"padding": "longest", "packing": False, "padding_free": True},
}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ForgeError(f"batching={mode!r} is not one of {', '.join(MODES)}{did_you_mean(str(mode), MODES)}")
    return mode


def mode_of(fields: dict[str, Any]) -> str:
    """The mode a preset's ``packing``/``padding_free``/``padding`` fields select."""
    if fields.get("packing"):
        return "packing"
    if fields.get("padding_free"):
        return "padding_free"
    return "max_length" if fields.get("padding") == "max_length" else "longest"


def mode_from_flags(padding: str | None, packing: bool | None, padding_free: bool | None) -> str | None:
    """The mode the command-line flags ``--padding``/``--packing``/``--padding-free`` pin, or
    None when they pin none (only false flags, or none given)."""
    if packing and padding_free:
        raise ForgeError("--packing and --padding-free are two batching modes: choose one")
    if (packing or padding_free) and padding == "max_length":
        raise ForgeError("--padding max_length with --packing/--padding-free: packed and flattened batches have no padding")
    if packing or padding_free or padding is not None:
        return mode_of({"padding": padding, "packing": packing, "padding_free": padding_free})
    return None


def pack_bfd(lengths: Sequence[int], capacity: int) -> list[int]:
    """Row totals of best-fit-decreasing packing into rows of ``capacity`` tokens: longest
    first, each into the fullest row it still fits (trl's ``_pack_bfd``; lengths already
    truncated to ``capacity``)."""
    import bisect

    free: list[int] = []  # free space of every row, ascending
    for n in sorted((n for n in lengths if n > 0), reverse=True):
        i = bisect.bisect_left(free, n)  # the row with the least space that still holds n
        if i < len(free):
            space = free.pop(i)
            bisect.insort(free, space - n)
        else:
            bisect.insort(free, capacity - n)  # a new row
    return [capacity - f for f in free]


@dataclass(frozen=True)
class BatchSim:
    """One epoch of one mode on the real lengths (truncated to max_length)."""

    mode: str
    max_length: int
    batch_size: int  # records (rows for packing) per micro-batch on one device
    rows: int  # dataloader items per epoch: records, or packed rows
    micro_batches: int  # per device per epoch
    real_tokens: int  # non-padding tokens per epoch
    processed_tokens: int  # tokens the model runs on per epoch (padding included)
    worst_length: int  # the worst micro-batch: batch_size records of this length (the plan's max_length)
    speed_length: int  # the mean row length whose tokens/s prices the epoch

    @property
    def efficiency(self) -> float:
        """real / processed tokens (1.0: no padding)."""
        return self.real_tokens / self.processed_tokens

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["efficiency"] = self.efficiency
        return d


def steps_per_epoch(micro_batches: int, grad_accum: int) -> int:
    """Optimizer steps: ceil(micro-batches / accumulation) (transformers' Trainer counts a
    last partial accumulation as a step)."""
    return max(1, math.ceil(micro_batches / grad_accum))


def simulate(lengths: Sequence[int], mode: str, *, max_length: int, batch_size: int, num_gpus: int = 1,
             seed: int = 42) -> BatchSim:
    """One epoch of ``mode`` over ``lengths`` (untruncated, tokens per record): dataloader
    items, micro-batches, real and processed tokens, the worst and the mean row length."""
    check_mode(mode)
    kept = [min(n, max_length) for n in lengths]
    real = sum(kept)
    per_step = batch_size * num_gpus  # dataloader items consumed per micro-step over all devices
    longest = max(kept)
    if mode == "packing":
        n_rows = len(pack_bfd(kept, max_length))
        processed, worst = real, max_length  # B full rows, flattened
    elif mode == "padding_free":
        n_rows, processed, worst = len(kept), real, longest  # the B longest records, flattened
    elif mode == "max_length":
        n_rows = len(kept)
        processed, worst = n_rows * max_length, max_length
    else:  # longest: the Trainer's RandomSampler order, B per micro-batch, padded to the batch's longest
        n_rows = len(kept)
        order = kept[:]
        random.Random(seed).shuffle(order)
        processed = sum(len(order[i:i + batch_size]) * max(order[i:i + batch_size]) for i in range(0, n_rows, batch_size))
        worst = longest
    micro = math.ceil(n_rows / per_step)
    speed = max(1, round(processed / n_rows))  # tokens per row as processed: a packed row's fill, a mean record
    return BatchSim(mode, max_length, batch_size, n_rows, micro, real, processed, worst, speed)
