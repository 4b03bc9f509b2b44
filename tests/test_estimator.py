"""The estimator against independent truth: fake-tensor measurements of real transformers +
peft training steps, peft's own trainable counts, bitsandbytes' real 4-bit storage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from forge_advisor.errors import ForgeError
from forge_advisor.estimate import estimate
from forge_advisor.plan import Plan
from forge_advisor.shapes import load_shape, shape_from_config

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT / "benches" / "results" / "truth_faketensor.json"
sys.path.insert(0, str(ROOT))

TINY_LLAMA = {
    "model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2,
    "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 1024, "tie_word_embeddings": False,
}


def _truth_cases() -> list[dict]:
    data = json.loads(TRUTH.read_text())
    return [c for c in data.values() if (c.get("result") or {}).get("peak_allocated_bytes")]


def _case_id(case: dict) -> str:
    return case["name"]


LLAMA_LIKE = {"llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3", "opt", "gpt_neox", "mixtral", "qwen2_moe", "qwen3_moe", "falcon"}


@pytest.mark.parametrize("case", [c for c in _truth_cases() if c["config"].get("model_type") in LLAMA_LIKE], ids=_case_id)
def test_peak_matches_fake_tensor_measurement(case: dict) -> None:
    """Recorded MemTracker peaks (benches/truth) are the golden numbers; 5% is the target's max."""
    from benches.accuracy import _PLAN_FIELDS, _shape

    plan = Plan.from_dict({k: v for k, v in case["plan"].items() if k in _PLAN_FIELDS})
    measured = case["result"]["peak_allocated_bytes"]
    est = estimate(_shape(case), plan).peak_allocated_bytes
    assert abs(est - measured) / measured < 0.05, (est, measured)


MIXER_FAMILIES = {"falcon_h1", "nemotron_h", "mamba", "lfm2", "qwen3_5_text"}


@pytest.mark.parametrize("case", [c for c in _truth_cases() if c["config"].get("model_type") in MIXER_FAMILIES], ids=_case_id)
def test_mixer_peak_matches_fake_tensor_measurement(case: dict) -> None:
    """Hybrid and mixer models (torch fallbacks of the scans, under Trainer's bf16 autocast)
    against their recorded MemTracker peaks: within the 4% bar."""
    from benches.accuracy import _PLAN_FIELDS, _shape

    plan = Plan.from_dict({k: v for k, v in case["plan"].items() if k in _PLAN_FIELDS})
    measured = case["result"]["peak_allocated_bytes"]
    est = estimate(_shape(case), plan).peak_allocated_bytes
    assert abs(est - measured) / measured < 0.04, (est, measured)

def test_live_fake_tensor_measurement_agrees() -> None:
    """Measure a fresh case with the harness (real transformers + peft on fake CUDA)."""
    plan = {"method": "lora", "dtype": "bf16", "per_device_train_batch_size": 2, "max_length": 256,
            "gradient_checkpointing": False, "gradient_accumulation_steps": 1, "lora_r": 8,
            "optim": "adamw_torch", "lora_target_modules": "all-linear"}
    code = (
        "import json,sys; sys.path.insert(0, %r); from benches.truth.faketensor import measure; "
        "print(json.dumps(measure(json.loads(sys.argv[1]), json.loads(sys.argv[2]))))" % str(ROOT)
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(TINY_LLAMA), json.dumps(plan)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])["peak_allocated_bytes"]
    est = estimate(shape_from_config(TINY_LLAMA, "tiny"), Plan(**plan)).peak_allocated_bytes
    assert abs(est - measured) / measured < 0.05, (est, measured)


@pytest.mark.parametrize("targets", [None, "all-linear", ("q_proj", "v_proj")])
def test_lora_trainable_count_equals_peft(targets: object) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLAMA))
    peft_targets = ["q_proj", "k_proj", "v_proj", "o_proj"] if targets is None else (list(targets) if isinstance(targets, tuple) else targets)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=peft_targets))
    peft_count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    est = estimate(shape_from_config(TINY_LLAMA, "tiny"), Plan(method="lora", lora_r=8, lora_target_modules=targets))  # type: ignore[arg-type]
    assert est.to_dict()["parameters"]["trainable"] == peft_count


@pytest.mark.parametrize("double_quant", [True, False])
def test_nf4_storage_equals_bitsandbytes(double_quant: bool) -> None:
    import torch
    import bitsandbytes as bnb
    shape = shape_from_config(TINY_LLAMA, "tiny")
    layer_weights = sum(l.in_features * l.out_features * l.count for t in shape.layers for l in shape.layer_types[t].linears)
    packed = state = 0
    for t in shape.layers:
        for lin in shape.layer_types[t].linears:
            w = torch.zeros(lin.out_features, lin.in_features, dtype=torch.bfloat16)
            q, st = bnb.functional.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=double_quant)
            packed += q.numel() * q.element_size()
            state += st.absmax.numel() * st.absmax.element_size()
            if st.nested:
                state += st.state2.absmax.numel() * st.state2.absmax.element_size()
    est = estimate(shape, Plan(method="qlora", bnb_4bit_use_double_quant=double_quant))
    # weights: packed 4-bit layers + fp32 rest (prepare_model_for_kbit_training upcasts it)
    assert est.breakdown["weights"] == packed + 4 * (shape.num_parameters - layer_weights)
    assert abs(est.breakdown["quant_state"] - state) <= 4 * len(shape.layers) * 8  # per-tensor rounding of the nested blocks


def test_memory_orders_the_methods() -> None:
    shape = load_shape("meta-llama/Llama-3.1-8B")
    full = estimate(shape, "sft").peak_allocated_bytes
    lora = estimate(shape, "lora").peak_allocated_bytes
    qlora = estimate(shape, "qlora").peak_allocated_bytes
    assert qlora < lora < full


def test_checkpointing_and_batch_move_memory_the_right_way() -> None:
    shape = load_shape("meta-llama/Llama-3.1-8B")
    on = estimate(shape, "lora", gradient_checkpointing=True, per_device_train_batch_size=4).peak_allocated_bytes
    off = estimate(shape, "lora", gradient_checkpointing=False, per_device_train_batch_size=4).peak_allocated_bytes
    bigger = estimate(shape, "lora", gradient_checkpointing=False, per_device_train_batch_size=8).peak_allocated_bytes
    assert on < off < bigger


def test_native_batch_equals_one_plan_at_a_time() -> None:
    """`estimate_batch` (one preparation per run of plans that differ in batch only) gives,
    per plan, what `estimate` gives alone; a bad plan raises PlanError naming its field,
    never an error string in place of a result."""
    from types import SimpleNamespace

    from forge_advisor.core import PlanError
    from forge_advisor.estimate import native_estimator
    from forge_advisor.gpus import find_gpu
    from forge_advisor.presets import get_preset

    shape = load_shape("meta-llama/Llama-3.1-8B")
    gpu = find_gpu("H100 SXM")
    est = native_estimator(shape, gpu)
    base = get_preset("lora").to_plan()
    plans = [
        base.with_(per_device_train_batch_size=b, gradient_checkpointing=c, lora_r=r)
        for r in (8, 64)
        for c in (False, True)
        for b in (1, 2, 4, 8)
    ]
    out = est.estimate_batch(plans)
    assert len(out) == len(plans)
    for plan, got in zip(plans, out):
        one = est.estimate(plan)
        assert got == (one.peak_allocated_bytes, one.peak_reserved_bytes, one.tokens_per_second)
    bad = SimpleNamespace(**{**plans[0].to_dict(), "per_device_train_batch_size": 0})
    with pytest.raises(PlanError) as info:
        est.estimate_batch([*plans[:3], bad])
    assert (info.value.field, info.value.value, info.value.allowed) == ("per_device_train_batch_size", "0", "[1, 65536]")


def test_known_lora_count_llama_3_8b() -> None:
    # r=16 on q,k,v,o of Llama-3-8B: 32 × 16 × (4096+4096 + 2×(4096+1024) + 4096+4096) = 13,631,488
    est = estimate("meta-llama/Llama-3.1-8B", "lora", lora_r=16)
    assert est.to_dict()["parameters"]["trainable"] == 13_631_488


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"lora_r": 0}, "lora_r"),
        ({"freeze_ratio": 1.0}, "freeze_ratio"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ({"lora_target_modules": ("nope",)}, "lora_target_modules"),
        ({"lora_r": 5000}, "lora_r"),
        ({"dtype": "fp32", "method": "qlora"}, "qlora"),
    ],
)
def test_impossible_plans_name_the_field(overrides: dict, fragment: str) -> None:
    with pytest.raises(ForgeError) as err:
        estimate("meta-llama/Llama-3.1-8B", "lora", **overrides)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_absurd_sizes_give_an_error_not_a_panic() -> None:
    import dataclasses

    from forge_advisor.shapes import load_shape

    # without its position limit (refused first otherwise), so the core's overflow path answers
    shape = dataclasses.replace(load_shape("meta-llama/Llama-3.1-405B"), max_position_embeddings=None)
    with pytest.raises(ForgeError, match="overflow|absurd|allowed"):
        estimate(shape, "sft", per_device_train_batch_size=65536, max_length=1 << 24)


def test_estimate_json_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "forge_advisor.cli.main", "estimate", "--model", "meta-llama/Llama-3.1-8B",
         "--preset", "qlora", "--gpu", "RTX 4090", "--json"], capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert isinstance(d["model"], str) and d["gpu"] == "RTX 4090"
    assert d["plan"]["method"] == "qlora"
    mem = d["memory"]
    assert isinstance(mem["peak_allocated_bytes"], int) and mem["peak_reserved_bytes"] > mem["peak_allocated_bytes"]
    assert sum(mem["breakdown"].values()) == mem["peak_allocated_bytes"]
    assert d["throughput"]["tokens_per_second"] > 0 and d["throughput"]["step_seconds"] > 0
    assert d["fits"] is True and d["headroom_bytes"] == mem["gpu_memory_bytes"] - mem["peak_reserved_bytes"]


@pytest.mark.parametrize("argv", [["--lora-r", "0"], ["--freeze-ratio", "1"], ["--lora-target-modules", "zz"], ["--gpu", "h100"]])
def test_estimate_cli_bad_input_exits_2_with_one_line(argv: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "forge_advisor.cli.main", "estimate", "--model", "meta-llama/Llama-3.1-8B", *argv],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
