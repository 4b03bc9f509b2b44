"""FSDP2 memory: the estimator against per-rank truth measured with PyTorch's
``FSDPMemTracker`` on fake tensors and the fake process group (``benches/truth/fsdp2.py``).

The stored measurements (``benches/results/truth_fsdp2.json``, world sizes 2/4/8, written by
``python -m benches.truth.fsdp2 --cases benches/cases_fsdp.json``) are checked without
torch; one small case is measured live, so a change in transformers/peft/accelerate/torch
that moves the truth shows up here too.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from benches.truth.faketensor import config_at_depth
from forge_advisor.estimate import estimate
from forge_advisor.plan import Plan
from forge_advisor.shapes import shape_from_config

ROOT = Path(__file__).resolve().parent.parent
TRUTH = ROOT / "benches" / "results" / "truth_fsdp2.json"


def _error_pct(config: dict, plan: dict, num_layers: int | None, measured: int) -> float:
    shape = shape_from_config(config_at_depth(config, num_layers), "case")
    est = estimate(shape, Plan.from_dict(plan))
    return (est.peak_allocated_bytes - measured) / measured * 100


def test_stored_fsdp2_truth_within_targets():
    cases = [c for c in json.loads(TRUTH.read_text()).values() if "result" in c]
    assert len(cases) >= 24
    assert {c["plan"]["num_gpus"] for c in cases} == {2, 4, 8}
    assert {c["plan"]["dtype"] for c in cases} == {"bf16", "amp-bf16"}
    errs = [abs(_error_pct(c["config"], c["plan"], c["num_layers"], c["result"]["peak_allocated_bytes"])) for c in cases]
    assert statistics.median(errs) <= 1.0, errs
    assert max(errs) <= 4.0, errs


def test_amp_bf16_fsdp_is_fp32_shards_gathered_in_bf16():
    """`amp-bf16` + fsdp: fp32 shards (4 bytes/param over the GPUs), no autocast copies, and
    half the pure-bf16 plan's gathered-unit bytes would be wrong: they are bf16 too."""
    cases = {c["name"]: c for c in json.loads(TRUTH.read_text()).values() if "result" in c}
    amp, bf16 = cases["l8b-lora-amp-bf16-ws2"], cases["l8b-lora-bf16-ws2"]
    shape = shape_from_config(config_at_depth(amp["config"], amp["num_layers"]), "x")
    e_amp = estimate(shape, Plan.from_dict(amp["plan"]))
    e_bf16 = estimate(shape, Plan.from_dict(bf16["plan"]))
    assert e_amp.breakdown["weights"] == 2 * e_bf16.breakdown["weights"]
    assert e_amp.breakdown["autocast_copies"] == 0
    assert e_amp.breakdown["distributed_buffers"] == e_bf16.breakdown["distributed_buffers"]
    # and the measured difference is the fp32 shard's extra bytes alone (within 1%)
    extra = amp["result"]["peak_allocated_bytes"] - bf16["result"]["peak_allocated_bytes"]
    assert abs(extra - (e_amp.breakdown["weights"] - e_bf16.breakdown["weights"])) / extra < 0.01


TINY = {
    "model_type": "llama", "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 8192,
    "tie_word_embeddings": False, "rms_norm_eps": 1e-5, "hidden_act": "silu", "max_position_embeddings": 2048,
}


@pytest.mark.parametrize(
    "plan",
    [
        # full fine-tuning, fp32 shards under bf16 mixed precision, accumulation (unsharded
        # grads of earlier micro-batches), 4 ranks
        {"method": "full", "dtype": "amp-bf16", "num_gpus": 4, "gradient_accumulation_steps": 2},
    ],
)
def test_live_fsdp2_measurement_matches_estimate(plan):
    from benches.truth.fsdp2 import measure_fsdp

    full = {"distributed": "fsdp", "per_device_train_batch_size": 2, "max_length": 256, **plan}
    result = measure_fsdp(TINY, full, None)
    assert result["world_size"] == plan["num_gpus"]
    err = _error_pct(TINY, full, None, result["peak_allocated_bytes"])
    assert abs(err) <= 4.0, (err, result["peak_phase"], result["phase_peaks"])
