"""``forge-advisor tui [--model X] [--gpu Y]``: the interactive plan editor (textual).

textual is imported only inside :func:`run`, so ``forge-advisor --help`` and the other
commands stay light.
"""

from __future__ import annotations

import argparse
from typing import Any

from forge_advisor.cli.plan_args import add_plan_arguments, plan_overrides
from forge_advisor.errors import ForgeError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("tui", help="turn the plan's knobs and watch the memory bar (interactive)")
    p.add_argument("--model", help="catalog id, local config.json / model directory, or Hub id "
                   "(default: meta-llama/Llama-3.1-8B)")
    p.add_argument("--gpu", help="a catalog name or 'auto' (NVML); default: probe this machine")
    p.add_argument("--preset", default="lora", help="starting preset (default: lora)")
    add_plan_arguments(p, title="starting plan (Hugging Face names; short aliases in brackets)")
    p.add_argument("--data", metavar="PATH", help="your training data: opens the data screen (lengths, max_length, batching)")
    p.add_argument("--json", action="store_true", help="refused: the TUI is for people; scripts use estimate --json")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from forge_advisor.presets import list_presets

    if args.preset not in list_presets():
        from forge_advisor.presets import get_preset_class

        get_preset_class(args.preset)  # raises ForgeError with a did-you-mean
    overrides = plan_overrides(args)
    num_gpus = overrides.pop("num_gpus", 1)
    if num_gpus < 1:
        raise ForgeError(f"--num-gpus {num_gpus} must be at least 1")
    if args.json:
        raise ForgeError("the TUI is interactive and has no --json output: for scripts use 'forge-advisor estimate --json' "
                         "with the same flags")
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        raise ForgeError("the TUI needs a terminal; for scripts use 'forge-advisor estimate --json'")
    try:
        from forge_advisor.tui import run as run_tui
    except ImportError as exc:  # textual missing from a trimmed install
        raise ForgeError(f"the TUI needs textual ({exc}); pip install 'textual>=1.0'") from None
    return run_tui(model=args.model, gpu=args.gpu, preset=args.preset, num_gpus=num_gpus,
                   probe_on_start=args.gpu is None, overrides=overrides, data=args.data)
