"""Video plans (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): the plan fields in every command, the video
tokens inside ``max_length``, and bad input.

Golden token counts come from transformers' own video processors run on synthetic frames
(numpy arrays, nothing downloaded): ``video_grid_thw.prod() // merge²`` is what
``replace_video_token`` expands a video into (processing_qwen2_vl.py), and Qwen3-VL's group
times from its processor's ``_calculate_timestamps``. The priced memory's accuracy is the
fake-tensor bench's (benches/cases_accuracy.json, the ``*-video*`` cases)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from forge_advisor import estimate
from forge_advisor.cli.main import build_parser
from forge_advisor.cli.plan_args import plan_overrides, preset_field_overrides
from forge_advisor.errors import ForgeError
from forge_advisor.plan import Plan
from forge_advisor.presets.base import BasePreset
from forge_advisor.shapes import load_shape

CLI = [sys.executable, "-m", "forge_advisor.cli.main"]
QWEN25 = "Qwen/Qwen2.5-VL-7B-Instruct"
QWEN3 = "Qwen/Qwen3-VL-8B-Instruct"
VIDEO = ["--videos-per-sample", "2", "--num-frames", "8", "--video-max-pixels", "200704"]
WANT = {"videos_per_sample": 2, "num_frames": 8, "video_max_pixels": 200_704}


@pytest.mark.parametrize("command", ["estimate", "recommend", "fit", "train", "tui"])
def test_every_command_takes_the_video_flags(command: str) -> None:
    args = build_parser().parse_args([command, "--model", QWEN25, *VIDEO])
    got = preset_field_overrides(args) if command == "train" else plan_overrides(args)
    assert {k: got[k] for k in WANT} == WANT


def test_preset_and_plan_carry_the_video_fields() -> None:
    from forge_advisor import get_preset

    plan = get_preset("lora", **WANT).to_plan(precision="bf16")
    assert (plan.videos_per_sample, plan.num_frames, plan.video_max_pixels) == (2, 8, 200_704)
    assert BasePreset.from_plan(plan).to_plan(precision="bf16") == plan


@pytest.mark.parametrize("fields", [{"videos_per_sample": -1}, {"videos_per_sample": 1025}, {"num_frames": 0},
                                    {"num_frames": 769}, {"video_max_pixels": 783}, {"video_max_pixels": (1 << 32) + 1}])
def test_absurd_video_fields_are_refused_with_the_value(fields: dict) -> None:
    name, value = next(iter(fields.items()))
    with pytest.raises(ForgeError) as err:
        Plan(**fields)
    assert err.value.field == name and str(value) in str(err.value)


def _qwen2_grid(frames: int, h: int, w: int, max_pixels: int) -> list[int]:
    import numpy as np
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    proc = Qwen2VLVideoProcessor(max_pixels=max_pixels, cap_pixels_per_frame=False)
    out = proc(videos=[np.zeros((frames, h, w, 3), dtype=np.uint8)], return_tensors="pt")
    return out["video_grid_thw"][0].tolist()


@pytest.mark.parametrize(("frames", "h", "w", "max_pixels"), [
    (8, 448, 448, 200_704),   # 16×16 merged tokens per frame group exactly at the cap
    (5, 448, 448, 200_704),   # an odd count: patchify repeats the last frame (3 groups)
    (16, 720, 1280, 602_112),  # the processor's default cap, a 16:9 frame shrunk below it
    (4, 1080, 1920, 100_352),  # the video processor's min_pixels as the cap
])
def test_qwen25_video_tokens_bound_the_processors(frames: int, h: int, w: int, max_pixels: int) -> None:
    """The core prices the largest video smart_resize allows (⌈frames/2⌉ groups of
    ⌊max_pixels/28²⌋ tokens): equal to the processor's count when the frame lands on the cap,
    never below it, and within one row of merged tokens per group of it otherwise."""
    t, gh, gw = _qwen2_grid(frames, h, w, max_pixels)
    real = t * gh * gw // 4
    ours = load_shape(QWEN25).native.video_tokens(frames, max_pixels)
    assert t == -(-frames // 2)
    assert real <= ours
    if h * w == max_pixels:
        assert ours == real
    assert ours - real <= t * (max(gh, gw) // 2 + 1) * 2, (ours, real)


def test_qwen3_budget_spans_the_frames_and_timestamps_follow_the_processor() -> None:
    """Qwen3-VL's video max_pixels (786,432 = 768·32²) covers all frames: 8 frames of 256×384
    = 98,304 px fill it exactly, grid (4, 16, 24) → 384 tokens; its processor then writes
    ``<t seconds>`` + vision_start/end per group, t from ``_calculate_timestamps`` on frames
    sampled at the processor's fps = 2."""
    import numpy as np
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    proc = Qwen3VLVideoProcessor(cap_pixels_per_frame=False, do_sample_frames=False)
    shape = load_shape(QWEN3)
    for frames in (8, 40):
        h, w = (256, 384) if frames == 8 else (96, 192)  # 40 × 96·192 = 737,280 ≤ 786,432
        grid = proc(videos=[np.zeros((frames, h, w, 3), dtype=np.uint8)], return_tensors="pt")["video_grid_thw"][0].tolist()
        real = grid[0] * grid[1] * grid[2] // 4
        times = Qwen3VLProcessor._calculate_timestamps(None, list(range(frames)), float(proc.fps), 2)
        # "<", the integer digits, ".", one decimal, " seconds", ">" and the group's vision_start/end
        text = sum(len(str(int(s))) + 7 for s in times)
        assert len(times) == grid[0]
        ours = shape.native.video_tokens(frames)
        if frames == 8:
            assert ours == real + text == 4 * 96 + 4 * 8
        else:  # the bound: 786,432 / 40 = 19,660 px → 19 tokens per group; the processor's frame is 18
            assert ours - text >= real and ours - text == grid[0] * (786_432 // 40 // 1024)


def test_video_tokens_count_inside_max_length_and_in_the_report() -> None:
    """Two videos of 8 frames at 256 tokens per group: 2 × 4 × 256 = 2048 tokens, which trl
    counts inside max_length (it truncates the expanded ids) — 2047 is refused."""
    with pytest.raises(ForgeError) as err:
        estimate(QWEN25, "lora", images_per_sample=0, **WANT, max_length=2047)
    assert err.value.field == "max_length" and "2048" in str(err.value)
    r = estimate(QWEN25, "lora", images_per_sample=0, **WANT, max_length=4096)
    assert r.vision is not None
    assert r.vision["video_tokens_per_sample"] == 2048 and r.vision["image_tokens_per_sample"] == 0
    assert r.vision["patches_per_sample"] == 2 * 4 * 1024
    both = estimate(QWEN25, "lora", images_per_sample=1, max_pixels=200_704, **WANT, max_length=4096)
    assert both.vision["image_tokens_per_sample"] == 256 and both.vision["patches_per_sample"] == 2 * 4 * 1024 + 1024
    assert both.peak_allocated_bytes > r.peak_allocated_bytes


def test_more_frames_cost_more_tower_memory_when_the_tower_trains() -> None:
    few = estimate(QWEN25, "sft", images_per_sample=0, videos_per_sample=1, num_frames=4, video_max_pixels=200_704,
                   freeze_vision_tower=False, max_length=4096)
    many = estimate(QWEN25, "sft", images_per_sample=0, videos_per_sample=1, num_frames=12, video_max_pixels=200_704,
                    freeze_vision_tower=False, max_length=4096)
    assert many.vision["kept_bytes"] > 2 * few.vision["kept_bytes"]


def test_qwen3_needs_a_whole_temporal_patch() -> None:
    """Qwen3-VL's smart_resize raises for fewer frames than temporal_patch_size."""
    with pytest.raises(ForgeError) as err:
        estimate(QWEN3, "lora", images_per_sample=0, videos_per_sample=1, num_frames=1)
    assert err.value.field == "num_frames"


@pytest.mark.parametrize("argv", [
    ["estimate", "--model", "google/gemma-3-4b-it", "--videos-per-sample", "1"],
    ["estimate", "--model", "llava-hf/llava-1.5-7b-hf", "--num-frames", "8"],
    ["recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--videos-per-sample", "1"],
    ["fit", "--model", "google/gemma-3-4b-it", "--gpu", "RTX 4090", "--video-max-pixels", "200704"],
    ["estimate", "--model", QWEN25, "--videos-per-sample", "5000"],
    ["estimate", "--model", QWEN25, "--num-frames", "0"],
    ["estimate", "--model", QWEN25, "--images-per-sample", "0", *VIDEO, "--max-length", "1024"],
])
def test_bad_video_input_is_one_line_and_exit_2(argv: list[str]) -> None:
    out = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr
