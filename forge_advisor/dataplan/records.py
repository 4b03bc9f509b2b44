"""Training records, read without torch: the one reader behind ``train --data`` and ``--data``.

Accepted data:

* a ``.jsonl`` file, one JSON object per line, every line with the same kind of fields:
  ``{"text": ...}``; chat ``{"messages": [{"role": ..., "content": ...}, ...]}``; or
  preference pairs ``{"prompt": ..., "chosen": ..., "rejected": ...}`` (for DPO);
* vision-language chat records as trl 1.x reads them: ``content`` is a string or a list of
  blocks ``{"type": "text", "text": ...}`` / ``{"type": "image"}``, and the record's
  ``images`` lists image files (paths relative to the data file). Each ``{"type": "image"}``
  block takes the next image; a record whose contents are all strings gets its images before
  the first user turn (trl's ``prepare_multimodal_messages``). Images are counted here, never
  opened (the training runtime reads them: forge_advisor.train.vision);
* a folder written by ``datasets``' ``save_to_disk`` (a Dataset, or a DatasetDict whose
  ``train`` split is used) with the same columns. Its Arrow files are read with ``pyarrow``
  (what ``datasets`` itself stores them with); no ``datasets`` import.

Errors name the file, the line and the field. Nothing here writes anything.

Huge files are sampled (:func:`plan_sampling`): every line is counted
in a cheap binary pass, a seeded uniform sample of ``sample_limit`` lines is parsed, and the
``EXTREMES`` longest lines by bytes are always parsed too, so the worst case (the longest
sample, what an OOM depends on) is seen even when the bulk is sampled.
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from forge_advisor.errors import ForgeError

__all__ = ["DataInfo", "Kind", "DPO_FIELDS", "Record", "Sampling", "inspect_data", "iter_records", "plan_sampling",
           "read_disk_rows", "kind_of", "check_record", "image_placeholders", "message_text", "median_images", "IMAGES_FIELD",
           "VIDEOS_FIELD", "videos_of", "frames_of"]

Kind = Literal["text", "messages", "dpo"]
DPO_FIELDS = ("prompt", "chosen", "rejected")
COLUMNS: dict[str, tuple[str, ...]] = {"text": ("text",), "messages": ("messages",), "dpo": DPO_FIELDS}
IMAGES_FIELD = "images"  # trl 1.x's name: the image files of a vision-language chat record
# a record's videos, each a list of frame image files (paths relative to the data file), one per
# {"type": "video"} block: what the Qwen-VL processors take as a video (a list of frames);
# trl 1.x's SFT collator reads no videos, the runtime's own (forge_advisor/train/video.py) does
VIDEOS_FIELD = "videos"
EXTREMES = 64  # longest lines (by bytes) always read when sampling


@dataclass(frozen=True)
class DataInfo:
    path: Path
    kind: Kind
    source: Literal["jsonl", "disk"]
    num_records: int | None  # None: a save_to_disk folder whose rows are not counted yet
    # images per record (vision-language chat records): the most any record has, and the
    # median (nearest rank) over the records read; 0 for text-only data or when not read
    max_images: int = 0
    typical_images: int = 0
    # videos per record and frames per video: the most any record / video has (0: none)
    max_videos: int = 0
    max_frames: int = 0

    @property
    def has_images(self) -> bool:
        """Images or videos: both go through the model's processor."""
        return self.max_images > 0 or self.max_videos > 0


@dataclass(frozen=True)
class Record:
    """One usable record: its fields (only those of ``kind``) and where it came from."""

    index: int  # 0-based record number
    where: str  # "file:line" or "folder[row]"
    fields: dict[str, Any]
    in_sample: bool = True  # False: read only because it is among the longest lines


def kind_of(keys: set[str] | Any) -> Kind | None:
    keys = set(keys)
    if all(k in keys for k in DPO_FIELDS):
        return "dpo"
    if "messages" in keys:
        return "messages"
    if "text" in keys:
        return "text"
    return None


def check_record(rec: Any, kind: Kind, where: str) -> None:
    if not isinstance(rec, dict):
        raise ForgeError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if kind == "text":
        if not isinstance(rec.get("text"), str):
            raise ForgeError(f"{where}: field 'text' must be a string, got {type(rec.get('text')).__name__}")
    elif kind == "messages":
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ForgeError(f"{where}: field 'messages' must be a non-empty list of {{role, content}}")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise ForgeError(f"{where}: messages[{i}] must be an object with string 'role' and 'content'")
            _check_content(m.get("content"), f"{where}: messages[{i}]")
        _check_images(rec, msgs, where)
        _check_videos(rec, msgs, where)
    else:
        for f in DPO_FIELDS:
            if not isinstance(rec.get(f), str):
                raise ForgeError(f"{where}: field '{f}' must be a string, got {type(rec.get(f)).__name__}")


def _check_content(content: Any, where: str) -> None:
    """A string, or trl's list of ``{"type": "text", "text": str}`` / ``{"type": "image"}`` blocks."""
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise ForgeError(f"{where} must be an object with string 'role' and 'content' (a string or a list of blocks)")
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            continue
        if kind in ("image", "video"):
            continue
        raise ForgeError(f"{where}.content[{j}] must be {{\"type\": \"text\", \"text\": ...}}, {{\"type\": \"image\"}} "
                         "or {\"type\": \"video\"}")


def image_placeholders(messages: list[dict[str, Any]]) -> int:
    """The ``{"type": "image"}`` blocks of a record's messages."""
    return sum(1 for m in messages if isinstance(m.get("content"), list)
               for b in m["content"] if b.get("type") == "image")


def message_text(content: str | list[dict[str, Any]]) -> str:
    """A message's text: the string, or its text blocks joined (images carry no text tokens)."""
    if isinstance(content, str):
        return content
    return "".join(b["text"] for b in content if b.get("type") == "text")


def _check_images(rec: dict[str, Any], msgs: list[Any], where: str) -> None:
    images = rec.get(IMAGES_FIELD)
    if images is None:
        images = []
    if not isinstance(images, list) or not all(isinstance(x, str) and x.strip() for x in images):
        raise ForgeError(f"{where}: field '{IMAGES_FIELD}' must be a list of image file paths")
    blocks = image_placeholders(msgs)
    if blocks > len(images):
        raise ForgeError(f"{where}: {blocks} {{\"type\": \"image\"}} placeholder(s) but {len(images)} image(s) in "
                         f"'{IMAGES_FIELD}'")
    if blocks and blocks < len(images):
        raise ForgeError(f"{where}: {len(images)} image(s) in '{IMAGES_FIELD}' but only {blocks} {{\"type\": \"image\"}} "
                         "placeholder(s): each image needs one")


def _check_videos(rec: dict[str, Any], msgs: list[Any], where: str) -> None:
    videos = rec.get(VIDEOS_FIELD)
    if videos is None:
        videos = []
    if not isinstance(videos, list) or not all(
            isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v) for v in videos):
        raise ForgeError(f"{where}: field '{VIDEOS_FIELD}' must be a list of videos, each a non-empty list of frame image paths")
    blocks = sum(1 for m in msgs if isinstance(m.get("content"), list) for b in m["content"] if b.get("type") == "video")
    if blocks != len(videos):
        raise ForgeError(f"{where}: {blocks} {{\"type\": \"video\"}} placeholder(s) but {len(videos)} video(s) in "
                         f"'{VIDEOS_FIELD}': each video needs one")


def videos_of(rec: dict[str, Any]) -> int:
    videos = rec.get(VIDEOS_FIELD)
    return len(videos) if isinstance(videos, list) else 0


def frames_of(rec: dict[str, Any]) -> int:
    """The most frames any video of the record has."""
    videos = rec.get(VIDEOS_FIELD)
    return max((len(v) for v in videos if isinstance(v, list)), default=0) if isinstance(videos, list) else 0


def _images_of(rec: dict[str, Any]) -> int:
    images = rec.get(IMAGES_FIELD)
    return len(images) if isinstance(images, list) else 0


def median_images(counts: list[int]) -> int:
    """Nearest-rank median (the p50 of forge_advisor.dataplan.lengths)."""
    if not counts:
        return 0
    ordered = sorted(counts)
    return ordered[max(1, -(-len(ordered) // 2)) - 1]


def _parse_line(line: str | bytes, where: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise ForgeError(f"{where}: not JSON (column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise ForgeError(f"{where}: not UTF-8 text") from None


def _first_kind(rec: Any, where: str) -> Kind:
    if not isinstance(rec, dict):
        raise ForgeError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    kind = kind_of(rec)
    if kind is None:
        found = ", ".join(sorted(rec)) or "none"
        raise ForgeError(f"{where}: no 'text', 'messages' or 'prompt'/'chosen'/'rejected' field (found: {found})")
    return kind


def _open(path: Path) -> Any:
    try:
        return path.open("rb")
    except OSError as exc:
        raise ForgeError(f"{path}: cannot read ({exc.strerror})") from None


def _has_content(rec: dict[str, Any], kind: Kind) -> bool:
    """Whether a record has anything to learn from (all-blank texts tokenize to nothing)."""
    if kind == "text":
        return bool(rec["text"].strip())
    if kind == "messages":
        return bool(_images_of(rec) or videos_of(rec)) or any(message_text(m["content"]).strip() for m in rec["messages"])
    return bool(rec["chosen"].strip() or rec["rejected"].strip())


def _inspect_jsonl(path: Path) -> DataInfo:
    kind: Kind | None = None
    n = usable = 0
    images: list[int] = []
    videos = frames = 0
    with _open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            rec = _parse_line(line, where)
            if kind is None:
                kind = _first_kind(rec, where)
            check_record(rec, kind, where)
            n += 1
            usable += _has_content(rec, kind)
            images.append(_images_of(rec))
            videos, frames = max(videos, videos_of(rec)), max(frames, frames_of(rec))
    if n == 0 or kind is None:
        raise ForgeError(f"{path}: the dataset is empty (no JSON lines)")
    if usable == 0:
        field = {"text": "'text'", "messages": "message 'content'", "dpo": "'chosen'/'rejected'"}[kind]
        raise ForgeError(f"{path}: every record's {field} is empty ({n} records): nothing to train on")
    return DataInfo(path, kind, "jsonl", n, max(images, default=0), median_images(images), videos, frames)


def _split_dir(path: Path) -> Path:
    if (path / "dataset_dict.json").is_file():
        split = path / "train"
        if not split.is_dir():
            raise ForgeError(f"{path}: a DatasetDict without a 'train' split")
        return split
    return path


def _inspect_disk(path: Path) -> DataInfo:
    split_dir = _split_dir(path)
    info_file = split_dir / "dataset_info.json"
    if not info_file.is_file() or not (split_dir / "state.json").is_file():
        raise ForgeError(f"{path}: a folder, but not one written by datasets' save_to_disk (no dataset_info.json)")
    try:
        features = json.loads(info_file.read_text(encoding="utf-8")).get("features") or {}
    except (OSError, json.JSONDecodeError):
        raise ForgeError(f"{info_file}: unreadable dataset_info.json") from None
    kind = kind_of(set(features))
    if kind is None:
        found = ", ".join(sorted(features)) or "none"
        raise ForgeError(f"{path}: no 'text', 'messages' or 'prompt'/'chosen'/'rejected' column (found: {found})")
    return DataInfo(path, kind, "disk", None)


def inspect_data(data: str | Path | None, trainer: str | None = "sft", *, validate_lines: bool = True) -> DataInfo:
    """Check that ``data`` exists, has usable fields for ``trainer`` and is not empty.

    ``validate_lines=False`` reads only up to the first usable record (for huge files that
    :func:`iter_records` will stream and check anyway); ``trainer=None`` accepts any kind."""
    if data is None or not str(data).strip():
        raise ForgeError("--data is missing: give a .jsonl file or a datasets save_to_disk folder")
    path = Path(data).expanduser()
    if not path.exists():
        raise ForgeError(f"{path}: no such data file or folder")
    if path.is_dir():
        info = _inspect_disk(path)
    elif validate_lines:
        info = _inspect_jsonl(path)
    else:
        info = _peek_jsonl(path)
    if trainer == "dpo" and info.kind != "dpo":
        raise ForgeError(f"{path}: DPO needs 'prompt', 'chosen' and 'rejected' fields; this data has '{info.kind}' records")
    if trainer not in ("dpo", None) and info.kind == "dpo":
        raise ForgeError(f"{path}: preference pairs (prompt/chosen/rejected) need --preset dpo")
    return info


def _peek_jsonl(path: Path) -> DataInfo:
    with _open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                where = f"{path}:{lineno}"
                rec = _parse_line(line, where)
                kind = _first_kind(rec, where)
                check_record(rec, kind, where)
                return DataInfo(path, kind, "jsonl", None)
    raise ForgeError(f"{path}: the dataset is empty (no JSON lines)")


# -- streaming ------------------------------------------------------------------------------------
def _count_lines(path: Path, progress: Callable[[int], None] | None) -> tuple[int, list[tuple[int, int, int]]]:
    """Non-empty lines, and the EXTREMES longest as (bytes, line number, byte offset)."""
    n = 0
    longest: list[tuple[int, int, int]] = []
    offset = 0
    with _open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            size = len(line)
            if line.strip():
                n += 1
                item = (size, lineno, offset)
                if len(longest) < EXTREMES:
                    heapq.heappush(longest, item)
                elif size > longest[0][0]:
                    heapq.heapreplace(longest, item)
            offset += size
            if progress is not None and n % 4096 == 0:
                progress(offset)
    return n, longest


@dataclass(frozen=True)
class Sampling:
    """How a .jsonl is read: all of it, or a seeded uniform ``rate`` of its ``total`` lines
    plus the longest lines (``extremes``, by line number), which are always parsed."""

    total: int | None  # non-empty lines; None: not counted (read whole)
    rate: float = 1.0
    extremes: frozenset[int] = frozenset()

    @property
    def sampled(self) -> bool:
        return self.rate < 1.0


def plan_sampling(info: DataInfo, sample_limit: int | None) -> Sampling:
    """Read whole when ``sample_limit`` is None or the file has at most that many lines."""
    if info.source != "jsonl" or sample_limit is None:
        return Sampling(info.num_records)
    if sample_limit < 1:
        raise ForgeError(f"sample_limit={sample_limit} must be at least 1")
    total, longest = _count_lines(info.path, None)
    if total <= sample_limit:
        return Sampling(total)
    return Sampling(total, sample_limit / total, frozenset(lineno for _, lineno, _ in longest))


def _jsonl_records(info: DataInfo, sampling: Sampling, seed: int,
                   progress: Callable[[int], None] | None) -> Iterator[Record]:
    path, kind = info.path, info.kind
    rng = random.Random(seed)
    index = 0
    offset = 0
    with _open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            offset += len(line)
            if progress is not None and lineno % 1024 == 0:
                progress(offset)
            if not line.strip():
                continue
            in_sample = not sampling.sampled or rng.random() < sampling.rate
            if in_sample or lineno in sampling.extremes:
                where = f"{path}:{lineno}"
                rec = _parse_line(line, where)
                check_record(rec, kind, where)
                fields = {k: rec[k] for k in COLUMNS[kind]}
                if kind == "messages" and _images_of(rec):
                    fields[IMAGES_FIELD] = rec[IMAGES_FIELD]
                if kind == "messages" and videos_of(rec):
                    fields[VIDEOS_FIELD] = rec[VIDEOS_FIELD]
                yield Record(index, where, fields, in_sample)
            index += 1
    if progress is not None:
        progress(offset)


def read_disk_rows(info: DataInfo) -> Iterator[dict[str, Any]]:
    """Rows of a save_to_disk folder, straight from its Arrow stream files (pyarrow)."""
    try:
        import pyarrow as pa
    except ImportError:
        raise ForgeError(f"{info.path}: reading a datasets folder needs pyarrow (pip install pyarrow)") from None
    split_dir = _split_dir(info.path)
    try:
        state = json.loads((split_dir / "state.json").read_text(encoding="utf-8"))
        files = [split_dir / f["filename"] for f in state.get("_data_files", [])]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise ForgeError(f"{split_dir / 'state.json'}: unreadable state.json") from None
    keep = COLUMNS[info.kind]
    for file in files:
        try:
            with pa.memory_map(str(file)) as source:
                reader = pa.ipc.open_stream(source)
                for batch in reader:
                    names = list(keep) + ([IMAGES_FIELD] if info.kind == "messages" and IMAGES_FIELD in batch.schema.names
                                          else [])
                    cols = {k: batch.column(k).to_pylist() for k in names}
                    for i in range(batch.num_rows):
                        yield {k: cols[k][i] for k in names}
        except (OSError, pa.ArrowInvalid) as exc:
            raise ForgeError(f"{file}: unreadable Arrow file ({exc})") from None


def _disk_records(info: DataInfo) -> Iterator[Record]:
    for i, row in enumerate(read_disk_rows(info)):
        where = f"{info.path}[{i}]"
        check_record(row, info.kind, where)
        yield Record(i, where, row)


def iter_records(info: DataInfo, sampling: Sampling | None = None, *, seed: int = 0,
                 progress: Callable[[int], None] | None = None) -> Iterator[Record]:
    """Every record, or what ``sampling`` (:func:`plan_sampling`) keeps of a .jsonl.
    ``progress(bytes_read)`` is called as the file streams. Records are checked as read."""
    if info.source == "jsonl":
        return _jsonl_records(info, sampling or Sampling(info.num_records), seed, progress)
    return _disk_records(info)

