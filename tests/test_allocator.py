"""The caching-allocator model against the rules of c10/cuda/CUDACachingAllocator.cpp."""

from __future__ import annotations

import pytest

from benches.truth.allocator import Allocator, OutOfMemory, allocation_size, replay, round_size

MiB = 1 << 20


def test_rounding_and_segment_sizes() -> None:
    assert round_size(1) == 512 and round_size(512) == 512 and round_size(513) == 1024
    assert allocation_size(512) == 2 * MiB and allocation_size(MiB) == 2 * MiB  # small pool
    assert allocation_size(MiB + 512) == 20 * MiB and allocation_size(10 * MiB - 512) == 20 * MiB
    assert allocation_size(10 * MiB) == 10 * MiB and allocation_size(11 * MiB + 1) == 12 * MiB


def test_small_requests_share_a_2_mib_segment() -> None:
    a = Allocator()
    blocks = [a.malloc(1000) for _ in range(4)]
    assert a.reserved == 2 * MiB and a.allocated == 4 * 1024 and a.segments == 1
    for b in blocks:
        a.free(b)
    assert a.allocated == 0 and a.reserved == 2 * MiB  # cached, not returned


def test_mid_requests_are_carved_from_20_mib_segments() -> None:
    a = Allocator()
    a.malloc(3 * MiB)
    a.malloc(3 * MiB)
    assert a.reserved == 20 * MiB and a.segments == 1 and a.allocated == 6 * MiB


def test_unsplit_remainder_counts_as_allocated() -> None:
    # 11 MiB + 1 B gets a 12 MiB segment; what remains (< 1 MiB) is not split off, so
    # memory_allocated counts the whole block
    a = Allocator()
    a.malloc(11 * MiB + 1)
    assert a.reserved == 12 * MiB and a.allocated == 12 * MiB


def test_no_merging_across_segments() -> None:
    a = Allocator()
    x, y = a.malloc(12 * MiB), a.malloc(12 * MiB)
    a.free(x)
    a.free(y)
    a.malloc(20 * MiB)  # 24 MiB are free, but in two segments: a new one is needed
    assert a.reserved == 44 * MiB and a.segments == 3


def test_neighbours_in_one_segment_merge_and_best_fit_reuses() -> None:
    a = Allocator()
    big = a.malloc(40 * MiB)
    a.free(big)
    parts = [a.malloc(12 * MiB) for _ in range(3)]  # carved from the cached 40 MiB segment
    assert a.reserved == 40 * MiB
    for p in parts:
        a.free(p)
    a.malloc(40 * MiB)  # the pieces merged back into one block
    assert a.reserved == 40 * MiB and a.segments == 1


def test_empty_cache_and_capacity_retry() -> None:
    a = Allocator(capacity=64 * MiB)
    x = a.malloc(40 * MiB)
    a.free(x)
    a.malloc(50 * MiB)  # 40 cached + 50 > 64: cached segments are released, then it fits
    assert a.reserved == 50 * MiB
    with pytest.raises(OutOfMemory):
        a.malloc(20 * MiB)


def test_replay_reports_phase_peaks() -> None:
    ev = [["m", "fwd"], ["a", 0, 12 * MiB], ["a", 1, 3 * MiB], ["f", 1], ["m", "bwd"], ["a", 2, 30 * MiB], ["f", 0], ["f", 2]]
    r = replay(ev)
    assert r["phases"]["fwd"] == {"allocated": 15 * MiB, "reserved": 32 * MiB}
    assert r["phases"]["bwd"] == {"allocated": 42 * MiB, "reserved": 62 * MiB}
    with pytest.raises(KeyError):
        replay([["f", 7]])
