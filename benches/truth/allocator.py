"""A model of PyTorch's CUDA caching allocator (``c10/cuda/CUDACachingAllocator.cpp``, default
settings: no ``expandable_segments``, no ``max_split_size_mb``, no ``roundup_power2_divisions``),
to replay the allocation sequence of a training step recorded by the fake-tensor harness
(``benches.truth.faketensor.measure(..., record_allocations=True)``) and see what
``max_memory_reserved`` would be.

The rules, as the source states them:

- a request is rounded up to a multiple of 512 bytes (``kMinBlockSize``; ``round_size``);
- requests of at most 1 MiB (``kSmallSize``) use the small pool, whose segments are 2 MiB
  (``kSmallBuffer``); larger ones use the large pool: 20 MiB segments (``kLargeBuffer``) for
  requests under 10 MiB (``kMinLargeAlloc``), else a segment of the request rounded up to
  2 MiB (``kRoundLarge``) (``get_allocation_size``);
- a request takes the smallest free block of its pool that is large enough (best fit:
  the free-block set is ordered by size, then address; ``get_free_block``), else a new segment
  (``alloc_block``);
- the block is split when what remains is at least 512 B (small pool) or more than 1 MiB
  (large pool) (``should_split``); otherwise the request holds the whole block, and
  ``memory_allocated`` counts the whole block;
- a freed block merges with free neighbours of its own segment only (``try_merge_blocks``);
- ``empty_cache`` returns every free block that is a whole segment (``release_cached_blocks``);
  so does a ``cudaMalloc`` that fails, before the allocator retries and, failing again,
  raises the out-of-memory error.

Not modelled: streams other than one, ``expandable_segments`` (which maps one segment per
pool in pages and so removes most of the segment-boundary waste), ``max_split_size_mb``,
and allocations inside a kernel that the recording does not see.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Iterable

K_MIN_BLOCK = 512
K_SMALL_SIZE = 1 << 20
K_SMALL_BUFFER = 2 << 20
K_LARGE_BUFFER = 20 << 20
K_MIN_LARGE_ALLOC = 10 << 20
K_ROUND_LARGE = 2 << 20

__all__ = ["Allocator", "OutOfMemory", "round_size", "allocation_size", "replay"]


def round_size(n: int) -> int:
    """``round_size``: at least 512 B, a multiple of 512 B."""
    return K_MIN_BLOCK if n < K_MIN_BLOCK else -(-n // K_MIN_BLOCK) * K_MIN_BLOCK


def allocation_size(size: int) -> int:
    """``get_allocation_size``: the size of a new segment for a (rounded) request."""
    if size <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if size < K_MIN_LARGE_ALLOC:
        return K_LARGE_BUFFER
    return -(-size // K_ROUND_LARGE) * K_ROUND_LARGE


class OutOfMemory(RuntimeError):
    pass


@dataclass(eq=False)
class Block:
    addr: int
    size: int
    small: bool
    segment: int
    allocated: bool = False
    prev: Block | None = None
    next: Block | None = None

    def key(self) -> tuple[int, int]:
        return (self.size, self.addr)


@dataclass
class Allocator:
    """One device, one stream. ``capacity`` (bytes the allocator may reserve) makes a failing
    ``cudaMalloc`` free the cached segments and retry, as the real allocator does."""

    capacity: int | None = None
    allocated: int = 0
    reserved: int = 0
    max_allocated: int = 0
    max_reserved: int = 0
    segments: int = 0
    _free: dict[bool, list[tuple[int, int, Block]]] = field(default_factory=lambda: {True: [], False: []})
    _next_addr: int = 0

    # -- pools -----------------------------------------------------------------------
    def _insert(self, b: Block) -> None:
        bisect.insort(self._free[b.small], (b.size, b.addr, b))

    def _remove(self, b: Block) -> None:
        pool = self._free[b.small]
        i = bisect.bisect_left(pool, (b.size, b.addr))
        assert pool[i][2] is b
        del pool[i]

    def _best_fit(self, size: int, small: bool) -> Block | None:
        pool = self._free[small]
        i = bisect.bisect_left(pool, (size, -1))
        return pool[i][2] if i < len(pool) else None

    # -- malloc / free -----------------------------------------------------------------
    def malloc(self, nbytes: int) -> Block:
        size = round_size(nbytes)
        small = size <= K_SMALL_SIZE
        block = self._best_fit(size, small)
        if block is not None:
            self._remove(block)
        else:
            block = self._new_segment(size, small)
        remaining = block.size - size
        if (remaining >= K_MIN_BLOCK) if small else (remaining > K_SMALL_SIZE):
            rest = Block(block.addr + size, remaining, small, block.segment, prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            self._insert(rest)
        block.allocated = True
        self.allocated += block.size
        self.max_allocated = max(self.max_allocated, self.allocated)
        return block

    def _new_segment(self, size: int, small: bool) -> Block:
        seg = allocation_size(size)
        if self.capacity is not None and self.reserved + seg > self.capacity:
            self.empty_cache()  # release_cached_blocks, then retry cudaMalloc
            if self.reserved + seg > self.capacity:
                raise OutOfMemory(f"reserved {self.reserved} + segment {seg} > capacity {self.capacity}")
        self.segments += 1
        block = Block(self._next_addr, seg, small, self.segments)
        self._next_addr += seg + K_ROUND_LARGE  # segments are never adjacent
        self.reserved += seg
        self.max_reserved = max(self.max_reserved, self.reserved)
        return block

    def free(self, block: Block) -> None:
        assert block.allocated
        block.allocated = False
        self.allocated -= block.size
        for nb in (block.prev, block.next):
            if nb is not None and not nb.allocated:
                self._remove(nb)
                if nb is block.prev:
                    nb.size += block.size
                    nb.next = block.next
                    if block.next is not None:
                        block.next.prev = nb
                    block = nb
                else:
                    block.size += nb.size
                    block.next = nb.next
                    if nb.next is not None:
                        nb.next.prev = block
        self._insert(block)

    def empty_cache(self) -> None:
        for small in (True, False):
            keep = []
            for size, addr, b in self._free[small]:
                if b.prev is None and b.next is None:
                    self.reserved -= b.size
                else:
                    keep.append((size, addr, b))
            self._free[small] = keep

    def reset_peaks(self) -> None:
        self.max_allocated = self.allocated
        self.max_reserved = self.reserved


def replay(events: Iterable[list[Any]], allocator: Allocator | None = None, *,
           live: dict[int, Block] | None = None, ignore_unknown_frees: bool = False) -> dict[str, Any]:
    """Replay ``[["a", id, bytes] | ["f", id] | ["m", phase], ...]``; per-phase peaks of
    allocated and reserved bytes (as the allocator counts them) and the totals."""
    a = allocator if allocator is not None else Allocator()
    blocks: dict[int, Block] = live if live is not None else {}
    phases: dict[str, dict[str, int]] = {}
    current: str | None = None

    def close() -> None:
        if current is not None:
            ph = phases.setdefault(current, {"allocated": 0, "reserved": 0})
            ph["allocated"] = max(ph["allocated"], a.max_allocated)
            ph["reserved"] = max(ph["reserved"], a.max_reserved)

    for ev in events:
        if ev[0] == "a":
            blocks[ev[1]] = a.malloc(ev[2])
        elif ev[0] == "f":
            b = blocks.pop(ev[1], None)
            if b is None:
                if ignore_unknown_frees:
                    continue
                raise KeyError(f"free of unknown allocation {ev[1]}")
            a.free(b)
        else:
            close()
            current = ev[1]
            a.reset_peaks()
    close()
    return {"phases": phases, "max_allocated": max((p["allocated"] for p in phases.values()), default=a.max_allocated),
            "max_reserved": max((p["reserved"] for p in phases.values()), default=a.max_reserved),
            "allocator": a, "live": blocks}
