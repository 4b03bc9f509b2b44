"""Entry point: build the parser from the command modules, run one, map errors to exit codes.

Every user error is a :class:`~forge_advisor.errors.ForgeError`: printed as one line
``error: …`` on stderr with exit code 2. Set ``FORGE_ADVISOR_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import Any

from forge_advisor.errors import ForgeError

# command name -> module in forge_advisor.cli; each has add_parser(subparsers) and run(args) -> int
COMMANDS = ("models", "inspect", "estimate", "recommend", "fit", "gpus", "probe", "train", "tui", "data")


class _Parser(argparse.ArgumentParser):
    """Every parser, subcommands included: abbreviations refused (``--data`` is never read
    as ``--dataset-tokens``), errors one line with exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own message plus a one-line pointer to --help; exit 2 like every bad input
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from forge_advisor import __version__

    parser = _Parser(prog="forge-advisor", description="Find the best way to fine-tune a language model on your GPU.")
    parser.add_argument("--version", action="version", version=f"forge-advisor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        import_module(f"forge_advisor.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except ForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except RecursionError:
        # e.g. a config.json of 100,000 nested arrays: json's parser recurses once per level
        print("error: the input is nested too deeply to read (a JSON/YAML file with thousands of nested levels?)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if os.environ.get("FORGE_ADVISOR_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (FORGE_ADVISOR_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
