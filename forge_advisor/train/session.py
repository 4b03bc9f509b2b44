"""`TrainingSession`: the heavy half of :func:`forge_advisor.train.run` (inputs already checked,
the output folder locked by the runner). The runner imports this module, never the reverse."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from forge_advisor.errors import ForgeError
from forge_advisor.presets.base import BasePreset
from forge_advisor.train.checks import ModelInfo
from forge_advisor.train.data import DataInfo
from forge_advisor.train.events import CheckpointSaved, End, EventStream, Interrupt, Start
from forge_advisor.train.interrupt import InterruptFlag, interrupt_callback
from forge_advisor.train.result import TrainResult, read_summary, write_summary
from forge_advisor.train.saving import checkpoint_step, last_checkpoint

__all__ = ["TrainingSession", "load_model_for", "quiet_libraries"]

logger = logging.getLogger(__name__)


def _torch_dtype(name: str | None) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, None: torch.float32}[name]


def quiet_libraries() -> None:
    """No library chatter on stderr during a run: bitsandbytes' optional-kernel notice,
    deprecation/future warnings, transformers' info logs. Errors still show."""
    for name in ("bitsandbytes", "transformers", "peft", "trl", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
    import datasets

    datasets.disable_progress_bars()


def _quiet_progress() -> Any:
    """The Trainer's progress bar without its echo of every log dict (the monitor reports)."""
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            return None

    return QuietProgress


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
        events: EventStream | None = None,
        preflight_steps: int = 1,
        gpu: str | None = None,
        hold_interrupt: bool = False,
    ) -> None:
        from forge_advisor.train.callbacks import EMACallback, MonitorCallback

        self.preset = preset
        self.model_info = model
        self.data_info = data
        self.out = output_dir
        self.targets = targets
        self.resume = resume
        self.quiet = quiet
        self.gpu = gpu
        self.hold_interrupt = hold_interrupt
        self.events = events if events is not None else EventStream()
        self.predicted_peak_bytes = predicted_peak_bytes
        self.preflight_steps = preflight_steps
        # callbacks validate their arguments now, still before any loading
        self.ema = EMACallback(ema_decay, cpu_offload=ema_cpu_offload)
        self.monitor = MonitorCallback(
            on_nonfinite=on_nonfinite,  # type: ignore[arg-type]
            predicted_peak_bytes=predicted_peak_bytes,
            emit=self.events.emit,
        )
        self.extra_callbacks = extra_callbacks
        self.freeze_report: Any = None
        self.preflight: Any = None
        from forge_advisor.train.vision import is_vision_config

        # a vision-language run: a VLM config and records with images (text-only data trains as before)
        self.vision = is_vision_config(model.config) and data.has_images
        self.vision_summary: Any = None
        self._vision_lengths: list[int] = []

    # -- loading ----------------------------------------------------------------------------------
    def load_tokenizer(self) -> Any:
        """The tokenizer, or for a vision-language run the processor (it holds the tokenizer)."""
        from transformers import AutoTokenizer

        if self.vision:
            from forge_advisor.train.vision import load_processor

            from forge_advisor.train.video import apply_video_max_pixels

            processor, note = load_processor(self.model_info.name, self.preset.max_pixels)
            apply_video_max_pixels(processor, self.preset.video_max_pixels)
            self._vision_note = note
            if note and not self.quiet:
                print(f"warning: {note}", flush=True)
            logger.info(note or "")
            return processor
        tok = AutoTokenizer.from_pretrained(self.model_info.name)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok

    def load_model(self) -> Any:
        model, self.freeze_report = load_model_for(self.preset, self.model_info)
        return model

    def build_dataset(self, tokenizer: Any) -> Any:
        from forge_advisor.train.data import load_dataset_for, prepare_dpo, prepare_sft

        if self.vision:
            return self._vision_dataset(tokenizer)
        ds = load_dataset_for(self.data_info)
        if self.preset.trainer == "dpo":
            return prepare_dpo(ds, tokenizer, self.preset.max_prompt_length)
        ds, self.truncation = prepare_sft(ds, tokenizer, self.data_info.kind, self.preset, quiet=self.quiet)
        return ds

    def _vision_dataset(self, processor: Any) -> list[dict[str, Any]]:
        """The records (images as paths, opened per batch by the collator), each measured once
        through the processor: lengths for the longest-first preflight, image tokens counted."""
        from forge_advisor.train.data import Truncation
        from forge_advisor.train.vision import VisionSummary, measure_vision, vision_records

        records = vision_records(self.data_info)
        lengths, image_tokens = measure_vision(records, processor, self.preset.max_length, self.model_info.config)
        self._vision_lengths = lengths
        m = self.preset.max_length
        over = [n for n in lengths if n > m]
        self.truncation = Truncation(len(lengths), len(over), sum(min(n, m) for n in lengths), sum(n - m for n in over), m)
        counts = [len(r["images"]) for r in records]
        self.vision_summary = VisionSummary(len(records), sum(counts), max(counts), image_tokens, self.preset.max_pixels,
                                            not self.preset.freeze_vision_tower, getattr(self, "_vision_note", None),
                                            sum(len(r["videos"]) for r in records),
                                            max((len(v) for r in records for v in r["videos"]), default=0))
        for line in (self.truncation.line(), self.vision_summary.line()):
            if not self.quiet:
                print(line, flush=True)
            logger.info(line)
        return records

    def _lengths(self, dataset: Any) -> list[int]:
        if self.vision:
            return list(self._vision_lengths)
        if "input_ids" in dataset.column_names:
            return [len(x) for x in dataset["input_ids"]]
        # DPO pairs (tokenized inside trl): characters of prompt + the longer answer
        return [len(p) + max(len(c), len(r)) for p, c, r in zip(dataset["prompt"], dataset["chosen"], dataset["rejected"])]

    # -- training ---------------------------------------------------------------------------------
    def _trainer(self, model: Any, tokenizer: Any, dataset: Any, callbacks: list[Any], first: list[int] | None) -> Any:
        import torch

        from forge_advisor.train.trainer import forge_trainer_class

        p = self.preset
        common: dict[str, Any] = {
            "include_num_input_tokens_seen": True,
            "disable_tqdm": self.quiet,
            "ddp_find_unused_parameters": False if p.uses_lora or p.freeze_ratio > 0 else None,
        }
        if not torch.cuda.is_available():
            common["dataloader_pin_memory"] = False  # nothing to pin to; torch warns otherwise
        hooks = {"checkpoint_writers": [self.ema.write_checkpoint, self._checkpoint_event],
                 "pre_clip": [self.monitor.inspect_gradients], "first": first,
                 "activation_offloading": p.activation_offloading}
        if p.trainer == "dpo":
            from trl import DPOTrainer

            args = p.get_dpo_config(str(self.out), **common)
            trainer = forge_trainer_class(DPOTrainer)(model=model, args=args, train_dataset=dataset,
                                                      processing_class=tokenizer, callbacks=callbacks, **hooks)
        else:
            from transformers import Trainer

            from forge_advisor.train.data import sft_collator

            # the dataset holds only what the collator reads (packing's seq_lengths too): keep every column
            args = p.get_training_args(str(self.out), **common, remove_unused_columns=False)
            if self.vision:
                from forge_advisor.train.vision import VisionCollator

                collator: Any = VisionCollator(tokenizer, p.max_length,
                                               p.max_length if p.padding == "max_length" else None,
                                               self.model_info.config)
            else:
                collator = sft_collator(p, tokenizer)  # the preset's batching: padding, packing or padding_free
            trainer = forge_trainer_class(Trainer)(model=model, args=args, train_dataset=dataset, data_collator=collator,
                                                   processing_class=tokenizer, callbacks=callbacks, **hooks)
        from transformers.trainer_callback import ProgressCallback

        if trainer.pop_callback(ProgressCallback) is not None:
            trainer.add_callback(_quiet_progress())
        return trainer

    def _checkpoint_event(self, staged: Path, state: Any) -> None:
        self.events.emit(CheckpointSaved(state.global_step, str(self.out / staged.name), self.ema.num_updates))

    def train(self) -> TrainResult:
        with InterruptFlag(hold=self.hold_interrupt) as flag, self.events:
            return self._train(flag)

    def _train(self, flag: InterruptFlag) -> TrainResult:
        tokenizer = self.load_tokenizer()
        model = self.load_model()
        dataset = self.build_dataset(tokenizer)
        if len(dataset) == 0:
            raise ForgeError(f"{self.data_info.path}: no usable records after tokenization (nothing to preflight or train)")
        checkpoint = last_checkpoint(self.out) if self.resume else None
        start = checkpoint_step(checkpoint) if checkpoint else 0
        done = self._finished_at(checkpoint)
        if checkpoint is not None and done:
            return self._finish_without_training(model, tokenizer, dataset, checkpoint)
        lengths = self._lengths(dataset)
        p = self.preset
        batch = p.per_device_train_batch_size * p.gradient_accumulation_steps
        from forge_advisor.train.trainer import longest_first

        first = longest_first(lengths, batch * self.preflight_steps)
        callbacks = [self.ema, self.monitor, self._preflight(lengths, batch),
                     interrupt_callback(flag, self._interrupt_event), *self.extra_callbacks]
        trainer = self._trainer(model, tokenizer, dataset, callbacks, first)
        self.trainer = trainer
        self.events.emit(Start(self.model_info.name, p.name, p.to_dict(), p.max_steps if p.max_steps > 0 else None,
                               self.predicted_peak_bytes, start or 0, _device(),
                               self.vision_summary.to_dict() if self.vision_summary else None))
        self._run(trainer, checkpoint)
        return self._result(trainer, tokenizer, flag)

    def _run(self, trainer: Any, checkpoint: Path | None) -> None:
        import torch

        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except torch.OutOfMemoryError:
            raise ForgeError(self._oom_line(trainer.state.global_step, checkpoint)) from None

    def _oom_line(self, step: int, checkpoint: Path | None) -> str:
        """One line: where the OOM hit and the nearest plan that fits (the advisor's answer)."""
        from forge_advisor.train.events import Preflight
        from forge_advisor.train.preflight import nearest_fitting_plan

        in_preflight = checkpoint is None and step < self.preflight_steps
        where = "in the preflight step on the longest batch" if in_preflight else f"at step {step + 1}"
        line = f"out of GPU memory {where}; {nearest_fitting_plan(self.preset, self.model_info, self.gpu)}"
        if in_preflight:
            self.events.emit(Preflight("oom", line, self.preflight_steps, predicted_peak_bytes=self.predicted_peak_bytes))
        return line

    def _preflight(self, lengths: list[int], batch: int) -> Any:
        from forge_advisor.train.callbacks.preflight import PreflightCallback
        from forge_advisor.train.records import append_record

        def record(measured: dict[str, Any]) -> None:
            append_record(self.out, "preflight", model=self.model_info.name, preset=self.preset.name,
                          plan=self.preset.to_dict(), predicted_peak_bytes=self.predicted_peak_bytes,
                          device=_device(), measured=measured)

        self.preflight = PreflightCallback(
            self.events.emit, steps=self.preflight_steps, longest_tokens=max(lengths) if lengths else None,
            samples=len(lengths), batch=batch, predicted_peak_bytes=self.predicted_peak_bytes, record=record)
        return self.preflight

    def _interrupt_event(self, step: int) -> None:
        self.events.emit(Interrupt(step, f"Ctrl-C: saving checkpoint-{step} and stopping"))

    def _finished_at(self, checkpoint: Path | None) -> bool:
        """Whether ``checkpoint`` already reached the run's last step (resuming it must not train
        one step more: the Trainer would)."""
        if checkpoint is None:
            return False
        try:
            state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        target = self.preset.max_steps if self.preset.max_steps > 0 else int(state.get("max_steps") or 0)
        return target > 0 and int(state.get("global_step", 0)) >= target

    def _finish_without_training(self, model: Any, tokenizer: Any, dataset: Any, checkpoint: Path) -> TrainResult:
        step = checkpoint_step(checkpoint) or 0
        earlier = read_summary(self.out)
        if earlier is not None and earlier.status == "completed" and earlier.global_step == step \
                and earlier.ema_dir is not None and Path(earlier.ema_dir).is_dir():
            self.events.emit(End("completed", step, earlier.final_loss, _s(earlier.adapter_dir), _s(earlier.ema_dir),
                                 message=f"already complete at step {step}: nothing to resume"))
            return earlier
        # the last checkpoint is the last step, but the final saves did not all happen: redo them
        trainer = self._trainer(model, tokenizer, dataset, [self.ema], None)
        trainer._load_from_checkpoint(str(checkpoint))
        self.ema.load(checkpoint, trainer.model)
        trainer.state.global_step = step
        self.trainer = trainer
        result = self._base_result(trainer)
        self._save_final(trainer, tokenizer, result)
        write_summary(result)
        self.events.emit(End("completed", step, None, _s(result.adapter_dir), _s(result.ema_dir),
                             message=f"step {step} was the last: final folders written from {checkpoint.name}"))
        return result

    def _base_result(self, trainer: Any) -> TrainResult:
        from forge_advisor.train.freezing import count_parameters

        trainable, total = count_parameters(trainer.model)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        return TrainResult(
            status="completed", output_dir=self.out, global_step=trainer.state.global_step,
            trainable_parameters=trainable, total_parameters=total,
            frozen_layers=self.freeze_report.frozen_layers if self.freeze_report else (),
            final_loss=losses[-1] if losses else None, ema_updates=self.ema.num_updates, monitor=self.monitor.summary(),
        )

    def _result(self, trainer: Any, tokenizer: Any, flag: InterruptFlag) -> TrainResult:
        from forge_advisor.train.callbacks import TrainingDiverged

        result = self._base_result(trainer)
        if self.monitor.stop_reason:
            self.events.emit(End("diverged", result.global_step, result.final_loss, message=self.monitor.stop_reason))
            raise TrainingDiverged(self.monitor.stop_reason)
        if flag.requested:
            result.status = "interrupted"
            result.checkpoint = last_checkpoint(self.out)
        elif trainer.is_world_process_zero():
            self._save_final(trainer, tokenizer, result)
        if trainer.is_world_process_zero():
            self._record_run(result)
            write_summary(result)  # last: its presence with status completed means every final folder is there
        self.events.emit(End(result.status, result.global_step, result.final_loss, _s(result.adapter_dir),
                             _s(result.ema_dir), _s(result.checkpoint), self.monitor.peak_summary() or "",
                             self.monitor.peak_torch_bytes, self.predicted_peak_bytes))
        return result

    def _record_run(self, result: TrainResult) -> None:
        from forge_advisor.train.records import append_record

        m = self.monitor
        append_record(self.out, "run", model=self.model_info.name, preset=self.preset.name, plan=self.preset.to_dict(),
                      predicted_peak_bytes=self.predicted_peak_bytes, device=_device(), status=result.status,
                      measured={"peak_allocated_bytes": m.peak_torch_bytes, "peak_reserved_bytes": m.peak_reserved_bytes,
                                "peak_nvml_bytes": m.peak_nvml_bytes, "tokens_per_second": m.tokens_per_second,
                                "steps": result.global_step})

    def _save_final(self, trainer: Any, tokenizer: Any, result: TrainResult) -> None:
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


def _s(p: Path | None) -> str | None:
    return None if p is None else str(p)


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.cuda.current_device())
    return "cpu"


def _device_map(preset: BasePreset) -> Any:
    import torch

    if not (preset.load_in_4bit or preset.load_in_8bit):
        return None  # Trainer/accelerate place the model
    if sharded_4bit(preset):
        return None  # FSDP-QLoRA: each rank loads and FSDP shards (peft's FSDP-QLoRA guide passes no device_map)
    if torch.cuda.is_available():
        return {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return {"": "cpu"}


def sharded_4bit(preset: BasePreset) -> bool:
    """FSDP-QLoRA / ZeRO-3 + QLoRA: a 4-bit base whose packed weights are stored in a float
    dtype (``bnb_4bit_quant_storage``) under a sharding strategy."""
    return preset.load_in_4bit and preset.bnb_4bit_quant_storage != "uint8" and preset.distributed in ("fsdp", "zero3")


def _prepare_float_storage_4bit(model: Any, gradient_checkpointing: bool) -> None:
    """``prepare_model_for_kbit_training`` without its fp32 upcast, for a 4-bit base stored in
    a float dtype (FSDP-QLoRA). peft's upcast would turn the embeddings, norms and head into
    fp32 next to the bf16 storage: FSDP needs one dtype per sharded unit, and the estimator
    (rust/src/estimator.rs, Method::Qlora: ``rest`` is the compute dtype when the storage is
    float) prices them in the half type, as peft's FSDP-QLoRA guide and trl leave them. The
    rest of what peft does is kept: the base frozen, checkpointing without re-entrant
    autograd, and inputs that require grad so checkpointed blocks see a graph."""
    for param in model.parameters():
        param.requires_grad = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()


def load_model_for(preset: BasePreset, model_info: Any) -> tuple[Any, Any]:
    """Load a model set up for ``preset``: quantised where it says, prepared for k-bit
    training, LoRA applied, lowest layers frozen. The trainer and measured trials
    (forge_advisor.train.trial) both load through here. Returns (model, freeze report)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from forge_advisor.presets.convert import compute_dtype_name
    from forge_advisor.presets.detect import attn_implementation_for
    from forge_advisor.train.vision import bnb_skip_modules, is_vision_config, lora_exclude, prepare_vision_model

    p = preset
    vision = is_vision_config(model_info.config)
    precision = p.resolved_precision()
    if p.load_in_4bit:
        dtype = _torch_dtype({"bfloat16": "bf16", "float16": "fp16"}.get(compute_dtype_name(p)))
    elif p.uses_lora:
        dtype = _torch_dtype(precision)  # frozen base in the half type; adapters are kept fp32 by peft
    else:
        dtype = _torch_dtype(None)  # full training: fp32 master weights, autocast does the half math
    attn = p.attn_implementation or attn_implementation_for(model_info.shape.model_type)
    quantization = p.get_bnb_config()
    if vision and quantization is not None:
        quantization.llm_int8_skip_modules = bnb_skip_modules()  # the vision tower and projector stay unquantised
    auto = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    model = auto.from_pretrained(
        model_info.name,
        dtype=dtype,
        attn_implementation=attn,
        quantization_config=quantization,
        device_map=_device_map(p),
    )
    parts = prepare_vision_model(model, p) if vision else None
    if p.load_in_4bit and p.bnb_4bit_quant_storage != "uint8":
        _prepare_float_storage_4bit(model, p.gradient_checkpointing)
    elif p.load_in_4bit or p.load_in_8bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=p.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if p.uses_lora:
        from peft import get_peft_model

        lora = p.get_lora_config(model_info.shape)
        if parts is not None:  # adapters on the language model (and on the tower when it trains)
            lora.exclude_modules = lora_exclude(parts, p.freeze_vision_tower)
        model = get_peft_model(model, lora)
    report = None
    if p.freeze_ratio > 0:
        from forge_advisor.train.freezing import setup_lp_lora_style

        report = setup_lp_lora_style(model, p.freeze_ratio)
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False  # no KV cache while training (and with checkpointing)
    return model, report
