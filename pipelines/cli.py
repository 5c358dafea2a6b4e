"""The `rankline` command line: a thin dispatcher over rankline.pipelines.commands.

Each subcommand lives in its own module (see commands/__init__.py). Bad input (a missing file, a
malformed line, an unknown measure, ...) surfaces as ValueError or OSError and is reported as one
line on stderr with exit code 2; set RANKLINE_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

# subcommand name -> module in rankline.pipelines.commands
COMMANDS: dict[str, str] = {
    "eval": "evaluate",
    "label": "label",
    "index": "index",
    "retrieve": "retrieve",
    "search": "search",
    "rerank": "rerank",
    "batch-rerank": "batch_rerank",
    "serve": "serve",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="rankline",
        description="Retrieval, LLM reranking and trustworthy evaluation for search.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = {name: importlib.import_module(f"rankline.pipelines.commands.{module}") for name, module in COMMANDS.items()}
    for name, module in modules.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    module = modules[args.command]
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"rankline {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        if os.environ.get("RANKLINE_DEBUG"):
            raise
        print(f"rankline {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
