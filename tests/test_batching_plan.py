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


def test_recommend_epoch_time_counts_real_tokens_not_padding(tmp_path, capsys) -> None:
    """Padded to max_length, every row costs max_length tokens of compute: one pass over N
    records of real lengths l_i takes sum(l_i) / (tokens/s x sum(l_i) / (N x L)), i.e.
    N x L / tokens/s, not sum(l_i) / tokens/s."""
    rng = random.Random(7)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": "w " * rng.randint(20, 300)}) + "\n" for _ in range(64)))
    assert main(["data", "--data", str(data), "--model", MODEL, "--json"]) == 0
    lengths = json.loads(capsys.readouterr().out)["lengths"]
    total, n = lengths["total_tokens"], lengths["records"]
    length = 1024
    assert lengths["max"] < length  # nothing truncated: every record is real tokens + padding to L
    assert main(["recommend", "--model", MODEL, "--gpu", "H100 SXM", "--data", str(data), "--padding", "max_length",
                 "--max-length", str(length), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    for c in rec["recommendations"]:
        thr = c["estimate"]["throughput"]
        assert thr["real_token_fraction"] == pytest.approx(total / (n * length), rel=1e-9)
        assert thr["epoch_seconds"] == pytest.approx(n * length / thr["tokens_per_second"], rel=1e-9)
    # without data the dataset tokens are taken as processed tokens
    assert main(["recommend", "--model", MODEL, "--gpu", "H100 SXM", "--dataset-tokens", str(total), "--json"]) == 0
    thr = json.loads(capsys.readouterr().out)["recommendations"][0]["estimate"]["throughput"]
    assert thr["real_token_fraction"] == 1.0
    assert thr["epoch_seconds"] == pytest.approx(total / thr["tokens_per_second"], rel=1e-9)


def test_recommend_holds_every_record_when_a_plan_of_its_space_does(tmp_path, capsys) -> None:
    """The lora preset's default (batch 4, bf16 weights) holds only short rows of Llama-3.1-8B
    on a 24 GB card; QLoRA at batch 1 with checkpointing holds every record. ``estimate``
    prices the plan it shows, so it truncates; ``recommend`` and ``fit`` search, so they keep
    the whole records and recommend a plan that fits at that length."""
    rng = random.Random(3)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": "w " * int(rng.lognormvariate(6, 1.0))}) + "\n" for _ in range(300)))
    assert main(["data", "--data", str(data), "--model", MODEL, "--json"]) == 0
    longest = json.loads(capsys.readouterr().out)["lengths"]["max"]
    assert main(["estimate", "--model", MODEL, "--gpu", "RTX 4090", "--preset", "lora", "--data", str(data), "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["plan"]["max_length"] < longest and est["fits"]
    assert main(["recommend", "--model", MODEL, "--gpu", "RTX 4090", "--data", str(data), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["seq_len"] >= longest
    assert rec["recommendations"] and all(c["estimate"]["fits"] for c in rec["recommendations"])
    assert main(["fit", "--model", MODEL, "--gpu", "RTX 4090", "--data", str(data), "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert {m["plan"]["max_length"] for m in fit["methods"]} == {rec["seq_len"]}
