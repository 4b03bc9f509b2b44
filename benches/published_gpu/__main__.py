"""`python -m benches.published_gpu`: the published-GPU error table (Markdown + JSON)."""

from __future__ import annotations

import sys

from benches.published_gpu import run, to_markdown
from benches.results_io import write_results


def main() -> int:
    report = run()
    write_results("published_gpu", report, to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
