"""The batching mode as a plan knob: trl's preset fields map to the plan's one ``batching``
field and back, the flags work on every command, and ``recommend --data`` ranks the modes on
the data's own padding (a run's printed command trains and estimates the same plan)."""

from __future__ import annotations

import json
import random
import shlex

import pytest

from forge_advisor.cli.main import build_parser, main
from forge_advisor.cli.plan_args import plan_overrides, preset_field_overrides
from forge_advisor.dataplan import MODE_FIELDS, MODES
from forge_advisor.errors import ForgeError
from forge_advisor.plan import BATCHING, Plan
from forge_advisor.presets import get_preset
from forge_advisor.presets.planning import preset_with_plan

MODEL = "meta-llama/Llama-3.1-8B"
FLAGS = {"packing": ["--packing"], "padding_free": ["--padding-free"], "max_length": ["--padding", "max_length"],
         "longest": ["--padding", "longest"]}


def test_the_modes_are_the_cores_and_map_both_ways() -> None:
    assert MODES == BATCHING == ("longest", "max_length", "packing", "padding_free")
    for mode in MODES:
        preset = get_preset("lora", **MODE_FIELDS[mode])
        plan = preset.to_plan(precision="bf16")
        assert plan.batching == mode
        # plan -> preset: the fields that select the mode, nothing else changed
        back = preset_with_plan(get_preset("lora"), plan)
        assert {k: getattr(back, k) for k in MODE_FIELDS[mode]} == MODE_FIELDS[mode]
        assert back.to_plan(precision="bf16") == plan
    with pytest.raises(ForgeError, match="batching='packing' with trainer='dpo'"):
        Plan(trainer="dpo", batching="packing")
    with pytest.raises(ForgeError, match="batching='pack' is not one of"):
        Plan(batching="pack")


@pytest.mark.parametrize("mode", list(FLAGS))
@pytest.mark.parametrize("command", ["estimate", "recommend", "fit", "tui", "train"])
def test_every_command_takes_the_batching_flags(command: str, mode: str) -> None:
    args = build_parser().parse_args([command, "--model", MODEL, *FLAGS[mode]])
    if command == "train":  # train takes the preset's fields themselves
        got = preset_field_overrides(args)
        assert {k: got[k] for k in got if k in MODE_FIELDS[mode]} == {k: v for k, v in MODE_FIELDS[mode].items()
                                                                      if k in got}
    else:
        assert plan_overrides(args) == {"batching": mode}


def test_estimate_prices_the_mode_and_bad_flags_are_one_line(capsys) -> None:
    out = {}
    for mode in MODES:
        assert main(["estimate", "--model", MODEL, "--gpu", "H100 SXM", *FLAGS[mode], "--json"]) == 0
        out[mode] = json.loads(capsys.readouterr().out)
        assert out[mode]["plan"]["batching"] == mode
    # padding to max_length fixes the shape: less reserved, the same tensors
    assert out["max_length"]["memory"]["peak_reserved_bytes"] < out["longest"]["memory"]["peak_reserved_bytes"]
    assert out["max_length"]["memory"]["peak_allocated_bytes"] == out["longest"]["memory"]["peak_allocated_bytes"]
    # a flattened row under sdpa is one sequence of 4 × 1024 tokens: its mask and attention cost more
    assert out["padding_free"]["memory"]["peak_allocated_bytes"] > out["longest"]["memory"]["peak_allocated_bytes"]
    for bad, want in ((["--packing", "--padding-free"], "choose one"),
                      (["--padding", "max_length", "--packing"], "no padding")):
        assert main(["estimate", "--model", MODEL, *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and want in err and "\n" not in err


def test_recommend_with_data_ranks_batching_and_its_command_runs(tmp_path, capsys) -> None:
    rng = random.Random(5)
    data = tmp_path / "d.jsonl"
    # skewed lengths: padding to the batch's longest wastes much of each step
    data.write_text("".join(json.dumps({"text": "w " * int(rng.lognormvariate(5, 1.0))}) + "\n" for _ in range(400)))
    # flash-attention keeps packed records apart: a flattened mode trains the most real tokens/s
    assert main(["recommend", "--model", MODEL, "--gpu", "H100 SXM", "--data", str(data), "--attn", "flash_attention_2",
                 "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    modes = [c["estimate"]["plan"]["batching"] for c in rec["recommendations"]]
    assert modes[0] in ("packing", "padding_free"), modes
    # under sdpa the flattened row is one masked sequence of batch × max_length tokens: the
    # winner is a padded mode, or a flattened one at one record per micro-batch
    assert main(["recommend", "--model", MODEL, "--gpu", "H100 SXM", "--data", str(data), "--json"]) == 0
    sdpa = json.loads(capsys.readouterr().out)["recommendations"][0]["estimate"]["plan"]
    assert sdpa["batching"] in ("longest", "max_length") or sdpa["per_device_train_batch_size"] == 1
    best = rec["recommendations"][0]
    argv = shlex.split(best["command"].split(" && ")[0])[1:]
    assert ("--packing" in argv) or ("--padding-free" in argv)
    assert main([*argv, "--show"]) == 0
    capsys.readouterr()
    flags = [a for i, a in enumerate(argv) if a not in ("--data", "--output") and argv[i - 1] not in ("--data", "--output")]
    flags = [a for i, a in enumerate(flags) if a != "--write-accelerate-config" and flags[i - 1] != "--write-accelerate-config"]
    assert main(["estimate", *flags[1:], "--gpu", "H100 SXM", "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["plan"] == best["estimate"]["plan"]
    # the user fixes the mode: every plan keeps it
    assert main(["recommend", "--model", MODEL, "--gpu", "H100 SXM", "--data", str(data), "--padding", "max_length",
                 "--json"]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert {c["estimate"]["plan"]["batching"] for c in fixed["recommendations"]} == {"max_length"}
    # DPO pads: no flattened mode in its space
    assert main(["recommend", "--model", MODEL, "--gpu", "H100 SXM", "--dpo", "--json"]) == 0
    dpo = json.loads(capsys.readouterr().out)
    assert {c["estimate"]["plan"]["batching"] for c in dpo["recommendations"]} <= {"longest", "max_length"}


def test_fit_prices_the_pinned_mode(capsys) -> None:
    got = {}
    for mode in ("longest", "max_length", "packing"):
        assert main(["fit", "--model", MODEL, "--gpu", "RTX 4090", *FLAGS[mode], "--json"]) == 0
        got[mode] = {m["preset"]: m for m in json.loads(capsys.readouterr().out)["methods"]}
    lora = {mode: got[mode]["lora"] for mode in got}
    assert {mode: m["plan"]["batching"] for mode, m in lora.items()} == {m: m for m in got}
    # one shape per step: no stranded loss blocks in the reserve (the same tensors)
    assert lora["max_length"]["min_peak_reserved_bytes"] < lora["longest"]["min_peak_reserved_bytes"]
    assert lora["max_length"]["min_peak_allocated_bytes"] == lora["longest"]["min_peak_allocated_bytes"]
    assert got["packing"]["dpo"]["plan"]["batching"] == "longest"  # DPO batches pad
