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

Memory is priced at the WORST micro-batch: B × the longest record for ``longest`` and
``padding_free`` (the B longest records together), B × max_length for ``max_length`` and
``packing`` (a full packed row). Speed is priced on the EXPECTED tokens: the tokens each mode
really processes (padding included where there is padding), at the attention length they
see. Flattened modes keep attention inside each record only with flash_attention_2
(varlen kernels); with sdpa/eager transformers builds a block-diagonal mask over the whole
flattened row, so the row is priced as one sequence of B × length tokens.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from forge_advisor.errors import ForgeError, did_you_mean

__all__ = ["MODES", "MODE_FIELDS", "BatchSim", "simulate", "pack_bfd", "mode_of", "steps_per_epoch"]

MODES = ("longest", "max_length", "packing", "padding_free")
# the preset fields (Hugging Face names) that select each mode in the runtime
MODE_FIELDS: dict[str, dict[str, Any]] = {
    "longest": {"padding": "longest", "packing": False, "padding_free": False},
    "max_length": {"padding": "max_length", "packing": False, "padding_free": False},
    "packing": {"padding": "longest", "packing": True, "padding_free": False},
    "padding_free": {"padding": "longest", "packing": False, "padding_free": True},
}
VARLEN_ATTENTION = ("flash_attention_2",)  # keeps a flattened row's records apart without a mask


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
    worst_rows: int  # the worst micro-batch as the estimator's (batch, length)
    worst_length: int
    speed_rows: int  # the shape whose tokens/s prices the epoch
    speed_length: int

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


def _token_weighted_length(lengths: Sequence[int]) -> int:
    """The attention length that gives Σ n² attention work over Σ n tokens: Σ n² / Σ n."""
    return max(1, round(sum(n * n for n in lengths) / sum(lengths)))


def simulate(lengths: Sequence[int], mode: str, *, max_length: int, batch_size: int, num_gpus: int = 1,
             attn_implementation: str = "sdpa", seed: int = 42) -> BatchSim:
    """One epoch of ``mode`` over ``lengths`` (untruncated, tokens per record)."""
    check_mode(mode)
    kept = [min(n, max_length) for n in lengths]
    real = sum(kept)
    per_step = batch_size * num_gpus  # dataloader items consumed per micro-step over all devices
    varlen = attn_implementation in VARLEN_ATTENTION
    longest = max(kept)
    if mode == "packing":
        rows = pack_bfd(kept, max_length)
        n_rows = len(rows)
        processed = real
        worst = (batch_size, max_length) if varlen else (1, batch_size * max_length)
        speed = (batch_size, _token_weighted_length(kept)) if varlen else (1, min(batch_size, n_rows) * max_length)
    elif mode == "padding_free":
        n_rows = len(kept)
        processed = real
        worst = (batch_size, longest) if varlen else (1, batch_size * longest)
        mean = real / len(kept)
        speed = (batch_size, _token_weighted_length(kept)) if varlen else (1, max(1, round(min(batch_size, n_rows) * mean)))
    elif mode == "max_length":
        n_rows = len(kept)
        processed = n_rows * max_length
        worst = speed = (batch_size, max_length)
    else:  # longest: the Trainer's RandomSampler order, B per micro-batch, padded to the batch's longest
        n_rows = len(kept)
        order = kept[:]
        random.Random(seed).shuffle(order)
        processed = sum(len(order[i:i + batch_size]) * max(order[i:i + batch_size]) for i in range(0, n_rows, batch_size))
        worst = (batch_size, longest)
        speed = (batch_size, max(1, round(processed / n_rows)))
    micro = math.ceil(n_rows / per_step)
    return BatchSim(mode, max_length, batch_size, n_rows, micro, real, processed, worst[0], worst[1], speed[0], speed[1])
