"""A calibration file that is corrupt or from another version is ignored with one warning line,
never a crash; the assumed library stack is compared with installed package metadata."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from forge_advisor import __version__, calibration
from forge_advisor.calibration import ASSUMED_STACK, Sample, load_calibration, record_samples, stack_differences
from forge_advisor.estimate import estimate
from forge_advisor.gpus import find_gpu

KEY = "H100 SXM|"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FORGE_ADVISOR_CACHE", str(tmp_path))
    monkeypatch.setattr(calibration, "_LOADED", None)
    monkeypatch.setattr(calibration, "_WARNED", False)
    return tmp_path


def _entry(**over: object) -> dict[str, object]:
    gpu = find_gpu("H100 SXM")
    e: dict[str, object] = {"device": KEY + str(gpu.memory_bytes), "speed_factor": 0.5, "reserve_factor": 2.0,
                            "samples": 3, "updated": "2026-01-01T00:00:00", "version": __version__}
    e.update(over)
    return e


def _write(cache, data: object) -> None:  # type: ignore[no-untyped-def]
    text = data if isinstance(data, str) else json.dumps(data)
    (cache / "calibration.json").write_text(text)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\udcff"[:0] + "\x00\x01garbage", '"a string"'])
def test_corrupt_file_is_ignored_with_one_warning(_cache, capsys, content) -> None:  # type: ignore[no-untyped-def]
    _write(_cache, content)
    gpu = find_gpu("H100 SXM")
    assert load_calibration(gpu) is None
    r = estimate("meta-llama/Llama-3.1-8B", "lora", gpu=gpu)
    assert r.calibration is None and r.to_dict()["throughput"]["calibrated"] is False
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ignoring the calibration file")


def test_entry_from_another_version_is_ignored(_cache, capsys) -> None:  # type: ignore[no-untyped-def]
    gpu = find_gpu("H100 SXM")
    _write(_cache, {KEY + str(gpu.memory_bytes): _entry(version="0.0.1-old")})
    plain = estimate("meta-llama/Llama-3.1-8B", "lora", gpu=gpu)
    assert plain.calibration is None
    assert load_calibration(gpu) is None  # asked twice: still one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written by forge-advisor 0.0.1-old" in err[0]


@pytest.mark.parametrize("bad", [{"speed_factor": "fast"}, {"reserve_factor": -1.0}, {"extra_field": 1}])
def test_malformed_entry_is_ignored(_cache, capsys, bad) -> None:  # type: ignore[no-untyped-def]
    gpu = find_gpu("H100 SXM")
    _write(_cache, {KEY + str(gpu.memory_bytes): _entry(**bad)})
    assert load_calibration(gpu) is None
    assert capsys.readouterr().err.count("warning:") == 1


def test_current_version_entry_is_used(_cache, capsys) -> None:  # type: ignore[no-untyped-def]
    gpu = find_gpu("H100 SXM")
    _write(_cache, {KEY + str(gpu.memory_bytes): _entry()})
    cal = load_calibration(gpu)
    assert cal is not None and cal.speed_factor == 0.5
    assert capsys.readouterr().err == ""


def test_a_bad_file_is_replaced_by_the_next_record(_cache) -> None:  # type: ignore[no-untyped-def]
    _write(_cache, "{not json")
    gpu = find_gpu("H100 SXM")
    record_samples(gpu, [Sample(1000.0, 900.0, 1 << 30, 1 << 30, 2 << 30, 2 << 30)])
    assert load_calibration(gpu) is not None


def test_cli_estimate_with_a_corrupt_file_does_not_crash(_cache) -> None:  # type: ignore[no-untyped-def]
    _write(_cache, "{not json")
    p = subprocess.run([sys.executable, "-m", "forge_advisor.cli.main", "estimate", "--model", "meta-llama/Llama-3.2-1B",
                        "--preset", "lora", "--gpu", "H100 SXM", "--json"], capture_output=True, text=True,
                       env={**__import__("os").environ, "FORGE_ADVISOR_CACHE": str(_cache)})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["throughput"]["calibrated"] is False
    assert [ln for ln in p.stderr.splitlines() if ln.strip()] == [
        ln for ln in p.stderr.splitlines() if ln.startswith("warning: ignoring the calibration file")
    ] and p.stderr.count("warning:") == 1


def test_stack_differences_names_other_majors() -> None:
    same = {name: f"{major}.3.1" for name, major in ASSUMED_STACK.items()}
    assert stack_differences(same) == []
    older = {**same, "transformers": "4.57.1"}
    diffs = stack_differences(older)
    assert diffs == ["transformers 4.57.1 is installed; the estimate models transformers 5.x"]
    assert stack_differences({"transformers": None}) == []  # not installed is not a difference


def test_stack_read_from_metadata_without_importing() -> None:
    code = ("import sys; from forge_advisor.calibration import stack_differences; d = stack_differences(); "
            "print(d); assert 'transformers' not in sys.modules and 'torch' not in sys.modules")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # this venv holds transformers 5 and torch 2: the assumed stack, so no difference
    assert p.stdout.strip() == "[]"
