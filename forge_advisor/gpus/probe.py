"""What NVML sees: GPUs, memory, compute capability, driver; and the host's memory
(``/proc/meminfo``), which the offloading levers need. No torch.

:func:`probe` never raises: with no driver, no GPU or no ``pynvml`` it returns a
:class:`Probe` with no devices and a ``reason``. :func:`gpu_from_nvml` maps one device
record to a :class:`GPU` and is pure, so it is testable without hardware.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from forge_advisor.gpus.catalog import GPU, gpu_catalog, normalize

__all__ = ["NvmlRecord", "ProbedDevice", "Probe", "gpu_from_nvml", "catalog_match", "probe", "host_memory", "parse_meminfo"]

# a catalog entry whose memory differs from the device's by more than this is another
# memory variant sold under the same NVML name (RTX 3060 8GB vs 12GB): keep the NVML name
_MEMORY_TOLERANCE = 0.15


@dataclass(frozen=True)
class NvmlRecord:
    """What NVML reports for one device (plain data)."""

    name: str
    memory_total_bytes: int
    memory_free_bytes: int | None = None
    compute_capability: tuple[int, int] | None = None
    index: int = 0
    uuid: str | None = None


@dataclass(frozen=True)
class ProbedDevice:
    index: int
    nvml_name: str
    memory_total_bytes: int
    memory_free_bytes: int | None
    compute_capability: tuple[int, int] | None
    uuid: str | None
    catalog_name: str | None  # None: not in the catalog, peak FLOP/s unknown
    gpu: GPU  # catalog figures with this device's own NVML memory

    def to_dict(self) -> dict[str, Any]:
        cc = self.compute_capability
        return {
            "index": self.index,
            "name": self.nvml_name,
            "uuid": self.uuid,
            "memory_total_bytes": self.memory_total_bytes,
            "memory_free_bytes": self.memory_free_bytes,
            "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
            "catalog_name": self.catalog_name,
            "gpu": self.gpu.to_dict(),
        }


@dataclass(frozen=True)
class Probe:
    devices: tuple[ProbedDevice, ...] = ()
    reason: str | None = None  # why there are no devices (None when some were found)
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # highest CUDA the driver supports, e.g. "12.4"
    notes: tuple[str, ...] = field(default_factory=tuple)
    # host RAM from /proc/meminfo (None where the file is absent: not Linux)
    host_memory_total_bytes: int | None = None
    host_memory_available_bytes: int | None = None

    @property
    def available(self) -> bool:
        return bool(self.devices)

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "count": len(self.devices),
            "devices": [d.to_dict() for d in self.devices],
            "notes": list(self.notes),
            "host_memory_total_bytes": self.host_memory_total_bytes,
            "host_memory_available_bytes": self.host_memory_available_bytes,
        }


def parse_meminfo(text: str) -> tuple[int | None, int | None]:
    """``(MemTotal, MemAvailable)`` in bytes from ``/proc/meminfo`` text (kB lines:
    ``MemTotal:       131891292 kB``); None for a line that is missing."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key in ("MemTotal", "MemAvailable") and parts and parts[0].isdigit():
            scale = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
            values[key] = int(parts[0]) * scale
    return values.get("MemTotal"), values.get("MemAvailable")


def host_memory(path: str = "/proc/meminfo") -> tuple[int | None, int | None]:
    """The host's total and available memory in bytes; ``(None, None)`` where unreadable."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return parse_meminfo(fh.read())
    except OSError:
        return None, None


def catalog_match(nvml_name: str) -> GPU | None:
    """The catalog GPU whose NVML name (normalized) is ``nvml_name``, else ``None``."""
    key = normalize(nvml_name)
    for g in gpu_catalog():
        if key in (normalize(n) for n in g.nvml_names):
            return g
    return None


def gpu_from_nvml(record: NvmlRecord) -> GPU:
    """Map an NVML record to a GPU: catalog FLOP/s and bandwidth, the device's own memory.

    Unknown names give a GPU with the NVML name and memory, peak FLOP/s ``None``, and bf16
    inferred from the compute capability (>= 8.0) when NVML reported one.
    """
    cat = catalog_match(record.name)
    if cat is not None:
        same_variant = abs(record.memory_total_bytes - cat.memory_bytes) <= _MEMORY_TOLERANCE * cat.memory_bytes
        return replace(
            cat,
            name=cat.name if same_variant else record.name,
            memory_bytes=record.memory_total_bytes,
            compute_capability=record.compute_capability or cat.compute_capability,
            memory_label=cat.memory_label if same_variant else "",
            notes=cat.notes if same_variant else f"memory differs from the catalog's {cat.name}; FLOP/s from {cat.name}",
        )
    cc = record.compute_capability
    return GPU(
        name=record.name,
        memory_bytes=record.memory_total_bytes,
        compute_capability=cc,
        bf16=cc is not None and cc >= (8, 0),
        peak_tflops={"bf16": None, "fp16": None, "tf32": None, "fp32": None},
        bandwidth_bytes_per_s=None,
        source="nvml",
        nvml_names=(record.name,),
        notes="not in the catalog: peak FLOP/s and bandwidth unknown",
    )


def _device(record: NvmlRecord) -> ProbedDevice:
    cat = catalog_match(record.name)
    return ProbedDevice(
        index=record.index,
        nvml_name=record.name,
        memory_total_bytes=record.memory_total_bytes,
        memory_free_bytes=record.memory_free_bytes,
        compute_capability=record.compute_capability,
        uuid=record.uuid,
        catalog_name=cat.name if cat else None,
        gpu=gpu_from_nvml(record),
    )


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _visible(records: list[NvmlRecord], env: str | None) -> tuple[list[NvmlRecord], list[str]]:
    """Apply CUDA_VISIBLE_DEVICES (indices or GPU-UUID prefixes) the way CUDA would."""
    if env is None:
        return records, []
    wanted = [s.strip() for s in env.split(",")]
    if wanted == [""]:
        return [], ["CUDA_VISIBLE_DEVICES is empty: CUDA sees no GPU"]
    out: list[NvmlRecord] = []
    for w in wanted:  # CUDA stops at the first invalid entry
        if w.isdigit() and int(w) < len(records):
            hit = [records[int(w)]]
        elif w.startswith("GPU-"):
            hit = [r for r in records if r.uuid and r.uuid.startswith(w)]
        else:
            return records, [f"CUDA_VISIBLE_DEVICES={env!r} not understood here; listing every GPU NVML sees"]
        if len(hit) != 1 or hit[0] in out:
            break
        out.append(hit[0])
    return out, [f"CUDA_VISIBLE_DEVICES={env!r}: {len(out)} of {len(records)} GPUs visible"]


def probe() -> Probe:
    """Ask NVML, and read the host's memory. Never raises; a machine without GPU or driver
    gives a Probe with a reason."""
    total, available = host_memory()
    return replace(_probe_nvml(), host_memory_total_bytes=total, host_memory_available_bytes=available)


def _probe_nvml() -> Probe:
    try:
        import pynvml
    except Exception as exc:  # ImportError, or a broken install
        return Probe(reason=f"nvidia-ml-py (pynvml) is not importable: {exc}")
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        msg = str(exc) or type(exc).__name__
        if "Library Not Found" in msg:
            msg = "no NVIDIA driver (NVML library libnvidia-ml not found)"
        elif "Driver Not Loaded" in msg:
            msg = "the NVIDIA driver is not loaded"
        else:
            msg = f"NVML could not start: {msg}"
        return Probe(reason=msg)
    try:
        driver = _text(_try(pynvml.nvmlSystemGetDriverVersion))
        cuda = _try(pynvml.nvmlSystemGetCudaDriverVersion)
        cuda_s = _cuda_version(cuda) if isinstance(cuda, int) and cuda > 0 else None
        try:
            count = pynvml.nvmlDeviceGetCount()
        except Exception as exc:
            return Probe(reason=f"NVML could not count GPUs: {exc}", driver_version=driver, cuda_driver_version=cuda_s)
        records: list[NvmlRecord] = []
        notes: list[str] = []
        for i in range(count):
            try:
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = _text(pynvml.nvmlDeviceGetName(h)) or f"GPU {i}"
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                cc = _try(pynvml.nvmlDeviceGetCudaComputeCapability, h)
                records.append(
                    NvmlRecord(
                        name=name,
                        memory_total_bytes=int(mem.total),
                        memory_free_bytes=int(mem.free),
                        compute_capability=(int(cc[0]), int(cc[1])) if cc else None,
                        index=i,
                        uuid=_text(_try(pynvml.nvmlDeviceGetUUID, h)),
                    )
                )
            except Exception as exc:
                notes.append(f"GPU {i}: NVML query failed: {exc}")
        records, vis_notes = _visible(records, os.environ.get("CUDA_VISIBLE_DEVICES"))
        notes += vis_notes
        devices = tuple(_device(r) for r in records)
        reason = None
        if not devices:
            reason = "no GPU visible" if count else "NVML found no NVIDIA GPU"
            if notes:
                reason += f" ({notes[-1]})"
        return Probe(devices=devices, reason=reason, driver_version=driver, cuda_driver_version=cuda_s, notes=tuple(notes))
    except Exception as exc:  # never let the probe take the CLI down
        return Probe(reason=f"NVML query failed: {exc}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _try(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)
