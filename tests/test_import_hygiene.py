"""The advisor path never imports torch, transformers or textual (harlequin-style check:
a fresh interpreter imports the core and runs commands, then we look at sys.modules)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "textual", "peft", "trl", "accelerate", "bitsandbytes")

PROBE = r"""
import json, sys
import forge_advisor
from forge_advisor.cli.main import main
import contextlib, io
out = io.StringIO()
with contextlib.redirect_stdout(out):
    for argv in ARGVS:
        code = main(argv)
        assert code == 0, (argv, code)
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)))
"""


def _loaded_after(argvs: list[list[str]]) -> list[str]:
    code = f"HEAVY = {HEAVY!r}\nARGVS = {argvs!r}\n" + PROBE
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_import_is_light() -> None:
    assert _loaded_after([]) == []


def test_advisor_commands_are_light() -> None:
    argvs = [
        ["inspect", "--model", "meta-llama/Llama-3.1-8B", "--json"],
        ["models", "--json"],
    ]
    from forge_advisor.cli.main import COMMANDS

    for extra in (["gpus", "--json"], ["probe", "--json"], ["estimate", "--model", "meta-llama/Llama-3.1-8B", "--json"],
                  ["recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "A100-80GB-SXM", "--json"],
                  ["fit", "--model", "meta-llama/Llama-3.1-8B", "--json"]):
        if extra[0] in COMMANDS:
            argvs.append(extra)
    assert _loaded_after(argvs) == []


def test_probe_detects_a_heavy_import() -> None:
    # the check itself can fail: importing torch shows up
    code = f"HEAVY = {HEAVY!r}\nARGVS = []\nimport torch\n" + PROBE
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "torch" in json.loads(res.stdout.strip().splitlines()[-1])


def test_analytic_recommend_imports_no_optuna() -> None:
    """Optuna earns its import only with --storage or --measure: the ranking is exact."""
    code = (f"HEAVY = {HEAVY + ('optuna',)!r}\n"
            "ARGVS = [['recommend', '--model', 'meta-llama/Llama-3.1-8B', '--gpu', 'RTX 4090', '--json']]\n" + PROBE)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_the_package_face_is_light() -> None:
    """The names the presets page uses come from the package itself, without torch."""
    code = (f"HEAVY = {HEAVY + ('optuna',)!r}\nARGVS = []\n"
            "from forge_advisor import estimate, get_preset, recommend, fit, auto_preset, load_shape\n"
            "assert callable(estimate) and callable(recommend) and callable(fit) and callable(auto_preset)\n" + PROBE)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_one_module_imports_the_native_extension() -> None:
    """Only forge_advisor/core.py imports ``_native``; everything else goes through it."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "forge_advisor"
    pattern = re.compile(r"^\s*(from forge_advisor import _native|from forge_advisor\._native import|import forge_advisor\._native)", re.M)
    importers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text()))
    assert importers == ["core.py"]
