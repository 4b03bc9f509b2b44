"""The memory levers in the advisor: a flag of every command under its HF/trl/DeepSpeed name,
a preset field that reaches the Plan (and back out of exported files), the one-line refusal
from estimate, recommend --fix and train, FSDP-QLoRA planned and runnable, the levers as
knobs of the ranking, and fit naming the levers that make a method fit."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest

from forge_advisor.cli.main import build_parser, main
from forge_advisor.cli.plan_args import plan_overrides, preset_field_overrides
from forge_advisor.levers import LEVER_FIELDS
from forge_advisor.presets import get_preset

CLI = [sys.executable, "-m", "forge_advisor.cli.main"]
MODEL = "meta-llama/Llama-3.1-8B"
LEVER_ARGV = ["--bnb-4bit-quant-storage", "bfloat16", "--use-liger-kernel", "--activation-offloading", "true",
              "--offload-params", "false", "--offload-optimizer", "no"]
LEVERS = {"bnb_4bit_quant_storage": "bfloat16", "use_liger_kernel": True, "activation_offloading": True,
          "offload_params": False, "offload_optimizer": False}


def _run(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


@pytest.mark.parametrize("command", ["estimate", "recommend", "fit", "tui", "train"])
def test_every_command_takes_every_lever_flag(command: str) -> None:
    args = build_parser().parse_args([command, "--model", MODEL, *LEVER_ARGV])
    got = preset_field_overrides(args) if command == "train" else plan_overrides(args)
    assert {k: got[k] for k in LEVER_FIELDS} == LEVERS


def test_preset_fields_reach_the_plan_and_round_trip_through_files(tmp_path) -> None:
    from forge_advisor.presets.io import load_preset, save_preset
    from forge_advisor.presets.planning import preset_with_plan

    preset = get_preset("qlora", num_gpus=2, distributed="fsdp", bnb_4bit_quant_storage="bfloat16",
                        use_liger_kernel=True, offload_params=True)
    plan = preset.to_plan(precision="bf16")
    assert (plan.bnb_4bit_quant_storage, plan.use_liger_kernel, plan.offload_params) == ("bfloat16", True, True)
    loaded = load_preset(save_preset(preset, tmp_path / "p.yaml"))
    assert loaded.to_plan(precision="bf16") == plan
    # a plan with levers back into the plain preset: the diff carries them
    back = preset_with_plan(get_preset("lora"), plan.with_(method="lora", activation_offloading=True), "bf16")
    assert back.activation_offloading and back.use_liger_kernel and back.bnb_4bit_quant_storage == "bfloat16"


def _cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=120)


def test_estimate_refuses_fsdp_qlora_without_a_float_storage_in_one_line() -> None:
    out = _cli(["estimate", "--model", "meta-llama/Llama-3.1-70B", "--preset", "qlora", "--num-gpus", "2",
                "--distributed", "fsdp", "--gpu", "RTX 4090"])
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("error: FSDP-QLoRA needs bnb_4bit_quant_storage=bfloat16") and out.stderr.count("\n") == 1


def test_recommend_fix_refuses_the_same_line() -> None:
    out = _cli(["recommend", "--model", MODEL, "--gpu", "RTX 4090", "--num-gpus", "2", "--presets", "qlora",
                "--fix", "distributed=zero3", "--fix", "bnb_4bit_quant_storage=uint8", "--json"])
    assert out.returncode == 2
    assert out.stderr.startswith("error: FSDP-QLoRA needs bnb_4bit_quant_storage=bfloat16") and out.stderr.count("\n") == 1


def test_train_refuses_liger_on_a_machine_without_cuda(tmp_path) -> None:
    import torch

    assert not torch.cuda.is_available()  # this suite runs on CPU
    out = _cli(["train", "--demo", "--output", str(tmp_path / "run"), "--use-liger-kernel"])
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith("error: use_liger_kernel=True needs")
    assert not (tmp_path / "run").exists()  # refused before anything was written
    uint8 = _cli(["train", "--demo", "--output", str(tmp_path / "q"), "--preset", "qlora", "--num-gpus", "2",
                  "--distributed", "fsdp", "--write-accelerate-config", str(tmp_path / "a.yaml")])
    assert uint8.returncode == 2 and "bnb_4bit_quant_storage=bfloat16" in uint8.stderr
    assert not (tmp_path / "a.yaml").exists()


def test_train_show_lists_the_levers() -> None:
    code, out = _run(["train", "--demo", "--preset", "lora", "--activation-offloading", "--show"])
    assert code == 0 and "activation_offloading" in out
    row = next(line for line in out.splitlines() if "activation_offloading" in line)
    assert "True" in row and "overridden" in row
