"""The advisor: determinism, fit, search quality against the Rust brute force, clean
answers when nothing fits, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from forge_advisor import _native
from forge_advisor.advisor import auto_preset, fit, recommend
from forge_advisor.advisor.request import SearchRequest
from forge_advisor.advisor.search import build_space
from forge_advisor.errors import ForgeError
from forge_advisor.estimate import estimate, native_estimator
from forge_advisor.gpus import find_gpu
from forge_advisor.shapes import load_shape

CLI = [sys.executable, "-m", "forge_advisor.cli.main"]


def test_same_inputs_same_answer() -> None:
    a = recommend("meta-llama/Llama-3.1-8B", "RTX 4090", seed=3).to_dict()
    b = recommend("meta-llama/Llama-3.1-8B", "RTX 4090", seed=3).to_dict()
    a["search"].pop("seconds"), b["search"].pop("seconds")
    assert a == b


def test_every_recommendation_fits_with_headroom() -> None:
    gpu = find_gpu("A100 40GB SXM")
    rec = recommend("Qwen/Qwen2.5-7B", gpu, headroom=0.1)
    assert rec.recommendations
    for cand in rec.recommendations:
        again = estimate("Qwen/Qwen2.5-7B", cand.plan, gpu=gpu)  # priced anew, outside the search
        assert again.peak_reserved_bytes <= gpu.memory_bytes * 0.9
        assert again.peak_reserved_bytes == cand.estimate.peak_reserved_bytes


@pytest.mark.parametrize(
    "model, gpu, objective",
    [
        ("meta-llama/Llama-3.1-8B", "RTX 4090", "balanced"),
        ("meta-llama/Llama-3.1-8B", "H100 SXM", "fastest"),
        ("Qwen/Qwen2.5-0.5B", "T4", "quality"),
    ],
)
def test_search_reaches_the_exhaustive_optimum(model: str, gpu: str, objective: str) -> None:
    shape, g = load_shape(model), find_gpu(gpu)
    req = SearchRequest(objective=objective)  # type: ignore[arg-type]
    search = _native.Search(native_estimator(shape, g), json.dumps(build_space(shape, g, req)))
    best, evaluated, _ = search.brute_force()
    assert best is not None and evaluated > 1000
    rec = recommend(shape, g, objective=objective)
    assert rec.recommendations[0].objective_value >= 0.99 * best["value"]


def test_nothing_fits_is_an_answer_with_a_suggestion() -> None:
    rec = recommend("meta-llama/Llama-3.1-405B", "RTX 4090")
    assert rec.recommendations == []
    assert rec.suggestion and "needs at least" in rec.suggestion


def test_contradictory_constraints_say_what_would_work() -> None:
    rec = recommend("meta-llama/Llama-3.1-8B", "RTX 4090", allowed_presets=["sft"])
    assert rec.recommendations == []
    assert "allowing" in rec.suggestion and "qlora" in rec.suggestion  # type: ignore[operator]


def test_fit_names_a_bigger_gpu_when_nothing_fits() -> None:
    report = fit("meta-llama/Llama-3.1-70B", "RTX 4090")
    assert not any(m.fits for m in report.methods)
    assert "A100 80GB" in report.suggestion or "H100" in report.suggestion  # type: ignore[operator]
    d = report.to_dict()
    assert {m["preset"] for m in d["methods"]} == {"sft", "lora", "qlora", "dpo", "memory_efficient"}
    assert all(isinstance(m["min_peak_reserved_bytes"], int) for m in d["methods"])


def test_fit_without_gpu_compares_common_gpus() -> None:
    out = subprocess.run([*CLI, "fit", "--model", "meta-llama/Llama-3.1-8B", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["gpu"] is None
    assert d["common_gpus"]["qlora"]["RTX 4090"] is True and d["common_gpus"]["sft"]["RTX 4090"] is False


def test_auto_preset_is_the_top_recommendation() -> None:
    preset = auto_preset("meta-llama/Llama-3.1-8B", "RTX 4090")
    top = recommend("meta-llama/Llama-3.1-8B", "RTX 4090", top=1).recommendations[0]
    assert preset.name == top.preset
    plan = preset.to_plan(precision="bf16")
    assert plan.per_device_train_batch_size == top.plan.per_device_train_batch_size
    assert plan.lora_r == top.plan.lora_r and plan.method == top.plan.method


def test_study_resumes_from_storage(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import optuna

    path = str(tmp_path / "study.log")
    recommend("Qwen/Qwen2.5-0.5B", "RTX 4090", storage=path, n_trials=20)
    recommend("Qwen/Qwen2.5-0.5B", "RTX 4090", storage=path, n_trials=20)
    from forge_advisor.advisor.search import _storage

    summaries = optuna.get_all_study_summaries(_storage(path))
    assert len(summaries) == 1 and summaries[0].n_trials >= 40


def test_recommend_json_shape() -> None:
    out = subprocess.run([*CLI, "recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["model"] == "meta-llama/Llama-3.1-8B" and d["gpu"] == "RTX 4090" and d["num_gpus"] == 1
    assert d["objective"] == "balanced" and len(d["recommendations"]) == 5 and d["pareto"]
    first = d["recommendations"][0]
    assert set(first) >= {"preset", "overrides", "estimate", "why", "command", "python"}
    assert first["estimate"]["fits"] is True and first["command"].startswith("forge-advisor train ")


@pytest.mark.parametrize(
    "argv",
    [
        ["--gpu", "RTX 4090", "--global-batch", "0"],
        ["--gpu", "RTX 9999"],
        ["--gpu", "RTX 4090", "--presets", "lora,nope"],
        ["--gpu", "RTX 4090", "--fix", "lora_rr=8"],
        ["--gpu", "RTX 4090", "--objective", "cheap"],
    ],
)
def test_recommend_bad_input_exits_2_with_one_line(argv: list[str]) -> None:
    out = subprocess.run([*CLI, "recommend", "--model", "meta-llama/Llama-3.1-8B", *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_global_batch_zero_is_refused() -> None:
    with pytest.raises(ForgeError, match="global_batch"):
        recommend("meta-llama/Llama-3.1-8B", "RTX 4090", global_batch=0)


@pytest.mark.parametrize("storage", ["/nonexistent/dir/study.log", "sqlite:////nonexistent/dir/study.db", "bogus://x"])
def test_bad_storage_is_one_line(storage: str) -> None:
    out = subprocess.run([*CLI, "recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--storage", storage],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: --storage") and out.stderr.count("\n") == 1
