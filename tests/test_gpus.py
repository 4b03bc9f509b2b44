"""GPU catalog, forgiving lookup, NVML mapping, and the real probe path (no mocks of pynvml)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from forge_advisor.errors import ForgeError
from forge_advisor.gpus import (
    GPU,
    PEAK_DTYPES,
    NvmlRecord,
    Probe,
    find_gpu,
    gpu_catalog,
    gpu_from_nvml,
    probe,
    resolve_gpu,
    search_gpus,
)
from forge_advisor.units import GiB, MiB

REQUIRED = [
    "T4", "V100 16GB SXM2", "V100 32GB SXM2", "A10G", "L4", "L40S",
    "A100 40GB SXM", "A100 80GB SXM", "A100 40GB PCIe", "A100 80GB PCIe",
    "H100 SXM", "H100 PCIe", "H100 NVL", "H200", "B200",
    "RTX 3060 12GB", "RTX 3090", "RTX 4060 Ti 16GB", "RTX 4090", "RTX 5090", "RTX A6000", "RTX 6000 Ada",
]

# memory.total as nvidia-smi prints it on real devices (MiB): a little under the sold "N GB" read as GiB
NVML_TOTALS_MIB = {
    "NVIDIA H100 80GB HBM3": 81559,
    "NVIDIA A100-SXM4-80GB": 81920,
    "Tesla T4": 15360,
    "NVIDIA GeForce RTX 4090": 24564,
    "NVIDIA H200": 143771,
    "NVIDIA B200": 183359,
}


def by_name() -> dict[str, GPU]:
    return {g.name: g for g in gpu_catalog()}


# ---------------------------------------------------------------- catalog invariants


def test_catalog_size_and_required_names():
    cat = by_name()
    assert len(cat) >= 22
    assert len(cat) == len(gpu_catalog()), "duplicate names"
    missing = [n for n in REQUIRED if n not in cat]
    assert not missing


def test_every_gpu_cites_a_source_and_is_complete():
    for g in gpu_catalog():
        assert g.source.startswith("https://"), g.name
        assert g.nvml_names, g.name
        assert g.compute_capability is not None and g.compute_capability >= (7, 0), g.name
        assert g.bandwidth_bytes_per_s and 2e11 <= g.bandwidth_bytes_per_s <= 1e13, g.name
        assert set(g.peak_tflops) == set(PEAK_DTYPES), g.name
        assert g.peak_tflops["fp32"] and g.peak_tflops["fp16"], g.name


def test_memory_is_the_sold_size_in_gib():
    for g in gpu_catalog():
        sold_gb = int(g.memory_label.split()[0])  # "80 GB HBM3"
        assert g.memory_bytes == sold_gb * GiB, g.name
        assert 8 * GiB <= g.memory_bytes <= 300 * GiB, g.name  # B300: 288 GB
    cat = by_name()
    assert cat["H100 NVL"].memory_bytes == 94 * GiB
    assert cat["H200"].memory_bytes == 141 * GiB
    assert cat["RTX 3060 12GB"].memory_bytes == 12 * GiB


@pytest.mark.parametrize("nvml_name,mib", sorted(NVML_TOTALS_MIB.items()))
def test_nvml_totals_fall_just_under_catalog_memory(nvml_name, mib):
    g = find_gpu(nvml_name)
    assert 0.9 * g.memory_bytes <= mib * MiB <= g.memory_bytes


def test_bf16_support_follows_architecture():
    for g in gpu_catalog():
        assert g.bf16 == (g.compute_capability >= (8, 0)), g.name
        if g.bf16:
            assert g.peak_tflops["bf16"] is not None and g.peak_tflops["tf32"] is not None, g.name
        else:
            assert g.peak_tflops["bf16"] is None and g.peak_tflops["tf32"] is None, g.name
    cat = by_name()
    for name in ("T4", "V100 16GB SXM2", "V100 32GB SXM2"):
        assert cat[name].bf16 is False


def test_peak_rates_are_consistent():
    for g in gpu_catalog():
        p = g.peak_tflops
        assert p["fp16"] > p["fp32"], g.name  # tensor cores beat the non-tensor path
        if p["bf16"] is not None:
            assert p["bf16"] == p["fp16"], g.name  # same tensor rate with FP32 accumulate
            # TF32 is half the 16-bit rate; L40S datasheet says 183 vs 362.05 / 2 = 181, hence 2%
            assert p["fp32"] <= p["tf32"] <= p["bf16"] / 2 * 1.02, g.name
        assert g.peak_flops("fp16") == p["fp16"] * 1e12


def test_dense_not_sparse_and_geforce_fp32_accumulate():
    cat = by_name()
    assert cat["H100 SXM"].peak_tflops["bf16"] == pytest.approx(989.5)  # datasheet 1,979 is sparse
    assert cat["A100 80GB SXM"].peak_tflops["bf16"] == 312
    # GeForce: FP32-accumulate tensor rate = 2x the FP32 rate (FP16-accumulate would be 4x)
    for name in ("RTX 3090", "RTX 4090", "RTX 5090", "RTX 3060 12GB", "RTX 4060 Ti 16GB"):
        p = cat[name].peak_tflops
        assert p["bf16"] == pytest.approx(2 * p["fp32"], rel=0.03), name


def test_nvml_names_are_unique():
    seen: dict[str, str] = {}
    for g in gpu_catalog():
        for n in g.nvml_names:
            assert n not in seen, (n, seen.get(n), g.name)
            seen[n] = g.name


def test_to_dict_round_trips_to_json():
    d = find_gpu("h100 sxm").to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["compute_capability"] == "9.0" and d["memory_bytes"] == 80 * GiB


# ---------------------------------------------------------------- forgiving lookup


@pytest.mark.parametrize(
    "query,name",
    [
        ("4090", "RTX 4090"),
        ("RTX-4090", "RTX 4090"),
        ("rtx4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("  t4 ", "T4"),
        ("Tesla T4", "T4"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("h100 sxm", "H100 SXM"),
        ("H100-PCIe", "H100 PCIe"),
        ("h100 nvl", "H100 NVL"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"),
        ("a100 80gb pcie", "A100 80GB PCIe"),
        ("A100_40GB_SXM", "A100 40GB SXM"),
        ("a10", "A10"),
        ("A10G", "A10G"),
        ("l4", "L4"),
        ("l40s", "L40S"),
        ("v100 32gb", "V100 32GB SXM2"),
        ("4060 ti", "RTX 4060 Ti 16GB"),
        ("3060", "RTX 3060 12GB"),
        ("a6000", "RTX A6000"),
        ("rtx 6000 ada", "RTX 6000 Ada"),
        ("h200", "H200"),
        ("b200", "B200"),
        ("RTX-4090-24GB", "RTX 4090"),  # a memory size word matches the sold size
        ("h100 94gb", "H100 NVL"),
        ("A100-80GB-SXM", "A100 80GB SXM"),
        ("a100 80g pcie", "A100 80GB PCIe"),
    ],
)
def test_find_gpu_forgiving(query, name):
    assert find_gpu(query).name == name


@pytest.mark.parametrize(
    "query,choices",
    [
        ("h100", ["H100 SXM", "H100 PCIe", "H100 NVL"]),
        ("a100", ["A100 40GB SXM", "A100 80GB SXM", "A100 40GB PCIe", "A100 80GB PCIe"]),
        ("a100-80gb", ["A100 80GB SXM", "A100 80GB PCIe"]),  # SXM vs PCIe differ in bandwidth: ask
        ("a100 80", ["A100 80GB SXM", "A100 80GB PCIe"]),
        ("v100", ["V100 16GB SXM2", "V100 32GB SXM2"]),
        ("rtx 6000", ["RTX A6000", "RTX 6000 Ada"]),
        ("a800", ["A800 80GB SXM", "A800 80GB PCIe"]),
    ],
)
def test_find_gpu_ambiguous_asks(query, choices):
    with pytest.raises(ForgeError) as e:
        find_gpu(query)
    msg = str(e.value)
    assert "ambiguous" in msg and "\n" not in msg
    for c in choices:
        assert c in msg
    others = {g.name for g in gpu_catalog()} - set(choices)
    assert not [o for o in others if f"{o}," in msg or f"{o} or" in msg or msg.rstrip("?").endswith(o)]


def test_find_gpu_unknown_suggests():
    with pytest.raises(ForgeError) as e:
        find_gpu("rtx 9090")
    assert "unknown GPU 'rtx 9090'" in str(e.value) and "RTX 4090" in str(e.value)
    with pytest.raises(ForgeError, match="unknown GPU 'a900'"):
        find_gpu("a900")  # not a GPU: never silently an A100
    assert find_gpu("a800 sxm").name == "A800 80GB SXM"  # the A800 is its own entry, never an A100
    assert find_gpu("h800").name == "H800 SXM"  # nvidia-smi's name of the SXM5 board ("NVIDIA H800")
    assert find_gpu("h20").name == "H20" and find_gpu("h200").name == "H200"  # numbers compare whole
    with pytest.raises(ForgeError, match="unknown GPU '3060 8gb'"):
        find_gpu("3060 8gb")  # the 8 GB variant is not in the catalog
    with pytest.raises(ForgeError, match="empty"):
        find_gpu(" - ")


def test_search_gpus():
    assert {g.name for g in search_gpus("h100")} == {"H100 SXM", "H100 PCIe", "H100 NVL"}
    assert len(search_gpus(None)) == len(gpu_catalog())
    assert search_gpus("nothing-like-this") == []


# ---------------------------------------------------------------- NVML mapping (pure)


def test_gpu_from_nvml_known_keeps_device_memory():
    rec = NvmlRecord(name="NVIDIA H100 80GB HBM3", memory_total_bytes=81559 * MiB, compute_capability=(9, 0))
    g = gpu_from_nvml(rec)
    assert g.name == "H100 SXM"
    assert g.memory_bytes == 81559 * MiB
    assert g.peak_tflops == find_gpu("H100 SXM").peak_tflops
    assert g.bandwidth_bytes_per_s == 3_350_000_000_000


def test_2026_gpus_resolve_by_nvml_name():
    h20 = gpu_from_nvml(NvmlRecord(name="NVIDIA H20", memory_total_bytes=97871 * MiB, compute_capability=(9, 0)))
    assert h20.name == "H20" and h20.peak_tflops["bf16"] == 148 and h20.bandwidth_bytes_per_s == 4_000_000_000_000
    pro = find_gpu("NVIDIA RTX PRO 6000 Blackwell Server Edition")
    assert pro.name == "RTX PRO 6000 Blackwell" and pro.memory_bytes == 96 * GiB
    assert find_gpu("5080").name == "RTX 5080" and find_gpu("rtx pro 6000").name == "RTX PRO 6000 Blackwell"


def test_gpu_from_nvml_older_driver_name_and_other_memory_variant():
    assert gpu_from_nvml(NvmlRecord("A100-SXM4-40GB", 40960 * MiB)).name == "A100 40GB SXM"
    assert gpu_from_nvml(NvmlRecord("NVIDIA A800-SXM4-80GB", 81251 * MiB)).name == "A800 80GB SXM"
    # an 8 GB RTX 3060 shares the NVML name of the catalog's 12 GB card: keep the NVML name
    g = gpu_from_nvml(NvmlRecord("NVIDIA GeForce RTX 3060", 8192 * MiB, compute_capability=(8, 6)))
    assert g.name == "NVIDIA GeForce RTX 3060" and g.memory_bytes == 8192 * MiB


def test_gpu_from_nvml_unknown():
    # a GPU outside the catalog (e.g. the A800 40GB Active workstation card)
    g = gpu_from_nvml(NvmlRecord(name="NVIDIA A800 40GB Active", memory_total_bytes=40960 * MiB, compute_capability=(8, 0)))
    assert g.name == "NVIDIA A800 40GB Active" and g.memory_bytes == 40960 * MiB
    assert g.peak_tflops == {k: None for k in PEAK_DTYPES} and not g.known
    assert g.bandwidth_bytes_per_s is None and g.bf16 is True
    old = gpu_from_nvml(NvmlRecord(name="Tesla P100-PCIE-16GB", memory_total_bytes=16280 * MiB, compute_capability=(6, 0)))
    assert old.bf16 is False


# ---------------------------------------------------------------- the real probe


def test_probe_real_machine_never_raises():
    p = probe()
    d = p.to_dict()
    assert json.loads(json.dumps(d)) == d
    if p.available:  # a machine with a GPU
        assert p.reason is None and d["count"] == len(p.devices) > 0
        for dev in p.devices:
            assert dev.memory_total_bytes > 0 and dev.gpu.memory_bytes == dev.memory_total_bytes
    else:  # this machine: nvidia-ml-py installed, no driver
        assert p.devices == () and d["devices"] == [] and d["available"] is False
        assert isinstance(p.reason, str) and p.reason


def test_resolve_gpu():
    assert resolve_gpu("4090").name == "RTX 4090"
    with pytest.raises(ForgeError, match="no GPU found.*forge-advisor gpus"):
        resolve_gpu("auto", probe_fn=lambda: Probe(reason="no NVIDIA driver"))
    real = probe()
    if not real.available:
        with pytest.raises(ForgeError, match="no GPU found"):
            resolve_gpu("auto")
    else:
        assert resolve_gpu("auto") == real.devices[0].gpu


# ---------------------------------------------------------------- CLI (subprocess)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forge_advisor.cli.main", *args],
        capture_output=True, text=True, timeout=60, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    )


def test_cli_probe_exits_zero():
    r = cli("probe")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "Traceback" not in r.stderr


def test_cli_probe_json_parses():
    r = cli("probe", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d) >= {"available", "reason", "devices"}
    if not d["available"]:
        assert d["devices"] == [] and d["reason"]


def test_cli_gpus_table_and_json():
    r = cli("gpus")
    assert r.returncode == 0, r.stderr
    assert "H100 SXM" in r.stdout and "RTX 4090" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    rows = json.loads(cli("gpus", "--json").stdout)["gpus"]
    assert len(rows) == len(gpu_catalog())
    found = json.loads(cli("gpus", "--search", "a100", "--json").stdout)["gpus"]
    assert len(found) == 4
    one = json.loads(cli("gpus", "h100", "sxm", "--json").stdout)["gpu"]
    assert one["name"] == "H100 SXM"


@pytest.mark.parametrize("name", ["no-such-gpu", "h100"])
def test_cli_bad_gpu_name_one_line_exit_2(name):
    r = cli("gpus", name)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in r.stderr


def test_no_torch_import():
    code = "import sys, forge_advisor.gpus as g; g.probe(); g.find_gpu('4090'); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr
