"""Measured-vs-estimated records: what a run measured next to what the estimator predicted,
appended as JSON lines to ``OUTPUT/forge-measurements.jsonl`` for calibration to learn from.

Each line: ``{"record": "measured_vs_estimated", "v": 1, "phase": "preflight" | "run",
"versions": {...}, "model": ..., "gpu": ..., "plan": {...}, "predicted_peak_bytes": ...,
"measured": {"peak_allocated_bytes", "peak_reserved_bytes", "tokens_per_second", ...}}``.
The versions (forge-advisor, torch, transformers, peft, trl, bitsandbytes, CUDA) come from
package metadata; a reader ignores lines of another ``v``. Torch-free.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["RECORDS_FILE", "RECORDS_VERSION", "append_record", "library_versions", "read_records"]

RECORDS_FILE = "forge-measurements.jsonl"
RECORDS_VERSION = 1
_PACKAGES = ("forge-advisor", "torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if out.get("forge-advisor") is None:
        from forge_advisor import __version__

        out["forge-advisor"] = __version__
    return out


def append_record(out: Path, phase: str, **fields: Any) -> Path:
    """One line appended (a single ``write`` of the whole line: a kill leaves whole lines)."""
    path = Path(out) / RECORDS_FILE
    doc = {"record": "measured_vs_estimated", "v": RECORDS_VERSION, "phase": phase,
           "versions": library_versions(), **fields}
    line = json.dumps(doc, separators=(",", ":"), default=str) + "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)
    return path


def read_records(out: Path) -> list[dict[str, Any]]:
    """The records of ``out`` of this version. Lines that are torn, corrupt or of another version
    are skipped with one warning line for the file (never an error)."""
    import logging

    path = Path(out) / RECORDS_FILE
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    found, skipped = [], 0
    for line in lines:
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict) and doc.get("v") == RECORDS_VERSION and doc.get("record") == "measured_vs_estimated":
            found.append(doc)
        elif line.strip():
            skipped += 1
    if skipped:
        logging.getLogger(__name__).warning("%s: ignored %d corrupt or other-version line(s)", path, skipped)
    return found
