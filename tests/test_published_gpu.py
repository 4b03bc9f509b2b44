"""The published-GPU truth set and the device terms it checks: every row carries its source and
configuration; device terms follow PyTorch's own sizes; speed terms follow counted bytes."""

from __future__ import annotations

import json
import re

import pytest

from benches.published_gpu import MEASUREMENTS, compare_row, load_rows, plan_for, retained_outputs_bytes
from forge_advisor.estimate import estimate
from forge_advisor.plan import Plan

CONFIG_FIELDS = ("model", "method", "per_device_train_batch_size", "max_seq_length", "mean_tokens_per_sample",
                 "gradient_checkpointing", "dtype", "optimizer", "attention", "gpu", "versions", "measured")


def test_every_row_has_source_and_configuration() -> None:
    rows = load_rows()
    assert len(rows) >= 10
    for r in rows:
        src = r["source"]
        assert src["repo"] == "huggingface/peft" and re.fullmatch(r"[0-9a-f]{40}", src["commit"])
        assert src["url"].endswith(src["path"]) and src["commit"] in src["url"]
        for f in CONFIG_FIELDS:
            assert r[f] is not None, (r["id"], f)
        assert r["role"] in ("calibration", "held-out")
        assert r["comparable"] or r["reason"], r["id"]  # a row left out says why
        assert set(r["versions"]) >= {"transformers", "torch", "peft"}


def test_calibration_and_held_out_are_both_present() -> None:
    rows = [r for r in load_rows() if r["comparable"]]
    roles = {r["role"] for r in rows}
    assert roles == {"calibration", "held-out"}
    # the held-out rows include a method the calibration rows do not have (LoRA on the MLP)
    cal_targets = {tuple(r["lora_target_modules"] or ()) for r in rows if r["role"] == "calibration"}
    assert ("down_proj", "gate_proj", "up_proj") not in cal_targets


def test_other_version_file_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(MEASUREMENTS.read_text())
    data["version"] = 99
    p = tmp_path / "m.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="version 99"):
        load_rows(p)


def test_retained_outputs_match_llama_3_2_3b_arithmetic() -> None:
    row = next(r for r in load_rows() if r["comparable"])
    # Llama-3.2-3B config.json: vocab 128256, 28 layers, 8 KV heads of 128; bf16 logits and K, V
    per_token = 128256 * 2 + 28 * 2 * 8 * 128 * 2
    assert retained_outputs_bytes(row, 209) == 4 * 209 * per_token


def test_cublas_workspaces_follow_pytorch_sizes() -> None:
    plan = Plan(method="lora")
    ada = estimate("meta-llama/Llama-3.2-1B", plan, gpu="L40S").device_terms["cublas_workspace"]
    hopper = estimate("meta-llama/Llama-3.2-1B", plan, gpu="H100 SXM").device_terms["cublas_workspace"]
    # CublasHandlePool.cpp: 2 × 4 MiB + 8 × 16 KiB before Hopper, 32 MiB on 9.x; two handles per step
    assert ada == 2 * (4096 * 1024 * 2 + 16 * 1024 * 8)
    assert hopper == 2 * 32 * 1024 * 1024


def test_upper_bound_is_above_the_estimate_and_default_headroom_covers_the_band() -> None:
    e = estimate("meta-llama/Llama-3.1-8B", "lora", gpu="RTX 4090")
    context = e.device_terms["cuda_context"]
    band = (e.peak_reserved_upper_bytes - e.peak_reserved_bytes) / (e.peak_reserved_bytes - context)
    assert 0.0 < band < 0.2
    # the band is inside the bound, so the verdict judges the bound: a plan whose bound is over
    # the usable memory does not fit even when its plain reserved estimate is under it
    assert e.fits == (e.peak_reserved_upper_bytes <= e.usable_bytes)
    assert e.to_dict()["memory"]["peak_reserved_upper_bytes"] == e.peak_reserved_upper_bytes


def test_optimizer_passes_priced_at_bandwidth() -> None:
    """Foreach AdamW makes 20 passes over the parameters, the fused kernel 7 (torch/optim/adamw.py):
    the step-time difference of two full fine-tunes that differ only there is 13 passes of bf16
    parameters at the GPU's bandwidth."""
    kw = dict(method="full", dtype="bf16", per_device_train_batch_size=1, max_length=512)
    a = estimate("meta-llama/Llama-3.2-1B", Plan(optim="adamw_torch", **kw), gpu="H100 SXM")
    b = estimate("meta-llama/Llama-3.2-1B", Plan(optim="adamw_torch_fused", **kw), gpu="H100 SXM")
    trainable = a.raw["trainable_parameters"]
    bandwidth = a.gpu.bandwidth_bytes_per_s
    assert a.step_seconds - b.step_seconds == pytest.approx(13 * 2 * trainable / bandwidth, rel=1e-9)


def test_compare_row_reads_the_published_numbers() -> None:
    row = next(r for r in load_rows() if r["role"] == "calibration" and r["method"] == "lora")
    out = compare_row(row)
    m = row["measured"]
    assert out["tokens_per_second"]["measured"] == m["tokens_per_second"]
    assert out["max_memory_reserved"]["measured"] == m["max_memory_reserved_bytes"] + (2 << 20)
    assert out["max_memory_reserved"]["upper_bound"] > out["max_memory_reserved"]["estimate"]
    assert plan_for(row, 200).lora_target_modules == ("q_proj", "v_proj")


def test_constants_are_solved_from_calibration_rows_only() -> None:
    from benches.published_gpu import LONGEST_PADDED_LENGTH, fit_calibration

    rows = load_rows()
    fit = fit_calibration(rows)
    # the values in use are what the calibration rows give (rounded)
    assert fit["longest_padded_length"] == LONGEST_PADDED_LENGTH
    # one unknown, two rows: the derived allocator reserve makes them agree
    assert fit["max_relative_residual"] < 0.02
    # held-out rows play no part: change every held-out measurement and the fit is the same
    moved = json.loads(json.dumps(rows))
    for r in moved:
        if r["role"] == "held-out":
            r["measured"]["max_memory_reserved_bytes"] *= 2
            for w in r["measured"]["windows"]:
                w["step_seconds"] *= 3
    assert fit_calibration(moved) == fit


def test_speed_constants_match_the_fit() -> None:
    """EFFICIENCY_MAX and HOST_SECONDS_PER_LAYER (rust/src/throughput.rs) are the values
    `fit_speed` solves from the LoRA calibration run's step times: re-derive the step time of
    that run at its mean length from the fit and compare with the estimator."""
    from benches.published_gpu import fit_speed

    row = next(r for r in load_rows() if r["role"] == "calibration" and r["method"] == "lora")
    fit = fit_speed(row)
    assert fit["efficiency_max"] == pytest.approx(0.53, abs=0.005)
    assert fit["host_seconds_per_layer"] == pytest.approx(0.72e-3, abs=0.01e-3)
    mean_len = round(sum(w["tokens_per_sample"] - 1 for w in row["measured"]["windows"]) / len(row["measured"]["windows"]))
    e = estimate(row["model"], plan_for(row, mean_len), gpu=row["gpu"])
    line = fit["step_time_intercept"] + fit["step_time_slope"] * mean_len
    assert e.step_seconds == pytest.approx(line, rel=0.01)
