"""EMA and monitor callbacks inside a real transformers Trainer (tiny random model, CPU)."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer, TrainerCallback

from forge_advisor.presets import get_preset
from forge_advisor.train.callbacks import EMACallback, MonitorCallback


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from forge_advisor.train.demo import build_demo_model, build_tokenizer

    path = build_demo_model(tmp_path_factory.mktemp("m") / "model")
    return path, build_tokenizer()


def _dataset(tok, n=16):
    import datasets

    texts = [f"line {i}: the river keeps the slow light of morning" for i in range(n)]
    enc = tok(texts, truncation=True, max_length=48)
    return datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "labels": enc["input_ids"]})


def _trainer(path, tok, out, callbacks, max_steps=4, **over):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    preset = get_preset("lora", lora_r=4, max_steps=max_steps, per_device_train_batch_size=4,
                        gradient_accumulation_steps=1, learning_rate=1e-2, bf16=False, fp16=False,
                        gradient_checkpointing=False, logging_steps=1, **over)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path), preset.get_lora_config())
    args = preset.get_training_args(str(out), disable_tqdm=True, save_strategy="steps")
    return Trainer(model=model, args=args, train_dataset=_dataset(tok), callbacks=callbacks)


class Snapshots(TrainerCallback):
    """Trainable weights after every optimizer step, for the reference EMA."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, model=None, **kw):
        self.steps.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})


def test_ema_matches_reference_and_swaps_exactly(tiny, tmp_path):
    path, tok = tiny
    ema, snaps = EMACallback(decay=0.9), Snapshots()
    trainer = _trainer(path, tok, tmp_path, [snaps, ema], save_steps=100)
    init = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    ref = {n: t.float().clone() for n, t in init.items()}
    for snap in snaps.steps:  # ema = 0.9 · ema + 0.1 · θ_t
        for n in ref:
            ref[n] = 0.9 * ref[n] + 0.1 * snap[n].float()
    assert ema.num_updates == 4 and set(ema.shadow) == set(ref)
    for n in ref:
        torch.testing.assert_close(ema.shadow[n], ref[n], rtol=1e-6, atol=1e-7)
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ema.apply_ema(model)
    n0 = next(iter(ref))
    assert torch.equal(dict(model.named_parameters())[n0].detach(), ema.shadow[n0])
    ema.restore(model)
    assert ema._backup is None  # no copy survives the swap
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_ema_checkpoint_and_resume(tiny, tmp_path):
    path, tok = tiny
    ema = EMACallback(decay=0.9, cpu_offload=True)
    _trainer(path, tok, tmp_path, [ema], max_steps=4, save_steps=2).train()
    saved = torch.load(tmp_path / "checkpoint-2" / "ema_state.pt", weights_only=True)
    assert saved["num_updates"] == 2
    resumed = EMACallback(decay=0.9)

    class Check(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.at_begin = (resumed.num_updates, {k: v.clone() for k, v in resumed.shadow.items()})

    check = Check()
    trainer = _trainer(path, tok, tmp_path, [resumed, check], max_steps=4, save_steps=2)
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    updates, shadow = check.at_begin
    assert updates == 2
    assert all(torch.equal(shadow[k], saved["shadow"][k]) for k in shadow)
    assert resumed.num_updates == 4


def test_ema_weights_save_as_adapter(tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path, tok = tiny
    ema = EMACallback(decay=0.5)
    trainer = _trainer(path, tok, tmp_path / "run", [ema], max_steps=2, save_steps=100)
    trainer.train()
    out = ema.save_ema_weights(trainer.model, tmp_path / "ema")
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), out)
    name = next(k for k in ema.shadow if "lora_B" in k)
    assert torch.equal(dict(loaded.named_parameters())[name].detach(), ema.shadow[name])


class InjectNaN(TrainerCallback):
    def __init__(self, at):
        self.at = at

    def on_step_begin(self, args, state, control, model=None, **kw):
        if state.global_step + 1 == self.at:  # poison one adapter weight before step `at`
            with torch.no_grad():
                next(p for n, p in model.named_parameters() if "lora_A" in n).fill_(float("nan"))


def test_monitor_stops_on_nan(tiny, tmp_path):
    path, tok = tiny
    lines = []
    mon = MonitorCallback(log=lines.append)
    trainer = _trainer(path, tok, tmp_path, [mon, InjectNaN(3)], max_steps=8, save_steps=100)
    trainer.train()
    assert mon.stop_reason is not None and "step 3" in mon.stop_reason and "NaN" in mon.stop_reason
    assert trainer.state.global_step == 3
    assert any("grad-norm" in line for line in lines)  # steps 1-2 were logged normally
    assert mon.history[0]["top_layers"] and mon.history[0]["top_layers"][0][0].startswith("layers.")


def test_monitor_skip_mode(tiny, tmp_path):
    path, tok = tiny
    mon = MonitorCallback(on_nonfinite="skip", max_skipped_steps=2, log=lambda s: None)
    trainer = _trainer(path, tok, tmp_path, [mon, InjectNaN(2)], max_steps=8, save_steps=100)
    trainer.train()
    # the poisoned weight keeps every later step non-finite: 2 skips are tolerated, the 3rd stops
    assert mon.skipped_steps == [2, 3, 4] and "consecutive" in mon.stop_reason


def test_monitor_flags_loss_spikes_and_reports_prediction():
    from types import SimpleNamespace

    from transformers import TrainerControl

    mon = MonitorCallback(spike_factor=2.0, predicted_peak_bytes=1 << 30, log=lambda s: None)
    state = SimpleNamespace(global_step=0, num_input_tokens_seen=0, is_world_process_zero=True)
    mon.on_train_begin(None, state, TrainerControl())
    for step, loss in enumerate([2.0, 2.1, 1.9, 2.0, 9.0], 1):
        state.global_step = step
        mon.on_log(None, state, TrainerControl(), logs={"loss": loss})
    assert mon.spikes == [(5, 9.0, 2.0)]
    mon.peak_torch_bytes = 1 << 29
    assert "measured/predicted = 0.50" in mon.peak_summary()
