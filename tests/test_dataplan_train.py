"""The runtime does what the data plan says: one epoch on CPU with each batching mode; the
Trainer's own count of tokens seen and of optimizer steps against what the advisor predicted
from the same data without torch."""

from __future__ import annotations

import json
import random

import pytest
from transformers import TrainerCallback

from forge_advisor.dataplan import MODE_FIELDS, measure_lengths, simulate
from forge_advisor.dataplan.batching import steps_per_epoch
from forge_advisor.errors import ForgeError
from forge_advisor.train import run
from forge_advisor.train.demo import build_demo_model

MAX_LENGTH = 64
BATCH = 4


class _Seen(TrainerCallback):
    """Tokens and steps the Trainer counted, and the tokens of every forward's micro-batch
    (the model's own input_ids: padded rows count their padding, a flattened row its records)."""

    def __init__(self) -> None:
        self.micro_tokens: list[int] = []

    def on_train_begin(self, args, state, control, model=None, **kw):
        def pre(module, a, kwargs):
            if module.training:
                self.micro_tokens.append(int(kwargs["input_ids"].numel()))

        model.register_forward_pre_hook(pre, with_kwargs=True)

    def on_train_end(self, args, state, control, **kw):
        self.tokens, self.steps = state.num_input_tokens_seen, state.global_step


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("modes")
    model = str(build_demo_model(tmp / "model"))
    rng = random.Random(0)
    data = tmp / "d.jsonl"
    # byte-level demo tokenizer: a record is len(text) + 1 (EOS) tokens; some exceed max_length
    reps = [rng.randint(1, 12) for _ in range(20)] + [30, 33]
    data.write_text("".join(json.dumps({"text": "ab " * k}) + "\n" for k in reps))
    return model, data, measure_lengths(data, model)


@pytest.mark.parametrize("mode", ["longest", "max_length", "packing", "padding_free"])
def test_each_batching_mode_trains_as_planned(mode, setup, tmp_path, capsys):
    model, data, report = setup
    seen = _Seen()
    over = {"max_steps": -1, "num_train_epochs": 1, "per_device_train_batch_size": BATCH,
            "gradient_accumulation_steps": 1, "max_length": MAX_LENGTH, "save_steps": 1000, **MODE_FIELDS[mode]}
    r = run(model, str(data), "lora", tmp_path / "out", demo=True, overrides=over, quiet=False, callbacks=[seen])
    # the truncation is reported in every mode, counted from the data without torch
    cut = round(report.truncated(MAX_LENGTH)[0] * len(report.lengths))
    assert f"data: {cut:,} of {len(report.lengths):,} records truncated at max_length {MAX_LENGTH}" in capsys.readouterr().out
    # the worst micro-batch comes first (the preflight step): no later one holds more tokens,
    # and some later one holds fewer (the order is not an accident of equal batches)
    assert len(seen.micro_tokens) == seen.steps and seen.micro_tokens[0] == max(seen.micro_tokens)
    if mode != "max_length":
        assert min(seen.micro_tokens) < seen.micro_tokens[0]
    sim = simulate(report.lengths, mode, max_length=MAX_LENGTH, batch_size=BATCH)
    assert r.status == "completed" and seen.steps == steps_per_epoch(sim.micro_batches, 1)
    real = sum(report.kept(MAX_LENGTH))
    assert 0 < report.truncated(MAX_LENGTH)[0] < 1  # the data exercises truncation
    if mode in ("packing", "padding_free"):
        assert seen.tokens == sim.processed_tokens == real  # no padding at all
    elif mode == "max_length":
        assert seen.tokens == len(report.lengths) * MAX_LENGTH
    else:  # padded to each batch's longest: more than the real tokens, less than padding to max_length
        assert real < seen.tokens < len(report.lengths) * MAX_LENGTH
    if mode == "packing":
        assert seen.steps < -(-len(report.lengths) // BATCH)  # fewer rows than records


def test_truncation_is_reported(setup, tmp_path, capsys):
    model, data, report = setup
    run(model, str(data), "lora", tmp_path / "o", demo=True, quiet=False,
        overrides={"max_steps": 1, "max_length": MAX_LENGTH, "save_steps": 1000})
    cut = round(report.truncated(MAX_LENGTH)[0] * len(report.lengths))
    assert f"data: {cut:,} of {len(report.lengths):,} records truncated at max_length {MAX_LENGTH}" in capsys.readouterr().out


def test_batching_fields_are_checked():
    from forge_advisor.presets import get_preset

    with pytest.raises(ForgeError, match="padding='max_length' with packing"):
        get_preset("lora", padding="max_length", packing=True)
    with pytest.raises(ForgeError, match="padding='maxlen' is not one of"):
        get_preset("lora", padding="maxlen")
    with pytest.raises(ForgeError, match="DPO batches pad"):
        get_preset("dpo", packing=True)
