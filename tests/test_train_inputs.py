"""`train`'s bad inputs (issue #12 point 6): one line `error: …`, exit 2, and found before torch
is imported (checked in a fresh process: 'torch' not in sys.modules after the command), with
nothing left on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from forge_advisor.train.demo import demo_data_path

ROOT = Path(__file__).resolve().parents[1]

# runs each argv through the CLI in one fresh process and reports code, stderr, torch imported
_PROBE = r"""
import contextlib, io, json, sys
from forge_advisor.cli.main import main
block = sys.argv[1]
if block:
    sys.modules[block] = None  # the module is not installed (how Python marks a failed import)
results = []
for argv in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    results.append({"argv": argv, "code": code, "err": err.getvalue(), "torch": "torch" in sys.modules})
print(json.dumps(results))
"""


def _probe(cases: list[list[str]], block: str = "", env: dict[str, str] | None = None) -> list[dict]:
    res = subprocess.run([sys.executable, "-c", _PROBE, block, json.dumps(cases)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_bad_train_inputs_fail_before_torch(tmp_path):
    good = str(demo_data_path())
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"text": ""}\n{"text": "   "}\n')
    nested = tmp_path / "nested"
    nested.mkdir()
    (nested / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    out = tmp_path / "out"
    o = ["--output", str(out)]
    cases = {
        "weights": (["train", "--model", "meta-llama/Llama-3.1-8B", "--data", good, *o],
                    "training needs the model's weights"),
        "ema": (["train", "--demo", *o, "--ema-decay", "2"], "ema_decay=2.0 is out of range"),
        "blank": (["train", "--demo", "--data", str(blank), *o], "every record's 'text' is empty"),
        "nan": (["train", "--demo", *o, "--predicted-peak-gib", "nan"], "--predicted-peak-gib nan"),
        "bf16": (["train", "--demo", *o, "--bf16", "true"], "bf16=True needs a GPU"),
        "flash": (["train", "--demo", *o, "--attn-implementation", "flash_attention_2"], "flash-attn"),
        "unwritable": (["train", "--demo", "--output", "/proc/forge-out"], "cannot write into --output"),
        "accelerate": (["train", "--write-accelerate-config", "/proc/forge/acc.yaml", "--num-gpus", "2",
                        "--distributed", "ddp"], "cannot write the accelerate config"),
        "long": (["train", "--model", "m" * 5000, "--data", good, *o], "5000 characters"),
        "nested": (["train", "--model", str(nested), "--data", good, *o], "nested too deeply"),
        "events": (["train", "--demo", *o, "--events", str(tmp_path)], "--events names a folder"),
        "json+events": (["train", "--demo", *o, "--json", "--events", "-"], "both write to stdout"),
    }
    results = _probe([argv for argv, _ in cases.values()], env={"HF_HUB_OFFLINE": "1"})
    for (name, (_, message)), r in zip(cases.items(), results):
        err = r["err"].strip()
        assert r["code"] == 2, (name, err)
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, (name, err)
        assert not r["torch"], f"{name}: torch was imported before the error"
    assert not out.exists()  # nothing written, not even an empty folder


def test_demo_without_the_train_extra_says_how_to_install(tmp_path):
    [r] = _probe([["train", "--demo", "--output", str(tmp_path / "o")]], block="torch")
    assert r["code"] == 2 and 'pip install "forge-advisor[train]"' in r["err"] and len(r["err"].splitlines()) == 1


def test_gated_or_unreachable_hub_model_is_one_line_at_once(tmp_path):
    """Online mode without network: one short request, no retry loop; the line says why."""
    [r] = _probe([["train", "--model", "meta-llama/Llama-3.1-8B", "--data", str(demo_data_path()),
                   "--output", str(tmp_path / "o")]], env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert r["code"] == 2 and len(r["err"].strip().splitlines()) == 1
    assert "the Hugging Face Hub did not answer" in r["err"] and not r["torch"]
