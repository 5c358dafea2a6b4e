"""Old flag spellings that keep working: each stores into its new flag's destination and prints one
deprecation line on stderr naming the flag to use instead. Hidden from --help."""
from __future__ import annotations

import argparse
import sys
from typing import Any


class _DeprecatedFlag(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, *old: str, new: str, **kwargs: Any) -> None:
    """Accept the flags `old` as the spelling `new` (an option already added to `parser`); `kwargs`
    are the argparse keywords of a value-taking option (type, nargs, ...)."""
    action = next(a for a in parser._actions if new in a.option_strings)
    parser.add_argument(*old, dest=action.dest, action=_DeprecatedFlag, new=new, help=argparse.SUPPRESS,
                        type=action.type, **kwargs)
