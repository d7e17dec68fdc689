"""The `lookalike` command: parse arguments, call the library, print (human or --json)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lookalike.catalog import CatalogError
from lookalike.features.base import METRICS
from lookalike.features.registry import UnknownFeature
from lookalike.images import ImageError
from lookalike.lock import LockedError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(Exception):
    """A failure to report as one line on standard error, exit status 1."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of 1 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="PATH",
        help="index folder (default: $LOOKALIKE_DB or the XDG data folder)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar or chatter")

    parser = argparse.ArgumentParser(
        prog="lookalike",
        description="Search by image: index folders of images, then find the same and the most "
        "similar ones for any query image. Offline, on a CPU.",
    )
    from lookalike import __version__

    parser.add_argument("--version", action="version", version=f"lookalike {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "index", parents=[common], help="add image files and folders (only new or changed ones)"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--prune", action="store_true", help="forget files that disappeared")
    p.add_argument("--workers", type=_positive_int, help="decode processes (default: cores)")
    p.add_argument("--threads", type=_positive_int, help="inference threads (default: cores)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per batch")
    p.add_argument(
        "--max-pixels", type=_positive_int, help="refuse images larger than this many pixels"
    )
    p.add_argument(
        "--features",
        metavar="LIST",
        help="descriptors to compute, e.g. deep,phash,color (sets them) or +pdq (adds one); "
        "see `lookalike features`",
    )
    p.add_argument("--refit", action="store_true", help="fit learned codes (itq...) again")

    p = commands.add_parser("search", parents=[common], help="find images similar to a query")
    p.add_argument("queries", nargs="+", metavar="IMAGE", help="query image files")
    p.add_argument("-k", type=_positive_int, default=10, help="results per query (default 10)")
    p.add_argument(
        "-f", "--files", action="store_true", help="print matching paths only, one per line"
    )
    p.add_argument("--threads", type=_positive_int, help="inference threads (default: cores)")
    p.add_argument("--feature", help="descriptor to compare (default: the index's first, deep)")
    p.add_argument("--metric", help="compare under another metric: cosine, l2, chi2, intersection")
    p.add_argument(
        "--rerank", metavar="FEATURE", help="order a shortlist exactly by this feature (deep)"
    )
    p.add_argument(
        "--shortlist", type=_positive_int, help="shortlist size for --rerank (max(200, 20k))"
    )

    p = commands.add_parser("info", parents=[common], help="what the index holds")
    p.add_argument("--errors", action="store_true", help="list the files that failed")

    p = commands.add_parser(
        "remove", parents=[common], help="forget files or whole folders (files stay on disk)"
    )
    p.add_argument("paths", nargs="+", metavar="PATH")

    p = commands.add_parser(
        "check", parents=[common], help="is this picture a copy of one in the index? (verdict)"
    )
    p.add_argument("queries", nargs="+", metavar="IMAGE", help="suspect image files")
    p.add_argument("-k", type=_positive_int, default=10, help="candidates per region (10)")

    p = commands.add_parser("dups", parents=[common], help="groups of duplicate images")
    p.add_argument(
        "--preset",
        choices=("exact", "near", "similar"),
        default="near",
        help="exact: same bytes; near: resized or recompressed copies (default); similar: "
        "same scene",
    )
    p.add_argument("--threshold", type=float, help="cosine similarity to link two images")
    p.add_argument("--html", metavar="FILE", help="write an offline HTML report")
    p.add_argument(
        "--to-remove", action="store_true", help="print the files to drop, one per line"
    )
    p.add_argument(
        "--move-to", metavar="DIR", help="move the files to drop into DIR (never deletes)"
    )

    p = commands.add_parser(
        "features", parents=[common], help="the descriptors on offer: size, metric, speed"
    )
    p.add_argument(
        "--no-speed", action="store_true", help="skip measuring encode speed (faster)"
    )

    p = commands.add_parser(
        "demo", parents=[common], help="index built-in sample photos and search them"
    )
    p.add_argument(
        "--dir", default="demo-data", help="folder for the demo photos and index (./demo-data)"
    )
    return parser


def _open(args: argparse.Namespace, create: bool, threads: int | None = None):
    import lookalike

    return lookalike.open(args.db, create=create, threads=threads)


def _emit(args: argparse.Namespace, payload: object, text: str) -> None:
    if args.json:
        print(json.dumps(payload, ensure_ascii=False))
    elif text:
        print(text)


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and not args.json and sys.stderr.isatty()


def cmd_index(args: argparse.Namespace) -> int:
    with _open(args, create=True, threads=args.threads) as col:
        try:
            report = col.add(
                args.paths,
                prune=args.prune,
                workers=args.workers,
                batch_size=args.batch_size,
                max_pixels=args.max_pixels,
                progress=_progress(args),
                features=args.features,
                refit=args.refit,
            )
        except (FileNotFoundError, UnknownFeature) as exc:
            raise CommandError(str(exc)) from None
        info = col.info()
    payload = report.as_dict() | {
        "images": info["images"],
        "index": info["path"],
        "features": [f["name"] for f in info["features"]],
    }
    lines = [
        f"indexed {report.embedded} new, "
        + (f"added features to {report.backfilled}, " if report.backfilled else "")
        + f"linked {report.linked} moved or copied, "
        f"{report.unchanged} unchanged, {report.failed} failed, {report.pruned} pruned "
        f"in {report.seconds:.1f}s; {info['images']} images in {info['path']}"
    ]
    lines += [f"  note: {note}" for note in report.notes]
    for path, error in report.errors[:20]:
        lines.append(f"  failed: {path}: {error}")
    if len(report.errors) > 20:
        lines.append(f"  ... and {len(report.errors) - 20} more (lookalike info --errors)")
    if not args.quiet or args.json:
        _emit(args, payload, "\n".join(lines))
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    status = EXIT_OK
    with _open(args, create=False, threads=args.threads) as col:
        for query in args.queries:
            try:
                matches = col.search(
                    query,
                    k=args.k,
                    feature=args.feature,
                    metric=args.metric,
                    rerank=args.rerank,
                    shortlist=args.shortlist,
                )
            except UnknownFeature as exc:
                raise CommandError(str(exc)) from None
            except ImageError as exc:
                status = EXIT_ERROR
                print(f"lookalike: cannot read query {query}: {exc.reason}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"query": query, "error": exc.reason, "results": []}))
                continue
            if args.json:
                results = [
                    {
                        "path": m.path,
                        "score": round(m.score, 6),
                        "distance": round(m.distance, 6),
                        "id": m.id,
                        "width": m.width,
                        "height": m.height,
                    }
                    for m in matches
                ]
                print(json.dumps({"query": query, "results": results}, ensure_ascii=False))
            elif args.files:
                for m in matches:
                    print(m.path)
            else:
                print(_table(query, matches))
    return status


def _table(query: str, matches: list) -> str:
    lines = [f"{query}:"]
    if not matches:
        return lines[0] + " (the index is empty)"
    lines.append(f"  {'rank':>4}  {'score':>6}  {'size':>11}  path")
    for rank, m in enumerate(matches, 1):
        size = f"{m.width}x{m.height}"
        lines.append(f"  {rank:>4}  {m.score:6.4f}  {size:>11}  {m.path}")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args, create=False) as col:
        info = col.info()
        errors = col.errors() if args.errors else []
    if args.json:
        if args.errors:
            info["error_list"] = [{"path": p, "error": e} for p, e in errors]
        print(json.dumps(info, ensure_ascii=False))
        return EXIT_OK
    lines = [
        f"index:         {info['path']}",
        f"images:        {info['images']} ({info['unique_images']} unique)",
        f"errors:        {info['errors']}",
        f"model:         {info['model']}",
        f"search index:  {_size(info['index_bytes'])}",
        f"catalog:       {_size(info['catalog_bytes'])}",
        "features:",
    ]
    for f in info["features"]:
        lines.append(
            f"  {f['name']:<14} {f['metric']:<12} {f['images']:>8} images  "
            f"{f['bytes_per_image']:>6} B/image  vectors {_size(f['vector_bytes']):>10}  "
            f"index {_size(f['index_bytes']):>10}"
        )
    lines += [f"  {p}: {e}" for p, e in errors]
    print("\n".join(lines))
    return EXIT_OK


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_remove(args: argparse.Namespace) -> int:
    with _open(args, create=False) as col:
        removed = col.remove(args.paths)
    _emit(args, {"removed": removed}, "" if args.quiet else f"forgot {removed} files")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from lookalike.check import check_copy

    status = EXIT_OK
    with _open(args, create=False) as col:
        for query in args.queries:
            try:
                result = check_copy(col, query, k=args.k)
            except ImageError as exc:
                status = EXIT_ERROR
                print(f"lookalike: cannot read query {query}: {exc.reason}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"query": query, "error": exc.reason, "verdict": None}))
                continue
            match = result.match
            if args.json:
                payload = {
                    "query": query,
                    "verdict": result.verdict,
                    "match": None
                    if match is None or result.verdict != "copy"
                    else {"path": match.path, "id": match.id, "score": round(result.score, 6)},
                    "score": round(result.score, 6),
                    "evidence": result.evidence,
                }
                print(json.dumps(payload, ensure_ascii=False, default=_jsonable))
            elif result.verdict == "copy":
                print(f"{query}: copy of {match.path} (score {result.score:.3f}; "
                      f"{_evidence_text(result.evidence)})")
            else:
                print(f"{query}: no copy found (score {result.score:.3f})")
    return status


def _evidence_text(evidence: dict) -> str:
    parts = []
    if "inliers" in evidence:
        parts.append(f"{evidence['inliers']} matching points")
    if "transform" in evidence:
        parts.append(str(evidence["transform"]))
    if "cosine" in evidence:
        parts.append(f"similarity {evidence['cosine']:.3f}")
    return ", ".join(parts)


def _jsonable(value: object) -> object:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return str(value)


def cmd_dups(args: argparse.Namespace) -> int:
    from lookalike.dups import find_duplicates, move_files, write_html_report

    with _open(args, create=False) as col:
        try:
            groups = find_duplicates(col, preset=args.preset, threshold=args.threshold)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    if args.html:
        write_html_report(groups, Path(args.html))
    moved = []
    if args.move_to:
        moved = move_files([f for g in groups for f in g.to_remove], Path(args.move_to))
    if args.to_remove:
        for group in groups:
            for f in group.to_remove:
                print(f["path"])
    elif args.json:
        for group in groups:
            print(json.dumps(group.as_dict(), ensure_ascii=False, default=_jsonable))
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


def cmd_features(args: argparse.Namespace) -> int:
    from lookalike.features.speed import feature_table

    rows = feature_table(measure=not args.no_speed)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return EXIT_OK
    print(f"{'name':<13} {'kind':<8} {'bytes/image':>11}  {'metric':<12} {'images/s':>9}  what")
    for r in rows:
        speed = f"{r['images_per_s']:.0f}" if r.get("images_per_s") else "-"
        print(
            f"{r['name']:<13} {r['kind']:<8} {r['bytes_per_image']:>11}  {r['metric']:<12} "
            f"{speed:>9}  {r['description']}"
        )
    print("\nscore semantics (larger is closer):")
    for metric, meaning in METRICS.items():
        print(f"  {metric:<13} {meaning}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from lookalike.demo import run_demo

    return run_demo(Path(args.dir), as_json=args.json, progress=_progress(args))


COMMANDS = {
    "index": cmd_index,
    "search": cmd_search,
    "info": cmd_info,
    "remove": cmd_remove,
    "features": cmd_features,
    "check": cmd_check,
    "dups": cmd_dups,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lookalike`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CommandError, CatalogError, LockedError) as exc:
        print(f"lookalike: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("lookalike: interrupted; committed work is kept, run again to go on", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of our output went away (e.g. `| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
