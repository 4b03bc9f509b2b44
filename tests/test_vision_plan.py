"""Vision-language plans: the plan fields in every command, images inside ``max_length``, the
tower's mechanisms (what is in the autograd graph), and bad input.

Golden counts come from transformers on the meta device (the tower's parameters) and from the
processors' arithmetic (image_processing_qwen2_vl.py); the accuracy of the priced memory is the
fake-tensor bench's (benches/cases_accuracy.json, ``python -m benches.accuracy``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from forge_advisor import estimate, get_preset
from forge_advisor.cli.main import build_parser
from forge_advisor.cli.plan_args import plan_overrides, preset_field_overrides
from forge_advisor.errors import ForgeError
from forge_advisor.plan import Plan
from forge_advisor.presets.base import BasePreset
from forge_advisor.shapes import load_shape

CLI = [sys.executable, "-m", "forge_advisor.cli.main"]
QWEN = "Qwen/Qwen2.5-VL-7B-Instruct"
GEMMA = "google/gemma-3-4b-it"
VISION = ["--max-pixels", "1003520", "--images-per-sample", "2", "--no-freeze-vision-tower"]
WANT = {"max_pixels": 1_003_520, "images_per_sample": 2, "freeze_vision_tower": False}


@pytest.mark.parametrize("command", ["estimate", "recommend", "fit", "train", "tui"])
def test_every_command_takes_the_vision_flags(command: str) -> None:
    args = build_parser().parse_args([command, "--model", QWEN, *VISION])
    got = preset_field_overrides(args) if command == "train" else plan_overrides(args)
    assert {k: got[k] for k in WANT} == WANT
    bare = build_parser().parse_args([command, "--model", QWEN, "--freeze-vision-tower"])
    got = preset_field_overrides(bare) if command == "train" else plan_overrides(bare)
    assert got["freeze_vision_tower"] is True


def test_preset_and_plan_carry_the_vision_fields() -> None:
    preset = get_preset("lora", max_pixels=401_408, images_per_sample=3, freeze_vision_tower=False)
    plan = preset.to_plan(precision="bf16")
    assert (plan.max_pixels, plan.images_per_sample, plan.freeze_vision_tower) == (401_408, 3, False)
    back = BasePreset.from_plan(plan)
    assert (back.max_pixels, back.images_per_sample, back.freeze_vision_tower) == (401_408, 3, False)
    assert back.to_plan(precision="bf16") == plan


@pytest.mark.parametrize("fields", [{"max_pixels": 783}, {"max_pixels": (1 << 28) + 1}, {"images_per_sample": 1025},
                                    {"images_per_sample": -1}])
def test_absurd_image_fields_are_refused_by_plan_and_preset(fields: dict) -> None:
    name = next(iter(fields))
    with pytest.raises(ForgeError) as plan_err:
        Plan(**fields)
    assert plan_err.value.field == name
    with pytest.raises(ForgeError):
        get_preset("lora", **fields)


def test_image_tokens_count_inside_max_length() -> None:
    """trl truncates the processor's expanded ids at max_length, image tokens included: two
    1280-token images need at least 2560 tokens (rust/src/vision.rs `image_plan`)."""
    with pytest.raises(ForgeError) as err:
        estimate(QWEN, "lora", max_pixels=1_003_520, images_per_sample=2, max_length=2048)
    assert err.value.field == "max_length" and "2560" in str(err.value)
    r = estimate(QWEN, "lora", max_pixels=1_003_520, images_per_sample=2, max_length=2560)
    assert r.vision is not None
    # smart_resize to multiples of 28 within max_pixels: 1,003,520 / 28² = 1280 tokens of 2×2 patches
    assert (r.vision["patches_per_sample"], r.vision["image_tokens_per_sample"]) == (2 * 5120, 2 * 1280)


def test_unset_max_pixels_prices_the_largest_image_that_fits_and_says_so() -> None:
    r = estimate(QWEN, "lora", max_length=1024)
    assert r.vision is not None and r.vision["image_tokens_per_sample"] == 1024
    assert r.vision["patches_per_sample"] == 4096
    assert any("max_pixels unset" in n for n in r.vision["notes"])


def test_a_fixed_size_processor_ignores_max_pixels_and_says_so() -> None:
    r = estimate(GEMMA, "lora", max_pixels=1_003_520)
    s = estimate(GEMMA, "lora")
    assert r.peak_allocated_bytes == s.peak_allocated_bytes
    assert r.vision is not None and (r.vision["patches_per_sample"], r.vision["image_tokens_per_sample"]) == (4096, 256)
    assert any("does not change" in n for n in r.vision["notes"])


def test_a_frozen_tower_outside_the_graph_saves_nothing() -> None:
    """Without checkpointing nothing hooks the tower's input (pixel values never require grad):
    its blocks keep nothing, the activations equal those of text-only samples, and only the
    tower's forward FLOPs are added. Under checkpointing `enable_input_require_grads` hooks the
    patch embedding, so every block keeps its checkpoint input."""
    kw = dict(max_pixels=401_408, max_length=1024, per_device_train_batch_size=2)
    nogc = estimate(QWEN, "lora", gradient_checkpointing=False, gpu="H100 SXM", **kw)
    text = estimate(QWEN, "lora", gradient_checkpointing=False, gpu="H100 SXM", **{**kw, "images_per_sample": 0})
    assert nogc.vision is not None and nogc.vision["kept_bytes"] == 0
    assert nogc.breakdown["activations"] == text.breakdown["activations"]
    assert nogc.tokens_per_second < text.tokens_per_second
    gc = estimate(QWEN, "lora", gpu="H100 SXM", **kw)
    assert gc.vision is not None
    # 32 blocks keep their bf16 input, 1280 wide, per patch: 512 tokens × 4 patches × 2 samples;
    # besides, the hooked leaves and the merger's norm and GELU inputs (under a fifth of it)
    blocks = 32 * 2 * 1280 * 2048 * 2
    assert blocks < gc.vision["kept_bytes"] < blocks * 1.2


def test_the_trainable_tower_counts_as_transformers_counts_it() -> None:
    """Full fine-tuning with the tower unfrozen trains every parameter; frozen, all but the
    tower's (the meta-device count of `model.visual`, less its merger)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    shape = load_shape(QWEN)
    from forge_advisor.shapes.catalog import find_catalog_model

    entry = find_catalog_model(QWEN)
    assert entry is not None
    fields = dict(entry.config)
    cfg = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        model = transformers.AutoModelForImageTextToText.from_config(cfg)
    visual = model.model.visual
    tower = sum(p.numel() for p in visual.parameters()) - sum(p.numel() for p in visual.merger.parameters())
    unfrozen = estimate(shape, "sft", freeze_vision_tower=False, max_pixels=401_408)
    frozen = estimate(shape, "sft", max_pixels=401_408)
    assert unfrozen.raw["trainable_parameters"] == shape.num_parameters
    assert frozen.raw["trainable_parameters"] == shape.num_parameters - tower


@pytest.mark.parametrize("argv", [
    ["estimate", "--model", "meta-llama/Llama-3.1-8B", "--max-pixels", "1003520"],
    ["recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--images-per-sample", "2"],
    ["fit", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--no-freeze-vision-tower"],
    ["estimate", "--model", QWEN, "--max-pixels", "99999999999"],
    ["estimate", "--model", QWEN, "--images-per-sample", "5000"],
    ["recommend", "--model", QWEN, "--gpu", "RTX 4090", "--images-per-sample", "4", "--max-pixels", "1003520", "--max-length", "2048"],
])
def test_bad_vision_input_is_one_line_and_exit_2(argv: list[str]) -> None:
    out = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr


def test_recommend_sizes_the_default_length_for_the_images_and_json_carries_them() -> None:
    out = subprocess.run([*CLI, "recommend", "--model", QWEN, "--gpu", "RTX 4090", "--max-pixels", "1003520",
                          "--images-per-sample", "2", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    best = rec["recommendations"][0]
    plan = best["estimate"]["plan"]
    assert (plan["max_pixels"], plan["images_per_sample"]) == (1_003_520, 2)
    assert "--max-pixels 1003520 --images-per-sample 2" in best["command"]  # the train command carries them
    assert plan["max_length"] == 2048 + 2 * 1280  # text plus the images' tokens
    assert best["estimate"]["fits"] and best["estimate"]["vision"]["image_tokens_per_sample"] == 2560


def test_qwen25_window_attention_blocks_cost_less_than_full_ones() -> None:
    """Qwen2.5-VL attends within 112-px windows (64 patches) except in fullatt_block_indexes:
    the same tower with every block attending over the whole image costs more FLOPs, and the
    memory does not change (SDPA keeps the same tensors per patch either way)."""
    from dataclasses import replace

    shape = load_shape(QWEN)
    assert shape.vision is not None and shape.vision.window_patches == 64
    assert shape.vision.full_attention_blocks == (7, 15, 23, 31)
    every_block_full = replace(shape, vision=replace(shape.vision, window_patches=0))
    kw = dict(max_pixels=1_003_520, max_length=2048, gpu="H100 SXM")
    windowed, full = estimate(shape, "lora", **kw), estimate(every_block_full, "lora", **kw)
    assert windowed.raw["flops_per_token"] < full.raw["flops_per_token"]
    assert windowed.peak_allocated_bytes == full.peak_allocated_bytes


def test_activation_offloading_moves_the_tower_blocks_to_the_host() -> None:
    """trl's offloading hooks every saved tensor of the step, the tower's blocks' included:
    their checkpoint inputs leave the GPU and the host holds them."""
    kw = dict(max_pixels=401_408, max_length=1024, per_device_train_batch_size=2)
    on_gpu = estimate(QWEN, "lora", **kw)
    offloaded = estimate(QWEN, "lora", activation_offloading=True, **kw)
    text_offloaded = estimate(QWEN, "lora", activation_offloading=True, **{**kw, "images_per_sample": 0})
    assert on_gpu.vision is not None and offloaded.vision is not None
    assert offloaded.vision["kept_bytes"] < on_gpu.vision["kept_bytes"] / 4
    assert offloaded.raw["host_memory_bytes"] > text_offloaded.raw["host_memory_bytes"]


def test_a_tower_nothing_hooks_stays_out_of_the_graph_under_checkpointing() -> None:
    """Qwen3-VL's vision model names no input embedding, so `enable_input_require_grads` skips
    it (tests/test_shapes_vlm.py checks that against transformers): frozen, its blocks keep
    nothing even under checkpointing; what remains is the language model's hooked embedding
    output (bf16, 4096 wide, per token), which `masked_scatter` keeps apart from layer 0's input."""
    r = estimate("Qwen/Qwen3-VL-8B-Instruct", "lora", max_pixels=401_408, max_length=1024, per_device_train_batch_size=2)
    assert r.vision is not None and r.vision["kept_bytes"] == 2 * 4096 * 1024 * 2


# -- Llama 3.2 Vision (mllama): cross-attention over tiled images ------------------------------

MLLAMA = "meta-llama/Llama-3.2-11B-Vision-Instruct"
MLLAMA_TINY = dict(model_type="mllama", image_token_index=299,
                   text_config=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=300, cross_attention_layers=[1],
                                    pad_token_id=0, bos_token_id=1, eos_token_id=2),
                   vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_global_layers=1,
                                      attention_heads=4, image_size=56, patch_size=14, vision_output_dim=96,
                                      intermediate_layers_indices=[0, 1]))


@pytest.mark.parametrize("size", [(30, 20), (56, 56), (400, 90), (90, 400)])
def test_mllama_tiles_and_vision_states_are_the_processor_and_model_arithmetic(size: tuple[int, int]) -> None:
    """MllamaImageProcessor pads every image to max_image_tiles tiles whatever its size
    (pad_batches_and_tiles), the tower runs (56/14)² + 1 = 17 positions per tile padded to 24,
    and the cross-attention layers read tiles × 17 vision states: the parser's rule is what the
    real processor and a real forward of the tiny model give."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    from forge_advisor.shapes import shape_from_config

    shape = shape_from_config(json.loads(json.dumps(MLLAMA_TINY)), "tiny")
    assert shape.vision is not None
    rule = shape.vision.images
    proc = transformers.MllamaImageProcessor(size={"height": 56, "width": 56}, max_image_tiles=4)
    batch = proc(images=[[Image.new("RGB", size)]], return_tensors="pt")
    assert batch["pixel_values"].shape[2] == rule.tiles == 4
    fields = dict(MLLAMA_TINY)
    cfg = transformers.AutoConfig.for_model(fields.pop("model_type"), **json.loads(json.dumps(fields)))
    model = transformers.AutoModelForImageTextToText.from_config(cfg).eval()
    seen: list[int] = []
    model.model.vision_model.transformer.layers[0].register_forward_pre_hook(
        lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).shape[1]), with_kwargs=True)
    with torch.no_grad():
        out = model.model.vision_model(batch["pixel_values"], batch["aspect_ratio_ids"], batch["aspect_ratio_mask"])
    assert seen == [rule.patches]  # 4 tiles × 24 positions in one attention
    tiles, positions = out.last_hidden_state.shape[2:4]
    assert tiles * positions == rule.vision_tokens == 4 * 17
    assert rule.per_image(10**7) == rule.per_image(None) == (rule.patches, 1)  # one <|image|> token


def test_mllama_estimate_reports_the_cross_attention_states_and_ignores_max_pixels() -> None:
    r = estimate(MLLAMA, "lora", images_per_sample=2, max_length=1024, max_pixels=401_408)
    s = estimate(MLLAMA, "lora", images_per_sample=2, max_length=1024)
    assert r.peak_allocated_bytes == s.peak_allocated_bytes
    assert r.vision is not None
    # 560 px tiles of 14 px patches: 1601 positions, padded to 1608; 4 tiles per image
    assert r.vision["patches_per_sample"] == 2 * 4 * 1608
    assert r.vision["vision_states_per_sample"] == 2 * 4 * 1601
    assert r.vision["image_tokens_per_sample"] == 2
    assert any("does not change" in n for n in r.vision["notes"])
    with pytest.raises(ForgeError) as err:
        estimate(MLLAMA, "lora", images_per_sample=600, max_length=512)
    assert err.value.field == "max_length"


def test_mllama_tower_is_never_checkpointed() -> None:
    """MllamaVisionEncoderLayer is a plain nn.Module: under checkpointing the hooked patch
    embedding puts the frozen tower in the graph and every block keeps all it saved (not just
    its input); without checkpointing a frozen tower under LoRA keeps nothing, and what is left
    is the cross-attention mask [1, 1, T, V] in bf16 that the cross layers' SDPA keeps."""
    kw = dict(max_length=1024, per_device_train_batch_size=1, gpu="H100 SXM")
    gc = estimate(MLLAMA, "lora", **kw)
    nogc = estimate(MLLAMA, "lora", gradient_checkpointing=False, **kw)
    assert gc.vision is not None and nogc.vision is not None
    assert nogc.vision["kept_bytes"] == 2 * 1024 * (4 * 1601)
    # 40 blocks × 6432 positions keep at least their two LayerNorm inputs, q/k/v/out and the
    # GELU input (bf16: 2·(2·1280 + 4·1280 + 5120) bytes per position): far above 40 inputs
    floor = 40 * 6432 * 2 * (2 * 1280 + 4 * 1280 + 5120)
    assert gc.vision["kept_bytes"] > floor > 40 * 6432 * 2 * 1280 * 5
