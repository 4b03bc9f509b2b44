"""The embedded GPU catalog (``catalog/gpus.json``) and forgiving name lookup.

Matching rules of :func:`find_gpu`, in order:

1. exact match on a normalized key (case, spaces, dashes and the words "nvidia",
   "geforce", "tesla" ignored) of the catalog name, an alias or an NVML name:
   ``"rtx-4090"``, ``"NVIDIA A100-SXM4-80GB"``, ``"t4"``;
2. otherwise every word of the query must occur in one GPU's keys, comparing numbers
   whole: ``"4090"`` -> RTX 4090, ``"h100 pcie"`` -> H100 PCIe, but ``"h20"`` is not H200;
3. several GPUs left -> :class:`ForgeError` listing them, never a guess. ``"h100"`` asks
   SXM / PCIe / NVL, ``"a100"`` asks among four, and ``"a100 80gb"`` asks SXM or PCIe:
   the two differ in bandwidth (2,039 vs 1,935 GB/s) and clocks, and choosing silently
   would make every time estimate quietly wrong for half the people who type it;
4. nothing left -> :class:`ForgeError` with a did-you-mean.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from forge_advisor.catalog import load_catalog
from forge_advisor.errors import ForgeError

__all__ = ["GPU", "PEAK_DTYPES", "gpu_catalog", "find_gpu", "search_gpus", "normalize"]

# keys of GPU.peak_tflops: dense tensor-core bf16/fp16/tf32 (FP32 accumulate) and non-tensor fp32
PEAK_DTYPES: tuple[str, ...] = ("bf16", "fp16", "tf32", "fp32")

_NOISE = frozenset({"nvidia", "geforce", "tesla"})


@dataclass(frozen=True)
class GPU:
    """One GPU model. ``memory_bytes`` is the vendor's 'N GB' read as N GiB for catalog
    entries, or NVML's total for a probed device; ``peak_tflops[dtype]`` is dense TFLOP/s
    or ``None`` where unknown / unsupported."""

    name: str
    memory_bytes: int
    compute_capability: tuple[int, int] | None
    bf16: bool
    peak_tflops: dict[str, float | None] = field(default_factory=dict, hash=False)
    bandwidth_bytes_per_s: int | None = None
    source: str = ""
    nvml_names: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    memory_label: str = ""
    notes: str = ""

    def peak_flops(self, dtype: str) -> float | None:
        """Dense peak in FLOP/s for ``dtype`` (one of :data:`PEAK_DTYPES`), ``None`` if unknown."""
        tf = self.peak_tflops.get(dtype)
        return None if tf is None else tf * 1e12

    @property
    def known(self) -> bool:
        """Whether any peak FLOP/s figure is known (False for a GPU outside the catalog)."""
        return any(v is not None for v in self.peak_tflops.values())

    def to_dict(self) -> dict[str, Any]:
        cc = self.compute_capability
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "memory": self.memory_label,
            "memory_bytes": self.memory_bytes,
            "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
            "bf16": self.bf16,
            "peak_tflops": {k: self.peak_tflops.get(k) for k in PEAK_DTYPES},
            "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
            "nvml_names": list(self.nvml_names),
            "source": self.source,
            "notes": self.notes,
        }


def parse_cc(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def _from_json(d: dict[str, Any]) -> GPU:
    peak = d.get("peak_tflops") or {}
    return GPU(
        name=d["name"],
        memory_bytes=int(d["memory_bytes"]),
        compute_capability=parse_cc(d.get("compute_capability")),
        bf16=bool(d["bf16"]),
        peak_tflops={k: (None if peak.get(k) is None else float(peak[k])) for k in PEAK_DTYPES},
        bandwidth_bytes_per_s=None if d.get("bandwidth_bytes_per_s") is None else int(d["bandwidth_bytes_per_s"]),
        source=d["source"],
        nvml_names=tuple(d.get("nvml_names", ())),
        aliases=tuple(d.get("aliases", ())),
        memory_label=d.get("memory", ""),
        notes=d.get("notes", ""),
    )


@lru_cache(maxsize=1)
def gpu_catalog() -> tuple[GPU, ...]:
    """Every GPU in ``catalog/gpus.json``, in file order."""
    return tuple(_from_json(d) for d in load_catalog("gpus")["gpus"])


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _NOISE]


def normalize(text: str) -> str:
    """``"NVIDIA GeForce RTX-4090"`` -> ``"rtx4090"``: lowercase, only letters and digits, noise words dropped."""
    return "".join(_words(text))


def _keys(g: GPU) -> list[str]:
    return [k for k in (normalize(s) for s in (g.name, *g.aliases, *g.nvml_names)) if k]


def _runs(word: str) -> list[str]:
    """``"a100"`` -> ``["a", "100"]``: letter and digit runs, so numbers compare whole."""
    return re.findall(r"[a-z]+|[0-9]+", word)


@lru_cache(maxsize=None)
def _key_runs(g: GPU) -> tuple[tuple[str, ...], ...]:
    out = []
    size = g.memory_label.split()[:1]  # "24 GB GDDR6X" -> "24gb", so "rtx-4090-24gb" matches
    for s in (g.name, *g.aliases, *g.nvml_names, *(f"{n}gb" for n in size)):
        runs: list[str] = []
        for w in _words(s):
            runs += _runs(w) + [" "]  # " " keeps digits of adjacent words apart
        out.append(tuple(runs))
    return tuple(out)


def _word_matches(q: list[str], g: GPU) -> bool:
    """The query word's runs occur in a row in one of g's keys; numbers must be equal,
    letters may be a prefix ('pci' -> 'pcie'). So 'h20' does not match 'H200'."""
    for key in _key_runs(g):
        for i in range(len(key) - len(q) + 1):
            if all(a == b or (a.isalpha() and b.startswith(a)) for a, b in zip(q, key[i : i + len(q)])):
                return True
    return False


def find_gpu(name: str) -> GPU:
    """The catalog GPU ``name`` means (see the module docstring for the rules)."""
    query = normalize(name)
    if not query:
        raise ForgeError(f"empty GPU name {name!r}; 'forge-advisor gpus' lists the catalog")
    exact = [g for g in gpu_catalog() if query in _keys(g)]
    if len(exact) == 1:
        return exact[0]
    runs = [_runs(w) for w in _words(name)]
    found = exact or [g for g in gpu_catalog() if all(_word_matches(r, g) for r in runs)]
    if len(found) == 1:
        return found[0]
    if found:
        names = [g.name for g in found]
        raise ForgeError(
            f"GPU {name!r} is ambiguous: {', '.join(names[:-1])} or {names[-1]}? "
            f"name one of them (e.g. {names[0]!r})"
        )
    raise ForgeError(f"unknown GPU {name!r}{_suggest(query)}; 'forge-advisor gpus' lists the catalog")


def _suggest(query: str) -> str:
    """Did-you-mean over normalized keys ('rtx9090' is close to 'rtx4090'), shown as catalog names."""
    by_key: dict[str, str] = {}
    for g in gpu_catalog():
        for k in _keys(g):
            by_key.setdefault(k, g.name)
    names: list[str] = []
    for k in difflib.get_close_matches(query, list(by_key), n=10, cutoff=0.6):
        if by_key[k] not in names:
            names.append(by_key[k])
    return " (did you mean " + " or ".join(repr(n) for n in names[:3]) + "?)" if names else ""


def search_gpus(text: str | None) -> list[GPU]:
    """Catalog GPUs whose name, aliases or NVML names contain every word of ``text``."""
    if not text or not _words(text):
        return list(gpu_catalog())
    words = _words(text)
    return [g for g in gpu_catalog() if all(any(w in k for k in _keys(g)) for w in words)]
