"""`train` with videos: a tiny random Qwen2.5-VL built from a config, short videos of PNG
frames made here, records with ``messages`` + ``videos``. Real transformers/peft/trl, CPU."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from forge_advisor.shapes import load_shape
from forge_advisor.train import run
from tests.test_train_vision import FAST, Watch, build_qwen25_vl

VIDEO_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{% if m['content'] is string %}{{ m['content'] }}{% else %}"
                  "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
                  "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
                  "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|eos|>\n{% endfor %}")
# 56 × 56 frames at video_max_pixels 3136 (= 56², min_pixels lowered to it): smart_resize keeps
# 56 × 56 → 4 × 4 patches of 14 px per frame group, 4 tokens after the 2 × 2 merge
PX = 56 * 56


@pytest.fixture(scope="module")
def qwen_video(tmp_path_factory):
    folder = build_qwen25_vl(tmp_path_factory.mktemp("qwenv") / "model")
    proc = AutoProcessor.from_pretrained(folder)
    proc.chat_template = VIDEO_TEMPLATE
    proc.save_pretrained(folder)
    return folder


def write_videos(folder, frames: tuple[int, ...] = (4, 5, 4)) -> str:
    """One video per record, ``frames[i]`` PNG frames of 56 × 56 each."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, n in enumerate(frames):
        paths = []
        for f in range(n):
            p = folder / "frames" / f"{i}_{f}.png"
            p.parent.mkdir(exist_ok=True)
            Image.new("RGB", (56, 56), (30 * f, 200 - 40 * i, 90)).save(p)
            paths.append(str(p.relative_to(folder)))
        content = [{"type": "video"}, {"type": "text", "text": f"what happens in clip {i}?"}]
        rows.append({"messages": [{"role": "user", "content": content},
                                  {"role": "assistant", "content": [{"type": "text", "text": f"motion {i}"}]}],
                     "videos": [paths]})
    path = folder / "video.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_lora_trains_on_videos_and_the_tower_sees_frame_groups(qwen_video, tmp_path):
    data = write_videos(tmp_path / "d")
    watch = Watch()
    over = {**FAST, "max_steps": 3, "video_max_pixels": PX, "videos_per_sample": 1, "num_frames": 5}
    r = run(qwen_video, data, "lora", tmp_path / "out", overrides=over, callbacks=[watch], quiet=True)
    assert r.status == "completed" and r.global_step == 3 and torch.isfinite(torch.tensor(r.final_loss))
    # 4 frames → 2 groups, 5 frames → 3 (patchify repeats the last frame); 4 × 4 patches each
    assert watch.calls == 3
    assert sorted(g.tolist()[0][0] for g in watch.grids) == [2, 2, 3]
    assert all(g.tolist()[0][1:] == [4, 4] for g in watch.grids)


def test_the_collators_video_tokens_are_the_cores_count(qwen_video, tmp_path):
    """The batch the runtime builds holds as many <|video_pad|> tokens as rust/src/video.rs
    prices for the same frames and video_max_pixels (⌈frames/2⌉ × 56²/28² tokens)."""
    from forge_advisor.train.video import apply_video_max_pixels, video_token_id
    from forge_advisor.train.vision import VisionCollator

    data = write_videos(tmp_path / "d", frames=(4, 5))
    proc = AutoProcessor.from_pretrained(qwen_video)
    apply_video_max_pixels(proc, PX)
    config = json.loads((Path(qwen_video) / "config.json").read_text())
    collate = VisionCollator(proc, 512, config=config)
    rows = [json.loads(line) for line in open(data)]
    shape = load_shape(qwen_video)
    for row, frames in zip(rows, (4, 5), strict=True):
        rec = {"messages": row["messages"], "images": [], "where": "t",
               "videos": [[str(tmp_path / "d" / p) for p in row["videos"][0]]]}
        batch = collate([rec])
        got = int((batch["input_ids"] == video_token_id(proc, config)).sum())
        assert got == shape.native.video_tokens(frames, PX) == -(-frames // 2) * 4
        assert (batch["labels"][batch["input_ids"] == video_token_id(proc, config)] == -100).all()
        assert batch["pixel_values_videos"].shape[0] == -(-frames // 2) * 16


def test_videos_on_a_model_without_a_video_processor_are_refused(tmp_path):
    from tests.test_train_vision import build_gemma3

    gemma = build_gemma3(tmp_path / "g")
    data = write_videos(tmp_path / "d", frames=(2,))
    out = subprocess.run([sys.executable, "-m", "forge_advisor.cli.main", "train", "--model", gemma, "--data", data,
                          "--preset", "lora", "--output", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and "takes images only" in out.stderr


def test_data_report_counts_videos_and_frames(tmp_path, capsys):
    from forge_advisor.cli.main import main

    data = write_videos(tmp_path / "d", frames=(4, 6, 3))
    assert main(["data", "--model", "meta-llama/Llama-3.1-8B", "--data", data, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lengths"]["videos_per_sample"] == {"max": 1, "p50": 1, "total": 3, "max_frames": 6}
    assert main(["data", "--model", "meta-llama/Llama-3.1-8B", "--data", data]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the console wraps at its width
    assert "videos per sample: max 1 · typical (p50) 1 · 3 in all · at most 6 frames per video" in text


def test_a_video_block_without_its_video_is_refused(tmp_path):
    from forge_advisor.dataplan.records import inspect_data
    from forge_advisor.errors import ForgeError

    data = write_videos(tmp_path / "d", frames=(2,))
    row = json.loads(open(data).read())
    row["videos"] = []
    (tmp_path / "bad.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ForgeError, match=r"1 \{\"type\": \"video\"\} placeholder\(s\) but 0 video\(s\)"):
        inspect_data(tmp_path / "bad.jsonl")


def build_qwen3_vl(folder) -> str:
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    from tests.test_train_vision import _tokenizer

    tok, ids = _tokenizer(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    cfg = AutoConfig.for_model(
        "qwen3_vl",
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, rope_parameters={"rope_type": "default", "mrope_section": [2, 2, 4],
                                                          "mrope_interleaved": True, "rope_theta": 10000.0}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                           num_position_embeddings=16, deepstack_visual_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(0)
    AutoModelForImageTextToText.from_config(cfg).save_pretrained(folder)
    Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(patch_size=16), tokenizer=tok,
                     video_processor=Qwen3VLVideoProcessor(), chat_template=VIDEO_TEMPLATE).save_pretrained(folder)
    return str(folder)


def test_qwen3_vl_trains_on_videos_with_the_frames_as_given(tmp_path):
    """Qwen3-VL: 64 × 64 frames, video_max_pixels 4 frames × 64² (its budget spans the frames),
    each record's frames kept as given (no resampling): 4 frames → 2 groups of 4 × 4 patches."""
    model = build_qwen3_vl(tmp_path / "m")
    rows = []
    (tmp_path / "d").mkdir()
    for i in range(2):
        paths = []
        for f in range(4):
            Image.new("RGB", (64, 64), (50 * f, 90, 20 * i)).save(tmp_path / "d" / f"{i}_{f}.png")
            paths.append(f"{i}_{f}.png")
        rows.append({"messages": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "what moves?"}]},
                                  {"role": "assistant", "content": [{"type": "text", "text": f"clip {i}"}]}],
                     "videos": [paths]})
    data = tmp_path / "d" / "v.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    watch = Watch()
    over = {**FAST, "max_steps": 2, "video_max_pixels": 4 * 64 * 64, "videos_per_sample": 1, "num_frames": 4}
    r = run(model, str(data), "lora", tmp_path / "out", overrides=over, callbacks=[watch], quiet=True)
    assert r.status == "completed" and r.global_step == 2 and torch.isfinite(torch.tensor(r.final_loss))
    assert [g.tolist()[0] for g in watch.grids] == [[2, 4, 4], [2, 4, 4]]
