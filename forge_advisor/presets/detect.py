"""Hardware and architecture auto-detection for presets, without importing torch.

The device is read from NVML (``nvidia-ml-py``, an advisor dependency) so that
:meth:`BasePreset.get_args_dict` stays torch-free; when torch is already imported its
answer wins (it honours ``CUDA_VISIBLE_DEVICES`` remapping exactly).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

__all__ = ["Hardware", "detect_hardware", "mixed_precision_for", "attn_implementation_for"]

Device = Literal["cuda", "mps", "cpu"]


@dataclass(frozen=True)
class Hardware:
    device: Device
    num_gpus: int = 0
    # (major, minor) of GPU 0; bf16 tensor cores need >= (8, 0) (Ampere)
    compute_capability: tuple[int, int] | None = None
    name: str = "cpu"

    @property
    def supports_bf16(self) -> bool:
        if self.device == "cuda":
            return self.compute_capability is not None and self.compute_capability >= (8, 0)
        return self.device == "mps"


def _from_torch() -> Hardware | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return Hardware("cuda", n, tuple(torch.cuda.get_device_capability(0)), torch.cuda.get_device_name(0))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Hardware("mps", 1, None, "Apple MPS")
    return Hardware("cpu")


def _from_nvml() -> Hardware | None:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, no GPU: a CPU (or Apple) machine
        return None
    try:
        n = pynvml.nvmlDeviceGetCount()
        if n == 0:
            return None
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
        name = pynvml.nvmlDeviceGetName(h)
        name = name.decode() if isinstance(name, bytes) else str(name)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            n = min(n, len([v for v in visible.split(",") if v.strip()]))
        return Hardware("cuda", n, (int(major), int(minor)), name)
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


@lru_cache(maxsize=1)
def _detect_cached() -> Hardware:
    nv = _from_nvml()
    if nv is not None:
        return nv
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return Hardware("mps", 1, None, "Apple MPS")
    return Hardware("cpu")


def detect_hardware() -> Hardware:
    """CUDA, MPS or CPU; torch's view if torch is loaded, otherwise NVML's."""
    return _from_torch() or _detect_cached()


def mixed_precision_for(hw: Hardware) -> Literal["bf16", "fp16"] | None:
    """bf16 where compute capability >= 8.0, fp16 on older GPUs, none on CPU.

    On MPS, fp16 autocast is the reliable path (bf16 autocast needs macOS 14+ and recent torch), so
    MPS gets fp16.
    """
    if hw.device == "cuda":
        return "bf16" if hw.supports_bf16 else "fp16"
    if hw.device == "mps":
        return "fp16"
    return None


@lru_cache(maxsize=64)
def attn_implementation_for(model_type: str | None, device: str = "cuda") -> str:
    """The attention kernel an architecture supports: ``sdpa`` where the transformers model
    class declares ``_supports_sdpa``, else ``eager`` (gemma2 in transformers 5: SDPA cannot
    soft-cap logits). ``flash_attention_2`` is never picked automatically (optional wheel).

    Imports transformers lazily; without it, every architecture except the known eager-only
    ones gets ``sdpa``.
    """
    eager_only = {"gemma2"}  # transformers 5.x: Gemma2PreTrainedModel._supports_sdpa = False
    if not model_type:
        return "sdpa"
    try:
        from importlib import import_module

        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        cls_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
        if cls_name is None:
            return "eager" if model_type in eager_only else "sdpa"
        module = import_module(f"transformers.models.{model_type.replace('-', '_')}")
        cls = getattr(module, cls_name)
        return "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"
    except Exception:  # transformers missing or a module that moved: fall back to the known table
        return "eager" if model_type in eager_only else "sdpa"
