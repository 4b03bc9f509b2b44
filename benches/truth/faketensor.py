"""Exact tensor bytes of a real training step, measured on fake tensors (no GPU, no weights).

``measure(config, plan, num_layers=None)`` builds the REAL transformers model (and the real
peft LoRA wrapper) from a Hugging Face ``config.json`` dict at full width, optionally with
``num_hidden_layers`` overridden, under ``FakeTensorMode`` on a fake CUDA device, runs two
complete training steps (forward, backward, gradient clipping, optimizer step, zero_grad)
exactly as ``transformers.Trainer`` / trl 1.16 would, and reports with a
``torch.distributed._tools.mem_tracker.MemTracker`` the peak of the live tensor bytes of the
SECOND step (optimizer states exist). Every storage is rounded up to 512 bytes as the CUDA
caching allocator does, so the peak is what ``torch.cuda.max_memory_allocated()`` would
report, minus allocations that are not tensors (cuBLAS/cuDNN workspaces, the CUDA context,
NCCL buffers) and minus temporaries allocated *inside* a single ATen kernel.

How each plan field (``forge_advisor/plan.py``) is realised
-----------------------------------------------------------
method      ``full``: every parameter trains (less ``freeze_ratio``). ``lora``:
            ``peft.get_peft_model`` with ``LoraConfig(r, lora_alpha, lora_dropout,
            target_modules, bias="none", task_type="CAUSAL_LM")`` and peft's defaults, so
            the adapter weights are upcast to fp32 (``autocast_adapter_dtype=True``) even on
            a bf16 base. ``qlora`` / ``lora_8bit``: ``NotImplementedError`` (bitsandbytes
            kernels cannot run on fake tensors).
dtype       ``bf16`` / ``fp16``: weights born in that dtype (pure half; optimizer states follow
            the parameter dtype). ``bf16`` also runs under ``torch.autocast(bf16)`` because
            trl's configs default to ``bf16=True`` and accelerate wraps the forward in autocast
            plus ``convert_outputs_to_fp32``. ``fp16`` runs without autocast and without a
            GradScaler (Trainer's ``fp16=True`` refuses to unscale fp16 gradients).
            ``amp-bf16`` / ``amp-fp16``: fp32 weights, forward under autocast and accelerate's
            ``convert_outputs_to_fp32``; ``amp-fp16`` scales the loss and unscales the
            gradients in place (``_amp_foreach_non_finite_check_and_unscale_``) as GradScaler
            does (GradScaler itself calls ``.item()``, which fake tensors cannot answer).
            ``fp32``: no autocast.
lora_*      passed to ``LoraConfig``. ``lora_target_modules=None`` means the linear layers of
            the attention block as the model names them (found by walking the first decoder
            layer's attention module; a leaf name that also occurs outside attention, e.g.
            GPT-2's ``c_proj``, is qualified as ``attn.c_proj``). ``"all-linear"`` is peft's.
per_device_train_batch_size, max_length
            random ``input_ids`` of shape ``[batch, max_length]``, ``labels`` a separate copy
            (as the data collator makes), no ``attention_mask`` (no padding; SDPA skips an
            all-ones mask anyway), ``use_cache=False`` (as trl passes). The loss is the
            model's own ``labels=`` path (``ForCausalLMLoss``) as ``Trainer.compute_loss``.
batching (optional: only cases that name it carry it in their hash)
            the worst micro-batch each mode of forge_advisor.train.data forms, ``B`` records,
            ``S`` = max_length. ``longest``: row 0 holds the longest record (``S`` tokens),
            the others ``S/2`` padded to ``S`` (transformers' collator: an ``attention_mask``
            with zeros, labels -100 on padding). ``max_length``: every row ``3S/4`` padded to
            ``S``. ``packing``: trl's padding-free collator flattens ``B`` packed rows of ``S``
            tokens (records of ``S/2``, ``S/4``, ``S/4``) into one row of ``B·S`` with
            ``position_ids`` restarting per record, no ``attention_mask``. ``padding_free``:
            ``DataCollatorWithFlattening``, ``B`` records of ``S`` as one row of ``B·S``,
            ``position_ids`` restarting every ``S``. Transformers 5 detects the packed format
            from ``position_ids`` (``masking_utils.find_packed_sequence_indices``, whose
            "not packed" shortcut is skipped for fake tensors by ``is_tracing``, as a packed
            batch takes it on a GPU) and builds a block-diagonal mask for sdpa/eager.
            Flash-attention's varlen path (cu_seq_lens) cannot run: ``flash_attn`` has no
            fake-tensor kernels.
gradient_accumulation_steps
            ``min(GA, 2)`` micro-batches per step: from the second micro-batch on, the
            gradients are alive during forward and backward, so two suffice for the peak.
freeze_ratio
            with ``L`` = the number of decoder layers built (after ``num_layers``):
            ``n = floor(freeze_ratio * L + 1e-9)`` (the epsilon absorbs float error such as
            ``0.29 * 100 = 28.999999999999996``). ``freeze_ratio > 0`` freezes the input
            embeddings (and learned position embeddings; the LM head too when tied) and
            decoder layers ``0 .. n-1``. For LoRA, adapters go only on layers ``n .. L-1``
            (``layers_to_transform``); the base is frozen anyway.
gradient_checkpointing
            ``model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant":
            False})`` -- transformers 5 defaults to ``use_reentrant=False`` itself and enables
            ``enable_input_require_grads`` (the embedding output requires grad).
attn_implementation
            passed to ``from_config``. ``flash_attention_2`` raises ``NotImplementedError``.
            SDPA picks its backend by the (fake) hardware: see ``_fakecuda``; the ops seen are
            reported in ``attention_ops``.
optim       ``adamw_torch``: ``torch.optim.AdamW(foreach=True)`` (what ``foreach=None``
            resolves to on real CUDA tensors; fake tensors would fall back to the for-loop).
            ``adamw_torch_fused``: ``fused=True``. ``sgd``: ``torch.optim.SGD(foreach=True)``
            with Trainer's defaults (momentum 0: no state). ``adafactor``:
            ``transformers.optimization.Adafactor(scale_parameter=False, relative_step=False)``
            as Trainer builds it. Parameter groups as Trainer (decay / no decay; weight decay
            0.0), lr 5e-5, ``max_grad_norm=1.0`` clipping with ``foreach=True``, then
            ``model.zero_grad()`` (set_to_none).
trainer     ``sft``: as above. ``dpo``: trl 1.16's ``DPOTrainer`` step: chosen and rejected
            concatenated (2x batch), every token a completion token (the worst case: trl only
            scores completion tokens), policy forward through trl's fused LM head
            (``add_fused_lm_head``; its Triton kernels, which only write into preallocated
            tiles, are replaced by no-ops), a reference forward under ``no_grad`` -- a second
            frozen model in the policy's dtype for ``full``, peft's disabled adapter for LoRA --,
            the sigmoid loss, ``disable_dropout=True``.
num_gpus / distributed
            only a single device: anything else raises ``NotImplementedError`` (FSDP2:
            ``benches/truth/fsdp2.py``).
activation_offloading (optional: only cases that name it carry it in their hash)
            trl's ``get_act_offloading_ctx_manager(model)`` entered around each micro-batch's
            forward and backward, as ``SFTTrainer.training_step`` does: saved tensors move to
            (fake) pinned host memory, which MemTracker counts on the CPU, not the GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import math
import os
import subprocess
import sys
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

HARNESS_VERSION = "truth-faketensor/1"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Defaults of forge_advisor.plan.Plan (kept here so the harness runs without the Rust extension).
PLAN_DEFAULTS: dict[str, Any] = {
    "method": "lora",
    "trainer": "sft",
    "dtype": "bf16",
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_modules": None,
    "bnb_4bit_use_double_quant": True,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 4,
    "max_length": 1024,
    "freeze_ratio": 0.0,
    "gradient_checkpointing": True,
    "attn_implementation": "sdpa",
    "optim": "adamw_torch",
    "dpo_beta": 0.1,
    "num_gpus": 1,
    "distributed": "none",
}

# Plan fields measured only when a case names them (so the hash of every other case, and
# its cached result, stays the same): trl's `activation_offloading`, peft's
# `target_parameters` (``lora_target_parameters``: a list of parameter names, or "experts" for
# every fused expert tensor, see ``_expert_parameters``), the image fields, the batching mode.
OPTIONAL_PLAN_FIELDS = ("activation_offloading", "lora_target_parameters", "max_pixels", "images_per_sample", "freeze_vision_tower", "batching",
                        "videos_per_sample", "num_frames", "video_max_pixels")

CATEGORY_NAMES = {
    "Parameter": "parameters",
    "Buffer": "buffers",
    "Gradient": "gradients",
    "Activation": "activations",
    "Temp": "temporaries",
    "Optstate": "optimizer_states",
    "Other": "inputs_other",
}

LR = 5e-5
MAX_GRAD_NORM = 1.0


def resolve_plan(plan: dict[str, Any] | None) -> dict[str, Any]:
    """Plan defaults filled in; validated with ``forge_advisor.plan.Plan`` when it imports."""
    plan = dict(plan or {})
    unknown = sorted(set(plan) - set(PLAN_DEFAULTS) - set(OPTIONAL_PLAN_FIELDS))
    if unknown:
        raise ValueError(f"unknown plan field(s) {unknown}; known: {sorted(PLAN_DEFAULTS)}")
    out = {**PLAN_DEFAULTS, **plan}
    try:  # validation only; the Rust extension may not be built
        from forge_advisor.plan import Plan  # noqa: PLC0415

        Plan.from_dict(out)
    except ImportError:
        pass
    if isinstance(out["lora_target_modules"], tuple):
        out["lora_target_modules"] = list(out["lora_target_modules"])
    return out


def check_supported(p: dict[str, Any]) -> None:
    if p.get("activation_offloading") and p["trainer"] != "sft":
        raise NotImplementedError("activation_offloading is trl's SFTTrainer option: trainer='sft' only")
    if p["method"] in ("qlora", "lora_8bit"):
        raise NotImplementedError(
            f"method={p['method']!r}: bitsandbytes-quantized weights cannot run on fake tensors (no kernels, no meta impls)"
        )
    if "8bit" in p["optim"] or p["optim"].startswith("paged_"):
        raise NotImplementedError(f"optim={p['optim']!r}: bitsandbytes optimizers cannot run on fake tensors")
    if p["attn_implementation"] == "flash_attention_2":
        raise NotImplementedError("attn_implementation='flash_attention_2': the flash_attn package has no fake-tensor support")
    if p["num_gpus"] != 1 or p["distributed"] != "none":
        raise NotImplementedError("only single-device plans are measured (num_gpus=1, distributed='none')")


# every spelling of the depth a config may use (gpt2 `n_layer`, t5 `num_layers`…)
DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "num_decoder_layers")


def config_at_depth(config: dict[str, Any], num_layers: int | None) -> dict[str, Any]:
    """The config with its depth set to ``num_layers`` under every spelling it uses, and a
    per-layer ``layer_types`` list cut to that depth (what the harness builds)."""
    out = dict(config)
    if num_layers:
        present = [k for k in DEPTH_KEYS if k in out]
        lt = out.get("layer_types")
        if isinstance(lt, list) and present and len(lt) == out[present[0]]:
            out["layer_types"] = lt[:num_layers]
        for key in present or ["num_hidden_layers"]:
            out[key] = num_layers
    return out


def case_key(config: dict[str, Any], plan: dict[str, Any], num_layers: int | None) -> str:
    """Stable hash of one case (resolved plan; harness version included)."""
    blob = json.dumps(
        {"v": HARNESS_VERSION, "config": config, "plan": resolve_plan(plan), "num_layers": num_layers},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -------------------------------------------------------------------------------------------
# public entry point
# -------------------------------------------------------------------------------------------
def fake_cuda_active() -> bool:
    """Whether this process can run fake CUDA backward (shim loaded, or a real GPU)."""
    if os.environ.get("FORGE_FAKE_CUDA") == "1":
        return True
    import torch  # noqa: PLC0415

    return torch.cuda.is_available()


def measure(
    config: dict[str, Any],
    plan: dict[str, Any],
    num_layers: int | None = None,
    *,
    timeout: float = 600,
    record_allocations: bool = False,
) -> dict:
    """Measure one training step; see the module docstring. Runs in a subprocess (with the
    fake CUDA runtime preloaded) unless this process already has it. With
    ``record_allocations`` the result also holds ``allocation_events``: every CUDA storage
    the step allocates and frees, in order, for ``benches.truth.allocator`` to replay."""
    p = resolve_plan(plan)
    check_supported(p)
    if fake_cuda_active():
        return _measure(config, p, num_layers, record_allocations=record_allocations)
    return measure_subprocess(config, p, num_layers, timeout=timeout, record_allocations=record_allocations)


def fake_cuda_env() -> dict[str, str]:
    from benches.truth import _fakecuda  # noqa: PLC0415

    env = dict(os.environ)
    env.update(_fakecuda.build())
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = f"{REPO_ROOT}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(REPO_ROOT)
    return env


def measure_subprocess(
    config: dict, plan: dict, num_layers: int | None, *, timeout: float = 600, record_allocations: bool = False
) -> dict:
    payload = json.dumps({"config": config, "plan": plan, "num_layers": num_layers, "record_allocations": record_allocations})
    proc = subprocess.run(
        [sys.executable, "-m", "benches.truth.faketensor", "--stdin"],
        input=payload,
        capture_output=True,
        text=True,
        env=fake_cuda_env(),
        cwd=REPO_ROOT,
        timeout=timeout,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        raise RuntimeError(f"truth measurement failed (rc={proc.returncode}):\n{tail}")
    result = json.loads(lines[-1])
    if "error" in result:
        kind = result["error"].get("type")
        msg = result["error"].get("message")
        if kind == "NotImplementedError":
            raise NotImplementedError(msg)
        raise RuntimeError(f"{kind}: {msg}\n{result['error'].get('traceback', '')}")
    return result


# -------------------------------------------------------------------------------------------
# the measurement (runs where fake CUDA works)
# -------------------------------------------------------------------------------------------
def _make_tracker_class():
    import torch  # noqa: PLC0415
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType  # noqa: PLC0415

    import torch.distributed._tools.mod_tracker as mod_tracker_mod  # noqa: PLC0415

    orig_multi = getattr(mod_tracker_mod, "_forge_orig_register_multi_grad_hook", mod_tracker_mod.register_multi_grad_hook)
    mod_tracker_mod._forge_orig_register_multi_grad_hook = orig_multi

    class _NoHandle:
        def remove(self) -> None:
            pass

    def register_multi_grad_hook(tensors, fn, *args, **kwargs):
        # ModTracker hooks every module input/output. On a *leaf* tensor (the embedding output
        # that enable_input_require_grads marks with frozen embeddings) the hook closure holds
        # the AccumulateGrad node, which holds the tensor: a C++-level cycle that would keep
        # the tensor and its .grad alive forever -- a tracker artifact, so skip leaves (only
        # module-level backward stats of the first layer lose a hook; the global peak does not).
        tensors = [t for t in tensors if t.grad_fn is not None]
        if not tensors:
            return _NoHandle()
        return orig_multi(tensors, fn, *args, **kwargs)

    mod_tracker_mod.register_multi_grad_hook = register_multi_grad_hook

    class Tracker(MemTracker):
        """MemTracker that tolerates frozen parameters, repeated root calls (gradient
        accumulation, DPO's reference pass through the same peft model) and records the
        attention kernels it sees."""

        def __init__(self) -> None:
            super().__init__()
            self.attention_ops: Counter[str] = Counter()
            # allocation sequence (when recording): ["a", id, bytes] / ["f", id] / ["m", phase]
            self.events: list[list[Any]] | None = None
            self._event_ids: dict[int, int] = {}

        def _update_snap(self, u_type, winfo, old_mem_consumed=None, old_reftype=None):  # type: ignore[no-untyped-def]
            super()._update_snap(u_type, winfo, old_mem_consumed, old_reftype)
            if self.events is None or winfo.device.type != "cuda":
                return
            kind = u_type.name
            if kind in ("DEL", "SIZE") and id(winfo) in self._event_ids:
                self.events.append(["f", self._event_ids.pop(id(winfo))])
            if kind in ("ADD", "SIZE") and winfo.mem_consumed > 0:
                n = len(self.events)
                self._event_ids[id(winfo)] = n
                self.events.append(["a", n, winfo.mem_consumed])

        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            def _grad_hook(grad):
                self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

            param_memory = 0
            for param in module.parameters():
                winfos = self._update_and_maybe_create_winfos(param, _MemRefType.PARAM)
                param_memory += sum(w.mem_consumed for w in winfos)
                if param.grad is not None:
                    self._update_and_maybe_create_winfos(param.grad, _MemRefType.GRAD)
                if install_grad_hooks and param.requires_grad and self._param_to_grad_hook_handles.get(param) is None:
                    h1 = param.register_hook(_grad_hook)
                    h2 = param.register_post_accumulate_grad_hook(lambda p: _grad_hook(p.grad))
                    self._param_to_grad_hook_handles[param] = (h1, h2)
            buffer_memory = 0
            for buffer in module.buffers():
                winfos = self._update_and_maybe_create_winfos(buffer, _MemRefType.BUFFER)
                buffer_memory += sum(w.mem_consumed for w in winfos)
            return param_memory, buffer_memory

        def _pre_fw_hook(self, module, inputs):
            try:
                super()._pre_fw_hook(module, inputs)
            except NotImplementedError:  # second root call in one step: keep the old stats
                pass

        def _post_fw_hook(self, module, inputs, outputs):
            if module in self.memory_tracking:
                super()._post_fw_hook(module, inputs, outputs)

        def _pre_bw_hook(self, module, args):
            if module is not None and module in self.memory_tracking:
                super()._pre_bw_hook(module, args)

        def _post_bw_hook(self, module, args):
            if module is not None and module in self.memory_tracking:
                super()._post_bw_hook(module, args)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.__name__
            if "attention" in name or "flash" in name or "_sdp" in name:
                self.attention_ops[name] += 1
            return super().__torch_dispatch__(func, types, args, kwargs)

        # -- peak bookkeeping per phase ---------------------------------------------------
        def cuda_snapshot(self, kind: str = "current") -> dict[str, int]:
            snap = self.get_tracker_snapshot(kind)
            out: dict[str, int] = {v: 0 for v in CATEGORY_NAMES.values()}
            out["total"] = 0
            for dev, d in snap.items():
                if dev.type != "cuda":
                    continue
                for k, v in d.items():
                    if isinstance(k, str) and k == "Total":
                        out["total"] += v
                    else:
                        out[CATEGORY_NAMES[k.value]] += v
            return out

        def reset_peak(self) -> None:
            self._peak_mem_snap = self.get_tracker_snapshot()
            self._peak_mem = {dev: d["Total"] for dev, d in self._peak_mem_snap.items()}

    _ = torch
    return Tracker


def _make_config(config: dict[str, Any], num_layers: int | None):
    from transformers import AutoConfig  # noqa: PLC0415

    cfg_dict = dict(config)
    model_type = cfg_dict.pop("model_type")
    for k in ("architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype", "auto_map"):
        cfg_dict.pop(k, None)
    cfg_dict.pop("quantization_config", None)
    cfg = AutoConfig.for_model(model_type, **cfg_dict)
    if num_layers is not None:
        full = cfg.num_hidden_layers
        cfg.num_hidden_layers = num_layers
        lt = getattr(cfg, "layer_types", None)
        if isinstance(lt, (list, tuple)) and len(lt) == full:
            cfg.layer_types = list(lt)[:num_layers]
    cfg.use_cache = False
    return cfg


def _decoder_layers(model, n_layers: int):
    import torch.nn as nn  # noqa: PLC0415

    from benches.truth import vision  # noqa: PLC0415

    best = None
    for name, mod in model.named_modules():
        # (a vision-language model's tower blocks are not the decoder's)
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers and "lora" not in name and not vision.in_tower(name):
            if best is None or name.count(".") < best[0].count("."):
                best = (name, mod)
    if best is None:
        raise RuntimeError("could not find the decoder layer list")
    return best


def _attention_targets(layer) -> list[str]:
    """Leaf names of the linear layers inside the first decoder layer's attention block."""
    import torch.nn as nn  # noqa: PLC0415
    from transformers.pytorch_utils import Conv1D  # noqa: PLC0415

    lin = (nn.Linear, Conv1D)
    attn_name = None
    for name, child in layer.named_children():
        if name in ("self_attn", "attn", "attention", "self_attention", "mixer"):
            attn_name = name
            break
    if attn_name is None:
        raise RuntimeError(f"no attention block in {type(layer).__name__}")
    inside, outside = [], set()
    for name, mod in layer.named_modules():
        if not isinstance(mod, lin):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if name.startswith(attn_name + "."):
            inside.append((leaf, name))
        else:
            outside.add(leaf)
    targets: list[str] = []
    for leaf, full in inside:
        t = full if leaf in outside else leaf
        if t not in targets:
            targets.append(t)
    return targets


def _expert_parameters(layers) -> list[str]:
    """The fused expert tensors of the decoder layers: every 3-D ``nn.Parameter`` of a
    module named ``experts`` (transformers 5 stores routed experts as ``[E, out, in]`` or
    ``[E, in, out]`` tensors), as ``experts.<name>`` for peft's ``target_parameters``."""
    names: list[str] = []
    for layer in layers:
        for mname, mod in layer.named_modules():
            if mname.rsplit(".", 1)[-1] != "experts":
                continue
            for pname, prm in mod.named_parameters(recurse=False):
                key = f"experts.{pname}"
                if prm.dim() == 3 and key not in names:
                    names.append(key)
    if not names:
        raise RuntimeError("lora_target_parameters='experts' but the model has no fused expert tensors")
    return names


def _param_groups(model):
    import torch.nn as nn  # noqa: PLC0415
    from transformers.trainer_pt_utils import get_parameter_names  # noqa: PLC0415

    # Trainer.get_decay_parameter_names
    forbidden = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    decay = set(get_parameter_names(model, [nn.LayerNorm], forbidden))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n in decay], "weight_decay": 0.0},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]


def _make_optimizer(model, optim: str):
    import torch  # noqa: PLC0415

    groups = _param_groups(model)
    if optim == "adamw_torch":
        return torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.999), eps=1e-8, foreach=True)
    if optim == "adamw_torch_fused":
        return torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.999), eps=1e-8, fused=True)
    if optim == "sgd":
        return torch.optim.SGD(groups, lr=LR, foreach=True)
    if optim == "adafactor":
        from transformers.optimization import Adafactor  # noqa: PLC0415

        return Adafactor(groups, lr=LR, scale_parameter=False, relative_step=False)
    raise NotImplementedError(f"optim={optim!r}")


def _patch_trl_fused_head():
    """trl's fused LM head on fake CUDA: keep the non-compact token layout (boolean-mask
    indexing has a data-dependent shape) and make its Triton folds no-ops (they only write
    into preallocated fp32 statistics and tiles: no allocation)."""
    import trl.kernels.chunked_logprob as ck  # noqa: PLC0415
    import trl.trainer.utils as tu  # noqa: PLC0415

    class _Noop:
        def __getitem__(self, grid):
            return lambda *a, **k: None

    tu._use_triton = lambda device: False  # compact layout off (all labels valid here anyway)
    if ck._use_triton(__import__("torch").device("cuda")):
        ck._forward_kernel = _Noop()
        ck._backward_kernel = _Noop()


def _noop_to(orig_to):
    """``nn.Module.to`` that returns the module untouched when nothing would change (every
    fake parameter already lives there): ``_apply`` swaps fake parameters even then, and
    the swap fails."""
    import torch  # noqa: PLC0415

    def to(self, *args, **kwargs):
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        tensors = list(self.parameters()) + list(self.buffers())

        def same(t):
            if device is not None:
                d = torch.device(device)
                if t.device.type != d.type or (d.index is not None and t.device.index != d.index):
                    return False
            return dtype is None or not t.is_floating_point() or t.dtype == dtype

        if all(same(t) for t in tensors):
            return self
        return orig_to(self, *args, **kwargs)

    return to


def _recast_to(orig_to):
    """``nn.Module.to`` for a dtype change on fake parameters: the modeling code of Inkling
    (modeling_inkling.py ``InklingShortConvolution(...).to(dtype=torch.float32)``) casts a
    submodule inside ``__init__``, where ``_apply`` would swap the fake tensors and fail
    (they carry weakrefs); each parameter and buffer is re-made in the new dtype instead,
    which is what the cast leaves behind."""
    import torch  # noqa: PLC0415

    def to(self, *args, **kwargs):
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None or dtype is None:
            return orig_to(self, *args, **kwargs)
        made: dict[int, Any] = {}  # a tied parameter stays one parameter
        for mod in self.modules():
            for name, t in list(mod._parameters.items()):
                if t is not None and t.is_floating_point() and t.dtype != dtype:
                    if id(t) not in made:
                        made[id(t)] = torch.nn.Parameter(t.detach().to(dtype), requires_grad=t.requires_grad)
                    mod._parameters[name] = made[id(t)]
            for name, t in list(mod._buffers.items()):
                if t is not None and t.is_floating_point() and t.dtype != dtype:
                    mod._buffers[name] = t.to(dtype)
        return self

    return to


def _build_model(cfg, p: dict, dtype_w, *, for_reference: bool = False):
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText  # noqa: PLC0415

    from benches.truth import vision  # noqa: PLC0415

    auto = AutoModelForImageTextToText if vision.is_vlm(cfg) else AutoModelForCausalLM

    # `torch.tensor(data)` on a CUDA default device copies real host data to the device (a
    # real cudaMemcpy, e.g. Gemma 2's embed_scale buffer): make it on the CPU and convert the
    # (fake) tensor instead.
    orig_tensor = torch.tensor

    def tensor(data, *args, device=None, **kwargs):
        t = orig_tensor(data, *args, device="cpu", **kwargs)
        if torch.device(device or "cuda").type == "cpu":
            return t
        # values do not matter for memory; a fresh tensor avoids fake constant propagation
        return torch.empty(t.shape, dtype=t.dtype, device=device or "cuda")

    torch.tensor = tensor
    orig_to = torch.nn.Module.to
    torch.nn.Module.to = _recast_to(orig_to)
    try:
        with torch.device("cuda"), (vision.no_truncated_init() if vision.is_vlm(cfg) else contextlib.nullcontext()):
            model = auto.from_config(cfg, dtype=dtype_w, attn_implementation=p["attn_implementation"])
    finally:
        torch.tensor = orig_tensor
        torch.nn.Module.to = orig_to
    return model


def _measure(config: dict[str, Any], p: dict[str, Any], num_layers: int | None, *, record_allocations: bool = False) -> dict[str, Any]:
    import torch  # noqa: PLC0415
    import torch.nn as nn  # noqa: PLC0415
    import transformers  # noqa: PLC0415
    from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: PLC0415

    from benches.truth import vision  # noqa: PLC0415

    check_supported(p)
    t0 = time.perf_counter()
    cfg = _make_config(config, num_layers)
    is_vlm = vision.is_vlm(cfg)
    L = cfg.get_text_config().num_hidden_layers
    dtype_w = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(p["dtype"], torch.float32)
    amp_dtype = {"bf16": torch.bfloat16, "amp-bf16": torch.bfloat16, "amp-fp16": torch.float16}.get(p["dtype"])
    dpo = p["trainer"] == "dpo"
    lora = p["method"] == "lora"
    n_freeze = math.floor(p["freeze_ratio"] * L + 1e-9)
    B = p["per_device_train_batch_size"] * (2 if dpo else 1)
    S = p["max_length"]
    n_micro = min(p["gradient_accumulation_steps"], 2)
    notes: list[str] = []

    Tracker = _make_tracker_class()
    fake = FakeTensorMode(allow_non_fake_inputs=False)
    with fake:
        if dpo:
            _patch_trl_fused_head()
        model = _build_model(cfg, p, dtype_w)
        layers_name, layers = _decoder_layers(model, L)
        targets = None
        if dpo:
            from trl.trainer.utils import add_fused_lm_head  # noqa: PLC0415

            add_fused_lm_head(model)
        if lora:
            from peft import LoraConfig, get_peft_model  # noqa: PLC0415

            tm = p["lora_target_modules"]
            targets = tm if tm is not None else _attention_targets(layers[0])
            tp = p.get("lora_target_parameters")
            if tp == "experts":
                tp = _expert_parameters(layers)
            lcfg = LoraConfig(
                target_parameters=tp,
                r=p["lora_r"],
                lora_alpha=p["lora_alpha"],
                lora_dropout=p["lora_dropout"],
                target_modules=targets,
                bias="none",
                task_type="CAUSAL_LM",
                layers_to_transform=list(range(n_freeze, L)) if n_freeze else None,
                layers_pattern=layers_name.rsplit(".", 1)[-1] if n_freeze else None,
                exclude_modules=vision.lora_exclude(p) if is_vlm else None,
            )
            # peft creates the adapter in the default dtype (fp32), moves it with
            # `.to(base device, base dtype)` and, with its default autocast_adapter_dtype=True,
            # upcasts bf16/fp16 adapters back to fp32 by re-assigning new Parameters. A
            # `.to()` on a fake parameter swaps tensors and fails, so the adapter is born on
            # the fake CUDA device in fp32 -- where it ends up anyway -- and the move skipped.
            from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: PLC0415

            # (ParamWrapper, peft's `target_parameters` layer, has its own move, which casts
            # to the base dtype before the same fp32 upcast)
            from peft.tuners.lora.layer import ParamWrapper  # noqa: PLC0415

            orig_move = BaseTunerLayer._move_adapter_to_device_of_base_layer
            orig_pw_move = ParamWrapper._move_adapter_to_device_of_base_layer
            orig_to = nn.Module.to
            BaseTunerLayer._move_adapter_to_device_of_base_layer = lambda self, *a, **k: None
            ParamWrapper._move_adapter_to_device_of_base_layer = lambda self, *a, **k: None
            nn.Module.to = _noop_to(orig_to)
            try:
                with torch.device("cuda"):
                    model = get_peft_model(model, lcfg)
            finally:
                BaseTunerLayer._move_adapter_to_device_of_base_layer = orig_move
                ParamWrapper._move_adapter_to_device_of_base_layer = orig_pw_move
                nn.Module.to = orig_to
        elif n_freeze or p["freeze_ratio"] > 0:
            emb = model.get_input_embeddings()
            for prm in emb.parameters():
                prm.requires_grad_(False)
            for name, mod in model.named_modules():  # learned position tables (GPT-2 wpe, OPT)
                leaf = name.rsplit(".", 1)[-1]
                if isinstance(mod, nn.Embedding) and mod is not emb and leaf in ("wpe", "embed_positions"):
                    for prm in mod.parameters():
                        prm.requires_grad_(False)
            for layer in list(layers)[:n_freeze]:
                for prm in layer.parameters():
                    prm.requires_grad_(False)
        if is_vlm and not lora and p.get("freeze_vision_tower", True):
            vision.freeze_tower(model)
        if dpo:  # DPOConfig.disable_dropout=True
            for mod in model.modules():
                if isinstance(mod, nn.Dropout):
                    mod.p = 0.0
        if p["gradient_checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if lora:
                model.enable_input_require_grads()  # trl does it again for peft + checkpointing
        model.train()
        # Frozen embeddings + enable_input_require_grads make the embedding output a *leaf*
        # that receives a .grad. ModTracker's hooks keep such leaves alive from C++ after
        # backward (a tracker artifact: without the tracker they die with the graph), so they
        # are released by hand right after each backward, where PyTorch would free them.
        leaf_outputs: list = []

        def _remember_leaf(mod, inp, out):
            if isinstance(out, torch.Tensor) and out.requires_grad and out.grad_fn is None:
                leaf_outputs.append(weakref.ref(out))

        model.get_input_embeddings().register_forward_hook(_remember_leaf)
        if is_vlm:  # enable_input_require_grads hooks the towers' patch embeddings too
            from transformers import PreTrainedModel  # noqa: PLC0415

            hooked = {id(model.get_input_embeddings())}
            for sub in model.modules():
                if isinstance(sub, PreTrainedModel):
                    try:  # as enable_input_require_grads: a model naming no input embedding is skipped
                        emb = sub.get_input_embeddings()
                    except NotImplementedError:
                        continue
                    if emb is not None and id(emb) not in hooked:
                        hooked.add(id(emb))
                        emb.register_forward_hook(_remember_leaf)

        ref_model = None
        if dpo and not lora:
            ref_model = _build_model(cfg, p, dtype_w, for_reference=True)
            from trl.trainer.utils import add_fused_lm_head  # noqa: PLC0415

            add_fused_lm_head(ref_model)
            ref_model.eval()
            for prm in ref_model.parameters():
                prm.requires_grad_(False)

        # accelerate.prepare_model: forward = convert_outputs_to_fp32(autocast(forward))
        def wrap(fn):
            if amp_dtype is None:
                return fn
            from accelerate.utils.operations import convert_outputs_to_fp32  # noqa: PLC0415

            return convert_outputs_to_fp32(torch.autocast("cuda", dtype=amp_dtype)(fn))

        offload_ctx = None
        if p.get("activation_offloading"):
            from trl.models.activation_offloading import get_act_offloading_ctx_manager  # noqa: PLC0415

            # trl tells parameters and shared storages apart by `untyped_storage().data_ptr()`,
            # which is 0 for every fake storage: give each its StorageImpl address instead,
            # unique per live storage as a real device pointer is
            orig_data_ptr = torch.UntypedStorage.data_ptr
            torch.UntypedStorage.data_ptr = lambda st: orig_data_ptr(st) or st._cdata
            offload_ctx = get_act_offloading_ctx_manager(model)
        policy_fwd = wrap(model.forward)
        ref_fwd = wrap(ref_model.forward) if ref_model is not None else None

        optimizer = _make_optimizer(model, p["optim"])
        trainable = [prm for prm in model.parameters() if prm.requires_grad]
        seen: set[int] = set()
        n_total = n_train = 0
        for prm in model.parameters():
            if id(prm) in seen:
                continue
            seen.add(id(prm))
            n_total += prm.numel()
            n_train += prm.numel() if prm.requires_grad else 0

        vocab = cfg.get_text_config().vocab_size
        input_ids, labels, batch_kwargs = _batch_inputs(torch, p.get("batching"), vocab, B, S)
        images = vision.Images(model, cfg, p, B, S) if is_vlm else None
        if images is not None:  # image placeholders replace the first tokens (same label bytes)
            batch_kwargs.update(images.forward_kwargs(input_ids))
        fp16_scale = 65536.0 if p["dtype"] == "amp-fp16" else None

        tracker = Tracker()
        if record_allocations:
            tracker.events = []
        tracker.track_external(model, optimizer, input_ids, labels, *batch_kwargs.values())
        if ref_model is not None:
            tracker.track_external(ref_model)
        after_load = tracker.cuda_snapshot()
        phases: dict[str, dict[str, int]] = {}
        saved_by_dtype: Counter[str] = Counter()

        def compute_loss():
            if not dpo:
                out = policy_fwd(input_ids=input_ids, labels=labels, use_cache=False, **batch_kwargs)
                return out.loss
            out = policy_fwd(input_ids=input_ids, labels=labels, use_cache=False, fused_lm_head=True)
            logps = out.log_probs.sum(dim=1)
            del out
            with torch.no_grad():
                if ref_model is None:
                    with model.disable_adapter():
                        ref = policy_fwd(input_ids=input_ids, labels=labels, use_cache=False, fused_lm_head=True)
                else:
                    ref = ref_fwd(input_ids=input_ids, labels=labels, use_cache=False, fused_lm_head=True)
                ref_logps = ref.log_probs.sum(dim=1)
                del ref
            c, r = logps.chunk(2, dim=0)
            rc, rr = ref_logps.chunk(2, dim=0)
            logits = (c - r) - (rc - rr)
            return -torch.nn.functional.logsigmoid(p["dpo_beta"] * logits).mean()

        def phase(name: str, step: int, fn):
            if tracker.events is not None:
                tracker.events.append(["m", f"step{step}.{name}"])
            tracker.reset_peak()
            fn()
            snap = tracker.cuda_snapshot("peak")
            key = f"step{step}.{name}"
            if key not in phases or snap["total"] > phases[key]["total"]:
                phases[key] = snap

        def train_step(step: int, record_saved: bool = False):
            for _ in range(n_micro):
                tracker.reset_mod_stats()
                box: dict[str, Any] = {}

                def fwd():
                    if record_saved:
                        seen_st: set[int] = set()

                        def pack(t):
                            st = t.untyped_storage()
                            k = st._cdata
                            if k not in seen_st and not isinstance(t, nn.Parameter):
                                seen_st.add(k)
                                saved_by_dtype[str(t.dtype).replace("torch.", "")] += -(-st.nbytes() // 512) * 512
                            return t

                        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                            box["loss"] = compute_loss() / p["gradient_accumulation_steps"]
                    else:
                        box["loss"] = compute_loss() / p["gradient_accumulation_steps"]

                def bwd():
                    loss = box.pop("loss")
                    (loss * fp16_scale if fp16_scale else loss).backward()
                    del loss
                    while leaf_outputs:
                        leaf = leaf_outputs.pop()()
                        if leaf is not None:
                            leaf.grad = None
                            leaf.untyped_storage().resize_(0)
                        del leaf

                # trl SFTTrainer.training_step runs forward and backward inside the
                # offloading context (saved tensors go to pinned host memory, MemTracker
                # counts them on the CPU device, not on the GPU)
                if offload_ctx is not None:
                    offload_ctx.__enter__()
                phase("forward", step, fwd)
                phase("backward", step, bwd)
                if offload_ctx is not None:
                    offload_ctx.__exit__(None, None, None)

            def opt():
                if fp16_scale:
                    grads = [q.grad for q in trainable if q.grad is not None]
                    found_inf = torch.zeros((), device="cuda")
                    inv = torch.full((), 1.0 / fp16_scale, device="cuda")
                    torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv)
                    del grads
                torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM, foreach=True)
                optimizer.step()
                model.zero_grad(set_to_none=True)

            phase("optimizer", step, opt)

        with tracker, (images.patched() if images is not None else contextlib.nullcontext()):
            train_step(1, record_saved=True)
            gc.collect()
            before_step2 = tracker.cuda_snapshot()
            train_step(2)
            gc.collect()
            after_step2 = tracker.cuda_snapshot()
            # the recording ends with the step: what the teardown frees is not the step's
            events, tracker.events = tracker.events, None

    step2 = {k.split(".", 1)[1]: v for k, v in phases.items() if k.startswith("step2.")}
    peak_phase = max(step2, key=lambda k: step2[k]["total"])
    peak = step2[peak_phase]
    step1_peak = max(v["total"] for k, v in phases.items() if k.startswith("step1."))
    attention_ops = dict(tracker.attention_ops)
    sdpa = sorted({k for k in attention_ops if "backward" not in k})
    if p["attn_implementation"] == "eager":
        notes.append("eager attention: materialized scores/probabilities")
    extra = {} if events is None else {"allocation_events": events}
    return {
        **extra,
        "peak_allocated_bytes": peak["total"],
        "peak_breakdown": {k: v for k, v in peak.items() if k != "total"},
        "peak_phase": peak_phase,
        "phase_peaks": {k: v["total"] for k, v in step2.items()},
        "phase_breakdowns": {k: {c: x for c, x in v.items() if x} for k, v in step2.items()},
        "step1_peak_bytes": step1_peak,
        "after_load_bytes": after_load["total"],
        "after_load_breakdown": {k: v for k, v in after_load.items() if v and k != "total"},
        "before_step2_bytes": before_step2["total"],
        "before_step2_breakdown": {k: v for k, v in before_step2.items() if v and k != "total"},
        "after_step2_bytes": after_step2["total"],
        "after_step2_breakdown": {k: v for k, v in after_step2.items() if v and k != "total"},
        "trainable_parameters": n_train,
        "total_parameters": n_total,
        "num_layers": L,
        "frozen_layers": n_freeze,
        "lora_target_modules": targets,
        "attention_ops": attention_ops,
        "attention_forward_ops": sdpa,
        "saved_for_backward_by_dtype_step1": dict(saved_by_dtype),
        "micro_batches_per_step": n_micro,
        "model_class": type(model.get_base_model() if lora else model).__name__,
        "plan": p,
        "notes": notes,
        "seconds": round(time.perf_counter() - t0, 2),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "harness": HARNESS_VERSION,
            **_optional_versions(),
        },
    }


def _batch_inputs(torch, batching: str | None, vocab: int, B: int, S: int, device: str = "cuda"):
    """(input_ids, labels, extra forward kwargs) of the worst micro-batch of ``batching``
    (see the module docstring); ``None``: ``B`` full rows, no mask (every case without the field)."""
    if batching in (None, "longest", "max_length"):
        input_ids = torch.randint(0, vocab, (B, S), device=device)
        labels = input_ids.clone()
        if batching is None:
            return input_ids, labels, {}
        lengths = [S] + [S // 2] * (B - 1) if batching == "longest" else [3 * S // 4] * B
        mask = torch.stack([torch.cat([torch.ones(n, dtype=torch.long, device=device),
                                       torch.zeros(S - n, dtype=torch.long, device=device)]) for n in lengths])
        labels = labels.masked_fill(mask == 0, -100)
        return input_ids, labels, {"attention_mask": mask}
    if batching == "packing":
        records = [n for _ in range(B) for n in (S // 2, S // 4, S - S // 2 - S // 4)]
    elif batching == "padding_free":
        records = [S] * B
    else:
        raise ValueError(f"batching={batching!r}")
    input_ids = torch.randint(0, vocab, (1, B * S), device=device)
    position_ids = torch.cat([torch.arange(n, device=device) for n in records])[None]
    labels = input_ids.clone()  # the collators mask each record's first label; same bytes
    return input_ids, labels, {"position_ids": position_ids}


def _optional_versions() -> dict[str, str]:
    out = {}
    for name in ("peft", "trl", "accelerate"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            pass
    return out


# -------------------------------------------------------------------------------------------
# CLI
# -------------------------------------------------------------------------------------------
def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches.truth.faketensor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="path to a Hugging Face config.json")
    ap.add_argument("--plan", default="{}", help="plan fields as JSON (forge_advisor.plan.Plan names)")
    ap.add_argument("--layers", type=int, default=None, help="override num_hidden_layers")
    ap.add_argument("--stdin", action="store_true", help="read {config, plan, num_layers} as JSON from stdin")
    args = ap.parse_args(argv)
    if os.environ.get("FORGE_FAKE_CUDA") != "1":
        import torch  # noqa: PLC0415

        if not torch.cuda.is_available():  # re-exec with the fake CUDA runtime preloaded
            env = fake_cuda_env()
            os.execvpe(sys.executable, [sys.executable, "-m", "benches.truth.faketensor", *(argv or sys.argv[1:])], env)
    if args.stdin:
        req = json.loads(sys.stdin.read())
        config, plan, layers = req["config"], req.get("plan") or {}, req.get("num_layers")
    else:
        if not args.config:
            ap.error("--config is required (or --stdin)")
        config, plan, layers = json.loads(Path(args.config).read_text()), json.loads(args.plan), args.layers
    try:
        result = _measure(config, resolve_plan(plan), layers, record_allocations=bool(args.stdin and req.get("record_allocations")))
    except Exception as exc:  # noqa: BLE001
        import traceback  # noqa: PLC0415

        result = {
            "error": {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()[-4000:]}
        }
        print(json.dumps(result, default=str), flush=True)
        return 1
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
