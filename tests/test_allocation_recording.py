"""The fake-tensor harness records a step's allocation sequence; replayed through the
caching-allocator model it gives back the harness' own peak (plus block rounding)."""

from __future__ import annotations

import pytest

from benches.truth import faketensor
from benches.truth.allocator import replay

TINY = {
    "model_type": "llama", "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 1000,
    "tie_word_embeddings": False, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
}
PLAN = {"method": "full", "dtype": "bf16", "per_device_train_batch_size": 2, "max_length": 128,
        "gradient_checkpointing": False, "optim": "adamw_torch", "gradient_accumulation_steps": 1}


@pytest.fixture(scope="module")
def recorded() -> dict:
    return faketensor.measure(TINY, PLAN, record_allocations=True)


def test_sequence_is_consistent_and_phases_are_marked(recorded) -> None:  # type: ignore[no-untyped-def]
    ev = recorded["allocation_events"]
    marks = [e[1] for e in ev if e[0] == "m"]
    assert marks == ["step1.forward", "step1.backward", "step1.optimizer",
                     "step2.forward", "step2.backward", "step2.optimizer"]
    live: set[int] = set()
    for e in ev:  # every free is of a live allocation, every size a multiple of 512 B
        if e[0] == "a":
            assert e[2] > 0 and e[2] % 512 == 0 and e[1] not in live
            live.add(e[1])
        elif e[0] == "f":
            live.remove(e[1])
    assert live  # weights and optimizer states outlive the recording


def test_replay_gives_back_the_measured_peak(recorded) -> None:  # type: ignore[no-untyped-def]
    r = replay(recorded["allocation_events"])
    measured = recorded["phase_peaks"]
    for phase, peak in measured.items():
        got = r["phases"][f"step2.{phase}"]
        # the allocator counts whole blocks: never less than the tensors, a little more
        # where a request took an unsplit block (small pool: < 512 B per block)
        assert peak <= got["allocated"] <= peak * 1.02, phase
        assert got["reserved"] >= got["allocated"]
    # recording does not change what the harness measures
    plain = faketensor.measure(TINY, PLAN)
    assert plain["peak_allocated_bytes"] == recorded["peak_allocated_bytes"]
    assert "allocation_events" not in plain
