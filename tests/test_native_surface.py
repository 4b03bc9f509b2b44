"""The typed native surface: stubs that match the extension, plans and GPUs read by
attribute, a PlanError that names its field in every layer, ranges defined once in Rust."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from forge_advisor import core
from forge_advisor.errors import ForgeError
from forge_advisor.estimate import estimate, native_estimator
from forge_advisor.gpus import find_gpu
from forge_advisor.plan import LITERALS, Plan
from forge_advisor.shapes import load_shape

MODEL = "meta-llama/Llama-3.1-8B"


def test_stubs_match_the_extension() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy.stubtest", "forge_advisor._native"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_plan_types_spell_the_cores_choices() -> None:
    assert LITERALS == core.PLAN_CHOICES
    assert set(core.OBJECTIVES) == {"balanced", "fastest", "quality"}


@pytest.mark.parametrize("field", sorted(core.PLAN_INT_RANGES))
def test_python_and_rust_share_the_integer_ranges(field: str) -> None:
    lo, hi = core.PLAN_INT_RANGES[field]
    # the core validates a plan as it reads it (core.unsupported reads and validates only)
    Plan(**{field: hi})  # the bound itself is allowed on both sides
    assert core.unsupported(SimpleNamespace(**{**Plan().to_dict(), field: hi})) is None
    with pytest.raises(ForgeError) as py_err:
        Plan(**{field: hi + 1})
    with pytest.raises(ForgeError) as rust_err:
        core.unsupported(SimpleNamespace(**{**Plan().to_dict(), field: hi + 1}))
    assert str(rust_err.value).startswith("invalid ")  # the core's message, not Python's
    assert py_err.value.field == rust_err.value.field == field
    assert py_err.value.allowed == rust_err.value.allowed == f"[{lo}, {hi}]"


def test_a_plan_is_read_by_attribute_from_any_object() -> None:
    shape, gpu = load_shape(MODEL), find_gpu("RTX 4090")
    est = native_estimator(shape, gpu)
    plan = Plan(method="qlora", lora_r=64, lora_target_modules=("q_proj", "v_proj"), freeze_ratio=0.25)
    a = est.estimate(plan)
    b = est.estimate(SimpleNamespace(**plan.to_dict()))
    assert isinstance(a, core.Estimate) and a.to_dict() == b.to_dict()
    assert a.breakdown.weights == a.to_dict()["breakdown"]["weights"] > 0
    assert a.peak_reserved_bytes == estimate(shape, plan, gpu=gpu).peak_reserved_bytes


def test_the_estimator_takes_shape_and_gpu_objects() -> None:
    shape, gpu = load_shape(MODEL), find_gpu("H100 SXM")
    est = core.Estimator(shape.native, gpu)
    assert est.estimate(Plan()).tokens_per_second is not None
    assert core.Estimator(shape.native).estimate(Plan()).tokens_per_second is None  # no GPU: memory only
    with pytest.raises(TypeError):
        core.Estimator(shape.to_json(), gpu)  # type: ignore[arg-type]
    with pytest.raises(core.PlanError) as err:
        core.Estimator(shape.native, SimpleNamespace(**{**vars(gpu), "memory_bytes": 0}))
    assert err.value.field == "memory_bytes"


def test_a_field_the_core_rejects_is_named_in_the_api_and_the_cli() -> None:
    # the core, not Python, knows which module names a model has
    with pytest.raises(ForgeError) as err:
        estimate(MODEL, "lora", lora_target_modules=("nope_proj",))
    assert err.value.field == "lora_target_modules" and "nope_proj" in (err.value.value or "")
    out = subprocess.run([sys.executable, "-m", "forge_advisor.cli.main", "estimate", "--model", MODEL,
                          "--lora-target-modules", "nope_proj"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "lora_target_modules" in out.stderr
    assert out.stderr.count("\n") == 1


def test_unsupported_plans_are_said_not_hidden() -> None:
    r = estimate("meta-llama/Llama-3.1-70B", "qlora", gpu="A100 80GB SXM", num_gpus=8, distributed="fsdp")
    assert r.unsupported and "FSDP" in r.unsupported and r.to_dict()["unsupported"] == r.unsupported
    assert estimate("meta-llama/Llama-3.1-70B", "qlora", gpu="A100 80GB SXM", num_gpus=8).unsupported is None
