"""Training data: check it before anything heavy loads, tokenize it, batch it as the plan says.

Reading and checking is forge_advisor.dataplan.records (no torch; the advisor's ``--data``
reads through the same code): a ``.jsonl`` of ``text`` / chat ``messages`` /
``prompt``+``chosen``+``rejected`` records, or a ``datasets`` save_to_disk folder.

Batching (preset fields, trl's names; priced by forge_advisor.dataplan.batching):

* ``padding="longest"`` — transformers' ``DataCollatorForLanguageModeling`` (pads to the batch's longest);
* ``padding="max_length"`` — the same collator with ``pad_to_multiple_of=max_length``;
* ``packing=True`` — ``trl.data_utils.pack_dataset(..., strategy="bfd")`` into rows of
  max_length, batched by trl's padding-free collator (position_ids restart per record);
* ``padding_free=True`` — transformers' ``DataCollatorWithFlattening``.

Records longer than max_length are truncated (EOS kept last) and the truncation is reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from forge_advisor.dataplan.records import DPO_FIELDS, COLUMNS, DataInfo, Kind, inspect_data, iter_records, message_text
from forge_advisor.dataplan.tokens import plain_chat_layout
from forge_advisor.errors import ForgeError

__all__ = ["DataInfo", "inspect_data", "load_dataset_for", "tokenize_sft", "prepare_dpo", "messages_to_text",
           "prepare_sft", "sft_collator", "Truncation", "DPO_FIELDS"]

logger = logging.getLogger(__name__)


def load_dataset_for(info: DataInfo) -> Any:
    """The records as a ``datasets.Dataset`` (checked again for emptiness)."""
    import datasets

    if info.source == "jsonl":
        ds = datasets.Dataset.from_list([_text_fields(r.fields) for r in iter_records(info)])
    else:
        ds = datasets.load_from_disk(str(info.path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"]
        ds = ds.select_columns(list(COLUMNS[info.kind]))
    if len(ds) == 0:
        raise ForgeError(f"{info.path}: the dataset is empty (0 rows)")
    return ds


def _text_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A chat record for the text path: content lists (trl's blocks, no images here) as their
    text, so every record has one Arrow type and any chat template reads strings."""
    if "messages" not in fields:
        return fields
    return {"messages": [{"role": m["role"], "content": message_text(m["content"])} for m in fields["messages"]]}


def messages_to_text(messages: list[dict[str, str]], tokenizer: Any) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    # no template shipped with the tokenizer: a plain, unambiguous layout (the advisor counts the same)
    return plain_chat_layout(messages, tokenizer.eos_token or "")


@dataclass(frozen=True)
class Truncation:
    records: int
    truncated: int  # records longer than max_length
    tokens: int  # tokens kept
    dropped: int  # tokens cut off
    max_length: int

    def line(self) -> str:
        if not self.truncated:
            return f"data: {self.records:,} records, {self.tokens:,} tokens, none longer than max_length {self.max_length:,}"
        return (f"data: {self.truncated:,} of {self.records:,} records truncated at max_length {self.max_length:,} "
                f"({self.dropped:,} of {self.tokens + self.dropped:,} tokens dropped)")


def _encode(ds: Any, tokenizer: Any, kind: Kind) -> Any:
    """``input_ids`` per record, untruncated, EOS appended (what the advisor counts)."""
    eos = tokenizer.eos_token_id

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if kind == "messages":
            texts = [messages_to_text(m, tokenizer) for m in batch["messages"]]
        else:
            texts = batch["text"]
        enc = tokenizer(texts, truncation=False)
        return {"input_ids": [x + [eos] if eos is not None else x for x in enc["input_ids"]]}

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="tokenizing")


def _truncate(ds: Any, tokenizer: Any, max_length: int) -> tuple[Any, Truncation]:
    eos = tokenizer.eos_token_id
    lengths = [len(x) for x in ds["input_ids"]]
    over = [n for n in lengths if n > max_length]
    report = Truncation(len(lengths), len(over), sum(min(n, max_length) for n in lengths),
                        sum(n - max_length for n in over), max_length)

    def cut(rec: dict[str, Any]) -> dict[str, Any]:
        ids = rec["input_ids"]
        if len(ids) > max_length:
            ids = ids[: max_length - 1] + [eos] if eos is not None else ids[:max_length]
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}

    out = ds.map(cut, desc="truncating") if over else ds.map(lambda r: {"attention_mask": [1] * len(r["input_ids"])})
    return out.filter(lambda r: len(r["input_ids"]) > 1), report


def tokenize_sft(ds: Any, tokenizer: Any, kind: Kind, max_length: int) -> Any:
    """``input_ids``/``attention_mask`` per record, truncated to ``max_length``, EOS appended."""
    return _truncate(_encode(ds, tokenizer, kind), tokenizer, max_length)[0]


def prepare_sft(ds: Any, tokenizer: Any, kind: Kind, preset: Any, *, quiet: bool = False) -> tuple[Any, Truncation]:
    """Tokenize, truncate (reported), and pack when ``preset.packing``."""
    out, report = _truncate(_encode(ds, tokenizer, kind), tokenizer, preset.max_length)
    if not quiet:
        print(report.line(), flush=True)
    logger.info(report.line())
    if preset.packing:
        from trl.data_utils import pack_dataset

        out = pack_dataset(out.select_columns(["input_ids"]), preset.max_length, strategy="bfd")
    elif preset.padding_free:
        out = out.select_columns(["input_ids"])
    return out, report


def sft_collator(preset: Any, tokenizer: Any) -> Any:
    """The collator for the preset's batching mode (see the module docstring)."""
    if preset.packing:
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling as PaddingFreeCollator

        return PaddingFreeCollator(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    if preset.padding_free:
        from transformers import DataCollatorWithFlattening

        return DataCollatorWithFlattening(return_position_ids=True)
    from transformers import DataCollatorForLanguageModeling

    multiple = preset.max_length if preset.padding == "max_length" else None
    return DataCollatorForLanguageModeling(tokenizer, mlm=False, pad_to_multiple_of=multiple)


def prepare_dpo(ds: Any, tokenizer: Any, max_prompt_length: int) -> Any:
    """Keep the last ``max_prompt_length`` tokens of each prompt (trl >= 1.0 dropped that option)."""

    def cut(rec: dict[str, Any]) -> dict[str, Any]:
        ids = tokenizer(rec["prompt"], add_special_tokens=False)["input_ids"]
        if len(ids) > max_prompt_length:
            rec["prompt"] = tokenizer.decode(ids[-max_prompt_length:])
        return rec

    return ds.map(cut, desc="truncating prompts")
