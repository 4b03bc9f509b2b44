"""Videos in the training runtime (Qwen2-VL, Qwen2.5-VL, Qwen3-VL).

**Data.** A chat record's ``videos`` (forge_advisor.dataplan.records ``VIDEOS_FIELD``): one
list of frame image files per ``{"type": "video"}`` block, paths relative to the data file —
the form the Qwen-VL processors take a video in (a list of frames). Every frame must exist
and decode its header before anything is written.

**Batches.** trl 1.x's ``DataCollatorForVisionLanguageModeling`` reads ``images`` only (its
``__call__`` passes ``images=`` and ``text=`` to the processor; no videos), so a batch with
videos is built the way that collator builds one, with the videos added: the processor's chat
template renders each record (each video block becomes its ``<|video_pad|>`` placeholder),
then one ``processor(text, images, videos, padding=True, truncation, max_length)`` call
expands every placeholder into its tokens (``video_grid_thw.prod() // merge²``, plus
Qwen3-VL's timestamps) and makes ``pixel_values_videos`` / ``video_grid_thw``. Labels are the
ids with padding and the image and video placeholder tokens masked (-100), as for images.

**video_max_pixels.** The video processor's own ``max_pixels`` (``size["longest_edge"]``),
rebuilt like the image processor's (forge_advisor/train/vision.py ``apply_max_pixels``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forge_advisor.dataplan.records import VIDEOS_FIELD
from forge_advisor.errors import ForgeError

__all__ = ["VIDEO_MODEL_TYPES", "resolve_videos", "check_videos", "apply_video_max_pixels", "video_batch", "video_token_id"]

# the model types whose processor has a video processor the runtime drives (rust/src/video.rs prices them)
VIDEO_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def resolve_videos(rec: Any, base: Path) -> list[list[str]]:
    """A record's videos as absolute frame paths."""
    out = []
    for video in (rec.get(VIDEOS_FIELD) or ()):
        out.append([str(p if (p := Path(f).expanduser()).is_absolute() else base / p) for f in video])
    return out


def check_videos(records: list[dict[str, Any]], model_config: dict[str, Any], model_name: str, check_image: Any) -> int:
    """The model takes videos and every frame reads; returns the most frames of any video."""
    with_videos = [r for r in records if r.get(VIDEOS_FIELD)]
    if not with_videos:
        return 0
    if model_config.get("model_type") not in VIDEO_MODEL_TYPES:
        raise ForgeError(f"{with_videos[0]['where']}: the record has videos but {model_name} "
                         f"(model_type '{model_config.get('model_type')}') takes images only: videos train on "
                         f"{', '.join(VIDEO_MODEL_TYPES)}")
    frames = 0
    for r in with_videos:
        for video in r[VIDEOS_FIELD]:
            frames = max(frames, len(video))
            for frame in video:
                check_image(Path(frame), r["where"])
    return frames


def apply_video_max_pixels(processor: Any, video_max_pixels: int | None) -> None:
    """The video processor rebuilt with ``max_pixels`` as its ``size["longest_edge"]`` and
    ``shortest_edge`` (min_pixels) lowered to it when it was larger."""
    vp = getattr(processor, "video_processor", None)
    if video_max_pixels is None or vp is None:
        return
    # the size dict itself: Qwen2-VL's __init__ maps max_pixels/min_pixels onto it, Qwen3-VL's does not
    shortest = getattr(getattr(vp, "size", None), "shortest_edge", None) or video_max_pixels
    size = {"shortest_edge": min(shortest, video_max_pixels), "longest_edge": video_max_pixels}
    d = {k: v for k, v in vp.to_dict().items() if k not in ("max_pixels", "min_pixels")}
    processor.video_processor = type(vp).from_dict({**d, "size": size})


def video_token_id(processor: Any, config: dict[str, Any] | None = None) -> int | None:
    if isinstance((config or {}).get("video_token_id"), int):
        return int(config["video_token_id"])  # type: ignore[index]
    tid = getattr(processor, "video_token_id", None)
    return tid if isinstance(tid, int) else None


def _frames(video: list[str]) -> list[Any]:
    from PIL import Image

    out = []
    for path in video:
        with Image.open(path) as im:
            out.append(im.convert("RGB"))
    return out


def video_batch(processor: Any, records: list[dict[str, Any]], max_length: int | None, pad_to_multiple_of: int | None,
                load_image: Any, masked: tuple[int | None, ...]) -> dict[str, Any]:
    """One batch of records with images and/or videos, as trl's vision collator builds one
    (right padding, truncation at ``max_length``, no special tokens added) with the videos too."""
    texts = [processor.apply_chat_template(r["messages"], tokenize=False) for r in records]
    images = [load_image(p) for r in records for p in r.get("images") or ()]
    videos = [_frames(v) for r in records for v in r.get(VIDEOS_FIELD) or ()]
    # the frames are the video as sampled (plan num_frames): no resampling (Qwen3-VL's video
    # processor samples at fps = 2 by default, Qwen2-VL's does not)
    kw = {"do_sample_frames": False} if videos else {}
    out = processor(text=texts, images=images or None, videos=videos or None, **kw, padding=True, padding_side="right",
                    pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt", add_special_tokens=False,
                    truncation=max_length is not None, max_length=max_length)
    labels = out["input_ids"].clone()
    labels[out["attention_mask"] == 0] = -100
    for tid in masked:
        if tid is not None:
            labels[out["input_ids"] == tid] = -100
    out["labels"] = labels
    return dict(out)
