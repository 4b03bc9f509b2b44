"""forge_advisor.export: the commands parse with the real CLI parsers and describe the
same plan; JSON/YAML read back; the Python snippet builds the same preset."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml

from forge_advisor.errors import ForgeError
from forge_advisor.estimate import resolve_plan
from forge_advisor.gpus import find_gpu
from forge_advisor.plan import Plan
from forge_advisor import export as ex

MODEL = "meta-llama/Llama-3.1-8B"
CASES = [
    ("lora", {}),
    ("qlora", {"lora_r": 32, "per_device_train_batch_size": 2, "max_length": 2048}),
    ("lora", {"gradient_checkpointing": False, "optim": "adamw_8bit", "freeze_ratio": 0.25,
              "attn_implementation": "flash_attention_2", "gradient_accumulation_steps": 8}),
    ("sft", {"max_length": 512, "dtype": "fp32"}),
    ("memory_efficient", {"lora_target_modules": "all-linear", "lora_alpha": 64}),
    ("lora", {"method": "lora_8bit", "lora_target_modules": ("q_proj", "v_proj")}),
    ("dpo", {"dpo_beta": 0.2, "lora_dropout": 0.1}),
]


def _planned(preset):
    """The plan the runtime trains on a bf16 GPU: explicit bf16/fp16 flags win over the hardware."""
    explicit = preset.bf16 is not None or preset.fp16 is not None
    return preset.to_plan(precision=preset.resolved_precision() if explicit else "bf16")


def _parse(argv: list[str]):
    from forge_advisor.cli.main import build_parser

    assert argv[0] == "forge-advisor"
    return build_parser().parse_args(argv[1:])


@pytest.mark.parametrize(("preset", "overrides"), CASES)
def test_train_command_runs_the_same_plan(preset, overrides) -> None:
    from forge_advisor.cli.train import _overrides
    from forge_advisor.presets import get_preset

    gpu = find_gpu("RTX 4090")
    argv = ex.train_argv(MODEL, preset, overrides, gpu=gpu, data="d.jsonl", output="out", predicted_peak_bytes=3 << 30)
    args = _parse(argv)
    assert (args.command, args.model, args.preset, args.data, args.output) == ("train", MODEL, preset, "d.jsonl", "out")
    assert args.predicted_peak_gib == 3.0
    parsed = _overrides(args)
    assert get_preset(preset, **parsed) == get_preset(preset, **ex.preset_overrides(preset, overrides, gpu))
    # the runtime's preset, planned for the same GPU, is the plan the editor priced
    assert _planned(get_preset(preset, **parsed)) == resolve_plan(preset, gpu, **overrides)


@pytest.mark.parametrize(("preset", "overrides"), [c for c in CASES if "method" not in c[1] and "dpo_beta" not in c[1]])
def test_estimate_command_prices_the_same_plan(preset, overrides) -> None:
    from forge_advisor.cli.estimate import plan_overrides

    gpu = find_gpu("RTX 4090")
    args = _parse(ex.estimate_argv(MODEL, preset, overrides, gpu=gpu, dataset_tokens=10**7))
    assert (args.model, args.preset, args.gpu, args.dataset_tokens) == (MODEL, preset, "RTX 4090", 10**7)
    assert resolve_plan(preset, gpu, **plan_overrides(args)) == resolve_plan(preset, gpu, **overrides)


def test_only_differences_are_written() -> None:
    argv = ex.train_argv(MODEL, "qlora", {"lora_r": 16, "max_length": 4096}, data="d", output="o")
    assert "--lora-r" not in argv  # 16 is qlora's own rank
    assert argv[argv.index("--max-length") + 1] == "4096"


def test_demo_when_there_is_no_data() -> None:
    argv = ex.train_argv(MODEL, "lora", {"lora_r": 128, "max_length": 8192, "freeze_ratio": 0.5}, output="o",
                         predicted_peak_bytes=1 << 30)
    assert "--demo" in argv and "--data" not in argv and "--model" not in argv
    assert "--freeze-ratio" in argv
    assert "--lora-r" not in argv and "--max-length" not in argv  # the demo keeps its own small rank, batch, length
    assert "--predicted-peak-gib" not in argv  # the tiny model is not the estimated one
    _parse(argv)


def test_format_command_round_trips_through_the_shell() -> None:
    argv = ex.train_argv(MODEL, "lora", {"lora_target_modules": ("q_proj", "v_proj")}, data="my data.jsonl",
                         output="out dir")
    text = ex.format_command(argv, width=40)
    assert "\\\n" in text
    assert shlex.split(text.replace("\\\n", " ")) == argv
    assert ex.format_command(["a", "b"]) == "a b"


def test_plan_json_and_yaml_read_back() -> None:
    gpu = find_gpu("A100 80GB SXM")
    over = {"lora_r": 64, "lora_target_modules": "all-linear"}
    doc = ex.plan_document(MODEL, "qlora", over, gpu=gpu, estimate={"memory": {"peak_reserved_bytes": 5}, "fits": True,
                                                                  "throughput": {"tokens_per_second": 1.0}})
    for text, load in ((ex.plan_json(doc), json.loads), (ex.plan_yaml(doc), yaml.safe_load)):
        back = load(text)
        assert back["model"] == MODEL and back["preset"] == "qlora" and back["gpu"] == gpu.name
        assert Plan.from_dict(back["plan"]) == resolve_plan("qlora", gpu, **over)
        assert back["overrides"] == {"lora_r": 64, "lora_target_modules": "all-linear"}
        assert back["estimate"]["fits"] is True


@pytest.mark.parametrize(("preset", "overrides"), CASES)
def test_python_snippet_builds_the_same_preset(preset, overrides) -> None:
    from forge_advisor.presets import get_preset

    gpu = find_gpu("RTX 4090")
    code = ex.preset_snippet(MODEL, preset, overrides, gpu=gpu)
    assert code.startswith("from forge_advisor.presets import get_preset")
    call = code.split("\n\n", 1)[1].split("\ntraining_args")[0]  # only the get_preset(...) call: no torch here
    ns: dict = {"get_preset": get_preset}
    exec(call, ns)
    assert _planned(ns["preset"]) == resolve_plan(preset, gpu, **overrides)
    compile(code, "<snippet>", "exec")


def test_bad_plans_raise_forge_errors() -> None:
    with pytest.raises(ForgeError, match="per_device_train_batch_size=0 is out of range"):
        ex.train_argv(MODEL, "lora", {"per_device_train_batch_size": 0}, data="d", output="o")
    with pytest.raises(ForgeError, match="unknown preset"):
        ex.preset_snippet(MODEL, "lroa", {})


def test_several_gpus_write_the_accelerate_config_then_launch() -> None:
    import shlex

    argv = ex.train_argv("meta-llama/Llama-3.1-70B", "lora", {"num_gpus": 4, "distributed": "fsdp"},
                         data="d.jsonl", output="out")
    write, launch = ex.launch_command(argv, 4).split(" && \\\n  ")
    assert shlex.split(write) == [*argv, "--write-accelerate-config", "accelerate.yaml"]
    assert shlex.split(launch)[:8] == ["accelerate", "launch", "--config_file", "accelerate.yaml",
                                       "--num_processes", "4", "-m", "forge_advisor.cli.main"]
    assert shlex.split(launch)[8:] == argv[1:]
    assert ex.launch_command(argv, 1) == shlex.join(argv)
