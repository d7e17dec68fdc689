"""The ``dups`` command: groups of duplicate images, as text, JSON, HTML, or moved aside."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lookalike.cli.args import fraction, path_arg
from lookalike.cli.common import CommandError, Commands, open_collection
from lookalike.cli.output import jsonable
from lookalike.errors import EXIT_OK


def add_dups_parser(commands: Commands, common: argparse.ArgumentParser) -> None:
    """``lookalike dups``."""
    p = commands.add_parser("dups", parents=[common], help="groups of duplicate images")
    p.add_argument(
        "--preset",
        choices=("exact", "near", "similar"),
        default="near",
        help="exact: same bytes; near: resized or recompressed copies (default); similar: "
        "same scene",
    )
    p.add_argument(
        "--threshold",
        type=fraction,
        help="cosine similarity to link two images (0..1; default: the preset's)",
    )
    p.add_argument("--html", metavar="FILE", type=path_arg, help="write an offline HTML report")
    p.add_argument("--to-remove", action="store_true", help="print the files to drop, one per line")
    p.add_argument(
        "--move-to",
        metavar="DIR",
        type=path_arg,
        help="move the files to drop into DIR and forget them in the index (never deletes)",
    )
    p.set_defaults(run=cmd_dups)


def cmd_dups(args: argparse.Namespace) -> int:
    """Find the groups of duplicates; print them, or the files to drop; move those aside."""
    from lookalike.dups import find_duplicates, move_files, write_html_report

    moved: list[tuple[str, str]] = []
    with open_collection(args, create=False) as col:
        try:
            groups = find_duplicates(col, preset=args.preset, threshold=args.threshold)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if args.html:
            write_html_report(groups, Path(args.html))
        if args.move_to:
            moved = move_files([f for g in groups for f in g.to_remove], Path(args.move_to))
            # the moved files are no longer where the index has them: forget them there
            forgotten = col.remove([src for src, _ in moved]) if moved else 0
            if not args.quiet:
                print(f"moved {len(moved)} files to {args.move_to}; forgot {forgotten} in the "
                      "index", file=sys.stderr)  # fmt: skip
    if args.to_remove:
        for group in groups:
            for f in group.to_remove:
                print(f["path"])
    elif args.json:
        for group in groups:
            print(json.dumps(group.as_dict(), ensure_ascii=False, default=jsonable))
    else:
        files = sum(len(g.files) for g in groups)
        print(f"{len(groups)} groups of duplicates ({args.preset}), {files} files")
        for n, group in enumerate(groups, 1):
            print(f"group {n} (similarity >= {group.score:.3f}):")
            for f in group.files:
                mark = "keep" if f == group.keeper else "    "
                print(f"  {mark}  {f['width']}x{f['height']}  {f['path']}")
    if args.html and not args.quiet:
        print(f"report: {args.html}", file=sys.stderr)
    for src, dst in moved:
        if not args.quiet:
            print(f"moved {src} -> {dst}", file=sys.stderr)
    return EXIT_OK
