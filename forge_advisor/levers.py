"""Can this machine and stack run a plan's memory levers? One line naming what is missing.

The levers (plan fields, priced in ``rust/src/levers.rs`` and ``rust/src/fsdp.rs``):
``use_liger_kernel`` (Liger-Kernel's Triton kernels: CUDA and ``triton`` at train time),
``activation_offloading`` / ``offload_optimizer`` / ``offload_params`` (host memory),
``bnb_4bit_quant_storage`` (a float storage to shard a 4-bit base). Torch-free: the
advisor path may call it.

The search-space axes these levers add, with their cost (for the advisor). The boolean
levers are inner knobs of the exact ranking (``rust/src/search.rs``: variants next to
checkpointing, ``forge_advisor/advisor/search.py`` ``lever_axes``): the fastest fitting
variant wins and equals keep a lever off, so a lever is chosen exactly where the plan
without it does not fit or fits only a slower batch; quality is unchanged. The CPU offloads
are axes only with several GPUs, each under a sharding that does it. The storage is not an
axis: QLoRA under fsdp/zero3 stores its 4-bit weights in the compute dtype (FSDP-QLoRA).

| axis | values | quality | speed |
|---|---|---|---|
| ``use_liger_kernel`` | False, True | none (exact loss; fused kernels) | priced as unchanged (Liger's benchmarks show the fused loss ~on par, RMSNorm/SwiGLU faster); frees the logits |
| ``activation_offloading`` | False, True | none | slower: saved activations cross PCIe twice (``levers.rs``) |
| ``offload_optimizer`` | False, True (zero2/zero3) | none | slower: grads down + params up over PCIe, CPU Adam |
| ``offload_params`` | False, True (fsdp/zero3) | none | slower: every all-gather reads host memory |
| ``bnb_4bit_quant_storage`` | "uint8"; the compute dtype for qlora + fsdp/zero3 | none | none |
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forge_advisor.plan import Plan

__all__ = ["LEVER_FIELDS", "lever_problem", "refuse_lever_problem", "SEARCH_AXES"]

# name -> values the advisor can search (see the module table for their costs)
SEARCH_AXES: dict[str, tuple[object, ...]] = {
    "use_liger_kernel": (False, True),
    "activation_offloading": (False, True),
    "offload_optimizer": (False, True),
    "offload_params": (False, True),
    "bnb_4bit_quant_storage": ("uint8", "bfloat16"),
}

# the Plan (and preset) fields that are memory levers: each a flag of every command (cli/plan_args.py)
LEVER_FIELDS: tuple[str, ...] = tuple(SEARCH_AXES)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def lever_problem(
    plan: Plan,
    *,
    training: bool,
    has_cuda: bool | None = None,
    host_memory_needed: int = 0,
    host_memory_available: int | None = None,
) -> str | None:
    """The one line that says why ``plan``'s levers cannot run here, else None.

    ``training``: the plan is about to run on this machine (then Liger needs CUDA and the
    ``triton`` package); an estimate for another machine only checks the plan itself.
    ``host_memory_needed``: the estimate's host bytes per process times the processes on
    this host; ``host_memory_available``: ``probe().host_memory_available_bytes``.
    """
    if plan.method == "qlora" and plan.distributed in ("fsdp", "zero3") and plan.bnb_4bit_quant_storage == "uint8":
        want = "bfloat16" if plan.dtype == "bf16" else "float16"
        return (
            f"FSDP-QLoRA needs bnb_4bit_quant_storage={want} (the compute dtype): 4-bit weights stored as uint8 "
            f"cannot be sharded by {plan.distributed}"
        )
    if training and plan.use_liger_kernel:
        if has_cuda is False:
            return "use_liger_kernel=True needs a CUDA GPU: Liger-Kernel's Triton kernels do not run on this device"
        if importlib.util.find_spec("triton") is None:
            return "use_liger_kernel=True needs the triton package (pip install liger-kernel)"
        if importlib.util.find_spec("liger_kernel") is None:
            return "use_liger_kernel=True needs the liger-kernel package (pip install liger-kernel)"
    if host_memory_available is not None and host_memory_needed > host_memory_available:
        levers = [n for n in ("activation_offloading", "offload_optimizer", "offload_params") if getattr(plan, n)]
        return (
            f"{', '.join(levers) or 'offloading'} needs {_gib(host_memory_needed)} of host memory, "
            f"{_gib(host_memory_available)} is available"
        )
    return None


def refuse_lever_problem(plan: Plan, *, training: bool, **machine: object) -> None:
    """Raise :func:`lever_problem`'s line as a :class:`~forge_advisor.errors.ForgeError`
    (``error: …``, exit 2): ``estimate``, ``recommend --fix`` and ``train`` refuse alike."""
    msg = lever_problem(plan, training=training, **machine)  # type: ignore[arg-type]
    if msg is not None:
        from forge_advisor.errors import ForgeError

        raise ForgeError(msg)
