"""The memory levers: plan fields, their pricing direction and size, the accelerate configs
the runtime loads, host memory in `probe`, and the one-line refusals."""

from __future__ import annotations

import pytest

from forge_advisor.errors import ForgeError
from forge_advisor.estimate import estimate
from forge_advisor.gpus.probe import parse_meminfo, probe
from forge_advisor.levers import lever_problem
from forge_advisor.plan import Plan

MODEL = "meta-llama/Llama-3.1-8B"
GiB = 1 << 30


def test_defaults_keep_todays_plan():
    p = Plan()
    assert (p.use_liger_kernel, p.activation_offloading, p.offload_optimizer, p.offload_params) == (False,) * 4
    assert p.bnb_4bit_quant_storage == "uint8"
    assert Plan.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"offload_optimizer": True}, "offload_optimizer=True with distributed='none'"),
        ({"offload_optimizer": True, "num_gpus": 2, "distributed": "fsdp"}, "DeepSpeed zero2/zero3"),
        ({"offload_params": True, "num_gpus": 2, "distributed": "zero2"}, "only sharded parameters"),
        ({"bnb_4bit_quant_storage": "int4"}, "bnb_4bit_quant_storage='int4' is not one of"),
        ({"use_liger_kernel": "yes"}, "use_liger_kernel='yes' must be true or false"),
    ],
)
def test_bad_lever_fields_name_the_value(fields, message):
    with pytest.raises(ForgeError, match=message):
        Plan(**fields)


def test_fused_cross_entropy_removes_the_logits():
    """The issue's figure: Llama-3.1-8B, 4 × 1024 tokens: the logits and their fp32 loss
    buffers are 5.9 GiB = 4096 × 128,256 × 12 B (log-softmax backward: 3 fp32 copies).
    Liger's chunk is next_pow2(4096 / ceil(128256/4096)) = 128 rows, a 31 MiB bf16 tile."""
    plan = Plan(method="lora", per_device_train_batch_size=4, max_length=1024)
    base = estimate(MODEL, plan, gpu="RTX 4090")
    liger = estimate(MODEL, plan.with_(use_liger_kernel=True), gpu="RTX 4090")
    assert base.breakdown["logits_and_loss"] == 4096 * 128_256 * 12
    assert liger.breakdown["logits_and_loss"] <= 128 * 128_256 * 2 + 128 * 4096 * 2
    assert base.peak_allocated_bytes - liger.peak_allocated_bytes > 4 * GiB


def test_activation_offloading_moves_kept_activations_off_the_gpu():
    plan = Plan(method="lora", gradient_checkpointing=False, per_device_train_batch_size=2, max_length=2048)
    on = estimate(MODEL, plan.with_(activation_offloading=True), gpu="RTX 4090")
    off = estimate(MODEL, plan, gpu="RTX 4090")
    # without checkpointing 32 layers keep ~20 GiB; offloaded, the GPU keeps what the tail saves
    assert off.breakdown["activations"] > 15 * GiB
    assert on.breakdown["activations"] < off.breakdown["activations"] / 10
    assert on.peak_allocated_bytes < off.peak_allocated_bytes


def test_fsdp_qlora_shards_the_4bit_base():
    """Llama-3.1-70B on 2 GPUs: the 4-bit linears (~35 GB packed) shard only with a float
    storage; uint8 keeps them whole on each GPU (accelerate excludes them from fully_shard)."""
    plan = Plan(method="qlora", num_gpus=2, distributed="fsdp", lora_target_modules="all-linear",
                per_device_train_batch_size=1, max_length=1024)
    whole = estimate("meta-llama/Llama-3.1-70B", plan, gpu="RTX 4090")
    sharded = estimate("meta-llama/Llama-3.1-70B", plan.with_(bnb_4bit_quant_storage="bfloat16"), gpu="RTX 4090")
    assert whole.breakdown["weights"] - sharded.breakdown["weights"] > 15 * GiB
    offloaded = estimate("meta-llama/Llama-3.1-70B", plan.with_(bnb_4bit_quant_storage="bfloat16", offload_params=True),
                         gpu="RTX 4090")
    assert offloaded.breakdown["weights"] == 0
    assert offloaded.peak_allocated_bytes < 22 * GiB  # the famous two-consumer-GPU run


def test_offload_optimizer_frees_the_states():
    plan = Plan(method="full", dtype="bf16", num_gpus=4, distributed="zero3", per_device_train_batch_size=1)
    on = estimate(MODEL, plan.with_(offload_optimizer=True), gpu="H100 SXM")
    off = estimate(MODEL, plan, gpu="H100 SXM")
    assert off.breakdown["optimizer_states"] > 7 * GiB
    assert on.breakdown["optimizer_states"] == 0


def test_accelerate_parses_the_lever_configs(tmp_path):
    """The YAML the runtime loads: accelerate's own parser, then the FSDP plugin it builds
    from the launcher's environment (as `accelerate launch` exports it)."""
    from accelerate.commands.config.config_args import ClusterConfig

    from forge_advisor.train.accelerate_config import accelerate_config, write_accelerate_config

    fsdp_qlora = Plan(method="qlora", num_gpus=2, distributed="fsdp", bnb_4bit_quant_storage="bfloat16",
                      offload_params=True)
    cfg = ClusterConfig.from_yaml_file(str(write_accelerate_config(fsdp_qlora, tmp_path / "fsdp.yaml")))
    assert cfg.distributed_type == "FSDP" and cfg.fsdp_config["fsdp_offload_params"] is True
    assert cfg.fsdp_config["fsdp_cpu_ram_efficient_loading"] is True
    zero = Plan(method="lora", num_gpus=2, distributed="zero3", offload_optimizer=True, offload_params=True)
    cfg = ClusterConfig.from_yaml_file(str(write_accelerate_config(zero, tmp_path / "zero3.yaml")))
    assert cfg.deepspeed_config["offload_optimizer_device"] == "cpu"
    assert cfg.deepspeed_config["offload_param_device"] == "cpu"
    assert accelerate_config(Plan(num_gpus=2, distributed="zero2"))["deepspeed_config"]["offload_optimizer_device"] == "none"


def test_fsdp_plugin_reads_offload_from_the_launch_environment(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import CPUOffloadPolicy

    from forge_advisor.train.accelerate_config import accelerate_config

    fsdp = accelerate_config(Plan(num_gpus=2, distributed="fsdp", offload_params=True))["fsdp_config"]
    # accelerate launch exports each fsdp_config key as FSDP_<KEY> (commands/launch.py)
    for key, value in fsdp.items():
        monkeypatch.setenv(key.upper(), str(value).lower() if isinstance(value, bool) else str(value))
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert isinstance(plugin.cpu_offload, CPUOffloadPolicy)


def test_fsdp_qlora_without_storage_is_refused_in_one_line(tmp_path):
    from forge_advisor.train.accelerate_config import write_accelerate_config

    plan = Plan(method="qlora", num_gpus=2, distributed="fsdp")
    with pytest.raises(ForgeError, match="needs bnb_4bit_quant_storage=bfloat16"):
        write_accelerate_config(plan, tmp_path / "x.yaml")
    assert not (tmp_path / "x.yaml").exists()
    msg = lever_problem(plan, training=False)
    assert msg is not None and "\n" not in msg and "bnb_4bit_quant_storage=bfloat16" in msg
    with pytest.raises(ForgeError, match="int8 base cannot be sharded"):
        write_accelerate_config(Plan(method="lora_8bit", num_gpus=2, distributed="zero3"), tmp_path / "y.yaml")


def test_liger_and_host_memory_refusals():
    plan = Plan(use_liger_kernel=True)
    assert "needs a CUDA GPU" in lever_problem(plan, training=True, has_cuda=False)
    assert lever_problem(plan, training=False, has_cuda=False) is None  # estimating for another machine
    off = Plan(method="full", num_gpus=2, distributed="zero3", offload_optimizer=True)
    msg = lever_problem(off, training=True, host_memory_needed=100 * GiB, host_memory_available=64 * GiB)
    assert msg == "offload_optimizer needs 100.0 GiB of host memory, 64.0 GiB is available"
    assert lever_problem(off, training=True, host_memory_needed=10 * GiB, host_memory_available=64 * GiB) is None


def test_probe_reads_host_memory():
    text = "MemTotal:       131891292 kB\nMemFree:         1000 kB\nMemAvailable:   120000000 kB\n"
    assert parse_meminfo(text) == (131891292 * 1024, 120000000 * 1024)
    assert parse_meminfo("MemFree: 5 kB\n") == (None, None)
    p = probe()
    with open("/proc/meminfo") as fh:
        first = fh.readline().split()
    assert p.host_memory_total_bytes == int(first[1]) * 1024
    assert p.to_dict()["host_memory_total_bytes"] == p.host_memory_total_bytes


def test_activation_offloading_against_fake_cuda_truth():
    """GPU-side bytes of trl's activation offloading, measured on the fake CUDA device
    (benches/results/truth_offload.json: each offloaded case with its twin without)."""
    import json
    from pathlib import Path

    from benches.truth.faketensor import config_at_depth
    from forge_advisor.shapes import shape_from_config

    truth = Path(__file__).resolve().parent.parent / "benches" / "results" / "truth_offload.json"
    cases = {c["name"]: c for c in json.loads(truth.read_text()).values() if "result" in c}
    offloaded = [c for c in cases.values() if c["plan"].get("activation_offloading")]
    assert len(offloaded) >= 6
    for case in offloaded:
        shape = shape_from_config(config_at_depth(case["config"], case["num_layers"]), case["name"])
        est = estimate(shape, Plan.from_dict(case["plan"]))
        measured = case["result"]["peak_allocated_bytes"]
        assert abs(est.peak_allocated_bytes - measured) / measured < 0.02, case["name"]
        twin = cases[case["name"].replace("-offload", "-base")]["result"]["peak_allocated_bytes"]
        assert measured <= twin  # offloading never adds GPU bytes in these cases
