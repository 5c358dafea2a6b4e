"""The `rankline` command line: a thin dispatcher over rankline.pipelines.commands.

Each subcommand lives in its own module (see commands/__init__.py). Bad input (a missing file, a
malformed line, an unknown measure, an argument that is not UTF-8 text, ...) surfaces as ValueError
or OSError and is reported as one line on stderr with exit code 2; set RANKLINE_DEBUG=1 to see the
traceback instead.
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
    "train": "train",
    "linearize": "linearize",
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


def check_text_arguments(args: argparse.Namespace) -> None:
    """Refuse a text argument (a query, a run tag, a measure name, ...) that is not valid UTF-8, naming
    it. Python decodes the command line with surrogateescape, so a byte such as 0xff arrives as a lone
    surrogate that would fail much later (in a tokenizer, or when a file is written). File names are
    not checked: a file name may be any bytes."""
    for dest, value in vars(args).items():
        if dest not in TEXT_ARGUMENTS:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    name = dest.upper() if dest in _POSITIONALS else "--" + dest.replace("_", "-")
                    raw = os.fsencode(item[exc.start]) if 0xDC80 <= ord(item[exc.start]) <= 0xDCFF else b""
                    byte = f"byte 0x{raw[0]:02x}" if raw else f"character {item[exc.start]!r}"
                    raise ValueError(f"argument {name}: not valid UTF-8 text ({byte} at character {exc.start + 1} "
                                     f"of {item!r}); pass UTF-8 text") from None


# argparse dests of the arguments that are text, not file names; positionals are named as in the usage line
TEXT_ARGUMENTS = {"query", "tag", "measures", "device", "dtype", "split", "method", "fusion", "reranker", "parity"}
_POSITIONALS = {"query"}


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    module = modules[args.command]
    try:
        check_text_arguments(args)
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"rankline {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        if os.environ.get("RANKLINE_DEBUG"):
            raise
        print(f"rankline {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2


def error_line(exc: BaseException) -> str:
    """The one line an error is reported as. An error raised inside a Ray actor (a reranker worker of
    batch-rerank) arrives wrapped, its message the worker's traceback: the original error's message is
    what the user needs. A message of several lines is joined into one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and type(exc).__module__.split(".")[0] == "ray":
        exc = cause
    message = str(exc)
    return " ".join(message.split()) if "\n" in message else message


if __name__ == "__main__":
    sys.exit(main())
