"""Measured trials: real steps of real plans (tiny model, CPU here; CUDA adds memory peaks)."""

from __future__ import annotations

from forge_advisor.advisor import recommend
from forge_advisor.advisor.measure import LONG, measure_candidates
from forge_advisor.plan import Plan
from forge_advisor.shapes import shape_from_config
from forge_advisor.train.trial import run_trial

TINY = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512}


def test_trial_trains_the_planned_parameters() -> None:
    for plan in (
        Plan(method="lora", per_device_train_batch_size=2, max_length=32, lora_target_modules="all-linear"),
        Plan(method="full", dtype="amp-bf16", per_device_train_batch_size=2, max_length=32, freeze_ratio=0.5),
        Plan(method="qlora", per_device_train_batch_size=2, max_length=32),
    ):
        result = run_trial(TINY, plan, steps=1, device="cpu")
        from forge_advisor.estimate import estimate

        expected = estimate(shape_from_config(TINY, "tiny"), plan).to_dict()["parameters"]["trainable"]
        assert result["trainable_parameters"] == expected, plan.method
        assert result["tokens_per_second"] > 0 and result["device"] == "cpu"


def test_measure_runs_candidates_in_an_optuna_study() -> None:
    shape = shape_from_config(TINY, "tiny")
    rec = recommend(shape, "RTX 4090", seq_len=32, global_batch=2, top=2)
    trials, calibration = measure_candidates(TINY, rec.recommendations, rec.gpu, steps=1)
    assert len(trials) == 2 and not any(t.oom for t in trials)
    # a few steps first, more for the survivors: the first trial of a rung always goes on
    assert trials[0].steps == LONG and {t.steps for t in trials} <= {1, LONG}
    for t in trials:
        assert t.result["tokens_per_second"] > 0  # type: ignore[index]
        assert t.result["trainable_parameters"] == t.candidate.estimate.to_dict()["parameters"]["trainable"]  # type: ignore[index]
    assert calibration is None  # no CUDA peaks on a CPU: nothing to calibrate memory from
