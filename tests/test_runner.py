"""The runner end to end on a tiny random model: every preset, resume, data formats, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from forge_advisor.cli.main import main
from forge_advisor.train import run
from forge_advisor.train.demo import build_demo_model, demo_data_path, write_demo_dpo

FAST = {"max_steps": 2, "logging_steps": 1, "save_steps": 100}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_demo_model(tmp_path_factory.mktemp("m") / "model"))


@pytest.fixture(scope="module")
def dpo_data(tmp_path_factory):
    return str(write_demo_dpo(tmp_path_factory.mktemp("d") / "pairs.jsonl"))


@pytest.mark.parametrize("preset", ["sft", "lora", "qlora", "memory_efficient", "dpo"])
def test_every_preset_trains(preset, model_dir, dpo_data, tmp_path):
    data = dpo_data if preset == "dpo" else None
    r = run(model_dir, data, preset, tmp_path / "out", demo=True, overrides=FAST, quiet=True)
    assert r.status == "completed" and r.global_step == 2 and r.final_loss is not None
    name = "model" if preset == "sft" else "adapter"
    assert (tmp_path / "out" / name).is_dir() and (tmp_path / "out" / "ema").is_dir()
    assert not list((tmp_path / "out").glob(".*tmp*"))  # atomic saves leave no temp folders
    assert json.loads((tmp_path / "out" / "preset.json").read_text())["preset"] == preset
    if preset in ("qlora", "memory_efficient"):
        cfg = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
        assert cfg["r"] == 16


def test_freeze_ratio_through_runner(model_dir, tmp_path):
    r = run(model_dir, None, "lora", tmp_path / "o", demo=True, overrides={**FAST, "freeze_ratio": 0.5}, quiet=True)
    # demo model: 2 layers; LoRA r 16 on q/k/v/o per layer: 16·(64+64)·2 + 16·(64+32)·2 = 7,168
    assert r.frozen_layers == (0,) and r.trainable_parameters == 7168


def test_resume_keeps_ema(model_dir, tmp_path):
    out = tmp_path / "out"
    over = {"logging_steps": 1, "save_steps": 2}
    run(model_dir, None, "lora", out, demo=True, overrides={**over, "max_steps": 4}, quiet=True)
    r = run(model_dir, None, "lora", out, demo=True, resume=True, overrides={**over, "max_steps": 6}, quiet=True)
    assert r.global_step == 6
    state = torch.load(out / "checkpoint-6" / "ema_state.pt", weights_only=True)
    assert state["num_updates"] == 6  # 4 restored + 2 new (a restart would give 2)


def test_chat_and_save_to_disk_data(model_dir, tmp_path):
    import datasets

    chat = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
            for i in range(8)]
    chat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run(model_dir, str(chat), "lora", tmp_path / "a", overrides=FAST, quiet=True,
               demo=True).global_step == 2
    disk = tmp_path / "disk"
    datasets.Dataset.from_list([{"text": f"line {i}"} for i in range(8)]).save_to_disk(str(disk))
    assert run(model_dir, str(disk), "lora", tmp_path / "b", overrides=FAST, quiet=True,
               demo=True).global_step == 2


def _cli(capsys, *argv):
    code = main(["train", *argv])
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_inputs_exit_2_with_one_line(model_dir, tmp_path, capsys):
    good = str(demo_data_path())
    (tmp_path / "fields.jsonl").write_text('{"content": "x"}\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "noconfig").mkdir()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("earlier work")
    out = str(tmp_path / "out")
    cases = [
        (["--model", model_dir, "--data", str(tmp_path / "missing.jsonl"), "--output", out], "no such data file"),
        (["--model", model_dir, "--data", str(tmp_path / "fields.jsonl"), "--output", out], "found: content"),
        (["--model", model_dir, "--data", str(tmp_path / "empty.jsonl"), "--output", out], "empty"),
        (["--model", str(tmp_path / "noconfig"), "--data", good, "--output", out], "no config.json"),
        (["--model", model_dir, "--data", good, "--output", out, "--lora-r", "100"], "lora_r=100 is larger"),
        (["--model", model_dir, "--data", good, "--output", out, "--preset", "dpo"], "DPO needs"),
        (["--model", model_dir, "--data", good, "--output", str(kept)], "not empty"),
        (["--model", model_dir, "--data", good, "--output", out, "--preset", "auto"], "no GPU found"),
        (["--model", model_dir, "--data", good, "--output", out, "--set", "lora_rr=4"], "did you mean 'lora_r'"),
    ]
    for argv, message in cases:
        code, err = _cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "out").exists()  # nothing written before the checks pass
    assert (kept / "notes.txt").read_text() == "earlier work"


def test_demo_cli(tmp_path, capsys):
    code = main(["train", "--demo", "--output", str(tmp_path / "d"), "--max-steps", "3", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["global_step"] == 3 and report["monitor"]["tokens_per_second"]


def test_preset_auto_asks_the_advisor() -> None:
    """--preset auto --gpu G: the preset the advisor ranks first, before any training."""
    import json as _json

    from forge_advisor.advisor import recommend

    res = subprocess.run(
        [sys.executable, "-m", "forge_advisor.cli.main", "train", "--model", "meta-llama/Llama-3.1-8B",
         "--preset", "auto", "--gpu", "RTX 4090", "--show"], capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    top = recommend("meta-llama/Llama-3.1-8B", "RTX 4090", top=1).recommendations[0]
    assert f"{top.plan.lora_r}" in res.stdout and top.preset in res.stdout
    assert _json.dumps(top.plan.per_device_train_batch_size) in res.stdout


def test_event_stream_and_preflight_records(tmp_path):
    """A real demo run's event stream: the kinds in order, gradient norms before clipping (the
    Trainer's own logged pre-clip norm is the independent reference), the preflight's honest
    CPU verdict on the longest batch, and the measured-vs-estimated records with versions."""
    from forge_advisor.train.events import Preflight, Start, Step, decode
    from forge_advisor.train.records import read_records

    out, events = tmp_path / "out", tmp_path / "events.jsonl"
    over = {"max_steps": 4, "logging_steps": 1, "save_steps": 2, "max_grad_norm": 0.01}
    r = run(None, None, "lora", out, demo=True, overrides=over, quiet=True, events=events)
    evs = [decode(x) for x in events.read_text().splitlines()]
    assert None not in evs
    kinds = [e.kind for e in evs]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.index("preflight") < kinds.index("step")
    assert kinds.count("checkpoint") == 2 and kinds.count("step") == 4
    start = evs[0]
    assert isinstance(start, Start) and start.max_steps == 4 and start.plan["max_grad_norm"] == 0.01
    steps = [e for e in evs if isinstance(e, Step)]
    logged = {h["step"]: h["grad_norm"] for h in json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
              ["log_history"] if "grad_norm" in h}
    for s in steps:
        # after clipping to 0.01 the norm would read <= 0.01; the Trainer logs the pre-clip norm
        assert s.grad_norm > 0.05 and s.grad_norm == pytest.approx(logged[s.step], rel=1e-4)
        assert s.learning_rate is not None and s.tokens_per_second
    pre = next(e for e in evs if isinstance(e, Preflight))
    # the demo text's longest line, tokenized by the demo tokenizer (bytes + EOS), ran first
    from forge_advisor.train.demo import build_tokenizer

    tok = build_tokenizer()
    texts = [json.loads(x)["text"] for x in demo_data_path().read_text().splitlines() if x.strip()]
    longest = max(min(len(tok(t)["input_ids"]), 127) + 1 for t in texts)
    assert pre.verdict == "unmeasured" and pre.longest_tokens == longest and "CPU" in pre.message
    records = read_records(out)
    assert [x["phase"] for x in records] == ["preflight", "run"]
    import transformers

    assert records[0]["versions"]["transformers"] == transformers.__version__  # metadata agrees with the module
    assert records[0]["plan"]["max_grad_norm"] == 0.01 and records[0]["measured"]["longest_tokens"] == longest
    assert records[1]["measured"]["steps"] == r.global_step == 4


def test_preflight_on_a_one_sample_dataset_says_what_it_checked(tmp_path):
    from forge_advisor.train.events import Preflight, decode

    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"text": "a single short line of text"}) + "\n")
    events = tmp_path / "e.jsonl"
    run(None, str(one), "lora", tmp_path / "out", demo=True, overrides={"max_steps": 1}, quiet=True, events=events)
    pre = next(e for e in map(decode, events.read_text().splitlines()) if isinstance(e, Preflight))
    assert "the only sample" in pre.message and pre.samples == 1


def test_runtime_layers_run_one_way():
    """runner -> session, never the reverse: no module of the runtime imports the runner, and
    the modules the TUI and the CLI's checks use are torch-free (issue #10)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "forge_advisor" / "train"
    for path in root.rglob("*.py"):
        if path.name == "runner.py" or path == root / "__init__.py":  # the package's lazy run() facade
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not any(n.endswith("train.runner") for n in names), f"{path.name} imports the runner"
    code = ("import sys; import forge_advisor.train.events, forge_advisor.train.resolve, forge_advisor.train.saving, "
            "forge_advisor.train.lock, forge_advisor.train.checks, forge_advisor.train.runner, forge_advisor.tui.train_log; "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "False", res.stderr


def test_oom_in_preflight_is_one_line_with_the_nearest_plan(tmp_path):
    """The first step raising torch's OutOfMemoryError (what a too-big plan does on the GPU):
    one ForgeError line naming the preflight and the advisor's nearest plan that fits."""
    from transformers import TrainerCallback

    from forge_advisor.errors import ForgeError
    from forge_advisor.train.events import Preflight, decode

    class OutOfMemory(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    events = tmp_path / "e.jsonl"
    with pytest.raises(ForgeError) as exc:
        run(None, None, "lora", tmp_path / "out", demo=True, overrides=FAST, quiet=True, gpu="RTX 4090",
            callbacks=[OutOfMemory()], events=events)
    text = str(exc.value)
    assert "\n" not in text and text.startswith("out of GPU memory in the preflight step on the longest batch")
    assert "nearest plan that fits" in text
    pre = [e for e in map(decode, events.read_text().splitlines()) if isinstance(e, Preflight)]
    assert pre and pre[-1].verdict == "oom"
