"""Every command agrees: what ``recommend`` prints is what ``train`` runs, ``estimate`` prices
and ``fit`` bounds from below.

Over sampled catalog models (a small one, a 7–8B, a 70B, an MoE) × GPUs (one without bf16,
a 24 GB consumer card, two datacenter ones) × 1/2/8 GPUs × objectives:

* the ``train`` argv of every recommended plan parses (in process, ``cli.main.main``) into the
  same plan, ``--show`` exits 0, and for several GPUs ``--write-accelerate-config`` writes a
  config accelerate loads;
* ``estimate`` of the plan ``train`` resolves gives the same peak and the same fit verdict;
* ``fit``'s least fit bound per preset is ≤ the fit bound of every recommended plan of it.

A handful of cases also run the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from forge_advisor import core
from forge_advisor.advisor import recommend
from forge_advisor.advisor.fit import fit
from forge_advisor.cli.main import build_parser, main
from forge_advisor.cli.train import _overrides, resolve_args_preset
from forge_advisor.estimate import estimate
from forge_advisor.gpus import find_gpu
from forge_advisor.presets import get_preset
from forge_advisor.presets.planning import LEARNING_RATES
from forge_advisor.shapes import load_shape
from forge_advisor.units import fmt_bytes

MODELS = ("Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", "Qwen/Qwen1.5-MoE-A2.7B")
GPUS = ("T4", "RTX 4090", "A100 80GB SXM", "H100 SXM")
COUNTS = (1, 2, 8)
OBJECTIVES = core.OBJECTIVES


def _train_argv(cand: Any, model: str) -> list[str]:
    from forge_advisor.export import train_argv

    argv = train_argv(model, cand.preset, cand.plan, gpu=cand.estimate.gpu, data="d.jsonl", output="out")
    assert argv[:2] == ["forge-advisor", "train"]
    return argv[1:]


def _trained_preset(argv: list[str]) -> Any:
    """The preset ``forge-advisor train ARGV`` runs (the CLI's own parser and resolution)."""
    args = build_parser().parse_args(argv)
    return resolve_args_preset(args, _overrides(args))


def _precision(gpu: Any) -> str:
    return "bf16" if gpu.bf16 else "fp16"


_FIT_CACHE: dict[tuple[str, str, int], dict[str, int | None]] = {}


def _fit_least(shape: Any, gpu: Any, n: int) -> dict[str, int | None]:
    key = (shape.name, gpu.name, n)
    if key not in _FIT_CACHE:
        report = fit(shape, gpu, num_gpus=n)
        _FIT_CACHE[key] = {m.preset: m.least_bytes for m in report.methods}
    return _FIT_CACHE[key]


CASES = [(m, g, n, o, "sft") for m in MODELS for g in GPUS for n in COUNTS for o in OBJECTIVES]
# preference training (recommend --dpo): the dpo preset, and full / QLoRA plans with trainer dpo
CASES += [(m, g, n, "balanced", "dpo") for m in MODELS[:2] + MODELS[3:] for g in GPUS for n in COUNTS]


@pytest.fixture(scope="module")
def shapes() -> dict[str, Any]:
    return {m: load_shape(m) for m in MODELS}


@pytest.mark.parametrize(("model", "gpu_name", "num_gpus", "objective", "trainer"), CASES,
                         ids=[f"{m.split('/')[-1]}-{g.replace(' ', '')}-x{n}-{o}-{t}" for m, g, n, o, t in CASES])
def test_commands_agree(shapes: dict[str, Any], model: str, gpu_name: str, num_gpus: int, objective: str, trainer: str,
                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shape, gpu = shapes[model], find_gpu(gpu_name)
    rec = recommend(shape, gpu, num_gpus=num_gpus, objective=objective, trainer=trainer, top=3)
    usable = core.usable_bytes(gpu.memory_bytes, rec.request.headroom)
    least = _fit_least(shape, gpu, num_gpus)
    if not rec.recommendations:
        # nothing fits: fit agrees that no preset fits either
        assert not any(b is not None and core.fits(b, usable) for b in least.values()), (least, usable)
        # ...and the need recommend quotes is fit's least over the presets of its trainer (sft)
        sft = [b for p, b in least.items() if b is not None and get_preset(p).trainer == rec.request.trainer]
        assert fmt_bytes(min(sft)) in (rec.suggestion or ""), (least, rec.suggestion)
        return
    for cand in rec.recommendations:
        e = cand.estimate
        assert core.unsupported(cand.plan) is None
        assert e.fits and core.fits(e.peak_reserved_upper_bytes, usable)
        if not gpu.bf16:
            assert "bf16" not in cand.plan.dtype and not e.warnings, (cand.plan.dtype, e.warnings)
        # train parses the printed argv into exactly this plan
        argv = _train_argv(cand, model)
        preset = _trained_preset(argv)
        assert preset.name == cand.preset
        assert preset.to_plan(precision=_precision(gpu)) == cand.plan, argv
        if cand.plan.uses_lora:  # α/r as the preset sets it (presets/planning.py scaled_alpha)
            base = get_preset(cand.preset)
            assert cand.plan.lora_alpha * base.lora_r == base.lora_alpha * cand.plan.lora_r, cand.plan
            assert preset.lora_alpha == cand.plan.lora_alpha
        assert preset.trainer == trainer
        assert preset.learning_rate == LEARNING_RATES[(cand.plan.trainer, cand.plan.uses_lora)]
        # estimate prices the plan train runs at the same peak and verdict
        again = estimate(shape, preset, gpu=gpu, headroom=rec.request.headroom)
        assert again.plan == cand.plan
        assert again.peak_reserved_bytes == e.peak_reserved_bytes
        assert again.peak_reserved_upper_bytes == e.peak_reserved_upper_bytes
        assert again.fits is True
        # fit's least for this preset is no more than any fitting plan of it
        assert least[cand.preset] is not None and least[cand.preset] <= e.peak_reserved_upper_bytes, (cand.preset, least)
    best = rec.recommendations[0]
    argv = _train_argv(best, model)
    assert main([*argv, "--show"]) == 0
    if num_gpus > 1:
        from accelerate.commands.config.config_args import load_config_from_file

        path = tmp_path / "accelerate.yaml"
        assert main([*argv, "--write-accelerate-config", str(path)]) == 0
        cfg = load_config_from_file(str(path))
        assert cfg.num_processes == num_gpus
        assert str(cfg.distributed_type).endswith(("FSDP", "DEEPSPEED", "MULTI_GPU"))
    capsys.readouterr()


SUBPROCESS_CASES = [("meta-llama/Llama-3.1-8B", "T4", 1), ("meta-llama/Llama-3.1-70B", "H100 SXM", 8),
                    ("Qwen/Qwen1.5-MoE-A2.7B", "A100 80GB SXM", 2)]


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "forge_advisor.cli.main", *argv], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize(("model", "gpu_name", "num_gpus"), SUBPROCESS_CASES)
def test_cli_recommend_estimate_agree(model: str, gpu_name: str, num_gpus: int) -> None:
    """The CLI's JSON: the best plan's printed command, re-priced by ``estimate --json``,
    has the same peak and verdict; ``fit --json``'s least for its preset is no more."""
    import shlex

    from forge_advisor.export import estimate_argv

    out = _cli("recommend", "--model", model, "--gpu", gpu_name, "--num-gpus", str(num_gpus), "--top", "1", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    best = doc["recommendations"][0]
    first = best["command"].split(" && ")[0]
    argv = [a for a in shlex.split(first) if a != "\\"]
    assert argv[:2] == ["forge-advisor", "train"]
    show = _cli(*argv[1:], "--show")
    assert show.returncode == 0 and not show.stderr.strip(), show.stderr
    gpu = find_gpu(gpu_name)
    preset = _trained_preset([a for a in argv[1:] if a != "--write-accelerate-config" and not a.endswith(".yaml")])
    est_argv = estimate_argv(model, preset.name, preset.to_plan(precision=_precision(gpu)), gpu=gpu)
    est = _cli(*est_argv[1:], "--json")
    assert est.returncode == 0, est.stderr
    e = json.loads(est.stdout)
    assert e["memory"]["peak_reserved_bytes"] == best["estimate"]["memory"]["peak_reserved_bytes"]
    assert e["fits"] is True and best["estimate"]["fits"] is True
    f = _cli("fit", "--model", model, "--gpu", gpu_name, "--num-gpus", str(num_gpus), "--json")
    assert f.returncode == 0, f.stderr
    least = {m["preset"]: m["least_peak_reserved_bytes"] for m in json.loads(f.stdout)["methods"]}
    assert least[best["preset"]] <= best["estimate"]["memory"]["peak_reserved_upper_bytes"]


def test_cli_nothing_fits_agrees_with_fit() -> None:
    """When nothing fits, ``recommend`` quotes the least fit bound ``fit`` reports, and the
    bigger GPU it names is one that bound fits by the one rule."""
    model, gpu_name = "meta-llama/Llama-3.1-70B", "RTX 4090"
    # one card: 70B does not fit a 24 GB GPU by any plan (on several, FSDP-QLoRA with offload does)
    out = _cli("recommend", "--model", model, "--gpu", gpu_name, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["recommendations"] == []
    f = _cli("fit", "--model", model, "--gpu", gpu_name, "--json")
    methods = json.loads(f.stdout)["methods"]
    assert not any(m["fits"] for m in methods)
    from forge_advisor.presets import get_preset

    need = min(m["least_peak_reserved_bytes"] for m in methods if get_preset(m["preset"]).trainer == "sft")
    assert fmt_bytes(need) in doc["suggestion"]
    from forge_advisor.gpus import gpu_catalog

    named = [g for g in gpu_catalog() if f"the {g.name} (" in doc["suggestion"]]
    assert named and core.fits(need, core.usable_bytes(named[0].memory_bytes, doc["headroom"]))


# -- hardware: GPUs without bf16, what a GPU cannot run, the position limit ---------------------


@pytest.mark.parametrize("gpu_name", ["T4", "V100 16GB SXM2"])
def test_no_bf16_gpus_plan_fp16_everywhere(gpu_name: str) -> None:
    """estimate (every preset, QLoRA included: its compute dtype), fit's plans and the TUI's
    editor all plan fp16 on a GPU without bf16, and estimate then has a speed."""
    from forge_advisor.presets import list_presets
    from forge_advisor.tui.state import evaluate

    shape, gpu = load_shape("meta-llama/Llama-3.1-8B"), find_gpu(gpu_name)
    assert not gpu.bf16
    for preset in list_presets():
        e = estimate(shape, preset, gpu=gpu)
        assert e.plan.dtype in ("fp16", "amp-fp16"), (preset, e.plan.dtype)
        assert e.tokens_per_second and e.tokens_per_second > 0, preset
        assert e.warnings == []
    for m in fit(shape, gpu).methods:
        assert "bf16" not in m.estimate.plan.dtype and (m.least_plan is None or "bf16" not in m.least_plan.dtype), m.preset
    ev = evaluate(shape, gpu, "qlora", {})
    assert ev.ok and ev.result is not None and ev.result.plan.dtype == "fp16"


def test_explicit_precision_flags_win_over_the_gpu_default() -> None:
    from forge_advisor.presets import get_preset

    shape, a100 = load_shape("meta-llama/Llama-3.1-8B"), find_gpu("A100 80GB SXM")
    assert estimate(shape, get_preset("lora", bf16=False, fp16=False), gpu=a100).plan.dtype == "fp32"
    assert estimate(shape, get_preset("sft", fp16=True), gpu=a100).plan.dtype == "amp-fp16"
    assert estimate(shape, get_preset("lora"), gpu=a100).plan.dtype == "bf16"


def test_tui_has_a_dtype_knob() -> None:
    from forge_advisor.plan import DTYPES
    from forge_advisor.tui.state import KNOB_BY_FIELD, evaluate, knob_choices

    knob = KNOB_BY_FIELD["dtype"]
    assert knob_choices(knob) == DTYPES
    shape, t4 = load_shape("meta-llama/Llama-3.1-8B"), find_gpu("T4")
    ev = evaluate(shape, t4, "lora", {"dtype": "bf16"})
    assert ev.ok and ev.result is not None and ev.result.plan.dtype == "bf16"
    assert len(ev.result.warnings) == 1 and "no bf16" in ev.result.warnings[0]


def test_cli_warns_for_what_the_gpu_cannot_run(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["estimate", "--model", "meta-llama/Llama-3.1-8B", "--dtype", "bf16", "--attn", "flash_attention_2", "--json"]
    assert main([*argv, "--gpu", "T4"]) == 0
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines), lines
    assert "bf16" in lines[0] and "7.5" in lines[0] and "flash_attention_2" in lines[1]
    assert json.loads(out.out)["warnings"] == [line.removeprefix("warning: ") for line in lines]
    assert main([*argv, "--gpu", "H100 SXM"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "T4", "--dtype", "bf16", "--top", "1", "--json"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: dtype=bf16"), err


@pytest.mark.parametrize("command", ["estimate", "recommend", "fit"])
def test_position_limit_refused_with_its_value(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """gpt2 has 1,024 learned positions (n_positions): 4,096 tokens is one line and exit 2."""
    assert main([command, "--model", "openai-community/gpt2", "--gpu", "T4", "--max-length", "4096"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "1,024" in err[0] and "max_position_embeddings" in err[0]


def test_train_refuses_a_length_past_the_position_limit(capsys: pytest.CaptureFixture[str]) -> None:
    """train checks it too, before anything heavy, when the config is local or in the catalog."""
    assert main(["train", "--model", "openai-community/gpt2", "--max-length", "4096", "--show"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1,024" in err[0]
    assert main(["train", "--model", "openai-community/gpt2", "--max-length", "1024", "--show"]) == 0


def test_default_length_within_the_position_limit() -> None:
    """recommend's and fit's default 2048 tokens shortens to gpt2's 1024; T5's relative
    position buckets have no limit."""
    gpt2 = load_shape("openai-community/gpt2")
    assert gpt2.max_position_embeddings == 1024
    assert recommend(gpt2, find_gpu("T4"), top=1).request.seq_len == 1024
    assert fit(gpt2, find_gpu("T4")).methods[0].estimate.plan.max_length == 1024
    assert load_shape("google-t5/t5-base").max_position_embeddings is None


def test_dpo_speed_counts_both_halves_and_the_reference_forward() -> None:
    """trl's DPOTrainer puts chosen and rejected through the policy (2× the pairs' tokens)
    and every token once through the reference forward: by Kaplan et al.'s count, 2 FLOPs
    per weight of every layer linear, the LM head's 2·h·V, and causal attention's
    4·heads·head_dim·s/2 per layer (SDPA), from Llama-3.1-8B's config."""
    shape, gpu = load_shape("meta-llama/Llama-3.1-8B"), find_gpu("H100 SXM")
    plan = dict(per_device_train_batch_size=2, gradient_accumulation_steps=4, max_length=1024)
    sft = estimate(shape, "lora", gpu=gpu, **plan)
    dpo = estimate(shape, "lora", gpu=gpu, trainer="dpo", **plan)
    h, kv, hd, inter, layers, vocab, s = 4096, 8 * 128, 128, 14336, 32, 128256, 1024
    linear = layers * (2 * h * h + 2 * h * kv + 3 * h * inter)
    reference = 2 * linear + 2 * h * vocab + layers * 4 * 32 * hd * s // 2
    assert dpo.native.flops_per_token - sft.native.flops_per_token == pytest.approx(reference, rel=1e-12)
    assert dpo.native.tokens_per_step == 2 * sft.native.tokens_per_step == 2 * 2 * 4 * 1024
    # the same pairs take more than twice as long: both halves and the reference forward
    assert dpo.step_seconds is not None and sft.step_seconds is not None
    assert dpo.step_seconds > 2 * sft.step_seconds


# -- bad input on the advisor side: one line, exit 2 -------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "estimate", "recommend", "fit"])
@pytest.mark.parametrize("model", ["a" * 5000, "org/" + "a" * 5000, "/tmp/" + "a" * 5000 + ".json"])
def test_a_5000_character_model_is_one_line(command: str, model: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--model", model]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --model ") and "characters)" in err[0] and len(err[0]) < 300, err


@pytest.mark.parametrize("argv", [
    ["train", "--demo", "--output", "unused", "--predicted-peak-gib", "nan"],
    ["train", "--demo", "--output", "unused", "--predicted-peak-gib", "inf"],
    ["fit", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "T4", "--num-gpus", "0"],
    ["fit", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "T4", "--headroom", "nan"],
    ["recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "T4", "--fix", "freeze_ratio=nan"],
    ["estimate", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "T4", "--freeze-ratio", "nan"],
])
def test_non_finite_and_zero_values_are_one_line(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not (tmp_path / "unused").exists()  # nothing half-written
