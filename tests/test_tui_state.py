"""The TUI's pure helpers: knob parsing/stepping, memory groups, the train-output parser."""

from __future__ import annotations

import pytest

from forge_advisor.estimate import estimate
from forge_advisor.errors import ForgeError
from forge_advisor.tui.state import (
    KNOB_BY_FIELD, TOKENS_KNOB, evaluate, fmt_duration, format_value, group_memory, parse_tokens, parse_value,
    step_value,
)
from forge_advisor.tui.train_log import LineSplitter, MonitorState, parse_line

MODEL = "meta-llama/Llama-3.1-8B"


def test_parse_and_step_knobs() -> None:
    r, f, ck = KNOB_BY_FIELD["lora_r"], KNOB_BY_FIELD["freeze_ratio"], KNOB_BY_FIELD["gradient_checkpointing"]
    assert parse_value(r, "32") == 32 and parse_value(r, "1_024") == 1024
    assert parse_value(r, "abc") == "abc"  # the Plan explains what is wrong with it
    assert parse_value(f, "0.25") == 0.25 and parse_value(f, "nan") == "nan"
    assert step_value(r, 16, 1) == 32 and step_value(r, 12, -1) == 8 and step_value(r, 1, -1) == 1
    assert step_value(f, 0.3, 1) == 0.375 and step_value(ck, True, 1) is False
    opt = KNOB_BY_FIELD["optim"]
    assert step_value(opt, "sgd", 1) == "adamw_torch"  # wraps around
    assert parse_tokens("10M") == 10_000_000 and parse_tokens("1.5b") == 1_500_000_000 and parse_tokens(" ") is None
    with pytest.raises(ForgeError):
        parse_tokens("lots")
    assert format_value(TOKENS_KNOB, 250_000_000) == "250M" and format_value(ck, False) == "off"
    assert fmt_duration(59) == "59 s" and fmt_duration(3600 * 5 + 60) == "5 h 01 min" and fmt_duration(None) == "—"


@pytest.mark.parametrize("preset", ["sft", "lora", "qlora", "dpo", "memory_efficient"])
def test_memory_groups_add_up_to_peak_reserved(preset) -> None:
    report = estimate(MODEL, preset, gpu="RTX 4090").to_dict()
    groups = group_memory(report)
    assert [g.key for g in groups] == ["weights", "gradients", "optimizer", "activations", "logits", "overhead"]
    assert sum(g.bytes for g in groups) == report["memory"]["peak_reserved_bytes"]


def test_unknown_terms_land_in_overhead() -> None:
    report = {"memory": {"breakdown": {"weights": 5, "new_term": 7}, "device": {"cuda_context": 1}}}
    groups = {g.key: g for g in group_memory(report)}
    assert groups["overhead"].bytes == 8 and "new_term" in groups["overhead"].terms


def test_evaluate_verdicts_and_errors() -> None:
    from forge_advisor.gpus import find_gpu
    from forge_advisor.shapes import load_shape

    shape, gpu = load_shape(MODEL), find_gpu("RTX 4090")
    assert evaluate(shape, gpu, "qlora", {}).verdict == "fits"
    assert evaluate(shape, gpu, "sft", {}).verdict == "no-fit"
    assert evaluate(shape, None, "lora", {}).verdict == "unknown"
    bad = evaluate(shape, gpu, "lora", {"per_device_train_batch_size": 0})
    assert not bad.ok and bad.error.startswith("per_device_train_batch_size=0 is out of range")
    assert evaluate(shape, gpu, "lora", {"lora_r": "abc"}).error.startswith("lora_r='abc' must be an integer")


# what `forge-advisor train --demo` prints (stdout and tqdm's stderr interleaved)
OUTPUT = (
    " 60%|██████    | 18/30 [00:09<00:05,  2.18it/s]\r"
    " 67%|██████▋   | 20/30 [00:11<00:06,  1.60it/s][monitor] step 20 | loss 5.2072 | grad-norm 0.148 | "
    "top layers.1 0.14, layers.0 0.048 | 1,494 tok/s | peak 3.50 GiB\n"
    "{'loss': '5.207', 'grad_norm': '0.1482', 'learning_rate': '0.001222', 'epoch': '0.8'}\n"
    "[monitor] step 21: non-finite gradient in 'layers.0.q.lora_A', step skipped\n"
    "[monitor] step 22: loss spike 9.1 > 3 × median 2.9\n"
    "[monitor] peak GPU memory 3.50 GiB (torch); predicted 4.00 GiB, measured/predicted = 0.88\n"
    "/opt/venv/x.py:759: UserWarning: 'pin_memory' argument is set\n"
    "done: 30 steps, final loss 5.1940\n"
)


def test_parse_training_output() -> None:
    splitter = LineSplitter()
    lines = splitter.feed(OUTPUT[:50].encode()) + splitter.feed(OUTPUT[50:].encode()) + splitter.flush()
    events = [e for e in (parse_line(x) for x in lines) if e is not None]
    kinds = [e.kind for e in events]
    assert kinds == ["progress", "metrics", "log", "alert", "alert", "peak", "done"]
    m = events[1]
    assert m.step == 20 and m.data["loss"] == 5.2072 and m.data["grad_norm"] == 0.148
    assert m.data["tokens_per_second"] == 1494 and m.data["peak_bytes"] == int(3.5 * (1 << 30))
    st = MonitorState(status="running")
    for e in events:
        st.apply(e)
    assert st.losses == [5.2072] and st.grad_norms == [0.148] and st.step == 20 and st.total_steps == 30
    assert st.nan_alert and len(st.alerts) == 2 and st.measured_over_predicted == 0.88
    assert st.ema_updates == 20 and st.status == "done"
    assert parse_line("error: --data x.jsonl: no such file").kind == "error"
    stopped = parse_line("[monitor] training stopped at step 7: gradient of 'w' is NaN/Inf; lower learning_rate")
    assert stopped.kind == "stopped" and stopped.step == 7


def test_progress_bars_of_other_tools_are_not_training_steps() -> None:
    from forge_advisor.tui.train_log import clean_line

    assert parse_line("Map: 100%|██████████| 200/200 [00:00<00:00, 3000 examples/s]") is None
    assert clean_line("Map: 100%|██████████| 200/200 [00:00<00:00]") is None
    assert clean_line(" 67%|██▋ | 20/30 [00:11<00:06][monitor] step 20 | loss 5.2") == "[monitor] step 20 | loss 5.2"
    assert clean_line("done: 30 steps") == "done: 30 steps"
