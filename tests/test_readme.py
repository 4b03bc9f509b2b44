"""Every code block of README.md runs as written.

Python blocks run in a fresh interpreter; ``bash`` blocks and the ``$ `` lines of ``console``
blocks run in bash with this checkout's ``forge-advisor`` first on the PATH. One rule skips
blocks: those under the "Set-up" heading install the package into a new environment, which
``.ci/run`` itself does (it runs the test-command block exactly as written); running them here
would reinstall the package under test. ``text`` blocks are captured output, not code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIPPED_SECTION = "Set-up"  # the rule above: CI runs these itself
RUNNABLE = ("python", "bash", "console")


def blocks() -> list[tuple[str, str, str, int]]:
    """(section heading, language, code, line) of every fenced block."""
    out = []
    section = ""
    lines = README.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        fence = re.match(r"^(\s*)```(\w*)\s*$", line)
        if fence:
            indent, lang = fence.groups()
            start = i
            body = []
            i += 1
            while not lines[i].strip().startswith("```"):
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            out.append((section, lang, "\n".join(body) + "\n", start + 1))
        i += 1
    return out


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    found = blocks()
    langs = [lang for _, lang, _, _ in found]
    assert "python" in langs and "console" in langs and "bash" in langs
    skipped = [b for b in found if b[0].startswith(SKIPPED_SECTION)]
    assert skipped and all(lang == "bash" for _, lang, _, _ in skipped)
    assert all(lang in (*RUNNABLE, "text") for lang in langs), langs


CASES = [b for b in blocks() if b[1] in RUNNABLE and not b[0].startswith(SKIPPED_SECTION)]


@pytest.mark.parametrize(("section", "lang", "code", "line"), CASES, ids=[f"README.md:{c[3]}-{c[1]}" for c in CASES])
def test_block_runs_as_written(section: str, lang: str, code: str, line: int) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if lang == "python":
        argv = [sys.executable, "-c", code]
    else:
        script = code if lang == "bash" else "\n".join(ln[2:] for ln in code.splitlines() if ln.startswith("$ "))
        assert script.strip(), f"README.md:{line}: a console block without a $ command"
        argv = ["bash", "-euo", "pipefail", "-c", script]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, f"README.md:{line} ({section}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
