"""A measured trial: a few real optimizer steps of one plan, for `recommend --measure`.

Memory and speed do not depend on the weights' values, so the trial needs no download: the
model is built from its ``config.json`` with random weights, saved to a scratch folder and
loaded back through the runtime's own loader (``session.load_model_for``: quantised where the
plan says, prepared for k-bit training, LoRA, freezing). Steps follow ``transformers.Trainer``:
the optimizer from ``Trainer.get_optimizer_cls_and_kwargs``, autocast for bf16/fp16, labels =
input ids, ``zero_grad(set_to_none=True)``. One warm-up step, then ``steps`` timed steps of
``min(accumulation, 2)`` micro-batches (from the second micro-batch on, gradients are alive,
which is what the peak needs).

Run as ``python -m forge_advisor.train.trial CONFIG.json PLAN.json`` it prints one JSON
object; a CUDA out-of-memory error is reported as ``{"oom": true}`` with exit code 3.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from forge_advisor.plan import Plan

__all__ = ["run_trial"]


def _random_checkpoint(config: dict[str, Any], folder: Path, dtype: Any) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.save_pretrained(folder, safe_serialization=True)
    del model


def run_trial(config: dict[str, Any], plan: Plan, *, steps: int = 3, device: str | None = None, seed: int = 0) -> dict[str, Any]:
    import torch
    from transformers import Trainer

    from forge_advisor.presets.planning import preset_from_plan
    from forge_advisor.shapes import shape_from_config
    from forge_advisor.train.checks import ModelInfo
    from forge_advisor.train.session import load_model_for

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    preset = preset_from_plan(plan)
    if device == "cpu":
        preset = preset.replace(bf16=False, fp16=False)
    shape = shape_from_config(config, config.get("_name_or_path", "trial"))
    half = torch.bfloat16 if plan.dtype.endswith("bf16") else torch.float16
    with tempfile.TemporaryDirectory(prefix="forge-trial-") as tmp:
        _random_checkpoint(config, Path(tmp), half if plan.method != "full" else torch.float32)
        model, _ = load_model_for(preset, ModelInfo(tmp, shape, config, True))
    if plan.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not (plan.method in ("qlora", "lora_8bit")):
        model.to(device)
    model.train()
    args = preset.get_training_args(tempfile.gettempdir())
    opt_cls, opt_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = opt_cls(params, **opt_kwargs)
    vocab = int(config.get("vocab_size", 32000))
    b, s = plan.per_device_train_batch_size, plan.max_length
    micro = min(plan.gradient_accumulation_steps, 2)
    use_autocast = device == "cuda" and plan.dtype != "fp32"
    cuda = device == "cuda"

    def step() -> None:
        for _ in range(micro):
            ids = torch.randint(0, vocab, (b, s), device=device)
            with torch.autocast(device_type="cuda", dtype=half, enabled=use_autocast):
                loss = model(input_ids=ids, labels=ids).loss / micro
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: optimizer states exist from here on, as in the estimator's second step
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {
        "device": device,
        "tokens_per_second": steps * micro * b * s / seconds,
        "trainable_parameters": sum(p.numel() for p in params),
        "peak_allocated_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
        "peak_reserved_bytes": int(torch.cuda.max_memory_reserved()) if cuda else None,
        "nvml_used_bytes": _nvml_used() if cuda else None,
        "steps": steps,
        "micro_batches_per_step": micro,
    }
    return out


def _nvml_used() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:
        return None


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    plan = Plan.from_dict(json.loads(Path(argv[1]).read_text()))
    steps = int(argv[2]) if len(argv) > 2 else 3
    try:
        result = run_trial(config, plan, steps=steps)
    except Exception as exc:  # an OOM is an answer (the plan does not fit), not a crash
        if "out of memory" in str(exc).lower():
            print(json.dumps({"oom": True, "error": str(exc).splitlines()[0]}))
            return 3
        raise
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
