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


# ---- FSDP-QLoRA: planned, priced, printed, accepted by train, configured for accelerate ----

def _fsdp_qlora_70b():  # type: ignore[no-untyped-def]
    from forge_advisor.advisor import recommend

    return recommend("meta-llama/Llama-3.1-70B", "RTX 4090", num_gpus=2)


def test_70b_on_two_4090s_is_an_fsdp_qlora_plan_the_estimator_fits() -> None:
    from forge_advisor.estimate import estimate

    rec = _fsdp_qlora_70b()
    top = rec.recommendations[0]
    assert top.plan.method == "qlora" and top.plan.distributed in ("fsdp", "zero3")
    assert top.plan.bnb_4bit_quant_storage == "bfloat16"  # the 4090 computes in bf16
    again = estimate("meta-llama/Llama-3.1-70B", top.plan, gpu="RTX 4090")
    assert again.fits is True and again.unsupported is None
    # uint8 storage cannot be sharded: the runtime refuses the same plan
    whole = estimate("meta-llama/Llama-3.1-70B", top.plan.with_(bnb_4bit_quant_storage="uint8"), gpu="RTX 4090")
    assert whole.unsupported is not None


def test_the_printed_fsdp_qlora_command_runs_in_train_show_and_writes_a_config_accelerate_parses(tmp_path, monkeypatch) -> None:
    import shlex

    from accelerate.commands.config.config_args import ClusterConfig

    rec = _fsdp_qlora_70b()
    command = rec.recommendations[0].command("meta-llama/Llama-3.1-70B")
    first, launch = command.split(" && ")
    argv = shlex.split(first)[1:]
    assert argv[0] == "train" and "--write-accelerate-config" in argv and "--bnb-4bit-quant-storage" in argv
    monkeypatch.chdir(tmp_path)
    code, out = _run([*argv[: argv.index("--write-accelerate-config")], "--show"])
    assert code == 0 and "bfloat16" in out
    code, _ = _run(argv)  # writes accelerate.yaml in the working folder
    assert code == 0
    cfg = ClusterConfig.from_yaml_file(str(tmp_path / "accelerate.yaml"))
    assert cfg.num_processes == 2 and cfg.mixed_precision == "bf16"
    assert cfg.distributed_type in ("FSDP", "DEEPSPEED")
    assert "--num_processes 2" in launch and "--config_file accelerate.yaml" in launch


def test_bnb_config_carries_the_storage_dtype() -> None:
    import torch

    cfg = get_preset("qlora", bnb_4bit_quant_storage="bfloat16").get_bnb_config()
    assert cfg.bnb_4bit_quant_storage == torch.bfloat16
    assert get_preset("qlora").get_bnb_config().bnb_4bit_quant_storage == torch.uint8


def test_float_storage_4bit_skips_peft_upcast_as_the_estimator_assumes() -> None:
    """The estimator prices a float-storage QLoRA base's embeddings/norms/head in the half
    type (rust/src/estimator.rs); peft's prepare_model_for_kbit_training would make them fp32."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import LlamaConfig, LlamaForCausalLM

    from forge_advisor.train.session import _device_map, _prepare_float_storage_4bit, sharded_4bit

    def tiny() -> LlamaForCausalLM:
        cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
        return LlamaForCausalLM(cfg).to(torch.bfloat16)

    model = tiny()
    _prepare_float_storage_4bit(model, gradient_checkpointing=True)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in model.parameters())
    assert model.is_gradient_checkpointing
    upcast = prepare_model_for_kbit_training(tiny(), use_gradient_checkpointing=False)
    assert torch.float32 in {p.dtype for p in upcast.parameters()}  # what the float-storage path avoids
    fsdp = get_preset("qlora", num_gpus=2, distributed="fsdp", bnb_4bit_quant_storage="bfloat16")
    assert sharded_4bit(fsdp) and _device_map(fsdp) is None  # each rank loads, FSDP shards
    assert not sharded_4bit(get_preset("qlora", num_gpus=2, distributed="ddp"))


# ---- the levers as knobs of the ranking ---------------------------------------------------

def test_space_searches_the_levers_where_they_apply() -> None:
    from forge_advisor.advisor.request import SearchRequest
    from forge_advisor.advisor.search import build_space
    from forge_advisor.gpus import find_gpu
    from forge_advisor.shapes import load_shape

    shape, gpu = load_shape(MODEL), find_gpu("RTX 4090")
    one = build_space(shape, gpu, SearchRequest())
    assert one["use_liger_kernel"] == [False, True] and one["activation_offloading"] == [False, True]
    assert one["offload_optimizer"] == [] and one["offload_params"] == []  # one GPU: nothing to offload to
    two = build_space(shape, gpu, SearchRequest(num_gpus=2))
    assert two["offload_optimizer"] == [False, True] and two["offload_params"] == [False, True]
    pinned = build_space(shape, gpu, SearchRequest(num_gpus=2, fixed={"use_liger_kernel": True, "bnb_4bit_quant_storage": "uint8"}))
    assert pinned["use_liger_kernel"] == [] and pinned["base"]["use_liger_kernel"] is True
    assert pinned["shard_quantized"] is False and two["shard_quantized"] is True


def test_a_lever_is_chosen_only_where_it_pays() -> None:
    """Every lever a recommended plan turns on is needed: switched off, that plan no longer
    fits or is slower (the estimator's own verdict, plan by plan)."""
    from forge_advisor.advisor import recommend
    from forge_advisor.estimate import estimate

    rec = recommend(MODEL, "RTX 4090", seq_len=8192, top=10)
    shown = rec.recommendations + rec.pareto
    with_levers = [c for c in shown if any(getattr(c.plan, n) for n in LEVER_FIELDS if n != "bnb_4bit_quant_storage")]
    assert with_levers, "at 8192 tokens on 24 GB some plan needs a lever"
    for c in with_levers:
        for name in ("use_liger_kernel", "activation_offloading"):
            if getattr(c.plan, name):
                off = estimate(MODEL, c.plan.with_(**{name: False}), gpu="RTX 4090")
                assert not off.fits or (off.tokens_per_second or 0) < (c.estimate.tokens_per_second or 0), (name, c.plan)
    # without the lever axes, the best plan is no better
    plain = recommend(MODEL, "RTX 4090", seq_len=8192, fixed={"use_liger_kernel": False, "activation_offloading": False})
    assert not plain.recommendations or plain.recommendations[0].objective_value <= rec.recommendations[0].objective_value


# ---- fit names the levers -----------------------------------------------------------------

def test_fit_names_the_fewest_levers_that_make_the_defaults_fit() -> None:
    from forge_advisor.advisor import fit
    from forge_advisor.estimate import estimate

    report = fit(MODEL, "RTX 4090", seq_len=8192)
    named = {m.preset: m for m in report.methods if m.levers}
    assert "lora" in named
    for m in named.values():
        defaults = m.estimate.plan
        assert not m.estimate.fits
        on = estimate(MODEL, defaults.with_(**dict.fromkeys(m.levers, True)), gpu="RTX 4090")
        assert on.fits, m.preset
        for drop in m.levers:  # none of them is spare
            fewer = [n for n in m.levers if n != drop]
            assert not estimate(MODEL, defaults.with_(**dict.fromkeys(fewer, True)), gpu="RTX 4090").fits
    out = _cli(["fit", "--model", MODEL, "--gpu", "RTX 4090", "--seq-len", "8192"])
    assert out.returncode == 0
    assert "lora fits a 24 GB card (RTX 4090) with fused CE" in " ".join(out.stdout.split())
