"""``--data PATH`` for estimate, recommend and fit: one flag, one function, shared.

``add_data_argument(parser)`` adds the flag; ``apply_data(args)`` (called first thing in a
command's compute) measures the data and fills what the command did not get explicitly:
``dataset_tokens`` (the real token count) and ``max_length`` (the recommended length, see
forge_advisor.dataplan.advise.choose_max_length). A ``--max-length``/``--seq-len`` the user
typed wins: every command keeps ``args.max_length`` None until it applies its own default
after this.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_data_argument", "apply_data", "DataSummary"]

def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="PATH",
                        help="your training data (.jsonl or save_to_disk folder): sets the data set's tokens and, "
                             "unless --max-length/--seq-len is given, max_length from its lengths")


class DataSummary(dict):  # type: ignore[type-arg]
    """What apply_data found (a plain dict for --json); ``report`` is the LengthReport."""

    report: Any = None


def _gpu_or_none(spec: str | None) -> Any:
    if not spec:
        return None
    from forge_advisor.errors import ForgeError
    from forge_advisor.gpus import resolve_gpu

    try:
        return resolve_gpu(spec)
    except ForgeError:
        if spec.strip().lower() == "auto":
            return None  # no local GPU: the command itself says so
        raise


def apply_data(args: argparse.Namespace, *, search: bool = False) -> DataSummary | None:
    """Measure ``args.data`` (if given) and fill ``args.dataset_tokens`` / ``args.max_length``."""
    typed_seq = getattr(args, "max_length", None)
    if getattr(args, "data", None) is None:
        return None
    from forge_advisor.dataplan.advise import choose_max_length
    from forge_advisor.dataplan.lengths import measure_lengths
    from forge_advisor.dataplan.tokens import check_vocab, counter_for
    from forge_advisor.cli.plan_args import plan_overrides
    from forge_advisor.shapes import load_shape

    shape = load_shape(args.model)
    if typed_seq is not None:
        shape.check_length(typed_seq)  # the model's position limit, before reading the data
    counter = counter_for(args.model)
    check_vocab(counter, shape.vocab_size, shape.name)
    dpo = bool(getattr(args, "dpo", False)) or getattr(args, "preset", None) == "dpo"
    report = measure_lengths(args.data, args.model, trainer="dpo" if dpo else None, counter=counter,
                             progress=not getattr(args, "json", False))
    gpu = _gpu_or_none(getattr(args, "gpu", None))
    pinned = plan_overrides(args)
    pinned.pop("max_length", None)
    # the candidates are priced in the batching mode the user pinned (a flattened row under
    # sdpa costs more than a padded batch); unpinned, padding to the longest record
    mode = pinned.pop("batching", "longest")
    plan = _pricing_plan(args, shape, gpu, pinned, dpo, report.longest, search)
    choice = choose_max_length(report, shape, plan, gpu, mode=mode, fixed=typed_seq)
    summary = DataSummary(lengths=report.to_dict(), max_length=choice.to_dict()["recommended"], reason=choice.reason)
    summary.report = report
    if getattr(args, "dataset_tokens", None) is None and hasattr(args, "dataset_tokens"):
        args.dataset_tokens = report.total_tokens
    if typed_seq is None and choice.chosen is not None:
        args.max_length = choice.chosen.max_length
    if not getattr(args, "json", False):
        how = "" if report.exact else " (approximate token counts)"
        print(f"data: {report.records:,} records, {report.total_tokens:,} tokens{how}; p50 {report.p(50):,}, "
              f"p99 {report.p(99):,}, max {report.longest:,}; max_length {summary['max_length']}: {choice.reason}",
              file=sys.stderr)
    return summary


def _pricing_plan(args: argparse.Namespace, shape: Any, gpu: Any, pinned: dict[str, Any], dpo: bool, longest: int,
                  search: bool) -> Any:
    """The plan whose worst micro-batch decides which max_length fits.

    ``estimate`` prices the plan it shows: the preset with the user's flags. ``recommend``
    and ``fit`` search: a length is holdable when the leanest plan of their space holds it
    (batch 1, checkpointing, the levers, QLoRA if allowed), so the data is not truncated to
    what the lora preset's default batch of 4 holds when QLoRA at batch 1 holds every record.
    The leanest plan comes from the core's search with nothing usable
    (forge_advisor.advisor.fit._least), over the presets the command may pick."""
    from forge_advisor.estimate import resolve_plan

    preset = getattr(args, "preset", None) or ("dpo" if dpo else "lora")
    if not search or gpu is None:
        return resolve_plan(preset, gpu, **pinned)
    from forge_advisor.advisor.fit import _least
    from forge_advisor.plan import MAX_LENGTH
    from forge_advisor.presets import get_preset, list_presets

    allowed = getattr(args, "presets", None)
    names = list_presets() if not allowed else [x.strip() for x in allowed.split(",") if x.strip()]
    trainer = "dpo" if dpo else "sft"
    fixed = {**pinned, **dict(getattr(args, "fix", None) or ())}
    num_gpus = fixed.pop("num_gpus", 1)
    leanest = []
    for name in names:
        if name in list_presets() and get_preset(name).trainer == trainer:
            least, plan = _least(shape, name, gpu, min(longest, MAX_LENGTH), num_gpus, getattr(args, "headroom", 0.02), fixed)
            if plan is not None and least is not None:
                leanest.append((least, plan))
    return min(leanest, key=lambda t: t[0])[1] if leanest else resolve_plan(preset, gpu, **pinned)
