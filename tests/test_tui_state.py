"""The TUI's pure helpers: knob parsing/stepping, memory groups, the train-output parser."""

from __future__ import annotations

import pytest

from forge_advisor.estimate import estimate
from forge_advisor.errors import ForgeError
from forge_advisor.tui.state import (
    KNOB_BY_FIELD, TOKENS_KNOB, evaluate, fmt_duration, format_value, group_memory, parse_tokens, parse_value,
    step_value,
)
from forge_advisor.tui.train_log import LineSplitter, MonitorState, error_of, event_of

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


def _events_output() -> str:
    """What ``train --events -`` writes on stdout: the runtime's own encoder, not a copy of it."""
    from forge_advisor.train.events import Alert, CheckpointSaved, End, Start, Step, encode

    events = [
        Start("demo", "lora", {"lora_r": 16}, 30, 4 << 30),
        Step(20, 5.2072, 1e-3, 0.148, 1494.0, None, None, int(3.5 * (1 << 30)), 30, [("layers.1", 0.14)]),
        Alert(21, "nonfinite_skipped", "step 21: non-finite gradient in 'layers.0.q.lora_A', step skipped"),
        Alert(22, "loss_spike", "step 22: loss spike 9.1 > 3 × median 2.9"),
        CheckpointSaved(20, "/x/checkpoint-20", 20),
        End("completed", 30, 5.194, peak_allocated_bytes=int(3.5 * (1 << 30)), predicted_peak_bytes=4 << 30),
    ]
    return "".join(encode(e) + "\n" for e in events)


def test_events_drive_the_monitor_state() -> None:
    text = _events_output()
    splitter = LineSplitter()
    lines = splitter.feed(text[:50].encode()) + splitter.feed(text[50:].encode()) + splitter.flush()
    events = [e for e in (event_of(x) for x in lines) if e is not None]
    assert [e.kind for e in events] == ["start", "step", "alert", "alert", "checkpoint", "end"]
    st = MonitorState()
    for e in events:
        st.apply(e)
    assert st.losses == [5.2072] and st.grad_norms == [0.148] and st.step == 20 and st.total_steps == 30
    assert st.tokens_per_second == 1494.0 and st.top_layers == "layers.1 0.14"
    assert st.nan_alert and len(st.alerts) == 2 and st.measured_over_predicted == 0.88  # 3.5 / 4.0
    assert st.ema_updates == 20 and st.ema_checkpoint == "checkpoint-20" and st.status == "done"


def test_event_decoding_is_strict() -> None:
    from forge_advisor.train.events import Step, decode, encode

    nan = Step(3, float("nan"), grad_norm=float("inf"))
    back = decode(encode(nan))
    assert back.step == 3 and back.loss != back.loss and back.grad_norm == float("inf")  # NaN/Inf survive JSON
    assert decode('{"event": "step", "v": 2, "step": 1}') is None  # a later version is skipped
    assert decode('{"event": "bogus", "v": 1}') is None
    assert decode("[monitor] step 20 | loss 5.2") is None  # printed text is not an event
    assert error_of("error: --data x.jsonl: no such file") == "error: --data x.jsonl: no such file"
    assert error_of("[monitor] step 1") is None


def test_progress_bars_of_other_tools_are_not_training_steps() -> None:
    from forge_advisor.tui.train_log import clean_line

    assert clean_line("Map: 100%|██████████| 200/200 [00:00<00:00]") is None
    assert clean_line(" 67%|██▋ | 20/30 [00:11<00:06][monitor] step 20 | loss 5.2") == "[monitor] step 20 | loss 5.2"
    assert clean_line("done: 30 steps") == "done: 30 steps"
