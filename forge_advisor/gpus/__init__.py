"""GPUs: the embedded catalog, forgiving name lookup, and the NVML probe. Never imports torch."""

from __future__ import annotations

from forge_advisor.gpus.catalog import GPU, PEAK_DTYPES, find_gpu, gpu_catalog, normalize, search_gpus
from forge_advisor.gpus.probe import NvmlRecord, Probe, ProbedDevice, catalog_match, gpu_from_nvml, probe
from forge_advisor.gpus.resolve import resolve_gpu

__all__ = [
    "GPU",
    "PEAK_DTYPES",
    "NvmlRecord",
    "Probe",
    "ProbedDevice",
    "catalog_match",
    "find_gpu",
    "gpu_catalog",
    "gpu_from_nvml",
    "normalize",
    "probe",
    "resolve_gpu",
    "search_gpus",
]
