"""Training data: check it before anything heavy loads, then tokenize it.

Accepted ``--data``:

* a ``.jsonl`` file, one JSON object per line, every line with the same kind of fields:
  ``{"text": ...}``; chat ``{"messages": [{"role": ..., "content": ...}, ...]}``; or
  preference pairs ``{"prompt": ..., "chosen": ..., "rejected": ...}`` (for DPO);
* a folder written by ``datasets``' ``save_to_disk`` (a Dataset, or a DatasetDict whose
  ``train`` split is used) with the same columns.

:func:`inspect_data` reads no model and imports no torch; its errors name the file, the line
and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from forge_advisor.errors import ForgeError

__all__ = ["DataInfo", "inspect_data", "load_dataset_for", "tokenize_sft", "prepare_dpo", "messages_to_text"]

Kind = Literal["text", "messages", "dpo"]
DPO_FIELDS = ("prompt", "chosen", "rejected")
_MAX_LINE_ERRORS = 1


@dataclass(frozen=True)
class DataInfo:
    path: Path
    kind: Kind
    source: Literal["jsonl", "disk"]
    num_records: int | None  # None: a save_to_disk folder, counted when loaded


def _kind_of(keys: set[str]) -> Kind | None:
    if all(k in keys for k in DPO_FIELDS):
        return "dpo"
    if "messages" in keys:
        return "messages"
    if "text" in keys:
        return "text"
    return None


def _check_record(rec: Any, kind: Kind, where: str) -> None:
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
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ForgeError(f"{where}: messages[{i}] must be an object with string 'role' and 'content'")
    else:
        for f in DPO_FIELDS:
            if not isinstance(rec.get(f), str):
                raise ForgeError(f"{where}: field '{f}' must be a string, got {type(rec.get(f)).__name__}")


def _has_content(rec: dict[str, Any], kind: Kind) -> bool:
    """Whether a record has anything to learn from (all-blank texts tokenize to nothing)."""
    if kind == "text":
        return bool(rec["text"].strip())
    if kind == "messages":
        return any(m["content"].strip() for m in rec["messages"])
    return bool(rec["chosen"].strip() or rec["rejected"].strip())


def _inspect_jsonl(path: Path) -> DataInfo:
    kind: Kind | None = None
    n = usable = 0
    try:
        fh = path.open(encoding="utf-8")
    except OSError as exc:
        raise ForgeError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ForgeError(f"{where}: malformed JSON at column {exc.colno}: {exc.msg}") from None
                if kind is None:
                    if not isinstance(rec, dict):
                        raise ForgeError(f"{where}: expected a JSON object, got {type(rec).__name__}")
                    kind = _kind_of(set(rec))
                    if kind is None:
                        found = ", ".join(sorted(rec)) or "none"
                        raise ForgeError(
                            f"{where}: no 'text', 'messages' or 'prompt'/'chosen'/'rejected' field (found: {found})"
                        )
                _check_record(rec, kind, where)
                n += 1
                usable += _has_content(rec, kind)
        except UnicodeDecodeError:
            raise ForgeError(f"{path}: not a UTF-8 text file") from None
    if n == 0 or kind is None:
        raise ForgeError(f"{path}: the dataset is empty (no JSON lines)")
    if usable == 0:
        field = {"text": "'text'", "messages": "message 'content'", "dpo": "'chosen'/'rejected'"}[kind]
        raise ForgeError(f"{path}: every record's {field} is empty ({n} records): nothing to train on")
    return DataInfo(path, kind, "jsonl", n)


def _inspect_disk(path: Path) -> DataInfo:
    split_dir = path
    if (path / "dataset_dict.json").is_file():
        split_dir = path / "train"
        if not split_dir.is_dir():
            raise ForgeError(f"{path}: a DatasetDict without a 'train' split")
    info_file = split_dir / "dataset_info.json"
    if not info_file.is_file() or not (split_dir / "state.json").is_file():
        raise ForgeError(f"{path}: a folder, but not one written by datasets' save_to_disk (no dataset_info.json)")
    try:
        features = json.loads(info_file.read_text(encoding="utf-8")).get("features") or {}
    except (OSError, json.JSONDecodeError):
        raise ForgeError(f"{info_file}: unreadable dataset_info.json") from None
    kind = _kind_of(set(features))
    if kind is None:
        found = ", ".join(sorted(features)) or "none"
        raise ForgeError(f"{path}: no 'text', 'messages' or 'prompt'/'chosen'/'rejected' column (found: {found})")
    return DataInfo(path, kind, "disk", None)


def inspect_data(data: str | Path, trainer: str = "sft") -> DataInfo:
    """Check that ``data`` exists, has usable fields for ``trainer`` and is not empty."""
    if data is None or not str(data).strip():
        raise ForgeError("--data is missing: give a .jsonl file or a datasets save_to_disk folder")
    path = Path(data).expanduser()
    if not path.exists():
        raise ForgeError(f"{path}: no such data file or folder")
    info = _inspect_disk(path) if path.is_dir() else _inspect_jsonl(path)
    if trainer == "dpo" and info.kind != "dpo":
        raise ForgeError(f"{path}: DPO needs 'prompt', 'chosen' and 'rejected' fields; this data has '{info.kind}' records")
    if trainer != "dpo" and info.kind == "dpo":
        raise ForgeError(f"{path}: preference pairs (prompt/chosen/rejected) need --preset dpo")
    return info


def load_dataset_for(info: DataInfo) -> Any:
    """The records as a ``datasets.Dataset`` (checked again for emptiness)."""
    import datasets

    if info.source == "jsonl":
        rows = [json.loads(line) for line in info.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        keep = {"text": ("text",), "messages": ("messages",), "dpo": DPO_FIELDS}[info.kind]
        ds = datasets.Dataset.from_list([{k: r[k] for k in keep} for r in rows])
    else:
        ds = datasets.load_from_disk(str(info.path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"]
    if len(ds) == 0:
        raise ForgeError(f"{info.path}: the dataset is empty (0 rows)")
    return ds


def messages_to_text(messages: list[dict[str, str]], tokenizer: Any) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    # no template shipped with the tokenizer: a plain, unambiguous layout
    eos = tokenizer.eos_token or ""
    return "".join(f"<|{m['role']}|>\n{m['content']}{eos}\n" for m in messages)


def tokenize_sft(ds: Any, tokenizer: Any, kind: Kind, max_length: int) -> Any:
    """``input_ids``/``attention_mask`` per record, truncated to ``max_length``, EOS appended."""
    eos = tokenizer.eos_token_id

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if kind == "messages":
            texts = [messages_to_text(m, tokenizer) for m in batch["messages"]]
        else:
            texts = batch["text"]
        enc = tokenizer(texts, truncation=True, max_length=max_length - (1 if eos is not None else 0))
        ids = [x + [eos] if eos is not None else x for x in enc["input_ids"]]
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}

    out = ds.map(encode, batched=True, remove_columns=ds.column_names, desc="tokenizing")
    return out.filter(lambda r: len(r["input_ids"]) > 1)


def prepare_dpo(ds: Any, tokenizer: Any, max_prompt_length: int) -> Any:
    """Keep the last ``max_prompt_length`` tokens of each prompt (trl >= 1.0 dropped that option)."""

    def cut(rec: dict[str, Any]) -> dict[str, Any]:
        ids = tokenizer(rec["prompt"], add_special_tokens=False)["input_ids"]
        if len(ids) > max_prompt_length:
            rec["prompt"] = tokenizer.decode(ids[-max_prompt_length:])
        return rec

    return ds.map(cut, desc="truncating prompts")
