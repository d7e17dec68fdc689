"""The commands that build and look after the index: index, info, remove, verify."""

from __future__ import annotations

import argparse
import json
import os
import stat

from lookalike.cli.args import (
    MAX_BATCH,
    MAX_PIXELS_LIMIT,
    MAX_THREADS,
    MAX_WORKERS,
    int_in,
    path_arg,
)
from lookalike.cli.common import CommandError, Commands, open_collection, show_progress
from lookalike.cli.output import emit, size_text
from lookalike.errors import EXIT_ERROR, EXIT_OK
from lookalike.features.registry import UnknownFeature
from lookalike.index.milvus import MilvusError


def add_index_parser(commands: Commands, common: argparse.ArgumentParser) -> None:
    """``lookalike index``."""
    p = commands.add_parser(
        "index", parents=[common], help="add image files and folders (only new or changed ones)"
    )
    p.add_argument(
        "paths",
        nargs="*",
        type=path_arg,
        metavar="PATH",
        help="image files or folders (optional with --metadata)",
    )
    p.add_argument("--prune", action="store_true", help="forget files that disappeared")
    p.add_argument(
        "--workers", type=int_in(1, MAX_WORKERS), help="decode processes (default: cores)"
    )
    p.add_argument(
        "--threads", type=int_in(1, MAX_THREADS), help="inference threads (default: cores)"
    )
    p.add_argument("--batch-size", type=int_in(1, MAX_BATCH), default=32, help="images per batch")
    p.add_argument(
        "--max-pixels",
        type=int_in(1, MAX_PIXELS_LIMIT),
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
        type=path_arg,
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
    p.set_defaults(run=cmd_index, usage_error=p.error)


def add_info_parser(commands: Commands, common: argparse.ArgumentParser) -> None:
    """``lookalike info``."""
    p = commands.add_parser("info", parents=[common], help="what the index holds")
    p.add_argument("--errors", action="store_true", help="list the files that failed")
    p.set_defaults(run=cmd_info)


def add_remove_parser(commands: Commands, common: argparse.ArgumentParser) -> None:
    """``lookalike remove``."""
    p = commands.add_parser(
        "remove", parents=[common], help="forget files or whole folders (files stay on disk)"
    )
    p.add_argument("paths", nargs="+", type=path_arg, metavar="PATH")
    p.set_defaults(run=cmd_remove)


def add_verify_parser(commands: Commands, common: argparse.ArgumentParser) -> None:
    """``lookalike verify``."""
    p = commands.add_parser(
        "verify", parents=[common], help="check catalog and index files; --repair mends them"
    )
    p.add_argument(
        "--repair", action="store_true", help="mend what is found (takes the writer lock)"
    )
    p.set_defaults(run=cmd_verify)


def cmd_index(args: argparse.Namespace) -> int:
    """Index the paths (new or changed files only), and/or attach ``--metadata``."""
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
    with open_collection(args, create=True, threads=args.threads) as col:
        try:
            report = col.add(
                args.paths,
                prune=args.prune,
                workers=args.workers,
                batch_size=args.batch_size,
                max_pixels=args.max_pixels,
                progress=show_progress(args),
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
        emit(args, payload, "\n".join(lines))
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


def _attach_metadata(args: argparse.Namespace) -> int:
    """``index --metadata FILE`` without paths: attach metadata to what is indexed."""
    from lookalike.metadata import MetadataError, read_metadata

    with open_collection(args, create=True) as col:
        try:
            counts = col.set_metadata(read_metadata(args.metadata))
        except MetadataError as exc:
            raise CommandError(str(exc)) from None
    if not args.quiet or args.json:
        emit(args, {"metadata": counts}, "\n".join(_metadata_lines(args.metadata, counts)))
    return EXIT_OK


def _metadata_lines(file: str, counts: dict) -> list[str]:
    """What attaching metadata from ``file`` did, for people."""
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


def cmd_info(args: argparse.Namespace) -> int:
    """What the index holds: images, features, sizes, metadata keys, and failed files."""
    with open_collection(args, create=False) as col:
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
        f"search index:  {size_text(info['index_bytes'])}, {_index_line(info['vector_index'])}",
        f"catalog:       {size_text(info['catalog_bytes'])}",
        "features:",
    ]
    for f in info["features"]:
        lines.append(
            f"  {f['name']:<14} {f['metric']:<12} {f['images']:>8} images  "
            f"{f['bytes_per_image']:>6} B/image  vectors {size_text(f['vector_bytes']):>10}  "
            f"index {size_text(f['index_bytes']):>10}"
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


def _index_line(about: dict) -> str:
    """``auto (budget 8.0 GB), faiss`` or ``flat, milvus at http://...``."""
    text = about["index"]
    if about["index"] == "auto":
        text += f" (budget {size_text(about['memory_budget'])})"
    if about["backend"] == "milvus":
        return f"{text}, milvus at {about['uri']}"
    return f"{text}, faiss"


def cmd_remove(args: argparse.Namespace) -> int:
    """Forget files or whole folders in the index (the files stay on disk)."""
    with open_collection(args, create=False) as col:
        removed = col.remove(args.paths)
    emit(args, {"removed": removed}, "" if args.quiet else f"forgot {removed} files")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """Check the catalog and index files (``--repair``: mend them); status 1 when not sound."""
    from lookalike.integrity import repair, verify

    with open_collection(args, create=False) as col:
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
    emit(args, report.as_dict(), "\n".join(lines))
    return EXIT_OK if report.ok else EXIT_ERROR
