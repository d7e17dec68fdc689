"""The `lookalike` command: parse arguments, call the library, print (human or --json)."""

from __future__ import annotations

import argparse
import codecs
import errno
import json
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from lookalike.catalog import CatalogError
from lookalike.features.base import METRICS
from lookalike.features.registry import UnknownFeature
from lookalike.filters import FilterError
from lookalike.images import ImageError
from lookalike.index.milvus import MilvusError
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


#: Upper bounds of the numeric options: past them a value is a typo or an attack (a billion
#: inference threads, a k that asks faiss for exabytes), not a setting.
MAX_THREADS = 1024
MAX_WORKERS = 1024
MAX_BATCH = 4096
MAX_K = 1_000_000
MAX_CHECK_K = 10_000
MAX_PIXELS_LIMIT = 10**10
MAX_READERS = 64
MAX_UPLOAD_MB = 4096


#: Longest ``search --text``, in characters, as the server's (long texts take minutes and GBs).
MAX_TEXT = 500


def _path_arg(text: str) -> str:
    """An argparse ``type``: a path, never empty (an unset shell variable must not mean the
    current folder, or the default index)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty one")
    return text


def _text_arg(text: str) -> str:
    """An argparse ``type``: words to search for, at most :data:`MAX_TEXT` characters."""
    if len(text) > MAX_TEXT:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_TEXT} characters of text, got {len(text):,}"
        )
    return text


def _int_in(low: int, high: int):
    """An argparse ``type``: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {low:,} to {high:,}, got {value:,}"
            )
        return value

    parse.__name__ = "number"  # argparse names the type in its messages
    return parse


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="PATH",
        type=_path_arg,
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
    p.add_argument(
        "paths",
        nargs="*",
        type=_path_arg,
        metavar="PATH",
        help="image files or folders (optional with --metadata)",
    )
    p.add_argument("--prune", action="store_true", help="forget files that disappeared")
    p.add_argument(
        "--workers", type=_int_in(1, MAX_WORKERS), help="decode processes (default: cores)"
    )
    p.add_argument(
        "--threads", type=_int_in(1, MAX_THREADS), help="inference threads (default: cores)"
    )
    p.add_argument("--batch-size", type=_int_in(1, MAX_BATCH), default=32, help="images per batch")
    p.add_argument(
        "--max-pixels",
        type=_int_in(1, MAX_PIXELS_LIMIT),
        help="refuse images larger than this many pixels",
    )
    p.add_argument(
        "--features",
        metavar="LIST",
        help="descriptors to compute, e.g. deep,phash,color (sets them) or +pdq (adds one); "
        "see `lookalike features`",
    )
    p.add_argument("--refit", action="store_true", help="fit learned codes (itq...) again")
    p.add_argument(
        "--model",
        metavar="clip-onnx:DIR",
        help="bring your own CLIP: also embed every image with the image.onnx in DIR (with "
        "text.onnx and tokenizer.json), which search --text then uses",
    )
    p.add_argument(
        "--metadata",
        metavar="FILE",
        type=_path_arg,
        help="attach metadata by path from a CSV (with a 'path' column) or JSON-lines file",
    )
    p.add_argument(
        "--index",
        metavar="KIND",
        help="vector index, kept for later runs: auto (by size and --memory-budget; the "
        "default), flat, hnsw, hnsw-sq8, ivfpq, or pca256-hnsw ...",
    )
    p.add_argument(
        "--memory-budget", metavar="SIZE", help="memory for the index with auto, e.g. 8G"
    )
    p.add_argument(
        "--backend", choices=("faiss", "milvus"), help="where vectors are searched (faiss)"
    )
    p.add_argument(
        "--uri", help="Milvus server (http://HOST:19530) or Milvus Lite file, for --backend milvus"
    )
    p.set_defaults(usage_error=p.error)

    p = commands.add_parser("search", parents=[common], help="find images similar to a query")
    p.add_argument(
        "queries",
        nargs="*",
        type=_path_arg,
        metavar="IMAGE",
        help="query image files (or --text)",
    )
    p.add_argument("-k", type=_int_in(1, MAX_K), default=10, help="results per query (default 10)")
    p.add_argument(
        "-f", "--files", action="store_true", help="print matching paths only, one per line"
    )
    p.add_argument(
        "--threads", type=_int_in(1, MAX_THREADS), help="inference threads (default: cores)"
    )
    p.add_argument("--feature", help="descriptor to compare (default: the index's first, deep)")
    p.add_argument("--metric", help="compare under another metric: cosine, l2, chi2, intersection")
    p.add_argument(
        "--rerank", metavar="FEATURE", help="order a shortlist exactly by this feature (deep)"
    )
    p.add_argument(
        "--shortlist",
        type=_int_in(1, MAX_K),
        help="shortlist size for --rerank (max(200, 20k))",
    )
    p.add_argument(
        "--where",
        metavar="EXPR",
        help="only images whose metadata passes, e.g. \"category = 'shoes' and price < 50\"",
    )
    p.add_argument("--folder", metavar="DIR", type=_path_arg, help="only images inside this folder")
    p.add_argument(
        "--plain",
        action="store_true",
        help="deep: plain cosine of the stored vectors (no tuning, centring, query expansion)",
    )
    p.add_argument(
        "--text",
        action="append",
        metavar="TEXT",
        type=_text_arg,
        help='search by words, e.g. "a cup of espresso" (ImageNet classes and their WordNet '
        "ancestors; repeat for several queries)",
    )
    p.add_argument(
        "--image", metavar="IMAGE", help="with --text: an image whose look the results share"
    )
    p.add_argument(
        "--weight",
        type=_fraction,
        default=0.5,
        help="with --text and --image: the text's share of the score (0..1, default 0.5)",
    )
    p.add_argument(
        "--model",
        choices=("concepts", "clip"),
        help="with --text: ImageNet concepts (built in) or the index's own CLIP (the default "
        "when it was indexed with --model clip-onnx:DIR)",
    )
    p.set_defaults(usage_error=p.error)

    p = commands.add_parser(
        "eval", parents=[common], help="retrieval quality on labelled images (mAP, P@k, ...)"
    )
    p.add_argument(
        "folder", metavar="DIR", type=_path_arg, help="labelled images (one sub-folder per class)"
    )
    p.add_argument(
        "--labels", metavar="CSV", type=_path_arg, help="path,label file instead of the folders"
    )
    p.add_argument(
        "--features",
        help="settings side by side, e.g. deep,deep+center+qe,deep+dba,deep+pca256,color "
        "(default: deep,deep+center+qe: stored vectors, and as search ranks)",
    )
    p.add_argument("--html", metavar="FILE", type=_path_arg, help="write an offline HTML report")
    p.add_argument(
        "--copies", action="store_true", help="run the copy-detection benchmark on DIR instead"
    )

    p = commands.add_parser(
        "tune", parents=[common], help="learn a projection from labelled images for search"
    )
    p.add_argument(
        "folder",
        nargs="?",
        metavar="DIR",
        type=_path_arg,
        help="the images (default: CSV's folder)",
    )
    p.add_argument(
        "--labels",
        metavar="CSV",
        type=_path_arg,
        help="path,label file (else one folder per class)",
    )
    p.add_argument("--clear", action="store_true", help="forget the stored projection")
    p.add_argument(
        "--dry-run", action="store_true", help="measure on held-out splits, store nothing"
    )
    p.set_defaults(usage_error=p.error)

    p = commands.add_parser("info", parents=[common], help="what the index holds")
    p.add_argument("--errors", action="store_true", help="list the files that failed")

    p = commands.add_parser(
        "remove", parents=[common], help="forget files or whole folders (files stay on disk)"
    )
    p.add_argument("paths", nargs="+", type=_path_arg, metavar="PATH")

    p = commands.add_parser(
        "verify", parents=[common], help="check catalog and index files; --repair mends them"
    )
    p.add_argument(
        "--repair", action="store_true", help="mend what is found (takes the writer lock)"
    )

    p = commands.add_parser(
        "check", parents=[common], help="is this picture a copy of one in the index? (verdict)"
    )
    p.add_argument(
        "queries", nargs="+", type=_path_arg, metavar="IMAGE", help="suspect image files"
    )
    p.add_argument(
        "-k", type=_int_in(1, MAX_CHECK_K), default=10, help="candidates per region (10)"
    )

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
        type=_fraction,
        help="cosine similarity to link two images (0..1; default: the preset's)",
    )
    p.add_argument("--html", metavar="FILE", type=_path_arg, help="write an offline HTML report")
    p.add_argument("--to-remove", action="store_true", help="print the files to drop, one per line")
    p.add_argument(
        "--move-to",
        metavar="DIR",
        type=_path_arg,
        help="move the files to drop into DIR and forget them in the index (never deletes)",
    )

    p = commands.add_parser(
        "features", parents=[common], help="the descriptors on offer: size, metric, speed"
    )
    p.add_argument("--no-speed", action="store_true", help="skip measuring encode speed (faster)")

    p = commands.add_parser(
        "serve", parents=[common], help="web page and HTTP API: search, filter, dups, check"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument(
        "--port", type=_int_in(0, 65535), default=8000, help="port (8000; 0: any free one)"
    )
    p.add_argument(
        "--token",
        help="bearer token for adding and deleting images (default: $LOOKALIKE_TOKEN, "
        "else a new one, printed)",
    )
    p.add_argument(
        "--allow-root",
        action="append",
        default=[],
        metavar="DIR",
        help="allow adding server-side files under DIR (repeatable; default: none)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=_megabytes,
        default=20.0,
        help=f"largest request body in MB (20; at most {MAX_UPLOAD_MB:,})",
    )
    p.add_argument(
        "--max-pixels", type=_positive_int, help="refuse images larger than this (100,000,000)"
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow cross-origin requests from ORIGIN (repeatable; default: none)",
    )
    p.add_argument(
        "--allow-url-fetch",
        action="store_true",
        help="let clients search by an image URL that the server downloads (off; only public "
        "addresses are fetched, but anyone who reaches the server can make it download)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        type=_host_name,
        metavar="NAME",
        help="accept requests that name the server NAME (repeatable; loopback names and --host "
        "always work; '*' turns the Host check against DNS rebinding off)",
    )
    p.add_argument("--readers", type=_int_in(1, MAX_READERS), default=2, help="query threads (2)")
    p.add_argument("--workers", type=_int_in(1, MAX_WORKERS), help="decode processes when adding")

    p = commands.add_parser(
        "demo", parents=[common], help="index built-in sample photos and search them"
    )
    p.add_argument(
        "--dir",
        default="demo-data",
        type=_path_arg,
        help="folder for the demo photos and index (./demo-data)",
    )
    p.add_argument(
        "--serve", action="store_true", help="then serve the demo collection (lookalike serve)"
    )
    p.add_argument("--host", default="127.0.0.1", help="with --serve: address (127.0.0.1)")
    p.add_argument("--port", type=_int_in(0, 65535), default=8000, help="with --serve: port (8000)")
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
    from lookalike.metadata import MetadataError
    from lookalike.text.clip import ClipModelError

    options = {"index": args.index, "memory_budget": args.memory_budget}
    options |= {"backend": args.backend, "uri": args.uri}
    if not args.paths and not args.metadata and not any(options.values()):
        args.usage_error("give at least one PATH, or --metadata FILE")  # exits with status 2
    if args.metadata:
        _check_input_file(args.metadata, "--metadata")
    if not args.paths and not any(options.values()):
        return _attach_metadata(args)
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
                metadata=args.metadata,
                model=args.model,
                **options,
            )
        except (FileNotFoundError, UnknownFeature, MetadataError, ClipModelError) as exc:
            raise CommandError(str(exc)) from None
        except (ValueError, MilvusError) as exc:  # index options; Milvus unreachable
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
    if report.metadata is not None:
        lines += _metadata_lines(args.metadata, report.metadata)
    if not args.quiet or args.json:
        _emit(args, payload, "\n".join(lines))
    return EXIT_OK


def _check_input_file(path: str, what: str) -> None:
    """CommandError if ``path`` is a folder or a device (/dev/zero never ends): only files and
    pipes are read."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing, unreadable, a NUL in the name: the reader says so
        return
    if stat.S_ISDIR(mode):
        raise CommandError(f"{what} {path}: is a folder, not a file")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise CommandError(f"{what} {path}: not a regular file")


def _index_line(about: dict) -> str:
    """``auto (budget 8.0 GB), faiss`` or ``flat, milvus at http://...``."""
    text = about["index"]
    if about["index"] == "auto":
        text += f" (budget {_size(about['memory_budget'])})"
    if about["backend"] == "milvus":
        return f"{text}, milvus at {about['uri']}"
    return f"{text}, faiss"


def _attach_metadata(args: argparse.Namespace) -> int:
    """``index --metadata FILE`` without paths: attach metadata to what is indexed."""
    from lookalike.metadata import MetadataError, read_metadata

    with _open(args, create=True) as col:
        try:
            counts = col.set_metadata(read_metadata(args.metadata))
        except MetadataError as exc:
            raise CommandError(str(exc)) from None
    if not args.quiet or args.json:
        _emit(args, {"metadata": counts}, "\n".join(_metadata_lines(args.metadata, counts)))
    return EXIT_OK


def _metadata_lines(file: str, counts: dict) -> list[str]:
    lines = [f"metadata from {file}: attached to {counts['attached']} indexed files"]
    if counts["unmatched"]:
        lines[0] += (
            f"; rows naming no indexed file: {counts['unmatched']} (kept: they apply once the "
            "file is indexed)"
        )
        lines += [f"  not indexed: {path}" for path in counts["unmatched_paths"][:5]]
        if counts["unmatched"] > 5:
            lines.append(f"  ... and {counts['unmatched'] - 5} more")
    return lines


def cmd_search(args: argparse.Namespace) -> int:
    from lookalike.filters import parse_filter, to_sql

    try:
        where = parse_filter(args.where) if args.where is not None else None
        to_sql(where)  # every limit checked before any query image is read
    except FilterError as exc:
        print(f"lookalike: bad --where: {exc}", file=sys.stderr)
        return EXIT_USAGE
    filtered = where is not None or args.folder is not None
    if args.text is not None or args.image is not None:
        return _search_text(args, where, filtered)
    if not args.queries:
        args.usage_error("give at least one IMAGE, or --text TEXT")  # exits with status 2
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
                    where=where,
                    folder=args.folder,
                    expand=not args.plain,
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
                        "metadata": m.metadata,
                    }
                    for m in matches
                ]
                print(json.dumps({"query": query, "results": results}, ensure_ascii=False))
            elif args.files:
                for m in matches:
                    print(m.path)
            else:
                print(_table(query, matches, filtered))
    return status


def _search_text(args: argparse.Namespace, where: object, filtered: bool) -> int:
    """``search --text`` (optionally with ``--image``): one result list per text."""
    from lookalike.text.encoder import TextModelMissing
    from lookalike.text.scoring import default_text_model

    if not args.text:
        args.usage_error("--image combines an image with --text TEXT")
    if args.queries:
        args.usage_error("with --text, give the image to combine as --image IMAGE")
    with _open(args, create=False, threads=args.threads) as col:
        try:
            if args.model == "concepts" or col._clip_info() is None:
                default_text_model().prepare(progress=not args.quiet)
        except TextModelMissing as exc:
            raise CommandError(str(exc)) from None
        for text in args.text:
            try:
                results = col.search_text(
                    text, k=args.k, image=args.image, weight=args.weight,
                    where=where, folder=args.folder, model=args.model,
                )  # fmt: skip
            except (UnknownFeature, ValueError) as exc:
                raise CommandError(str(exc)) from None
            except ImageError as exc:
                raise CommandError(f"cannot read --image {args.image}: {exc.reason}") from None
            if results.warning and not args.quiet:
                print(f"lookalike: warning: {text}: {results.warning}", file=sys.stderr)
            if args.json:
                payload = results.query.as_dict() | {
                    "model": results.model,
                    "query": text,
                    "image": args.image,
                    "weight": args.weight if args.image else None,
                    "warning": results.warning,
                    "results": [
                        {
                            "path": m.path,
                            "score": round(m.score, 6),
                            "distance": round(m.distance, 6),
                            "id": m.id,
                            "width": m.width,
                            "height": m.height,
                            "metadata": m.metadata,
                        }
                        for m in results
                    ],
                }
                print(json.dumps(payload, ensure_ascii=False))
            elif args.files:
                for m in results:
                    print(m.path)
            else:
                concepts = ", ".join(c.name for c in results.matched_concepts) or "no concept"
                if results.model != "concepts":
                    concepts = results.model
                label = f'"{text}" ({concepts}' + (f" + {args.image}" if args.image else "") + ")"
                print(_table(label, results, filtered))
    return EXIT_OK


def _megabytes(text: str) -> float:
    """An argparse ``type``: a size in MB above 0 and at most :data:`MAX_UPLOAD_MB`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MB, got {text!r}") from None
    if not 0.0 < value <= MAX_UPLOAD_MB:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"expected a number of MB above 0 and at most {MAX_UPLOAD_MB:,}, got {text}"
        )
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value}")
    return value


def _table(query: str, matches: list, filtered: bool = False) -> str:
    lines = [f"{query}:"]
    if not matches:
        return lines[0] + (" (no image passes the filter)" if filtered else " (the index is empty)")
    lines.append(f"  {'rank':>4}  {'score':>6}  {'size':>11}  path")
    for rank, m in enumerate(matches, 1):
        size = f"{m.width}x{m.height}"
        lines.append(f"  {rank:>4}  {m.score:6.4f}  {size:>11}  {m.path}")
        if m.metadata:
            shown = "  ".join(f"{key}={value}" for key, value in m.metadata.items())
            lines.append(f"  {'':>4}  {'':>6}  {'':>11}  {shown[:200]}")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args, create=False) as col:
        info = col.info()
        info["metadata"] = col.metadata_keys()
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
        f"search index:  {_size(info['index_bytes'])}, {_index_line(info['vector_index'])}",
        f"catalog:       {_size(info['catalog_bytes'])}",
        "features:",
    ]
    for f in info["features"]:
        lines.append(
            f"  {f['name']:<14} {f['metric']:<12} {f['images']:>8} images  "
            f"{f['bytes_per_image']:>6} B/image  vectors {_size(f['vector_bytes']):>10}  "
            f"index {_size(f['index_bytes']):>10}"
        )
    if info["metadata"]:
        lines.append("metadata (filter with search --where):")
    for key, about in info["metadata"].items():
        if about["type"] == "number":
            detail = f"{about['min']} .. {about['max']}"
        else:
            shown = ", ".join(json.dumps(v, ensure_ascii=False) for v in about["values"][:8])
            more = "" if about["distinct"] <= 8 else f", ... ({about['distinct']} values)"
            detail = shown + more
        lines.append(f"  {key:<14} {about['type']:<8} {about['count']:>8} images  {detail}")
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


def cmd_verify(args: argparse.Namespace) -> int:
    from lookalike.integrity import repair, verify

    with _open(args, create=False) as col:
        report = repair(col) if args.repair else verify(col)
    lines = [f"repaired: {what}" for what in report.repaired]
    for p in report.problems:
        fix = f" (--repair: {p.fix})" if p.fix and not args.repair else ""
        lines.append(f"{p.severity}: {p.message}{fix}")
    counts = report.checked
    lines.append(
        ("consistent" if report.ok else f"{len(report.errors)} problems")
        + f": {counts.get('files', 0)} files, {counts.get('contents', 0)} images, "
        f"{counts.get('vectors', 0)} vectors, {counts.get('index_files', 0)} index files checked"
    )
    _emit(args, report.as_dict(), "\n".join(lines))
    return EXIT_OK if report.ok else EXIT_ERROR


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
                print(
                    f"{query}: copy of {match.path} (score {result.score:.3f}; "
                    f"{_evidence_text(result.evidence)})"
                )
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

    moved: list[tuple[str, str]] = []
    with _open(args, create=False) as col:
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


def _host_name(value: str) -> str:
    """A ``--allow-host`` value: a host name or IP address (no scheme, path or spaces), or ``*``."""
    from lookalike.server.app import split_host

    if value.strip() == "*":
        return "*"
    if split_host(value) is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a host name (e.g. photos.lan)")
    return value.strip().lower()


def cmd_serve(args: argparse.Namespace) -> int:
    import lookalike
    from lookalike.collection import default_location
    from lookalike.server import ServerConfig, serve
    from lookalike.server.app import DEFAULT_MAX_PIXELS

    token, source = args.token, "--token"
    if not token and os.environ.get("LOOKALIKE_TOKEN"):
        token, source = os.environ["LOOKALIKE_TOKEN"], "$LOOKALIKE_TOKEN"
    for root in args.allow_root:
        if not Path(root).expanduser().is_dir():
            raise CommandError(f"--allow-root {root}: no such folder")
    db = Path(args.db).expanduser() if args.db else default_location()
    lookalike.open(db, create=True).close()
    config = ServerConfig(
        db=db,
        allow_roots=[Path(r) for r in args.allow_root],
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        cors_origins=args.cors_origin,
        allow_url_fetch=args.allow_url_fetch,
        host=args.host,
        allow_hosts=args.allow_host,
        readers=args.readers,
        workers=args.workers,
        **({"token": token} if token else {}),
    )
    return serve(
        config, args.host, args.port, token_source=source if token else "generated",
        quiet=args.quiet,
    )  # fmt: skip


def cmd_demo(args: argparse.Namespace) -> int:
    from lookalike.demo import run_demo

    status = run_demo(Path(args.dir), as_json=args.json, progress=_progress(args))
    if not args.serve:
        return status
    serve = ["serve", "--db", str(Path(args.dir) / "index"), "--allow-root", args.dir]
    serve += ["--host", args.host, "--port", str(args.port)] + (["-q"] if args.quiet else [])
    print(flush=True)
    return cmd_serve(build_parser().parse_args(serve))


def cmd_eval(args: argparse.Namespace) -> int:
    from lookalike.eval.labels import LabelsError
    from lookalike.eval.runner import EvalError, run_eval, table

    def say(text: str) -> None:
        if not args.quiet and not args.json:
            print(text, file=sys.stderr)

    if args.copies:
        from lookalike.eval.copy_eval import copy_table, run_copy_eval

        try:
            r = run_copy_eval(Path(args.folder), progress=_progress(args), say=say)
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
        _emit(args, r, copy_table(r))
        return EXIT_OK
    try:
        run = run_eval(
            Path(args.folder),
            Path(args.labels) if args.labels else None,
            args.features,
            db=Path(args.db).expanduser() if args.db else None,
            progress=_progress(args),
            say=say,
        )
    except (EvalError, LabelsError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    if args.html:
        from lookalike.eval.report import write_html_report

        write_html_report(run, Path(args.html))
        say(f"report: {args.html}")
    _emit(args, run.as_dict(), table(run))
    return EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    from lookalike.eval.labels import LabelsError, check_labels_file
    from lookalike.tune import TuneError, labelled_vectors, save_tuning, tune_collection

    with _open(args, create=False) as col:
        if args.clear:
            save_tuning(col, None)
            _emit(args, {"cleared": True}, "tuning forgotten: search uses the stored vectors")
            return EXIT_OK
        if not args.labels and not args.folder:
            args.usage_error("give --labels CSV, or DIR with one sub-folder per class")
        try:
            # a missing CSV fails here, before anything is listed
            labels = check_labels_file(args.labels) if args.labels else None
            # without DIR only the files the CSV names are read: never a walk of its folder
            # (a CSV given as `x.csv` in the home folder, or in /, would list all of it)
            folder = Path(args.folder) if args.folder else labels.parent
            walk = args.folder is not None
            vectors, names, excluded, notes = labelled_vectors(col, folder, labels, walk)
            report = tune_collection(col, vectors, names, excluded, store=not args.dry_run)
        except (LabelsError, TuneError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
    payload = report.as_dict() | {"notes": notes}
    lines = [f"note: {n}" for n in notes]
    lines.append(f"{report.images} labelled images, {report.labels} labels")
    for s in report.splits:
        kind = "new images of known labels" if s.split == "image" else "labels never seen"
        lines.append(
            f"test split by {s.split} ({kind}; fitted on {s.train_images}, measured on "
            f"{s.test_images}): mAP {s.before:.3f} -> {s.after:.3f} "
            f"({100 * (s.after - s.before):+.1f} points)"
        )
    lines.append(
        f"projection to {report.dim} dimensions (shrinkage {report.shrinkage}) "
        + ("stored: search uses it (--plain to compare)" if report.stored else "not stored")
    )
    _emit(args, payload, "\n".join(lines))
    return EXIT_OK


COMMANDS = {
    "eval": cmd_eval,
    "tune": cmd_tune,
    "index": cmd_index,
    "search": cmd_search,
    "info": cmd_info,
    "remove": cmd_remove,
    "verify": cmd_verify,
    "features": cmd_features,
    "check": cmd_check,
    "dups": cmd_dups,
    "demo": cmd_demo,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lookalike`` command; returns the exit status."""
    _tolerant_output()
    args = build_parser().parse_args(argv)
    try:
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader gone by now is a BrokenPipeError here, not at exit
        return status
    except (CommandError, CatalogError, LockedError, MilvusError) as exc:
        print(f"lookalike: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except FilterError as exc:
        print(f"lookalike: bad filter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # a value refused deep down: its message says which
        print(f"lookalike: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print("lookalike: out of memory; free some, or index in smaller batches", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # the reader of our output went away (e.g. `| head`): not an error. (Before the OSError
        # branch: BrokenPipeError is an OSError.) Later writes, at exit too, go to /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            print(f"lookalike: {_os_error_text(exc)}", file=sys.stderr)
            return EXIT_ERROR
        print(
            f"lookalike: cannot write {exc.filename or 'a file'}: {exc.strerror}; everything "
            "committed before is kept: free some space and run again",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("lookalike: interrupted; committed work is kept, run again to go on", file=sys.stderr)
        return EXIT_INTERRUPTED


def _os_error_text(exc: OSError) -> str:
    """``PATH: reason`` for an operating-system error, one line."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        name = os.fsdecode(exc.filename) if isinstance(exc.filename, bytes) else exc.filename
        return f"{name}: {reason}"
    return reason


def _encode_error(exc: UnicodeError) -> tuple[str | bytes, int]:
    """Error handler for output: bytes of undecodable file names as they were, else escapes."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    text = exc.object[exc.start : exc.end]
    if all("\udc80" <= char <= "\udcff" for char in text):
        return bytes(ord(char) - 0xDC00 for char in text), exc.end
    return codecs.backslashreplace_errors(exc)


def _tolerant_output() -> None:
    """Printing never fails: a closed stdout or stderr writes nowhere; file names that are
    not valid UTF-8 (or not encodable in an ASCII locale) are written as their bytes or escaped
    instead of raising UnicodeEncodeError."""
    codecs.register_error("lookalike-output", _encode_error)
    # started with a closed stdout or stderr (`>&-`), Python sets it to None: write nowhere
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="lookalike-output")


if __name__ == "__main__":
    sys.exit(main())
