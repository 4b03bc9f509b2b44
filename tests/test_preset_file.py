"""`train --preset-file` trains exactly the plan a file holds, for every format we write: the
TUI/advisor export (preset + overrides + plan, JSON and YAML) and ``save_preset`` (config)."""

from __future__ import annotations

import json

import pytest

from forge_advisor import export as ex
from forge_advisor.cli.main import build_parser, main
from forge_advisor.cli.train import _overrides, resolve_args_preset
from forge_advisor.gpus import find_gpu
from forge_advisor.presets import get_preset
from forge_advisor.presets.io import save_preset

MODEL = "meta-llama/Llama-3.1-8B"
# the case: an edited QLoRA plan that the old loader silently dropped to the bare preset
EDITED = {"lora_r": 128, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 8,
          "freeze_ratio": 0.25, "optim": "adamw_torch", "learning_rate": 5e-5}


def _trained_preset(path, *extra):
    args = build_parser().parse_args(["train", "--preset-file", str(path), "--model", MODEL, *extra])
    return resolve_args_preset(args, _overrides(args))


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_exported_plan_trains_that_plan(tmp_path, suffix):
    gpu = find_gpu("RTX 4090")
    doc = ex.plan_document(MODEL, "qlora", EDITED, gpu=gpu)
    path = tmp_path / f"forge-plan{suffix}"
    path.write_text(ex.plan_json(doc) if suffix == ".json" else ex.plan_yaml(doc))
    preset = _trained_preset(path)
    assert preset.name == "qlora" and preset.lora_r == 128 and preset.learning_rate == 5e-5
    # the exporter's own plan (what the TUI showed) is the plan train runs
    assert preset.to_plan(precision="bf16" if gpu.bf16 else "fp16").to_dict() == doc["plan"]
    # flags still override the file, last
    assert _trained_preset(path, "--lora-r", "64").lora_r == 64


def test_saved_preset_round_trips(tmp_path):
    p = get_preset("lora", lora_r=8, num_train_epochs=2.0)
    path = save_preset(p, tmp_path / "p.json")
    assert _trained_preset(path).to_dict() == p.to_dict()


def test_show_prints_the_exported_plan_not_the_bare_preset(tmp_path, capsys):
    path = tmp_path / "plan.json"
    path.write_text(ex.plan_json(ex.plan_document(MODEL, "qlora", EDITED, gpu=find_gpu("RTX 4090"))))
    assert main(["train", "--preset-file", str(path), "--show"]) == 0
    out = capsys.readouterr().out
    assert "128" in out


def test_bad_plan_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"preset": "qlora", "overrides": ["lora_r", 4]}))
    assert main(["train", "--preset-file", str(path), "--show"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "must be a mapping" in err
