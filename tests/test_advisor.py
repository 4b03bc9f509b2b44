"""The advisor: determinism, fit, search quality against the Rust brute force, clean
answers when nothing fits, bad input."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from benches.search_quality import OBJECTIVES, brute_force

from forge_advisor.advisor import auto_preset, fit, recommend
from forge_advisor.errors import ForgeError
from forge_advisor.estimate import estimate
from forge_advisor.gpus import find_gpu
from forge_advisor.shapes import load_shape

CLI = [sys.executable, "-m", "forge_advisor.cli.main"]


def test_same_inputs_same_answer() -> None:
    a = recommend("meta-llama/Llama-3.1-8B", "RTX 4090").to_dict()
    b = recommend("meta-llama/Llama-3.1-8B", "RTX 4090").to_dict()
    for d in (a, b):
        d["search"].pop("seconds"), d["search"].pop("rank_seconds")
    assert a == b


def test_every_recommendation_fits_with_headroom() -> None:
    gpu = find_gpu("A100 40GB SXM")
    rec = recommend("Qwen/Qwen2.5-7B", gpu, headroom=0.1)
    assert rec.recommendations
    for cand in rec.recommendations:
        again = estimate("Qwen/Qwen2.5-7B", cand.plan, gpu=gpu)  # priced anew, outside the search
        assert again.peak_reserved_upper_bytes <= gpu.memory_bytes * 0.9  # the fit bound, under the usable memory
        assert again.peak_reserved_bytes == cand.estimate.peak_reserved_bytes


@pytest.mark.parametrize("model", ["Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.1-8B", "google/gemma-2-9b", "meta-llama/Llama-3.1-70B",
                                   "openai-community/gpt2",  # gpt2: the default length is its 1024-token limit
                                   "Qwen/Qwen2.5-VL-3B-Instruct"])  # a VLM: 2048 text tokens + one image's tokens
@pytest.mark.parametrize("gpu", ["T4", "RTX 4090", "A100 80GB SXM", "H100 SXM"])
def test_ranking_equals_an_independent_brute_force(model: str, gpu: str) -> None:
    """recommend's first plan is the optimum of every plan of the space priced one by one
    (benches/search_quality.py runs the same check over the whole catalog)."""
    best, priced, _ = brute_force(model, gpu)
    assert priced > 1000
    for objective in OBJECTIVES:
        rec = recommend(model, gpu, objective=objective)
        got = rec.recommendations[0].objective_value if rec.recommendations else None
        assert got == best[objective], (objective, got, best[objective])


@pytest.mark.parametrize(("model", "gpu", "gpus"), [("meta-llama/Llama-3.1-8B", "T4", 2), ("Qwen/Qwen2.5-14B", "RTX 4090", 8)])
def test_recommend_never_ranks_a_plan_the_runtime_refuses(model: str, gpu: str, gpus: int) -> None:
    """A 4-bit base shards (FSDP-QLoRA, ZeRO-3 + QLoRA) only with a float storage (an int8 base
    never: rust/src/search.rs tests): every sharded QLoRA plan shown stores its 4-bit weights
    in the compute dtype, and the runtime accepts every plan shown."""
    rec = recommend(model, gpu, num_gpus=gpus, top=20, allowed_presets=["qlora"])
    shown = rec.recommendations + rec.pareto
    assert shown and {c.plan.method for c in shown} == {"qlora"}
    for c in shown:
        sharded = c.plan.distributed in ("fsdp", "zero3")
        assert not (c.plan.method == "lora_8bit" and sharded), c.plan
        if c.plan.method == "qlora":
            compute = {"bf16": "bfloat16", "fp16": "float16"}[c.plan.dtype]  # T4: fp16, no bf16
            assert c.plan.bnb_4bit_quant_storage == (compute if sharded else "uint8"), c.plan
        assert c.estimate.unsupported is None


@pytest.mark.parametrize(("model", "gpu", "gpus"), [("meta-llama/Llama-3.1-8B", "RTX 4090", 1), ("Qwen/Qwen2.5-3B-Instruct", "T4", 2),
                                                    ("meta-llama/Llama-3.1-70B", "A100 80GB SXM", 8)])
def test_every_printed_plan_prices_and_fits_the_same_in_estimate(model: str, gpu: str, gpus: int) -> None:
    """The one fit rule: estimate of each recommended plan gives the same peak and verdict,
    and the printed train command parses back into the same plan."""
    from forge_advisor.cli.main import build_parser
    from forge_advisor.cli.train import _overrides
    from forge_advisor.presets import get_preset

    rec = recommend(model, gpu, num_gpus=gpus)
    assert rec.recommendations
    for c in rec.recommendations:
        again = estimate(model, c.plan, gpu=gpu)
        assert again.peak_reserved_bytes == c.estimate.peak_reserved_bytes and again.fits is True
        argv = shlex.split(c.command(model).split(" && ")[0])
        args = build_parser().parse_args(argv[1:])
        preset = get_preset(args.preset, **_overrides(args))
        half = "bf16" if find_gpu(gpu).bf16 else "fp16"
        explicit = preset.bf16 is not None or preset.fp16 is not None
        assert preset.to_plan(precision=preset.resolved_precision() if explicit else half) == c.plan


def test_nothing_fits_is_an_answer_with_a_suggestion() -> None:
    rec = recommend("meta-llama/Llama-3.1-405B", "RTX 4090")
    assert rec.recommendations == []
    assert rec.suggestion and "needs at least" in rec.suggestion


def test_contradictory_constraints_say_what_would_work() -> None:
    rec = recommend("meta-llama/Llama-3.1-8B", "RTX 4090", allowed_presets=["sft"])
    assert rec.recommendations == []
    # an adapter preset fits (LoRA too since the levers are knobs: fused CE + activation offload)
    assert any(f"allowing {p} would fit" in rec.suggestion for p in ("lora", "qlora", "memory_efficient"))  # type: ignore[operator]


def test_fit_names_a_bigger_gpu_when_nothing_fits() -> None:
    report = fit("meta-llama/Llama-3.1-70B", "RTX 4090")
    assert not any(m.fits for m in report.methods)
    # the levers bring QLoRA's least under 48 GB (the A40), never under 24 GB
    assert "the smallest catalog GPU that fits it is the" in report.suggestion  # type: ignore[operator]
    assert any(g in report.suggestion for g in ("A40", "A6000", "L40", "A100 80GB", "H100"))  # type: ignore[operator]
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


def test_study_records_every_ranked_plan_and_resumes_without_ranking(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import optuna

    from forge_advisor.advisor import search
    from forge_advisor.advisor.study import storage_backend

    path = f"sqlite:///{tmp_path / 'study.db'}"
    small = {"allowed_presets": ["lora", "qlora"], "fixed": {"optim": "adamw_8bit"}}  # ~170 trials
    first = recommend("Qwen/Qwen2.5-0.5B", "RTX 4090", storage=path, **small)
    assert first.search["study"]["resumed"] is False
    (summary,) = optuna.get_all_study_summaries(storage_backend(path))
    assert summary.n_trials == first.search["fitting"] > 80 and summary.study_name.startswith("forge-advisor:Qwen/Qwen2.5-0.5B:RTX 4090:balanced:")
    # what Optuna reads back: complete trials numbered 0..n-1, each a ranked plan with its values
    trials = optuna.load_study(study_name=summary.study_name, storage=storage_backend(path)).trials
    assert [t.number for t in trials] == list(range(len(trials)))
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    for t in trials:
        plan = t.user_attrs["ranked"]["plan"]
        assert t.params["method"] == plan["method"] and t.params["optim"] == plan["optim"] == "adamw_8bit"
        assert t.params["freeze_ratio"] == plan["freeze_ratio"] and len(t.values) == 2 and t.values[0] > 0
    best = first.recommendations[0]
    assert any(t.user_attrs["ranked"]["plan"] == best.plan.to_dict() and t.values[1] == best.quality for t in trials)

    def no_ranking(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("ranked again")

    monkeypatch.setattr(search, "rank_space", no_ranking)
    second = recommend("Qwen/Qwen2.5-0.5B", "RTX 4090", storage=path, **small)
    assert second.search["study"]["resumed"] is True
    assert [c.plan for c in second.recommendations] == [c.plan for c in first.recommendations]
    assert [c.estimate.peak_reserved_bytes for c in second.pareto] == [c.estimate.peak_reserved_bytes for c in first.pareto]
    # another input (the objective) is another study
    monkeypatch.undo()
    recommend("Qwen/Qwen2.5-0.5B", "RTX 4090", storage=path, objective="fastest", **small)
    assert len(optuna.get_all_study_summaries(storage_backend(path))) == 2


def test_two_concurrent_storage_runs_both_succeed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = f"sqlite:///{tmp_path / 'c.db'}"
    argv = [*CLI, "recommend", "--model", "Qwen/Qwen2.5-0.5B", "--gpu", "RTX 4090", "--storage", db, "--json",
            "--presets", "qlora", "--fix", "optim=adamw_8bit"]  # a small space: ~80 trials each
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert json.loads(out)["recommendations"]


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


def test_a_pinned_length_is_the_requests_length() -> None:
    rec = recommend("Qwen/Qwen2.5-0.5B", "RTX 4090", fixed={"max_length": 99})
    assert rec.request.seq_len == 99 and rec.to_dict()["seq_len"] == 99
    assert {c.plan.max_length for c in rec.recommendations} == {99}


def test_nothing_fits_names_the_leanest_plan_and_a_shorter_sequence() -> None:
    rec = recommend("meta-llama/Llama-3.1-8B", "RTX 3060", seq_len=32768)  # 8192 fits with fused CE + offload
    assert rec.recommendations == []
    text = rec.suggestion or ""
    assert text.startswith("the leanest plan (") and "over)" in text and "--seq-len " in text
    # the shorter length it names does fit
    length = int(text.split("--seq-len ")[1].split()[0])
    assert recommend("meta-llama/Llama-3.1-8B", "RTX 3060", seq_len=length).recommendations


def test_a_bad_pinned_field_is_named_not_hidden_in_a_suggestion() -> None:
    with pytest.raises(ForgeError) as err:
        recommend("meta-llama/Llama-3.1-8B", "RTX 4090", fixed={"lora_target_modules": ("foo",)})
    assert err.value.field == "lora_target_modules"


@pytest.mark.parametrize(("model", "gpu"), [("meta-llama/Llama-3.1-8B", "RTX 4090"), ("Qwen/Qwen2.5-14B", "T4"),
                                            ("meta-llama/Llama-3.1-70B", "H100 SXM")])
def test_fit_and_recommend_agree_on_each_presets_minimum(model: str, gpu: str) -> None:
    """One minimum per preset: fit's least is the leanest plan recommend could rank (its
    estimate gives the same bytes), no recommended plan needs less, and a preset fits in fit
    exactly when recommend finds a plan for it."""
    from forge_advisor.presets import get_preset

    report = fit(model, gpu)
    for m in report.methods:
        assert m.least_bytes is not None and m.least_plan is not None
        # least_bytes is the fit bound (peak reserved raised by the measured band), what fits judges
        assert estimate(model, m.least_plan, gpu=gpu).peak_reserved_upper_bytes == m.least_bytes
        assert m.least_bytes <= m.estimate.peak_reserved_upper_bytes  # the preset's defaults are one such plan or worse
        rec = recommend(model, gpu, allowed_presets=[m.preset], trainer=get_preset(m.preset).trainer, top=20)
        assert bool(rec.recommendations) == m.fits, m.preset
        assert all(c.estimate.peak_reserved_upper_bytes >= m.least_bytes for c in rec.recommendations + rec.pareto)
