"""Copy the benches' Markdown tables into README.md between `<!-- bench:NAME -->` and
`<!-- /bench:NAME -->` markers, so the README shows exactly what was measured.

    python -m benches.update_readme
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benches" / "results"


def update(readme: str) -> str:
    for match in re.finditer(r"<!-- bench:([a-z_]+) -->", readme):
        name = match.group(1)
        table = RESULTS / f"{name}.md"
        if not table.exists():
            continue
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        readme = pattern.sub(lambda m: m.group(1) + table.read_text().rstrip() + "\n" + m.group(2), readme)
    return readme


def main() -> int:
    path = ROOT / "README.md"
    text = path.read_text()
    new = update(text)
    if new != text:
        path.write_text(new)
    print("README.md up to date" if new == text else "README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
