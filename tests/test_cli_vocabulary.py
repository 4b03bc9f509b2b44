"""One vocabulary on the command line: every command takes the plan's Hugging Face names and
the same short aliases, abbreviations are refused, a command recommend prints runs in
estimate and train, and a registered preset is estimated, searched and exported from the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass

import pytest

from forge_advisor.cli.main import build_parser, main
from forge_advisor.cli.plan_args import PLAN_FLAGS, plan_overrides, preset_field_overrides

CLI = [sys.executable, "-m", "forge_advisor.cli.main"]
MODEL = "meta-llama/Llama-3.1-8B"

HF = ["--per-device-train-batch-size", "2", "--max-length", "512", "--gradient-accumulation-steps", "8",
      "--optim", "adamw_8bit", "--attn-implementation", "eager", "--lora-r", "32"]
SHORT = ["--batch-size", "2", "--seq-len", "512", "--grad-accum", "8", "--optimizer", "adamw_8bit", "--attn", "eager",
         "--lora-r", "32"]
WANT = {"per_device_train_batch_size": 2, "max_length": 512, "gradient_accumulation_steps": 8, "optim": "adamw_8bit",
        "attn_implementation": "eager", "lora_r": 32}


def _plan_fields(command: str, args) -> dict:  # type: ignore[no-untyped-def]
    got = preset_field_overrides(args) if command == "train" else plan_overrides(args)
    return {k: got[k] for k in WANT if k in got}


@pytest.mark.parametrize("spelling", [HF, SHORT], ids=["hugging-face", "aliases"])
@pytest.mark.parametrize("command", ["estimate", "train", "tui"])
def test_every_command_takes_both_spellings(command: str, spelling: list[str]) -> None:
    args = build_parser().parse_args([command, "--model", MODEL, *spelling])
    assert _plan_fields(command, args) == WANT


@pytest.mark.parametrize("spelling", [HF, SHORT], ids=["hugging-face", "aliases"])
def test_recommend_pins_the_same_flags(spelling: list[str]) -> None:
    args = build_parser().parse_args(["recommend", "--model", MODEL, *spelling])
    assert plan_overrides(args) == WANT


def test_fit_takes_the_length_under_both_names() -> None:
    for flag in ("--max-length", "--seq-len"):
        args = build_parser().parse_args(["fit", "--model", MODEL, flag, "1024"])
        assert plan_overrides(args) == {"max_length": 1024}


def test_every_plan_flag_has_one_definition() -> None:
    flags = [f for pf in PLAN_FLAGS for f in pf.flags]
    assert len(flags) == len(set(flags))
    assert {"--batch-size", "--seq-len", "--grad-accum", "--optimizer", "--attn"} <= set(flags)


@pytest.mark.parametrize("argv", [
    ["estimate", "--model", MODEL, "--dataset-tok", "5"],  # a prefix of --dataset-tokens
    ["estimate", "--model", MODEL, "--per-device", "2"],
    ["estimate", "--model", MODEL, "--lora", "8"],
    ["recommend", "--model", MODEL, "--obj", "fastest"],
    ["train", "--model", MODEL, "--lr", "1e-4"],
])
def test_abbreviations_are_refused(argv: list[str]) -> None:
    out = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("error: unrecognized arguments") and out.stderr.count("\n") == 1


def _run(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


@pytest.mark.parametrize(("gpu", "gpus"), [("RTX 4090", 1), ("T4", 1), ("A100 80GB SXM", 4)])
def test_a_printed_command_runs_in_estimate_and_train_show(gpu: str, gpus: int) -> None:
    code, out = _run(["recommend", "--model", MODEL, "--gpu", gpu, "--num-gpus", str(gpus), "--json"])
    assert code == 0
    rec = json.loads(out)
    for cand in rec["recommendations"]:
        argv = shlex.split(cand["command"].split(" && ")[0])[1:]
        assert argv[0] == "train"
        # train --show: the printed command parses and resolves without training
        code, _ = _run([*argv, "--show"])
        assert code == 0
        # the same flags price the same plan in estimate (without train's own --data/--output)
        flags = [a for i, a in enumerate(argv) if a not in ("--data", "--output") and argv[i - 1] not in ("--data", "--output")]
        flags = [a for i, a in enumerate(flags) if a != "--write-accelerate-config" and flags[i - 1] != "--write-accelerate-config"]
        code, out = _run(["estimate", *flags[1:], "--gpu", gpu, "--json"])
        assert code == 0
        est = json.loads(out)
        assert est["plan"] == cand["estimate"]["plan"]
        assert est["memory"]["peak_reserved_bytes"] == cand["estimate"]["memory"]["peak_reserved_bytes"]
        assert est["fits"] is True


def test_a_registered_preset_is_estimated_searched_and_exported(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from forge_advisor.presets import list_presets, load_preset, register_preset
    from forge_advisor.presets.lora import LoRAPreset

    @dataclass
    class TinyRank(LoRAPreset):
        name = "tiny_rank"
        description = "LoRA r=4 on all linear layers, lr 3e-4"
        lora_r: int = 4
        lora_target_modules: str | None = "all-linear"
        learning_rate: float = 3e-4

    register_preset(TinyRank, replace=True)
    try:
        assert "tiny_rank" in list_presets()
        code, out = _run(["estimate", "--model", MODEL, "--preset", "tiny_rank", "--gpu", "RTX 4090", "--json"])
        assert code == 0 and json.loads(out)["plan"]["lora_r"] == 4
        code, out = _run(["recommend", "--model", MODEL, "--gpu", "RTX 4090", "--presets", "tiny_rank", "--json"])
        assert code == 0
        best = json.loads(out)["recommendations"][0]
        assert best["preset"] == "tiny_rank" and "--preset tiny_rank" in best["command"]
        # export: the file train reads back is the recommended plan, learning rate of the preset kept
        from forge_advisor.export import plan_document, plan_json
        from forge_advisor.plan import Plan

        plan = Plan.from_dict(best["estimate"]["plan"])
        path = tmp_path / "plan.json"
        path.write_text(plan_json(plan_document(MODEL, "tiny_rank", plan)))
        back = load_preset(path)
        assert back.name == "tiny_rank" and back.learning_rate == 3e-4
        assert back.to_plan(precision="bf16") == plan
        code, _ = _run(["train", "--preset-file", str(path), "--show"])
        assert code == 0
    finally:
        from forge_advisor.presets import registry

        registry._REGISTRY.pop("tiny_rank", None)


def test_tui_json_is_refused_with_one_line() -> None:
    out = subprocess.run([*CLI, "tui", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "estimate --json" in out.stderr
