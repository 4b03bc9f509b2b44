"""Per-device calibration: stored atomically, applied to later estimates, which say so."""

from __future__ import annotations

import json

import pytest

from forge_advisor import calibration
from forge_advisor.calibration import Sample, load_calibration, record_samples
from forge_advisor.estimate import estimate
from forge_advisor.gpus import find_gpu


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FORGE_ADVISOR_CACHE", str(tmp_path))
    monkeypatch.setattr(calibration, "_LOADED", None)
    return tmp_path


def _samples(speed: float, reserve: float) -> list[Sample]:
    return [
        Sample(1000.0, 1000.0 * speed, 10 << 30, 10 << 30, 12 << 30, (10 << 30) + int(reserve * (2 << 30))),
        Sample(2000.0, 2000.0 * speed, 20 << 30, 20 << 30, 23 << 30, (20 << 30) + int(reserve * (3 << 30))),
        Sample(500.0, 500.0 * speed * 1.5, 5 << 30, 5 << 30, 6 << 30, (5 << 30) + int(reserve * (1 << 30))),
    ]


def test_uncalibrated_by_default() -> None:
    r = estimate("meta-llama/Llama-3.1-8B", "lora", gpu="H100 SXM").to_dict()
    assert r["throughput"]["calibrated"] is False and r["throughput"]["calibration"] is None


def test_measured_speed_and_reserve_scale_later_estimates(_cache) -> None:  # type: ignore[no-untyped-def]
    gpu = find_gpu("H100 SXM")
    before = estimate("meta-llama/Llama-3.1-8B", "lora", gpu=gpu)
    cal = record_samples(gpu, _samples(0.8, 1.5))
    assert cal.speed_factor == pytest.approx(0.8) and cal.reserve_factor == pytest.approx(1.5) and cal.samples == 3
    stored = json.loads((_cache / "calibration.json").read_text())
    assert stored["H100 SXM|" + str(gpu.memory_bytes)]["speed_factor"] == pytest.approx(0.8)
    after = estimate("meta-llama/Llama-3.1-8B", "lora", gpu=gpu)
    assert after.tokens_per_second == pytest.approx(before.tokens_per_second * 0.8)
    assert after.peak_allocated_bytes == before.peak_allocated_bytes
    reserve_before = before.raw["device"]["allocator_reserve"]
    assert after.peak_reserved_bytes - before.peak_reserved_bytes == int(reserve_before * 1.5) - reserve_before
    assert after.to_dict()["throughput"]["calibrated"] is True


def test_calibration_is_per_device() -> None:
    record_samples(find_gpu("H100 SXM"), _samples(0.5, 1.0))
    assert load_calibration(find_gpu("RTX 4090")) is None
    assert load_calibration(find_gpu("H100 SXM")) is not None


def test_a_damaged_cache_is_ignored(_cache) -> None:  # type: ignore[no-untyped-def]
    (_cache / "calibration.json").write_text("{not json")
    assert load_calibration(find_gpu("H100 SXM")) is None
    record_samples(find_gpu("H100 SXM"), _samples(0.9, 1.0))  # and is replaced, atomically
    assert json.loads((_cache / "calibration.json").read_text())
    assert not list(_cache.glob(".calibration.json.tmp-*"))


def test_recommend_measure_without_a_gpu_is_a_clear_error() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "forge_advisor.cli.main", "recommend", "--model", "meta-llama/Llama-3.1-8B",
                          "--gpu", "RTX 4090", "--measure"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
