"""Speed of one estimate from Python (pytest-benchmark). A target, not a test: nothing
here asserts a time; ``benches/speed.py`` runs this file and reports the numbers against
the target (one ``estimate()`` call ≤ 20 µs).

Kept out of the normal test run (pytest's ``testpaths`` is ``tests``)::

    python -m pytest benches/test_speed.py --benchmark-json=benches/results/speed.pytest.json
"""

from __future__ import annotations

import json

import pytest

from forge_advisor.estimate import estimate, native_estimator
from forge_advisor.gpus import find_gpu
from forge_advisor.plan import Plan
from forge_advisor.shapes import load_shape

MODEL = "meta-llama/Llama-3.1-8B"
GPU = "RTX 4090"


@pytest.fixture(scope="module")
def warm() -> tuple:
    """Shape, GPU and plan objects with the native estimator already built and cached."""
    shape, gpu = load_shape(MODEL), find_gpu(GPU)
    plan = Plan()  # the lora preset's plan: r=16 on q/k/v/o, bf16, checkpointing
    estimate(shape, plan, gpu=gpu)  # builds and caches the native Estimator
    return shape, gpu, plan


def test_estimate_plan_objects(benchmark, warm) -> None:
    """`estimate(shape, plan, gpu=gpu)`: Plan object, warm cache (the advisor's way)."""
    shape, gpu, plan = warm
    r = benchmark(estimate, shape, plan, gpu=gpu)
    assert r.peak_reserved_bytes > 0


def test_estimate_by_names(benchmark, warm) -> None:
    """`estimate("meta-llama/Llama-3.1-8B", plan, gpu="RTX 4090")`: names resolved per call."""
    _, _, plan = warm
    r = benchmark(estimate, MODEL, plan, gpu=GPU)
    assert r.peak_reserved_bytes > 0


def test_native_estimate_call(benchmark, warm) -> None:
    """`Estimator.estimate(plan)`: the binding alone (the plan read by attribute, an Estimate out)."""
    shape, gpu, plan = warm
    est = native_estimator(shape, gpu)
    d = benchmark(est.estimate, plan)
    assert d.peak_reserved_bytes > 0


def test_native_estimate_batch_1000(benchmark, warm) -> None:
    """`Estimator.estimate_batch` of 1,000 plans (per call; divide by 1,000)."""
    shape, gpu, plan = warm
    est = native_estimator(shape, gpu)
    texts = [
        plan.with_(per_device_train_batch_size=b, lora_r=r, gradient_checkpointing=c)
        for b in (1, 2, 4, 8, 16)
        for r in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # r ≤ the smallest targeted side (k_proj: 1024)
        for c in (False, True)
    ] * 10
    assert len(texts) == 1000
    out = benchmark(est.estimate_batch, texts)
    assert len(out) == 1000
