"""Presets: defaults, overrides and their errors, conversions, plans, files, custom presets."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from forge_advisor import __version__
from forge_advisor.errors import ForgeError
from forge_advisor.plan import Plan
from forge_advisor.presets.planning import LEARNING_RATES, preset_from_plan, preset_overrides, preset_with_plan
from forge_advisor.presets import (
    BasePreset,
    from_plan,
    get_preset,
    list_presets,
    load_preset,
    register_preset,
)

BUILTIN = ["sft", "lora", "qlora", "dpo", "memory_efficient"]


def test_builtins_registered_in_order():
    assert list_presets()[:5] == BUILTIN


def test_sft_defaults():
    p = get_preset("sft")
    assert (p.method, p.learning_rate, p.num_train_epochs) == ("full", 2e-5, 3.0)
    assert (p.per_device_train_batch_size, p.gradient_accumulation_steps) == (4, 4)
    assert (p.warmup_ratio, p.weight_decay, p.gradient_checkpointing) == (0.1, 0.01, True)
    assert p.bf16 is None and p.fp16 is None  # auto-detected
    assert p.get_lora_config() is None and p.get_bnb_config() is None


def test_lora_targets_use_the_models_own_names():
    p = get_preset("lora")
    assert (p.lora_r, p.lora_alpha, p.lora_dropout, p.lora_bias) == (16, 32, 0.05, "none")
    cfg = p.get_lora_config("meta-llama/Llama-3.1-8B")
    assert set(cfg.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    # a GPT-2 style config spells its attention c_attn / c_proj
    gpt2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100, "n_positions": 64}
    try:
        names = set(p.get_lora_config(gpt2).target_modules)
    except ForgeError:
        pytest.skip("gpt2 shapes not supported by the shape parser yet")
    assert "q_proj" not in names and names


def test_qlora_and_memory_efficient():
    import torch

    q = get_preset("qlora")
    bnb = q.get_bnb_config()
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
    assert bnb.bnb_4bit_compute_dtype == torch.bfloat16
    m = get_preset("memory_efficient")
    assert m.load_in_4bit and m.gradient_checkpointing and m.optim == "paged_adamw_8bit"
    assert (m.per_device_train_batch_size, m.gradient_accumulation_steps) == (1, 16)


def test_dpo_config():
    d = get_preset("dpo")
    # LoRA DPO's learning rate (alignment-handbook zephyr-7b-beta dpo/config_qlora.yaml: 5.0e-6);
    # full-weight DPO's is 10x lower (dpo/config_full.yaml: 5.0e-7)
    assert (d.beta, d.learning_rate, d.max_length, d.max_prompt_length) == (0.1, 5e-6, 1024, 512)
    cfg = d.get_dpo_config("/tmp/unused")
    assert cfg.beta == 0.1 and cfg.max_length == 1024 and cfg.learning_rate == 5e-6
    assert get_preset("dpo", method="full").learning_rate == 5e-7
    assert get_preset("sft", trainer="dpo").learning_rate == 5e-7
    assert get_preset("qlora", trainer="dpo").learning_rate == 5e-6
    assert get_preset("dpo", method="full", learning_rate=1e-6).learning_rate == 1e-6  # given: kept
    with pytest.raises(ForgeError, match="trainer='dpo'"):
        get_preset("lora").get_dpo_config()


def test_training_args_follow_transformers_5_names():
    args = get_preset("lora", learning_rate=1e-4).get_training_args("/tmp/unused")
    assert args.learning_rate == 1e-4 and args.warmup_steps == 0.1  # warmup_ratio removed in v5
    assert getattr(args, "activation_checkpointing", args.gradient_checkpointing) is True
    assert args.logging_nan_inf_filter is False  # NaN must reach the monitor


def test_args_dict_imports_no_torch():
    code = (
        "import sys; from forge_advisor.presets import get_preset; "
        "d = get_preset('qlora').get_args_dict(); assert d['learning_rate'] == 2e-4; "
        "bad = [m for m in ('torch', 'accelerate', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("lroa", {}, "did you mean 'lora'"),
        ("auto", {}, "not a registered preset"),
        ("lora", {"lora_rr": 8}, "did you mean 'lora_r'"),
        ("lora", {"learning_rat": 1e-4}, "did you mean 'learning_rate'"),
        ("lora", {"lora_r": 0}, r"lora_r=0 is out of range: allowed \[1, 65536\]"),
        ("lora", {"lora_dropout": 1.5}, r"lora_dropout=1.5 is out of range"),
        ("sft", {"learning_rate": -1.0}, "learning_rate=-1.0 is out of range"),
        ("sft", {"per_device_train_batch_size": 2.5}, "must be an integer"),
        ("sft", {"optim": "adam"}, "is not one of"),
        ("sft", {"freeze_ratio": 1.0}, r"freeze_ratio=1.0 is out of range: allowed \[0, 1\)"),
        ("sft", {"bf16": True, "fp16": True}, "choose one"),
    ],
)
def test_errors_name_the_value_and_what_is_allowed(name, overrides, message):
    with pytest.raises(ForgeError, match=message):
        get_preset(name, **overrides)


def test_unknown_preset_lists_the_names():
    with pytest.raises(ForgeError) as exc:
        get_preset("nope")
    assert all(n in str(exc.value) for n in BUILTIN)


@pytest.mark.parametrize("name", BUILTIN)
def test_plan_round_trip(name):
    p = get_preset(name, lora_r=8, learning_rate=3e-4, freeze_ratio=0.25)
    plan = p.to_plan(precision="bf16")
    assert isinstance(plan, Plan)
    expected = {"sft": ("full", "sft"), "lora": ("lora", "sft"), "qlora": ("qlora", "sft"),
                "dpo": ("lora", "dpo"), "memory_efficient": ("qlora", "sft")}[name]
    assert (plan.method, plan.trainer) == expected
    assert plan.freeze_ratio == 0.25 and plan.lora_r == 8
    assert plan.dtype == {"sft": "amp-bf16"}.get(name, "bf16")
    # (base preset, plan) -> preset: the base keeps what a Plan has no slot for (learning rate)
    back = preset_from_plan(plan, get_preset(name, learning_rate=3e-4))
    assert type(back) is type(p) and back == p


PLANS = [
    Plan(method="full", dtype="amp-bf16", per_device_train_batch_size=2, gradient_accumulation_steps=8, optim="adamw_8bit"),
    Plan(method="lora", lora_r=128, lora_alpha=256, lora_target_modules="all-linear", freeze_ratio=0.5, max_length=4096),
    Plan(method="qlora", dtype="fp16", lora_r=4, optim="paged_adamw_8bit", gradient_checkpointing=False),
    Plan(method="lora_8bit", lora_target_modules=("q_proj", "v_proj"), num_gpus=4, distributed="zero2"),
    Plan(method="lora", trainer="dpo", dpo_beta=0.3, attn_implementation="eager", dtype="fp32"),
]


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"{p.method}-{p.trainer}-{p.dtype}")
def test_any_preset_runs_any_plan_exactly(name, plan):
    """Export diffs (base preset, plan) once; applying the diff to the base gives the plan
    back at the plan's precision, and a saved preset file reads back as that plan."""
    base = get_preset(name)
    for where in ("bf16", "fp16"):  # the precision the preset's "auto" resolves to on the GPU
        preset = get_preset(name, **preset_overrides(base, plan, where))
        explicit = preset.bf16 is not None or preset.fp16 is not None
        assert preset.to_plan(precision=preset.resolved_precision() if explicit else where) == plan
    # the learning rate follows the plan's (trainer, adapters?) pair when it moves the preset to another
    same = (base.trainer, base.uses_lora) == (plan.trainer, plan.uses_lora)
    assert preset_with_plan(base, plan).learning_rate == (base.learning_rate if same else
                                                          LEARNING_RATES[(plan.trainer, plan.uses_lora)])
    assert preset_overrides(base, base.to_plan(precision="bf16")) == {}  # the preset's own plan: nothing to write


def test_from_plan_without_a_base_takes_the_registered_preset_of_its_method():
    assert from_plan(Plan(method="full", dtype="amp-bf16")).name == "sft"
    assert from_plan(Plan(method="qlora")).name == "qlora"
    assert from_plan(Plan(trainer="dpo", dpo_beta=0.2)).beta == 0.2
    eight = from_plan(Plan(method="lora_8bit"))
    assert eight.load_in_8bit and eight.get_bnb_config().load_in_8bit


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_save_and_load(tmp_path, suffix):
    p = get_preset("qlora", lora_r=4, lora_target_modules=["q_proj", "v_proj"])
    path = p.save(tmp_path / f"preset{suffix}")
    text = path.read_text()
    assert __version__ in text
    if suffix == ".json":
        assert json.loads(text)["preset"] == "qlora"
    assert load_preset(path) == p


def test_load_rejects_bad_files(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('{"preset": "lora", "config": {"lora_r": "big"}}')
    with pytest.raises(ForgeError, match="lora_r='big'"):
        load_preset(bad)
    with pytest.raises(ForgeError, match="unknown preset file type"):
        load_preset(tmp_path / "p.txt")


def test_custom_preset(monkeypatch):
    from forge_advisor.presets import registry

    # registered into a copy of the registry, so later tests see the five built-in presets
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_preset
    @dataclass
    class Tiny(BasePreset):
        name = "tiny_test"
        description = "test preset"
        method: str = "lora"
        lora_r: int = 2

    assert "tiny_test" in list_presets()
    p = get_preset("tiny_test", lora_alpha=4)
    assert (p.lora_r, p.lora_alpha, p.method) == (2, 4, "lora")
    with pytest.raises(ForgeError, match="already registered"):

        @register_preset
        @dataclass
        class Other(BasePreset):
            name = "tiny_test"


def test_attention_detection():
    from forge_advisor.presets.detect import attn_implementation_for

    assert attn_implementation_for("gemma2") == "eager"  # SDPA cannot soft-cap (transformers 5)
    assert attn_implementation_for("llama") == "sdpa"


def test_precision_detection_on_cpu():
    from forge_advisor.presets.detect import Hardware, mixed_precision_for

    assert mixed_precision_for(Hardware("cpu")) is None
    assert mixed_precision_for(Hardware("cuda", 1, (8, 0))) == "bf16"
    assert mixed_precision_for(Hardware("cuda", 1, (7, 5))) == "fp16"
    assert get_preset("lora", bf16=False, fp16=False).resolved_precision() is None


def test_print_info_renders():
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    get_preset("dpo").print_info(Console(file=buf, width=120))
    assert "beta" in buf.getvalue() and "max_prompt_length" in buf.getvalue()


def test_accelerate_configs(tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig

    from forge_advisor.train.accelerate_config import write_accelerate_config

    for dist in ("ddp", "fsdp", "zero2", "zero3"):
        plan = Plan(method="lora", num_gpus=4, distributed=dist)
        cfg = ClusterConfig.from_yaml_file(str(write_accelerate_config(plan, tmp_path / f"{dist}.yaml")))
        assert cfg.num_processes == 4
    with pytest.raises(ForgeError, match="needs no accelerate config"):
        write_accelerate_config(Plan(), tmp_path / "x.yaml")


def test_memory_helpers_on_a_live_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    from forge_advisor.train import memory

    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=100))
    assert memory.estimate_model_memory(model, 2, 64).peak_reserved_bytes > 0
    savings = memory.get_memory_savings_estimate(model)
    assert set(savings) == {"full", "lora", "qlora", "saving"}


def test_builtin_learning_rates_suit_their_method():
    """Each registered preset starts at its (trainer, adapters?) pair's customary rate:
    SFT full 2e-5, SFT LoRA/QLoRA 2e-4, DPO LoRA 5e-6 (QLoRA paper; alignment-handbook recipes)."""
    expected = {("sft", False): 2e-5, ("sft", True): 2e-4, ("dpo", False): 5e-7, ("dpo", True): 5e-6}
    assert LEARNING_RATES == expected
    for name in BUILTIN:
        p = get_preset(name)
        assert p.learning_rate == expected[(p.trainer, p.uses_lora)], name


def test_lora_alpha_keeps_the_presets_scale():
    """A new rank alone keeps α/r (peft's LoraLayer.scaling): r 128 on lora's 32/16 -> α 256."""
    from forge_advisor.estimate import resolve_plan

    assert get_preset("lora", lora_r=128).lora_alpha == 256
    assert get_preset("qlora", lora_r=4).lora_alpha == 8
    assert get_preset("lora", lora_r=128, lora_alpha=16).lora_alpha == 16  # given: kept
    assert get_preset("lora", lora_alpha=64).replace(lora_r=64).lora_alpha == 256  # this preset's own 64/16
    assert resolve_plan("lora", None, lora_r=64).lora_alpha == 128
    cfg = get_preset("lora", lora_r=128).get_lora_config()
    assert cfg.lora_alpha / cfg.r == 2.0
