"""Vision-language models in the training runtime: images checked, processor loaded, tower frozen.

**Which models.** A config with a ``vision_config`` (how transformers' composite image-text
configs name their vision part: Qwen2/2.5/3-VL, Gemma 3, LLaVA, SmolVLM/Idefics3, Mllama…)
loads with ``AutoModelForImageTextToText`` and trains with its processor
(``AutoProcessor`` from the model folder: tokenizer, image processor, chat template).

**Data.** trl 1.x's vision records (forge_advisor.dataplan.records): chat ``messages`` whose
contents hold ``{"type": "image"}`` blocks, and ``images``, paths relative to the data file.
Before anything is written, every image must exist and decode its header (PIL, no pixels
decoded), and a text-only model refuses images. Batches are built by trl's
``DataCollatorForVisionLanguageModeling`` (the processor's chat template expands each image
into its placeholder tokens; the pixels go to ``pixel_values``); the image placeholder
tokens are masked out of the labels (the model cannot predict an image's features, and
HF's VLM fine-tuning recipes mask them the same way).

**max_pixels.** Processors that resize to a pixel budget declare ``max_pixels`` among their
image kwargs (Qwen2-VL's ``smart_resize``: height·width ≤ max_pixels, both multiples of
patch·merge = 28): the image processor is rebuilt with it, so an image of H×W pixels becomes
``(H'/14)·(W'/14)/4`` tokens. Processors that resize every image to a fixed size (Gemma 3's
896², LLaVA's 336², SmolVLM's tiles) do not take it: the run says so in one line and goes
on (their image tokens do not depend on it). Llama 3.2 Vision (``mllama``) is one of those:
its processor puts one ``<|image|>`` token per image in the text and pads every image to
``max_image_tiles`` tiles, which the decoder's cross-attention layers read
(tests/test_train_vision.py trains a tiny one).

**What trains.** ``freeze_vision_tower`` (default True, LLaMA-Factory's name and default)
freezes the vision tower — the module transformers' ``get_encoder(modality="image")`` returns —
in full fine-tuning, and keeps LoRA adapters off it (peft ``exclude_modules``). With False
the tower trains: every parameter in full fine-tuning; under LoRA, its linear layers that the
targets name (all of them with ``all-linear``), as LLaMA-Factory does. The multimodal
projector follows the method, like the language model: it trains in full fine-tuning, and
under LoRA/QLoRA it stays frozen without adapters (LoRA targets the language model). QLoRA
keeps the tower and projector out of 4-bit (``llm_int8_skip_modules``), as HF's
bitsandbytes guide does for multimodal models; ``prepare_model_for_kbit_training`` then
holds them in fp32 like every other non-quantised weight.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from forge_advisor.dataplan.records import IMAGES_FIELD, DataInfo, iter_records, median_images
from forge_advisor.errors import ForgeError

__all__ = ["VISION_TOWER_NAMES", "PROJECTOR_NAMES", "is_vision_config", "check_vision_inputs", "vision_records",
           "load_processor", "apply_max_pixels", "VisionParts", "vision_parts", "freeze_vision", "lora_exclude",
           "bnb_skip_modules", "VisionCollator", "measure_vision", "VisionSummary"]

# transformers' own names for the vision encoder (PreTrainedModel.get_encoder, modality "image"):
# used before a model exists (the 4-bit skip list); after loading, get_encoder itself answers
VISION_TOWER_NAMES = ("vision_tower", "visual", "vision_model", "vision_encoder", "image_tower")
# the module that maps vision features into the language model's width, as transformers 5 names
# it: LLaVA/Gemma 3/Mllama ``multi_modal_projector``, SmolVLM/Idefics3 ``connector``, Qwen-VL
# ``visual.merger`` (inside the tower), LLaVA-style remote code ``mm_projector``
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "merger", "mm_projector")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def is_vision_config(config: dict[str, Any]) -> bool:
    return isinstance(config.get("vision_config"), dict)


def _resolve(image: str, base: Path) -> Path:
    p = Path(image).expanduser()
    return p if p.is_absolute() else base / p


def _base_dir(info: DataInfo) -> Path:
    return info.path if info.source == "disk" else info.path.parent


def vision_records(info: DataInfo) -> list[dict[str, Any]]:
    """Every record as ``{"messages", "images": [absolute paths], "where"}`` (images unopened)."""
    base = _base_dir(info)
    from forge_advisor.train.video import VIDEOS_FIELD, resolve_videos

    return [{"messages": r.fields["messages"],
             IMAGES_FIELD: [str(_resolve(x, base)) for x in (r.fields.get(IMAGES_FIELD) or ())],
             VIDEOS_FIELD: resolve_videos(r.fields, base),
             "where": r.where} for r in iter_records(info)]


def _check_image(path: Path, where: str) -> None:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ForgeError(f"{where}: image file {path} not found")
    try:
        with Image.open(path) as im:  # reads the header only
            im.verify()  # the format's own integrity check, without decoding the pixels
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ForgeError(f"{where}: cannot read image {path} ({reason})") from None


def check_vision_inputs(info: DataInfo, model_config: dict[str, Any], model_name: str, local: bool,
                        preset: Any) -> DataInfo:
    """Images exist and decode, the model takes them, the batching allows them. Runs before
    anything is written; returns ``info`` with its images per record counted (a save_to_disk
    folder's too). Text-only data passes untouched."""
    if info.kind != "messages" or (info.source == "jsonl" and not info.has_images):
        return info
    records = vision_records(info)
    counts = [len(r[IMAGES_FIELD]) for r in records]
    videos = [len(r["videos"]) for r in records]
    if not any(counts) and not any(videos):
        return info
    import importlib.util

    if importlib.util.find_spec("PIL") is None:
        raise ForgeError(f"{info.path}: the records have images; reading them needs Pillow, from the [vision] extra: "
                         "pip install \"forge-advisor[vision]\"")
    if not is_vision_config(model_config):
        first = next(r for r in records if r[IMAGES_FIELD] or r["videos"])
        raise ForgeError(f"{first['where']}: the record has images but {model_name} is a text-only model "
                         f"(model_type '{model_config.get('model_type')}', no vision_config): use a vision-language "
                         "model or drop the images")
    if preset.packing or preset.padding_free:
        mode = "packing" if preset.packing else "padding_free"
        raise ForgeError(f"{mode}=True cannot batch images (trl packs text only): set --{mode.replace('_', '-')} false")
    if preset.trainer == "dpo":
        raise ForgeError("DPO with images is not supported by the runtime yet: use --preset sft, lora or qlora")
    if local and not any((Path(model_name).expanduser() / f).is_file() for f in PROCESSOR_FILES):
        raise ForgeError(f"{model_name}: a vision-language model folder needs its processor "
                         f"({' or '.join(PROCESSOR_FILES)}), e.g. processor.save_pretrained(folder)")
    for r in records:
        for image in r[IMAGES_FIELD]:
            _check_image(Path(image), r["where"])
    from forge_advisor.train.video import check_videos

    frames = check_videos(records, model_config, model_name, _check_image)
    return replace(info, max_images=max(counts), typical_images=median_images(counts), max_videos=max(videos), max_frames=frames)


# -- processor --------------------------------------------------------------------------------------
def apply_max_pixels(processor: Any, max_pixels: int | None) -> str | None:
    """Give the image processor ``max_pixels`` where it resizes to a pixel budget; otherwise a
    line saying it does not apply (None when there is nothing to say)."""
    if max_pixels is None:
        return None
    ip = processor.image_processor
    declared = getattr(getattr(ip, "valid_kwargs", None), "__annotations__", {})
    if "max_pixels" in declared:
        # Qwen2-VL's __init__ turns max_pixels into size["longest_edge"], the pixel budget of smart_resize
        # (and min_pixels, size["shortest_edge"], lowered to it when it was larger)
        shortest = getattr(getattr(ip, "size", None), "shortest_edge", None)
        least = {"min_pixels": min(shortest, max_pixels)} if isinstance(shortest, int) else {}
        processor.image_processor = type(ip).from_dict({**ip.to_dict(), "max_pixels": max_pixels, **least})
        return None
    size = {k: v for k, v in dict(ip.to_dict().get("size") or {}).items() if v is not None}
    return (f"max_pixels={max_pixels:,} does not apply to {type(ip).__name__}: it resizes images to its own size "
            f"{size} (ignored)")


def load_processor(model_name: str, max_pixels: int | None) -> tuple[Any, str | None]:
    """The model's processor (``AutoProcessor``), a pad token set, ``max_pixels`` applied.
    Returns (processor, a note about max_pixels or None)."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(model_name)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ForgeError(f"{model_name}: cannot load the vision-language processor ({first})") from None
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise ForgeError(f"{model_name}: its processor ({type(processor).__name__}) has no image processor and tokenizer")
    tok = processor.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return processor, apply_max_pixels(processor, max_pixels)


def image_token_id(processor: Any, config: dict[str, Any] | None = None) -> int | None:
    """The token the model scatters image features into: the config's ``image_token_id``
    (``image_token_index`` in Gemma 3 / LLaVA configs), else the processor's. (Gemma 3's
    processor names ``<start_of_image>`` as its image token: the placeholder it expands.)"""
    for key in ("image_token_id", "image_token_index"):
        if isinstance((config or {}).get(key), int):
            return int(config[key])  # type: ignore[index]
    tid = getattr(processor, "image_token_id", None)
    if isinstance(tid, int):
        return tid
    token = getattr(processor, "image_token", None)
    return processor.tokenizer.convert_tokens_to_ids(token) if isinstance(token, str) else None


def _load_image(path: str) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


class VisionCollator:
    """trl's ``DataCollatorForVisionLanguageModeling`` over records whose images are paths:
    opened per batch, image placeholder tokens masked out of the labels."""

    def __init__(self, processor: Any, max_length: int | None, pad_to_multiple_of: int | None = None,
                 config: dict[str, Any] | None = None) -> None:
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        self.inner = DataCollatorForVisionLanguageModeling(processor, max_length=max_length,
                                                           pad_to_multiple_of=pad_to_multiple_of)
        self.image_token_id = image_token_id(processor, config)
        self.config = config

    def examples(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        # a deep copy: trl fills the image blocks in place, and the records are read every epoch
        return [{"messages": copy.deepcopy(r["messages"]), IMAGES_FIELD: [_load_image(p) for p in r[IMAGES_FIELD]]}
                for r in records]

    def batch(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """trl's collator's batch, or with videos the runtime's (forge_advisor/train/video.py)."""
        if any(r.get("videos") for r in records):
            from forge_advisor.train.video import video_batch, video_token_id

            return video_batch(self.inner.processor, records, self.inner.max_length, self.inner.pad_to_multiple_of,
                               _load_image, (self.image_token_id, video_token_id(self.inner.processor, self.config)))
        return self.inner(self.examples(records))

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.batch(records)
        if self.image_token_id is not None:
            batch["labels"][batch["input_ids"] == self.image_token_id] = -100
        return batch


@dataclass(frozen=True)
class VisionSummary:
    records: int
    images: int
    max_images: int  # per record
    image_tokens: int  # placeholder tokens of every image, as the processor expands them
    max_pixels: int | None
    tower_trains: bool
    note: str | None  # max_pixels does not apply, …
    videos: int = 0  # videos in all records (forge_advisor/train/video.py)
    max_frames: int = 0  # frames of the longest video

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "images": self.images, "max_images_per_record": self.max_images,
                "image_tokens": self.image_tokens, "max_pixels": self.max_pixels,
                "vision_tower": "trains" if self.tower_trains else "frozen", "note": self.note,
                "videos": self.videos, "max_frames_per_video": self.max_frames}

    def line(self) -> str:
        pixels = "processor default" if self.max_pixels is None else f"{self.max_pixels:,}"
        tower = "trains" if self.tower_trains else "frozen"
        videos = f"{self.videos:,} videos (at most {self.max_frames} frames), " if self.videos else ""
        return (f"vision: {self.images:,} images in {self.records:,} records (at most {self.max_images} per record), "
                f"{videos}{self.image_tokens:,} image{' and video' if self.videos else ''} tokens, max_pixels {pixels}, vision tower {tower}")


def measure_vision(records: list[dict[str, Any]], processor: Any, max_length: int,
                   config: dict[str, Any] | None = None) -> tuple[list[int], int]:
    """Each record's length in tokens as the collator builds it (image tokens included), and the
    image tokens in all. A record whose image tokens reach past ``max_length`` is refused: trl
    would cut an image's placeholders and the model would not match its features."""
    from forge_advisor.train.video import video_token_id

    collate = VisionCollator(processor, None, config=config)
    tid, vid = collate.image_token_id, video_token_id(processor, config)
    lengths, image_tokens = [], 0
    for r in records:
        ids = collate.batch([r])["input_ids"][0]
        lengths.append(int(ids.numel()))
        if tid is not None and (r[IMAGES_FIELD] or r.get("videos")):
            where = ((ids == tid) | (ids == (tid if vid is None else vid))).nonzero()
            image_tokens += int(where.numel())
            end = int(where.max()) + 1 if where.numel() else 0
            if end > max_length:
                raise ForgeError(f"{r['where']}: its images end at token {end:,}, past max_length {max_length:,}: raise "
                                 "--max-length or lower --max-pixels (an image cannot be cut)")
    return lengths, image_tokens


# -- the model's parts ------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisionParts:
    tower: str  # qualified module name, e.g. "model.visual"
    projector: str | None  # e.g. "model.visual.merger", "model.multi_modal_projector"


def vision_parts(model: Any) -> VisionParts:
    """The vision tower (transformers' ``get_encoder(modality="image")``) and the projector."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    tower = base.get_encoder(modality="image")
    names = {id(m): n for n, m in base.named_modules()}
    if tower is base or id(tower) not in names:
        raise ForgeError(f"{type(base).__name__}: found no vision tower (get_encoder(modality='image'))")
    projector = next((n for n, _ in base.named_modules() if n.rsplit(".", 1)[-1] in PROJECTOR_NAMES), None)
    return VisionParts(names[id(tower)], projector)


def _under(name: str, prefix: str | None) -> bool:
    return prefix is not None and (name == prefix or name.startswith(prefix + "."))


def freeze_vision(model: Any, parts: VisionParts) -> int:
    """Freeze the tower's parameters (not a projector inside it). Returns how many were frozen."""
    frozen = 0
    for name, p in model.named_parameters():
        if _under(name, parts.tower) and not _under(name, parts.projector) and p.requires_grad:
            p.requires_grad = False
            frozen += p.numel()
    return frozen


def lora_exclude(parts: VisionParts, freeze_tower: bool) -> str:
    """peft ``exclude_modules`` (a regex, fully matched against module names): the projector,
    and the tower when it is frozen."""
    names = [parts.tower] if freeze_tower else []
    if parts.projector is not None and not (freeze_tower and _under(parts.projector, parts.tower)):
        names.append(parts.projector)
    alternatives = "|".join(re.escape(n) for n in names)
    return rf"(?:.*\.)?(?:{alternatives})(?:\..*)?"


def bnb_skip_modules() -> list[str]:
    """``llm_int8_skip_modules`` for a 4-bit VLM: the tower and projector by transformers' names
    (matched from the start of a module name up to a module boundary,
    ``quantizers_utils.should_convert_module``), and ``lm_head`` (transformers' default skip,
    which a given list replaces)."""
    names = "|".join(VISION_TOWER_NAMES + PROJECTOR_NAMES)
    return [rf"(?:.*\.)?(?:{names})", "lm_head"]


def prepare_vision_model(model: Any, preset: Any) -> VisionParts:
    """After loading (before LoRA): full fine-tuning freezes the tower when asked."""
    parts = vision_parts(model)
    if not preset.uses_lora and preset.freeze_vision_tower:
        freeze_vision(model, parts)
    return parts
