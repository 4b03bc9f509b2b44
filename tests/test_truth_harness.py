"""Checks of the fake-tensor truth harness (benches/truth) itself, at tiny widths.

1. analytic: a lone nn.Linear under the harness' tracker, and a tiny Llama through
   ``measure``: parameter, gradient and AdamW-state bytes equal hand counts (512-byte
   allocator rounding included), SGD keeps no state;
2. real vs fake: the same tiny Llama trained for real on CPU has exactly the parameter,
   gradient and optimizer-state bytes the fake CUDA run reports.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402,F401
import peft  # noqa: E402,F401

from benches.truth import faketensor  # noqa: E402

TINY = {
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 1000,
    "tie_word_embeddings": False,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
}
B, S = 2, 128


def r512(nbytes: int) -> int:
    return math.ceil(nbytes / 512) * 512


def tiny_param_shapes() -> list[tuple[int, ...]]:
    h, i, v, hd = TINY["hidden_size"], TINY["intermediate_size"], TINY["vocab_size"], TINY["head_dim"]
    q, kv = TINY["num_attention_heads"] * hd, TINY["num_key_value_heads"] * hd
    layer = [(q, h), (kv, h), (kv, h), (h, q), (i, h), (i, h), (h, i), (h,), (h,)]
    return [(v, h)] + layer * TINY["num_hidden_layers"] + [(h,), (v, h)]


@pytest.fixture(scope="module")
def fake_full():
    plan = {"method": "full", "dtype": "bf16", "per_device_train_batch_size": B, "max_length": S,
            "gradient_checkpointing": False, "optim": "adamw_torch", "gradient_accumulation_steps": 1}
    return faketensor.measure(TINY, plan)


@pytest.fixture(scope="module")
def fake_sgd_lora():
    plan = {"method": "lora", "dtype": "bf16", "per_device_train_batch_size": B, "max_length": S,
            "optim": "sgd", "gradient_accumulation_steps": 2, "lora_r": 8}
    return faketensor.measure(TINY, plan)


def _linear_case() -> dict:
    """Runs where fake CUDA backward works (see benches/truth/_fakecuda.py)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    tracker_cls = faketensor._make_tracker_class()
    with FakeTensorMode():
        lin = torch.nn.Linear(1000, 3000, device="cuda")  # 12 MB weight, 12 000 B bias (not a multiple of 512)
        opt = torch.optim.AdamW(lin.parameters(), lr=1e-3, foreach=True)
        x = torch.randn(7, 1000, device="cuda")
        t = tracker_cls()
        t.track_external(lin, opt, x)
        loaded = t.cuda_snapshot()
        with t:
            for _ in range(2):
                t.reset_mod_stats()
                lin(x).sum().backward()
                t.reset_peak()
                opt.step()
                snap = t.cuda_snapshot("peak")
                opt.zero_grad(set_to_none=True)
        after = t.cuda_snapshot()
    return {"loaded": loaded, "peak": snap, "after": after}


def test_linear_analytic():
    """A lone Linear: the tracker's optimizer-phase peak is params + grads + 2 AdamW states
    + foreach's sqrt(exp_avg_sq) temporary, each rounded to 512 bytes, and the states persist."""
    if faketensor.fake_cuda_active():
        res = _linear_case()
    else:
        code = (
            "import sys, json; sys.path.insert(0, 'tests'); import test_truth_harness as t; "
            "print(json.dumps(t._linear_case()))"
        )
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=faketensor.fake_cuda_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    p_bytes = r512(1000 * 3000 * 4) + r512(3000 * 4)
    snap, after = res["peak"], res["after"]
    assert res["loaded"]["parameters"] == p_bytes
    assert snap["parameters"] == p_bytes
    assert snap["gradients"] == p_bytes
    # MemTracker files everything allocated inside optimizer.step() as optimizer state: the two
    # AdamW moments plus foreach's sqrt(exp_avg_sq) temporary, one parameter's worth
    assert snap["optimizer_states"] == 3 * p_bytes
    # the rest of the optimizer-phase peak: the input and a few 512-byte scalars
    extra = snap["total"] - 5 * p_bytes - r512(7 * 1000 * 4)
    assert 0 <= extra <= 16 * 512, extra
    assert after["optimizer_states"] == 2 * p_bytes and after["gradients"] == 0


def test_tiny_llama_hand_count(fake_full):
    shapes = tiny_param_shapes()
    p_bytes = sum(r512(math.prod(s) * 2) for s in shapes)  # bf16
    n_params = sum(math.prod(s) for s in shapes)
    r = fake_full
    assert r["total_parameters"] == n_params == r["trainable_parameters"]
    assert r["after_load_breakdown"]["parameters"] == p_bytes
    assert r["after_load_breakdown"]["inputs_other"] == 2 * r512(B * S * 8)  # input_ids + labels (int64)
    # AdamW: exp_avg and exp_avg_sq in the parameter dtype; step counters stay on the CPU
    assert r["before_step2_breakdown"]["optimizer_states"] == 2 * p_bytes
    opt = r["phase_breakdowns"]["optimizer"]
    assert opt["gradients"] == p_bytes
    # at the optimizer peak: both moments + foreach's sqrt temporary for the weight-decay group
    # (Trainer's groups: 2-D weights vs biases/norms; foreach runs group by group)
    decay_bytes = sum(r512(math.prod(s) * 2) for s in shapes if len(s) == 2)
    assert opt["optimizer_states"] == 2 * p_bytes + decay_bytes
    # the logits path: bf16 logits [B,S,V] -> fp32 copy in the loss -> fp32 log_softmax saved
    logits_fp32 = r512(B * S * TINY["vocab_size"] * 4)
    assert r["phase_breakdowns"]["forward"]["activations"] >= 2 * logits_fp32
    assert r["peak_allocated_bytes"] == max(r["phase_peaks"].values())
    assert r["peak_allocated_bytes"] > 4 * p_bytes


def test_sgd_no_state_and_lora_counts(fake_sgd_lora):
    r = fake_sgd_lora
    assert r["before_step2_breakdown"].get("optimizer_states", 0) == 0
    h, hd = TINY["hidden_size"], TINY["head_dim"]
    q, kv = TINY["num_attention_heads"] * hd, TINY["num_key_value_heads"] * hd
    rank, layers = 8, TINY["num_hidden_layers"]
    # q,k,v,o adapters: A [r, in], B [out, r]
    per_layer = rank * (h + q) + rank * (h + kv) * 2 + rank * (q + h)
    assert r["trainable_parameters"] == per_layer * layers
    assert r["lora_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    # peft upcasts adapters to fp32: gradients are fp32, one tensor per A/B matrix
    shapes = []
    for _ in range(layers):
        shapes += [(rank, h), (q, rank), (rank, h), (kv, rank), (rank, h), (kv, rank), (rank, q), (h, rank)]
    assert r["phase_breakdowns"]["optimizer"]["gradients"] == sum(r512(math.prod(s) * 4) for s in shapes)


def test_real_cpu_matches_fake(fake_full):
    """Train the same tiny model for real on CPU: parameter, gradient and optimizer-state bytes
    (rounded per tensor as the CUDA allocator does) equal the fake run's."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = faketensor._make_config(TINY, None)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.train()
    opt = faketensor._make_optimizer(model, "adamw_torch")
    ids = torch.randint(0, TINY["vocab_size"], (B, S))
    grads_bytes = None
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids.clone(), use_cache=False).loss
        loss.backward()
        grads_bytes = sum(r512(p.grad.numel() * p.grad.element_size()) for p in model.parameters())
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0, foreach=True)
        opt.step()
        model.zero_grad(set_to_none=True)
    param_bytes = sum(r512(p.numel() * p.element_size()) for p in model.parameters())
    state_bytes = sum(
        r512(v.numel() * v.element_size())
        for st in opt.state.values()
        for k, v in st.items()
        if torch.is_tensor(v) and k != "step"
    )
    assert all(v.dtype == torch.bfloat16 for st in opt.state.values() for k, v in st.items() if k != "step")
    r = fake_full
    assert r["after_load_breakdown"]["parameters"] == param_bytes
    assert r["phase_breakdowns"]["optimizer"]["gradients"] == grads_bytes
    assert r["before_step2_breakdown"]["optimizer_states"] == state_bytes
    assert r["total_parameters"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("batching, rows, records", [("padding_free", 1, B), ("packing", 1, 3 * B), ("longest", B, B),
                                                    ("max_length", B, B)])
def test_batching_inputs_are_the_collators_worst_batch(batching, rows, records):
    """The harness' micro-batch per mode, on real CPU tensors: flattened modes are one row of
    B·S tokens whose position_ids transformers 5 reads as ``records`` sequences
    (masking_utils.find_packed_sequence_indices, the function its sdpa/eager masks use);
    padded modes keep B rows with zeros in the attention mask where the labels are -100."""
    from transformers.masking_utils import find_packed_sequence_indices

    ids, labels, kw = faketensor._batch_inputs(torch, batching, 1000, B, S, device="cpu")
    assert ids.shape == labels.shape == (rows, B * S // rows)
    if rows == 1:
        seq = find_packed_sequence_indices(kw["position_ids"])
        assert seq is not None and int(seq[0, -1]) + 1 == records
    else:
        mask = kw["attention_mask"]
        assert int(mask[0].sum()) == (S if batching == "longest" else 3 * S // 4)  # row 0: the longest record
        assert bool(((mask == 0) == (labels == -100)).all()) and int((mask == 0).sum()) > 0


def test_flattened_batch_measures_the_masked_row():
    """A padding-free micro-batch runs through the real model under fake tensors: the inputs
    are one row plus its position_ids, and attention is SDPA (a mask, not eager scores)."""
    plan = {"method": "full", "dtype": "bf16", "per_device_train_batch_size": B, "max_length": S,
            "gradient_checkpointing": False, "optim": "adamw_torch", "gradient_accumulation_steps": 1,
            "batching": "padding_free"}
    r = faketensor.measure(TINY, plan)
    assert r["after_load_breakdown"]["inputs_other"] == 3 * r512(B * S * 8)  # input_ids, labels, position_ids
    assert r["attention_forward_ops"] and all("scaled_dot_product" in op for op in r["attention_forward_ops"])
    assert faketensor.case_key(TINY, plan, None) != faketensor.case_key(TINY, {**plan, "batching": "packing"}, None)


def test_unsupported_plans_raise():
    with pytest.raises(NotImplementedError):
        faketensor.measure(TINY, {"method": "qlora"})
    with pytest.raises(NotImplementedError):
        faketensor.measure(TINY, {"optim": "paged_adamw_8bit"})


def test_freeze_rounding_and_case_key():
    assert faketensor.case_key(TINY, {"method": "full"}, 2) == faketensor.case_key(TINY, {"method": "full"}, 2)
    assert faketensor.case_key(TINY, {"method": "full"}, 2) != faketensor.case_key(TINY, {"method": "full"}, 3)
    # defaults are resolved before hashing
    assert faketensor.case_key(TINY, {}, None) == faketensor.case_key(TINY, {"method": "lora"}, None)


# ---- the GPU half of the truth (benches/truth/run_gpu.py) ----------------------------------
def test_config_at_depth_sets_every_depth_spelling_and_cuts_layer_types():
    cfg = {"model_type": "gemma3_text", "num_hidden_layers": 6, "layer_types": ["sliding_attention"] * 5 + ["full_attention"]}
    out = faketensor.config_at_depth(cfg, 2)
    assert out["num_hidden_layers"] == 2 and out["layer_types"] == ["sliding_attention"] * 2
    assert cfg["num_hidden_layers"] == 6  # the case's own config is left alone
    assert faketensor.config_at_depth({"n_layer": 12}, 3) == {"n_layer": 3}
    assert faketensor.config_at_depth({"hidden_size": 8}, 4) == {"hidden_size": 8, "num_hidden_layers": 4}
    assert faketensor.config_at_depth({"n_layer": 12}, None) == {"n_layer": 12}


def test_gpu_cases_add_qlora_twins_and_skip_multi_gpu():
    from benches.truth.run_gpu import gpu_cases

    cases = [
        {"name": "a-lora", "config": {"model_type": "llama"}, "plan": {"method": "lora", "dtype": "bf16"}},
        {"name": "a-lora-fp32", "config": {"model_type": "llama"}, "plan": {"method": "lora", "dtype": "fp32"}},
        {"name": "a-full", "config": {"model_type": "llama"}, "plan": {"method": "full", "dtype": "amp-bf16"}},
        {"name": "a-ddp", "config": {"model_type": "llama"}, "plan": {"method": "lora", "num_gpus": 2, "distributed": "ddp"}},
    ]
    out = gpu_cases(cases, with_qlora=True)
    assert [c["name"] for c in out] == ["a-lora", "a-lora-qlora", "a-lora-fp32", "a-full"]
    twin = out[1]["plan"]
    assert twin["method"] == "qlora" and {k: v for k, v in twin.items() if k != "method"} == {
        k: v for k, v in out[0]["plan"].items() if k != "method"
    }
    assert [c["name"] for c in gpu_cases(cases, with_qlora=False)] == ["a-lora", "a-lora-fp32", "a-full"]


def test_gpu_truth_without_cuda_is_one_line_and_writes_nothing(tmp_path):
    import os

    out = tmp_path / "truth_gpu.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benches.truth.run_gpu", "benches/cases_accuracy.json", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no GPU, even on a machine that has one
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no CUDA device" in proc.stderr
    assert not out.exists()
