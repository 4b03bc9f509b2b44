"""The length report: tokens per record of the user's data, as the runtime would feed them.

Percentiles use the nearest-rank definition: p_q = the ceil(q/100 · n)-th smallest length.
When a huge file is sampled, percentiles and the histogram come from the uniform sample,
totals are scaled by records / sampled records, and ``longest`` is the longest of the sample
and of the longest lines by bytes (read in full, see forge_advisor.dataplan.records).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forge_advisor.dataplan.records import (IMAGES_FIELD, DataInfo, Sampling, frames_of, inspect_data, iter_records, plan_sampling,
                                            videos_of)
from forge_advisor.dataplan.tokens import TokenCounter, counter_for
from forge_advisor.errors import ForgeError

__all__ = ["LengthReport", "measure_lengths", "lengths_of", "percentile", "DEFAULT_SAMPLE_LIMIT"]

DEFAULT_SAMPLE_LIMIT = 200_000  # records tokenized before a file is sampled instead
_CHUNK = 1024


def percentile(sorted_lengths: Sequence[int], q: float) -> int:
    """Nearest rank: the ceil(q/100 · n)-th smallest (q=50 of [1,2,3,4] -> 2; q=100 -> max)."""
    n = len(sorted_lengths)
    rank = max(1, math.ceil(q / 100.0 * n))
    return int(sorted_lengths[min(rank, n) - 1])


@dataclass(frozen=True)
class LengthReport:
    data: str
    kind: str
    tokenizer: str
    exact: bool  # the model's own tokenizer (True) or the approximation
    lengths: tuple[int, ...]  # the uniform sample (all records when not sampled), ascending
    records: int  # records in the data
    longest: int  # longest record seen, including the longest lines read outside the sample
    longest_where: str  # file:line of it
    sampled: bool
    # images per record of the sample, ascending (vision-language chat records); () when none has
    # any. The text lengths above count no image tokens: how many tokens an image becomes is the
    # model's processor's (max_pixels), priced by the estimator from images_per_sample.
    images: tuple[int, ...] = ()
    # videos per record of the sample, ascending, and the most frames any of its videos has
    # (records' ``videos``: lists of frames; their tokens are the processor's, priced by the
    # estimator from videos_per_sample, num_frames and video_max_pixels)
    videos: tuple[int, ...] = ()
    max_frames: int = 0

    def __post_init__(self) -> None:
        if not self.lengths:
            raise ForgeError(f"{self.data}: no usable records")

    @property
    def scale(self) -> float:
        """records / sampled records (1 when not sampled)."""
        return self.records / len(self.lengths)

    @property
    def total_tokens(self) -> int:
        return round(sum(self.lengths) * self.scale)

    def p(self, q: float) -> int:
        return percentile(self.lengths, q)

    def truncated(self, max_length: int) -> tuple[float, float]:
        """(fraction of records longer than max_length, fraction of tokens cut off)."""
        over = [n for n in self.lengths if n > max_length]
        cut = sum(n - max_length for n in over)
        return len(over) / len(self.lengths), cut / sum(self.lengths)

    def kept(self, max_length: int) -> list[int]:
        return [min(n, max_length) for n in self.lengths]

    def histogram(self, bins: int = 12) -> list[tuple[int, int, int]]:
        """(low, high, count) on power-of-two edges from the shortest to the longest bucket."""
        lo = max(1, self.lengths[0])
        hi = max(self.lengths[-1], self.longest)
        edges = [1 << e for e in range(int(math.log2(lo)), int(math.log2(hi)) + 2)]
        if len(edges) - 1 > bins:  # merge into `bins` buckets of equal log width
            step = math.ceil((len(edges) - 1) / bins)
            edges = edges[::step] + ([edges[-1]] if (len(edges) - 1) % step else [])
        counts = []
        i = 0
        for a, b in zip(edges, edges[1:]):
            c = 0
            while i < len(self.lengths) and self.lengths[i] < b:
                c += 1
                i += 1
            counts.append((a, b - 1, c))
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data, "kind": self.kind, "tokenizer": self.tokenizer, "exact": self.exact,
            "records": self.records, "sampled": self.sampled, "sample_size": len(self.lengths),
            "total_tokens": self.total_tokens, "mean": sum(self.lengths) / len(self.lengths),
            "p50": self.p(50), "p90": self.p(90), "p99": self.p(99), "max": self.longest,
            "longest_at": self.longest_where,
            "histogram": [{"from": a, "to": b, "records": c} for a, b, c in self.histogram()],
            **({"images_per_sample": {"max": self.images[-1], "p50": percentile(self.images, 50),
                                      "total": round(sum(self.images) * self.scale)}} if self.images else {}),
            **({"videos_per_sample": {"max": self.videos[-1], "p50": percentile(self.videos, 50),
                                      "total": round(sum(self.videos) * self.scale), "max_frames": self.max_frames}}
               if self.videos else {}),
        }


def lengths_of(info: DataInfo, counter: TokenCounter, sampling: Sampling | None = None, *, seed: int = 0,
               progress: Callable[[int], None] | None = None,
               images: list[int] | None = None, videos: list[tuple[int, int]] | None = None) -> tuple[list[int], int, int, str]:
    """(sample lengths, records seen, longest, where) for the records ``sampling`` keeps; the
    sample's images per record are appended to ``images`` when given, its (videos, most frames
    of one) per record to ``videos``."""
    sample: list[int] = []
    longest, where_longest, seen = 0, "", 0
    chunk: list[Any] = []

    def flush() -> None:
        nonlocal longest, where_longest
        lens = counter.lengths(info.kind, [r.fields for r in chunk], [r.where for r in chunk])
        for rec, n in zip(chunk, lens):
            if rec.in_sample:
                sample.append(n)
                if images is not None:
                    images.append(len(rec.fields.get(IMAGES_FIELD) or ()))
                if videos is not None:
                    videos.append((videos_of(rec.fields), frames_of(rec.fields)))
            if n > longest:
                longest, where_longest = n, rec.where
        chunk.clear()

    for rec in iter_records(info, sampling, seed=seed, progress=progress):
        seen = rec.index + 1
        chunk.append(rec)
        if len(chunk) >= _CHUNK:
            flush()
    if chunk:
        flush()
    return sample, seen, longest, where_longest


def measure_lengths(data: str | Path, model: str | None, *, trainer: str | None = None,
                    sample_limit: int | None = DEFAULT_SAMPLE_LIMIT, tokenizer: str | None = None,
                    counter: TokenCounter | None = None, progress: bool = False, seed: int = 0) -> LengthReport:
    """Tokenize ``data`` as ``train --data`` reads it and report its lengths."""
    info = inspect_data(data, trainer, validate_lines=False)
    counter = counter or counter_for(model, tokenizer)
    sampling = plan_sampling(info, sample_limit)
    images: list[int] = []
    videos: list[tuple[int, int]] = []
    if progress:
        lengths, seen, longest, where = _with_progress(info, counter, sampling, seed, images, videos)
    else:
        lengths, seen, longest, where = lengths_of(info, counter, sampling, seed=seed, images=images, videos=videos)
    if not lengths:
        raise ForgeError(f"{info.path}: the dataset is empty (0 rows)")
    records = sampling.total if sampling.sampled and sampling.total else seen
    return LengthReport(str(info.path), info.kind, counter.describe(), counter.exact, tuple(sorted(lengths)),
                        records, longest, where, sampling.sampled, tuple(sorted(images)) if any(images) else (),
                        tuple(sorted(v for v, _ in videos)) if any(v for v, _ in videos) else (),
                        max((f for _, f in videos), default=0))


def _with_progress(info: DataInfo, counter: TokenCounter, sampling: Sampling, seed: int, images: list[int],
                   videos: list[tuple[int, int]]) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    con = Console(stderr=True)
    size = info.path.stat().st_size if info.path.is_file() else None
    label = "sampling" if sampling.sampled else "tokenizing"
    with Progress(TextColumn(f"{label} {info.path.name}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=con, transient=True, disable=not con.is_terminal) as bar:
        task = bar.add_task(label, total=size)
        return lengths_of(info, counter, sampling, seed=seed, progress=lambda done: bar.update(task, completed=done),
                          images=images, videos=videos)
