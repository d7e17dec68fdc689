"""What every command shares: the common options, opening the index, CommandError."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TypeAlias

from lookalike.cli.args import path_arg
from lookalike.errors import LookalikeError

if TYPE_CHECKING:
    from lookalike.collection import Collection

#: The ``commands`` of ``lookalike``'s parser, to which each command group adds its parsers.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandError(LookalikeError):
    """A failure to report as one line on standard error, exit status 1."""


def common_options() -> argparse.ArgumentParser:
    """The options of every command (``--db``, ``--json``, ``-q``), as a parent parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="PATH",
        type=path_arg,
        help="index folder (default: $LOOKALIKE_DB or the XDG data folder)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar or chatter")
    return common


def open_collection(
    args: argparse.Namespace, create: bool, threads: int | None = None
) -> Collection:
    """The collection in ``--db`` (or the default folder)."""
    import lookalike

    return lookalike.open(args.db, create=create, threads=threads)


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw a progress bar: not with ``-q`` or ``--json``, only on a terminal."""
    return not args.quiet and not args.json and sys.stderr.isatty()
