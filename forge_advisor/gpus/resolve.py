"""``--gpu`` values: a catalog name, or ``auto`` for the first GPU this machine has."""

from __future__ import annotations

from collections.abc import Callable

from forge_advisor.errors import ForgeError
from forge_advisor.gpus.catalog import GPU, find_gpu
from forge_advisor.gpus.probe import Probe, probe

__all__ = ["resolve_gpu"]


def resolve_gpu(spec: str, probe_fn: Callable[[], Probe] = probe) -> GPU:
    """``"auto"`` -> the first visible GPU (its NVML memory, catalog FLOP/s); else :func:`find_gpu`."""
    if spec.strip().lower() != "auto":
        return find_gpu(spec)
    found = probe_fn()
    if not found.devices:
        raise ForgeError(
            f"GPU 'auto': no GPU found ({found.reason}); name one instead, e.g. '4090' or 'H100 SXM' "
            "('forge-advisor gpus' lists them)"
        )
    return found.devices[0].gpu
