"""Per-rank memory of a real FSDP2 training step at any world size, on one CPU (no GPU).

``measure_fsdp(config, plan, num_layers=None)`` builds the REAL transformers model (and the
real peft LoRA wrapper) under ``FakeTensorMode`` on the fake CUDA device of ``_fakecuda``,
initialises ``torch.distributed`` with the fake process group
(``torch.testing._internal.distributed.fake_pg``: every collective returns at once, with
the right shapes) at ``world_size = plan["num_gpus"]``, shards it with FSDP2's
``fully_shard`` as accelerate's ``fsdp2_prepare_model`` does, and runs two complete
training steps as ``transformers.Trainer`` does under accelerate. PyTorch's
``torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker`` reports the live tensor
bytes of rank 0 (storages rounded up to 512 bytes); the peak of the SECOND step is the
truth, as in ``benches/truth/faketensor.py`` (whose docstring says how every other plan
field is realised; the same helpers build the model, the adapters and the optimizer).

How the FSDP2 fields are realised (``distributed="fsdp"``)
---------------------------------------------------------
sharding    ``fully_shard`` on every decoder layer (accelerate's TRANSFORMER_BASED_WRAP),
            then the tail ``[final norm, (input embedding when tied), lm_head]`` as one unit
            with ``reshard_after_forward=False``, the untied input embedding alone, and the
            root (accelerate ``fsdp2_prepare_model``, 1.15).
dtype       ``bf16``: bf16 shards, ``MixedPrecisionPolicy()`` (no cast), forward under
            autocast as the single-GPU harness. ``amp-bf16``: the mixed precision that
            accelerate's ``mixed_precision: bf16`` + FSDP runs: fp32 shards (peft's FSDP
            example loads the base in fp32), ``MixedPrecisionPolicy(param_dtype=bf16,
            reduce_dtype=fp32)``, forward under autocast + ``convert_outputs_to_fp32``.
gradient_accumulation_steps
            ``min(GA, 2)`` micro-batches; all but the last run with
            ``set_requires_gradient_sync(False)`` as accelerate's ``no_sync`` does for FSDP2
            (so unsharded gradients accumulate until the last micro-batch reduce-scatters).
num_gpus    the world size; the numbers are rank 0's.

    python -m benches.truth.fsdp2 --config cfg.json --plan '{"distributed": "fsdp", "num_gpus": 4}'
    python -m benches.truth.fsdp2 --cases benches/cases_fsdp.json   # -> benches/results/truth_fsdp2.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from benches.truth import faketensor as ft

HARNESS_VERSION = "truth-fsdp2/1"


def check_supported_fsdp(p: dict[str, Any]) -> None:
    if p["distributed"] != "fsdp":
        raise NotImplementedError("the FSDP2 harness measures distributed='fsdp' only")
    if p["method"] in ("qlora", "lora_8bit"):
        raise NotImplementedError(f"method={p['method']!r}: bitsandbytes weights cannot run on fake tensors")
    if p["dtype"] not in ("bf16", "amp-bf16", "fp32"):
        raise NotImplementedError(f"dtype={p['dtype']!r}: measured are bf16, amp-bf16 and fp32")
    if p["trainer"] != "sft":
        raise NotImplementedError("trainer='sft' only")
    if p["optim"] not in ("adamw_torch", "adamw_torch_fused", "sgd"):
        raise NotImplementedError(f"optim={p['optim']!r}")
    if p["attn_implementation"] == "flash_attention_2":
        raise NotImplementedError("flash_attention_2 has no fake-tensor support")


def case_key(config: dict[str, Any], plan: dict[str, Any], num_layers: int | None) -> str:
    import hashlib  # noqa: PLC0415

    blob = json.dumps(
        {"v": HARNESS_VERSION, "config": config, "plan": ft.resolve_plan(plan), "num_layers": num_layers},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def measure_fsdp(config: dict[str, Any], plan: dict[str, Any], num_layers: int | None = None, *, timeout: float = 900) -> dict:
    """Measure one FSDP2 case in a subprocess with the fake CUDA runtime preloaded."""
    import subprocess  # noqa: PLC0415

    p = ft.resolve_plan(plan)
    check_supported_fsdp(p)
    payload = json.dumps({"config": config, "plan": p, "num_layers": num_layers})
    proc = subprocess.run(
        [sys.executable, "-m", "benches.truth.fsdp2", "--stdin"],
        input=payload,
        capture_output=True,
        text=True,
        env=ft.fake_cuda_env(),
        cwd=ft.REPO_ROOT,
        timeout=timeout,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        raise RuntimeError(f"FSDP2 truth measurement failed (rc={proc.returncode}):\n{tail}")
    result = json.loads(lines[-1])
    if "error" in result:
        if result["error"].get("type") == "NotImplementedError":
            raise NotImplementedError(result["error"]["message"])
        raise RuntimeError(f"{result['error']['type']}: {result['error']['message']}\n{result['error'].get('traceback', '')}")
    return result


def _tracker_class():
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker  # noqa: PLC0415

    class Tracker(FSDPMemTracker):
        """FSDPMemTracker with per-phase peaks of the CUDA device only."""

        def cuda_snapshot(self, kind: str = "current") -> dict[str, int]:
            snap = self.get_tracker_snapshot(kind)
            out: dict[str, int] = {"total": 0}
            for dev, d in snap.items():
                if dev.type != "cuda":
                    continue
                for k, v in d.items():
                    if k == "Total":
                        out["total"] += v
                    else:
                        name = k.value.lower()
                        out[name] = out.get(name, 0) + v
            return out

        def reset_peak(self) -> None:
            self._peak_mem_snap = self.get_tracker_snapshot()
            self._peak_mem = {dev: d["Total"] for dev, d in self._peak_mem_snap.items()}

    return Tracker


def _shard(model, layers, mesh, mp_policy) -> None:
    """accelerate 1.15 ``fsdp2_prepare_model``: layers, untied input embedding, tail, root."""
    from torch.distributed.fsdp import fully_shard  # noqa: PLC0415

    kw = {"mesh": mesh, "mp_policy": mp_policy}
    for layer in layers:
        fully_shard(layer, reshard_after_forward=True, **kw)
    inp = model.get_input_embeddings()
    out = model.get_output_embeddings()
    tied = out is not None and inp.weight is out.weight
    if not tied:
        fully_shard(inp, reshard_after_forward=True, **kw)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, getattr(base, "base_model_prefix", ""), None) or base
    final_norm = None
    for _, mod in inner.named_children():
        if "Norm" in type(mod).__name__:
            final_norm = mod
    tail = [m for m in ((final_norm, inp, out) if tied else (final_norm, out)) if m is not None]
    fully_shard(tail, reshard_after_forward=False, **kw)
    fully_shard(model, **kw)


def _measure(config: dict[str, Any], p: dict[str, Any], num_layers: int | None) -> dict[str, Any]:
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415
    import torch.nn as nn  # noqa: PLC0415
    import transformers  # noqa: PLC0415
    from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: PLC0415
    from torch.distributed.device_mesh import init_device_mesh  # noqa: PLC0415
    from torch.distributed.fsdp import MixedPrecisionPolicy  # noqa: PLC0415
    from torch.testing._internal.distributed.fake_pg import FakeStore  # noqa: PLC0415

    check_supported_fsdp(p)
    t0 = time.perf_counter()
    ws = p["num_gpus"]
    if not dist.is_initialized():
        dist.init_process_group(backend="fake", rank=0, world_size=ws, store=FakeStore())
    cfg = ft._make_config(config, num_layers)
    L = cfg.num_hidden_layers
    amp = p["dtype"] == "amp-bf16"
    dtype_w = torch.bfloat16 if p["dtype"] == "bf16" else torch.float32
    autocast_dtype = torch.bfloat16 if p["dtype"] in ("bf16", "amp-bf16") else None
    lora = p["method"] == "lora"
    n_freeze = math.floor(p["freeze_ratio"] * L + 1e-9)
    B, S = p["per_device_train_batch_size"], p["max_length"]
    n_micro = min(p["gradient_accumulation_steps"], 2)
    mp_policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if amp else MixedPrecisionPolicy()
    )
    Tracker = _tracker_class()
    mesh = init_device_mesh("cuda", (ws,))  # real (CPU) rank map; the fake pg answers collectives
    with FakeTensorMode(allow_non_fake_inputs=False):
        model = ft._build_model(cfg, p, dtype_w)
        layers_name, layers = ft._decoder_layers(model, L)
        targets = None
        if lora:
            from peft import LoraConfig, get_peft_model  # noqa: PLC0415
            from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: PLC0415

            tm = p["lora_target_modules"]
            targets = tm if tm is not None else ft._attention_targets(layers[0])
            lcfg = LoraConfig(
                r=p["lora_r"],
                lora_alpha=p["lora_alpha"],
                lora_dropout=p["lora_dropout"],
                target_modules=targets,
                bias="none",
                task_type="CAUSAL_LM",
                layers_to_transform=list(range(n_freeze, L)) if n_freeze else None,
                layers_pattern=layers_name.rsplit(".", 1)[-1] if n_freeze else None,
            )
            orig_move, orig_to = BaseTunerLayer._move_adapter_to_device_of_base_layer, nn.Module.to
            BaseTunerLayer._move_adapter_to_device_of_base_layer = lambda self, *a, **k: None
            nn.Module.to = ft._noop_to(orig_to)
            try:
                with torch.device("cuda"):
                    model = get_peft_model(model, lcfg)
            finally:
                BaseTunerLayer._move_adapter_to_device_of_base_layer = orig_move
                nn.Module.to = orig_to
        elif n_freeze or p["freeze_ratio"] > 0:
            for prm in model.get_input_embeddings().parameters():
                prm.requires_grad_(False)
            for layer in list(layers)[:n_freeze]:
                for prm in layer.parameters():
                    prm.requires_grad_(False)
        if p["gradient_checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if lora:
                model.enable_input_require_grads()
        model.train()
        _shard(model, layers, mesh, mp_policy)
        leaf_outputs: list = []

        def _remember_leaf(mod, inp, out):
            if isinstance(out, torch.Tensor) and out.requires_grad and out.grad_fn is None:
                import weakref  # noqa: PLC0415

                leaf_outputs.append(weakref.ref(out))

        model.get_input_embeddings().register_forward_hook(_remember_leaf)
        if autocast_dtype is not None:  # accelerate.prepare_model; Trainer then calls model(...)
            from accelerate.utils.operations import convert_outputs_to_fp32  # noqa: PLC0415

            model.forward = convert_outputs_to_fp32(torch.autocast("cuda", dtype=autocast_dtype)(model.forward))
        fwd = model  # through __call__, so FSDP's root hooks run
        optimizer = ft._make_optimizer(model, p["optim"])
        trainable = [prm for prm in model.parameters() if prm.requires_grad]
        n_total = sum(prm.numel() for prm in model.parameters())
        n_train = sum(prm.numel() for prm in trainable)
        vocab = cfg.get_text_config().vocab_size
        input_ids = torch.randint(0, vocab, (B, S), device="cuda")
        labels = input_ids.clone()

        tracker = Tracker(model, optimizer)
        tracker.track_inputs((input_ids, labels))
        phases: dict[str, dict[str, int]] = {}

        def phase(name: str, step: int, fn) -> None:
            tracker.reset_peak()
            fn()
            snap = tracker.cuda_snapshot("peak")
            key = f"step{step}.{name}"
            if key not in phases or snap["total"] > phases[key]["total"]:
                phases[key] = snap

        def train_step(step: int) -> None:
            for micro in range(n_micro):
                model.set_requires_gradient_sync(micro == n_micro - 1)
                box: dict[str, Any] = {}

                def forward():
                    box["loss"] = fwd(input_ids=input_ids, labels=labels, use_cache=False).loss / p["gradient_accumulation_steps"]

                def backward():
                    box.pop("loss").backward()
                    while leaf_outputs:
                        leaf = leaf_outputs.pop()()
                        if leaf is not None:
                            leaf.grad = None
                        del leaf

                phase("forward", step, forward)
                phase("backward", step, backward)

            def opt():
                torch.nn.utils.clip_grad_norm_(trainable, ft.MAX_GRAD_NORM, foreach=True)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            phase("optimizer", step, opt)

        with tracker:
            after_load = tracker.cuda_snapshot()
            train_step(1)
            gc.collect()
            train_step(2)
            gc.collect()
    step2 = {k.split(".", 1)[1]: v for k, v in phases.items() if k.startswith("step2.")}
    peak_phase = max(step2, key=lambda k: step2[k]["total"])
    return {
        "peak_allocated_bytes": step2[peak_phase]["total"],
        "peak_breakdown": {k: v for k, v in step2[peak_phase].items() if k != "total" and v},
        "peak_phase": peak_phase,
        "phase_peaks": {k: v["total"] for k, v in step2.items()},
        "phase_breakdowns": {k: {c: x for c, x in v.items() if x and c != "total"} for k, v in step2.items()},
        "after_load_bytes": after_load["total"],
        "trainable_parameters_local": n_train,
        "total_parameters_local": n_total,
        "num_layers": L,
        "world_size": ws,
        "lora_target_modules": targets,
        "plan": p,
        "seconds": round(time.perf_counter() - t0, 2),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "harness": HARNESS_VERSION, **ft._optional_versions()},
    }


DEFAULT_OUT = ft.REPO_ROOT / "benches" / "results" / "truth_fsdp2.json"


def run_cases(cases: list[dict], out: Path = DEFAULT_OUT, *, force: bool = False) -> dict:
    """Measure each case (one subprocess each), caching results by ``case_key`` in ``out``."""
    results: dict = json.loads(out.read_text()) if out.exists() else {}
    for case in cases:
        key = case_key(case["config"], case.get("plan") or {}, case.get("num_layers"))
        if key in results and "result" in results[key] and not force:
            continue
        t0 = time.time()
        entry: dict = {"name": case["name"], "model_type": case["config"].get("model_type"),
                       "plan": ft.resolve_plan(case.get("plan") or {}), "num_layers": case.get("num_layers"),
                       "config": case["config"]}
        try:
            entry["result"] = measure_fsdp(case["config"], entry["plan"], case.get("num_layers"))
            r = entry["result"]
            print(f"ok   {case['name']:<34} peak {r['peak_allocated_bytes'] / 2**20:10.1f} MiB ({r['peak_phase']})", flush=True)
        except Exception as exc:  # noqa: BLE001
            entry["error"] = {"type": type(exc).__name__, "message": str(exc)[-3000:]}
            print(f"FAIL {case['name']:<34} {entry['error']['message'][-300:]}", flush=True)
        entry["wall_seconds"] = round(time.time() - t0, 1)
        results[key] = entry
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(results, indent=1, sort_keys=True, default=str) + "\n")
        os.replace(tmp, out)
    return results


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches.truth.fsdp2", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="path to a Hugging Face config.json")
    ap.add_argument("--plan", default="{}", help="plan fields as JSON")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--stdin", action="store_true", help="read {config, plan, num_layers} as JSON from stdin")
    ap.add_argument("--cases", help="a cases file (benches/cases_fsdp.json): measure all, cached in --out")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    if args.cases:
        from benches.truth.run_cases import load_cases  # noqa: PLC0415

        run_cases(load_cases(args.cases), Path(args.out), force=args.force)
        return 0
    if os.environ.get("FORGE_FAKE_CUDA") != "1":
        os.execvpe(sys.executable, [sys.executable, "-m", "benches.truth.fsdp2", *(argv or sys.argv[1:])], ft.fake_cuda_env())
    if args.stdin:
        req = json.loads(sys.stdin.read())
        config, plan, layers = req["config"], req.get("plan") or {}, req.get("num_layers")
    else:
        config, plan, layers = json.loads(Path(args.config).read_text()), json.loads(args.plan), args.layers
    try:
        result = _measure(config, ft.resolve_plan(plan), layers)
    except Exception as exc:  # noqa: BLE001
        import traceback  # noqa: PLC0415

        print(json.dumps({"error": {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()[-4000:]}}), flush=True)
        return 1
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
