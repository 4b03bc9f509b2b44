"""`TrainingSession`: the heavy half of :func:`forge_advisor.train.run` (inputs already checked)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from forge_advisor.presets.base import BasePreset
from forge_advisor.train.checks import ModelInfo, last_checkpoint
from forge_advisor.train.data import DataInfo

__all__ = ["TrainingSession"]

logger = logging.getLogger(__name__)


def _torch_dtype(name: str | None) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, None: torch.float32}[name]


class TrainingSession:
    def __init__(
        self,
        preset: BasePreset,
        model: ModelInfo,
        data: DataInfo,
        output_dir: Path,
        *,
        targets: list[str] | str | None,
        resume: bool,
        ema_decay: float,
        ema_cpu_offload: bool,
        on_nonfinite: str,
        predicted_peak_bytes: int | None,
        extra_callbacks: list[Any],
        quiet: bool,
    ) -> None:
        from forge_advisor.train.callbacks import EMACallback, MonitorCallback

        self.preset = preset
        self.model_info = model
        self.data_info = data
        self.out = output_dir
        self.targets = targets
        self.resume = resume
        self.quiet = quiet
        # callbacks validate their arguments now, still before any loading
        self.ema = EMACallback(ema_decay, cpu_offload=ema_cpu_offload)
        self.monitor = MonitorCallback(
            on_nonfinite=on_nonfinite,  # type: ignore[arg-type]
            predicted_peak_bytes=predicted_peak_bytes,
            log=(lambda s: None) if quiet else None,
        )
        self.extra_callbacks = extra_callbacks
        self.freeze_report: Any = None

    # -- loading ----------------------------------------------------------------------------------
    def load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.model_info.name)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok

    def load_model(self) -> Any:
        model, self.freeze_report = load_model_for(self.preset, self.model_info)
        return model

    def build_dataset(self, tokenizer: Any) -> Any:
        from forge_advisor.train.data import load_dataset_for, prepare_dpo, prepare_sft

        ds = load_dataset_for(self.data_info)
        if self.preset.trainer == "dpo":
            return prepare_dpo(ds, tokenizer, self.preset.max_prompt_length)
        ds, self.truncation = prepare_sft(ds, tokenizer, self.data_info.kind, self.preset, quiet=self.quiet)
        return ds

    # -- training ---------------------------------------------------------------------------------
    def _trainer(self, model: Any, tokenizer: Any, dataset: Any, callbacks: list[Any]) -> Any:
        p = self.preset
        common = {
            "include_num_input_tokens_seen": True,
            "disable_tqdm": self.quiet,
            "ddp_find_unused_parameters": False if p.uses_lora or p.freeze_ratio > 0 else None,
        }
        if p.trainer == "dpo":
            from trl import DPOTrainer

            args = p.get_dpo_config(str(self.out), **common)
            return DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                              callbacks=callbacks)
        from transformers import Trainer

        from forge_advisor.train.data import sft_collator

        # the dataset holds only what the collator reads (packing's seq_lengths too): keep every column
        args = p.get_training_args(str(self.out), **common, remove_unused_columns=False)
        collator = sft_collator(p, tokenizer)  # the preset's batching: padding, packing or padding_free
        return Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                       processing_class=tokenizer, callbacks=callbacks)

    def train(self) -> Any:
        from transformers.utils import logging as hf_logging

        from forge_advisor.train.callbacks import TrainingDiverged
        from forge_advisor.train.freezing import count_parameters
        from forge_advisor.train.runner import TrainResult, _interrupt_callback, _Interrupt, write_summary

        if self.quiet:
            hf_logging.set_verbosity_error()
        tokenizer = self.load_tokenizer()
        model = self.load_model()
        dataset = self.build_dataset(tokenizer)
        if len(dataset) == 0:
            from forge_advisor.errors import ForgeError

            raise ForgeError(f"{self.data_info.path}: no usable records after tokenization")
        self.out.mkdir(parents=True, exist_ok=True)
        checkpoint = last_checkpoint(self.out) if self.resume else None
        with _Interrupt() as flag:
            callbacks = [self.ema, self.monitor, _interrupt_callback(flag), *self.extra_callbacks]
            trainer = self._trainer(model, tokenizer, dataset, callbacks)
            self.trainer = trainer
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        model = trainer.model
        trainable, total = count_parameters(model)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        result = TrainResult(
            status="completed", output_dir=self.out, global_step=trainer.state.global_step,
            trainable_parameters=trainable, total_parameters=total,
            frozen_layers=self.freeze_report.frozen_layers if self.freeze_report else (),
            final_loss=losses[-1] if losses else None, monitor=self.monitor.summary(),
        )
        if self.monitor.stop_reason:
            raise TrainingDiverged(self.monitor.stop_reason)
        if flag.requested:
            result.status = "interrupted"
            result.checkpoint = last_checkpoint(self.out)
        elif trainer.is_world_process_zero():
            self._save_final(trainer, tokenizer, result)
        if trainer.is_world_process_zero():
            write_summary(result)
        return result

    def _save_final(self, trainer: Any, tokenizer: Any, result: Any) -> None:
        from forge_advisor.presets.io import save_preset
        from forge_advisor.train.saving import atomic_dir

        model = trainer.model
        name = "adapter" if self.preset.uses_lora else "model"

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

        result.adapter_dir = atomic_dir(self.out / name, write)
        with self.ema.average_parameters(model):
            result.ema_dir = atomic_dir(self.out / "ema", write)
        save_preset(self.preset, self.out / "preset.json")


def _device_map(preset: BasePreset) -> Any:
    import torch

    if not (preset.load_in_4bit or preset.load_in_8bit):
        return None  # Trainer/accelerate place the model
    if torch.cuda.is_available():
        return {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return {"": "cpu"}


def load_model_for(preset: BasePreset, model_info: Any) -> tuple[Any, Any]:
    """Load a model set up for ``preset``: quantised where it says, prepared for k-bit
    training, LoRA applied, lowest layers frozen. The trainer and measured trials
    (forge_advisor.train.trial) both load through here. Returns (model, freeze report)."""
    from transformers import AutoModelForCausalLM

    from forge_advisor.presets.convert import compute_dtype_name
    from forge_advisor.presets.detect import attn_implementation_for

    p = preset
    precision = p.resolved_precision()
    if p.load_in_4bit:
        dtype = _torch_dtype({"bfloat16": "bf16", "float16": "fp16"}.get(compute_dtype_name(p)))
    elif p.uses_lora:
        dtype = _torch_dtype(precision)  # frozen base in the half type; adapters are kept fp32 by peft
    else:
        dtype = _torch_dtype(None)  # full training: fp32 master weights, autocast does the half math
    attn = p.attn_implementation or attn_implementation_for(model_info.shape.model_type)
    model = AutoModelForCausalLM.from_pretrained(
        model_info.name,
        dtype=dtype,
        attn_implementation=attn,
        quantization_config=p.get_bnb_config(),
        device_map=_device_map(p),
    )
    if p.load_in_4bit or p.load_in_8bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=p.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if p.uses_lora:
        from peft import get_peft_model

        model = get_peft_model(model, p.get_lora_config(model_info.shape))
    report = None
    if p.freeze_ratio > 0:
        from forge_advisor.train.freezing import setup_lp_lora_style

        report = setup_lp_lora_style(model, p.freeze_ratio)
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False  # no KV cache while training (and with checkpointing)
    return model, report
