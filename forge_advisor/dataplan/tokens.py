"""Token counts per record, without torch or transformers.

* The model's own ``tokenizer.json`` (a local model folder, or the Hugging Face cache for a
  Hub id) through the light ``tokenizers`` package, and its chat template (from
  ``tokenizer_config.json`` or ``chat_template.jinja``) rendered with jinja2 the way
  transformers' ``apply_chat_template`` renders it (sandboxed, ``trim_blocks``/``lstrip_blocks``,
  ``raise_exception``, ``tojson``).
* Otherwise :class:`ApproxCounter`, a stated estimate whose error against real tokenizers
  is measured by ``benches/data_lengths.py``.

What is counted is what the runtime feeds the model (forge_advisor.train.data.tokenize_sft):
the text (or the rendered chat) encoded with the tokenizer's special tokens, plus one EOS.
For preference pairs, trl's DPO row: BOS + prompt + the longer of chosen/rejected + EOS.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge_advisor.dataplan.records import message_text
from forge_advisor.errors import ForgeError

__all__ = ["TokenizerFiles", "find_tokenizer_files", "TokenCounter", "HFTokenCounter", "ApproxCounter",
           "counter_for", "plain_chat_layout", "render_chat"]


def plain_chat_layout(messages: Sequence[dict[str, Any]], eos: str) -> str:
    """The layout used when a tokenizer ships no chat template (shared with the runtime); a
    content list (vision-language records) contributes its text blocks."""
    return "".join(f"<|{m['role']}|>\n{message_text(m['content'])}{eos}\n" for m in messages)


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # {"content": "</s>", "lstrip": ...} in older tokenizer_config.json
        value = value.get("content")
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class TokenizerFiles:
    folder: Path
    tokenizer_json: Path
    config: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None

    def special(self, name: str) -> str | None:
        return _token_text(self.config.get(name))


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    return home / "hub"


def _candidate_folders(model: str) -> list[Path]:
    p = Path(model).expanduser()
    if p.is_dir():
        return [p]
    if p.is_file():
        return [p.parent]
    if model.count("/") != 1:
        return []
    repo = _hub_cache() / ("models--" + model.replace("/", "--"))
    snaps = repo / "snapshots"
    if not snaps.is_dir():
        return []
    ref = repo / "refs" / "main"
    first = [snaps / ref.read_text().strip()] if ref.is_file() else []
    return first + sorted(snaps.iterdir())


def _chat_template(folder: Path, config: dict[str, Any]) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    tpl = config.get("chat_template")
    if isinstance(tpl, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default") or next(iter(named.values()), None)
    return tpl if isinstance(tpl, str) else None


def find_tokenizer_files(model: str) -> TokenizerFiles | None:
    """The first folder (the model's own, else its Hub cache snapshots) with a tokenizer.json."""
    for folder in _candidate_folders(str(model)):
        tj = folder / "tokenizer.json"
        if not tj.is_file():
            continue
        config: dict[str, Any] = {}
        tc = folder / "tokenizer_config.json"
        if tc.is_file():
            try:
                config = json.loads(tc.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                raise ForgeError(f"{tc}: unreadable tokenizer_config.json") from None
        return TokenizerFiles(folder, tj, config, _chat_template(folder, config))
    return None


def render_chat(template: str, messages: Sequence[dict[str, Any]], specials: dict[str, str | None], where: str) -> str:
    """``tokenizer.apply_chat_template(messages, tokenize=False)``, rendered with jinja2 alone."""
    compiled = _compile(template)
    try:
        return compiled.render(messages=list(messages), add_generation_prompt=False, tools=None, documents=None,
                               **{k: v for k, v in specials.items() if v is not None})
    except Exception as exc:  # the template's own raise_exception(), or a template bug
        raise ForgeError(f"{where}: the chat template rejects this conversation ({exc})") from None


_COMPILED: dict[str, Any] = {}


def _compile(template: str) -> Any:
    tpl = _COMPILED.get(template)
    if tpl is not None:
        return tpl
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ForgeError("rendering the model's chat template needs jinja2 (pip install jinja2)") from None

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        from datetime import datetime

        return datetime.now().strftime(fmt)

    # the same environment settings as transformers.utils.chat_template_utils._compile_jinja_template
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        tpl = env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise ForgeError(f"the tokenizer's chat template does not compile ({exc})") from None
    _COMPILED[template] = tpl
    return tpl


class TokenCounter:
    """Counts what the runtime would feed the model for each record of one kind."""

    name: str = "counter"
    exact: bool = False
    vocab_size: int | None = None
    eos: str = ""
    chat_template: str | None = None
    specials: dict[str, str | None]

    def encode_lengths(self, texts: list[str], *, special: bool) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def _eos_count(self) -> int:
        return 1 if self.eos else 0

    def chat_text(self, messages: Sequence[dict[str, Any]], where: str) -> str:
        if self.chat_template:
            return render_chat(self.chat_template, messages, self.specials, where)
        return plain_chat_layout(messages, self.eos)

    def lengths(self, kind: str, records: Sequence[dict[str, Any]], wheres: Sequence[str]) -> list[int]:
        """Untruncated sequence length of each record, in tokens."""
        if kind == "dpo":
            prompts = self.encode_lengths([r["prompt"] for r in records], special=False)
            chosen = self.encode_lengths([r["chosen"] for r in records], special=False)
            rejected = self.encode_lengths([r["rejected"] for r in records], special=False)
            bos = 1 if self.specials.get("bos_token") else 0
            return [bos + p + max(c, r) + self._eos_count for p, c, r in zip(prompts, chosen, rejected)]
        if kind == "messages":
            texts = [self.chat_text(r["messages"], w) for r, w in zip(records, wheres)]
        else:
            texts = [r["text"] for r in records]
        return [n + self._eos_count for n in self.encode_lengths(texts, special=True)]

    def describe(self) -> str:
        return self.name


class HFTokenCounter(TokenCounter):
    """The model's own tokenizer.json through the ``tokenizers`` package (exact)."""

    exact = True

    def __init__(self, files: TokenizerFiles) -> None:
        from tokenizers import Tokenizer

        try:
            self.tok = Tokenizer.from_file(str(files.tokenizer_json))
        except Exception as exc:  # tokenizers raises its own Exception type on bad files
            raise ForgeError(f"{files.tokenizer_json}: not a tokenizer.json the tokenizers package can read ({exc})") from None
        self.tok.no_truncation()
        self.tok.no_padding()
        self.files = files
        self.name = f"tokenizer.json ({files.folder})"
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.specials = {k: files.special(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        self.eos = self.specials.get("eos_token") or ""
        self.chat_template = files.chat_template

    def encode_lengths(self, texts: list[str], *, special: bool) -> list[int]:
        return [len(e.ids) for e in self.tok.encode_batch(texts, add_special_tokens=special)]


# A GPT-style pre-tokenizer split: words with their leading space, 1-3 digit groups, punctuation
# runs, whitespace runs.
_PIECES = re.compile(r" ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+", re.UNICODE)
COMMON_WORD_CHARS = 7  # letters in a word that BPE vocabularies of 32k-150k entries keep whole
CHARS_PER_PIECE = 4  # what a longer or rarer word costs per token


class ApproxCounter(TokenCounter):
    """No tokenizer at hand: an estimate from the text alone, stated as such.

    Each pre-token (split as GPT-2/-4 pre-tokenizers split: a word with its leading space, a
    group of at most three digits, a punctuation run, a whitespace run) costs one token if an
    ASCII word of at most 7 letters (common words are single entries in 32k–150k BPE
    vocabularies), else ``ceil(chars / 4)``; non-ASCII letters cost one token per character
    (CJK and most accented scripts split at least that finely). Plus one EOS per record and
    one BOS. Its error against real tokenizers is measured in benches/results/data_lengths.md.
    """

    exact = False

    def __init__(self, reason: str) -> None:
        self.name = f"approximation ({reason})"
        self.eos = "</s>"
        self.specials = {"bos_token": "<s>", "eos_token": "</s>"}

    @staticmethod
    def count(text: str) -> int:
        n = 0
        for piece in _PIECES.findall(text):
            core = piece.strip()
            if not core:
                n += 1
            elif core.isascii():
                n += 1 if core.isalpha() and len(core) <= COMMON_WORD_CHARS or core.isdigit() else math.ceil(len(core) / CHARS_PER_PIECE)
            else:
                n += len(core)
        return n

    def encode_lengths(self, texts: list[str], *, special: bool) -> list[int]:
        return [self.count(t) + (1 if special else 0) for t in texts]


def counter_for(model: str | None, tokenizer: str | None = None) -> TokenCounter:
    """The model's tokenizer when it is on this machine (``tokenizer`` names another folder
    or tokenizer.json), else the approximation with the reason why."""
    where = tokenizer or model
    if where is None:
        return ApproxCounter("no model named")
    files = find_tokenizer_files(where)
    if files is None:
        if tokenizer is not None:
            raise ForgeError(f"{tokenizer}: no tokenizer.json there")
        return ApproxCounter(f"no tokenizer.json for {model} on this machine")
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return ApproxCounter("the tokenizers package is not installed (pip install tokenizers)")
    return HFTokenCounter(files)


def check_vocab(counter: TokenCounter, model_vocab: int | None, model: str) -> None:
    """A tokenizer with more ids than the model has embeddings belongs to another model."""
    if counter.vocab_size is not None and model_vocab is not None and counter.vocab_size > model_vocab:
        raise ForgeError(f"the tokenizer ({counter.vocab_size:,} tokens) does not match {model} "
                         f"(vocab_size {model_vocab:,}): token ids would fall outside the embeddings")
