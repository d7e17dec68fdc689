"""The ``lookalike`` command: parse arguments, call the library, print (human or --json).

One module per command group adds its parsers and holds its commands: :mod:`.indexing`
(index, info, remove, verify), :mod:`.searching` (search, check), :mod:`.duplicates` (dups),
:mod:`.evaluation` (eval, tune, features) and :mod:`.serving` (serve, demo). :func:`main` turns
what they raise into one line on standard error and an exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from lookalike import __version__
from lookalike.cli import duplicates, evaluation, indexing, searching, serving
from lookalike.cli.common import CommandError, Commands, common_options
from lookalike.cli.output import os_error_text, tolerant_output
from lookalike.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    FULL_DISK_ERRNOS,
    LookalikeError,
    exit_status,
)
from lookalike.filters import FilterError

__all__ = ["CommandError", "build_parser", "main"]

#: The commands in the order ``lookalike --help`` lists them, each with what adds its parser.
PARSERS: dict[str, Callable[[Commands, argparse.ArgumentParser], None]] = {
    "index": indexing.add_index_parser,
    "search": searching.add_search_parser,
    "eval": evaluation.add_eval_parser,
    "tune": evaluation.add_tune_parser,
    "info": indexing.add_info_parser,
    "remove": indexing.add_remove_parser,
    "verify": indexing.add_verify_parser,
    "check": searching.add_check_parser,
    "dups": duplicates.add_dups_parser,
    "features": evaluation.add_features_parser,
    "serve": serving.add_serve_parser,
    "demo": serving.add_demo_parser,
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``lookalike`` command; ``args.run(args)`` runs the command parsed."""
    parser = argparse.ArgumentParser(
        prog="lookalike",
        description="Search by image: index folders of images, then find the same and the most "
        "similar ones for any query image. Offline, on a CPU.",
    )
    parser.add_argument("--version", action="version", version=f"lookalike {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_options()
    for add_parser in PARSERS.values():
        add_parser(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lookalike`` command; returns the exit status."""
    tolerant_output()
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
        sys.stdout.flush()  # a reader gone by now is a BrokenPipeError here, not at exit
        return status
    except BrokenPipeError:
        # the reader of our output went away (e.g. `| head`): not an error. (Before the OSError
        # branch: BrokenPipeError is an OSError.) Later writes, at exit too, go to /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("lookalike: interrupted; committed work is kept, run again to go on", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = exit_status(exc)
        if code is None:  # not an error lookalike expects: the traceback says where
            raise
        print(f"lookalike: {_error_text(exc)}", file=sys.stderr)
        return code


def _error_text(exc: Exception) -> str:
    """The one line that the command prints for an expected error."""
    if isinstance(exc, FilterError):
        return f"bad filter: {exc}"
    if isinstance(exc, MemoryError):
        return "out of memory; free some, or index in smaller batches"
    if isinstance(exc, OSError) and not isinstance(exc, LookalikeError):
        if exc.errno in FULL_DISK_ERRNOS:
            return (
                f"cannot write {exc.filename or 'a file'}: {exc.strerror}; everything "
                "committed before is kept: free some space and run again"
            )
        return os_error_text(exc)
    return str(exc)
