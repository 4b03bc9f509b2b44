"""Where every bench leaves its table: ``benches/results/<name>.json`` and ``<name>.md``
(the Markdown is what ``python -m benches.update_readme`` copies into the README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, report: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
