"""Adding images through the server: uploads checked and saved, metadata files read for
server-side paths, and the writer's work of an add (with progress, and cleanup on failure)."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Callable
from pathlib import Path

from fastapi import HTTPException

from lookalike import Collection
from lookalike.catalog import normal_path, path_inside
from lookalike.images import IMAGE_EXTENSIONS, ImageError, load_image
from lookalike.metadata import MetadataError, read_metadata
from lookalike.pipeline import IndexReport
from lookalike.server.replies import image_error, plain
from lookalike.server.state import Server
from lookalike.server.workers import AddProgress, Job

#: image format (Pillow's name) -> file suffix the indexer accepts
FORMAT_SUFFIX = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "HEIF": ".heic",
    "AVIF": ".avif",
    "MPO": ".jpg",
}
#: how many errors and files of each added path an add's result lists at most
LISTED = 1000


def add_work(
    server: Server,
    roots: list[str],
    records: list[dict] | None,
    *,
    vet: bool = False,
    upload: Path | None = None,
    outside: int = 0,
) -> Callable[[Collection, Job], dict]:
    """The writer's work for an add of ``roots`` with metadata ``records``: ``vet`` for
    server-side paths (links that leave the allowed roots are skipped and reported);
    ``upload``: the folder of an upload, whose files are removed again if the add fails;
    ``outside``: metadata records left out for naming files outside the paths added."""

    def run(col: Collection, job: Job) -> dict:
        try:
            to_add, skipped = server.vet_paths(roots) if vet else (roots, [])
            attached = col.set_metadata(records) if records else None
            progress = AddProgress(col.catalog.path, roots, job)
            total = progress.count_work(col.catalog, to_add)
            job.message = f"indexing {total} files"
            with progress:
                report = col.add(to_add, workers=server.config.workers) if to_add else IndexReport()
            report.errors += skipped[:LISTED]
            if attached is not None or outside:
                report.metadata = (attached or {}) | {"outside_paths": outside}
            job.done = job.total or job.done
            ids = []
            for root in roots:
                ids += [
                    {"id": row.id, "path": row.path}
                    for row in col.catalog.files_under(root)
                    if row.content_id is not None
                ][:LISTED]
            job.message = (
                f"{report.embedded} new, {report.linked} linked, {report.unchanged} unchanged, "
                f"{report.failed} failed"
            ) + (f", {len(skipped)} skipped (see errors)" if skipped else "")
            return plain(report.as_dict()) | {
                "images": col.catalog.count_images(),
                "files": ids,
                "skipped": len(skipped),
            }
        except BaseException:
            if upload is not None:  # a refused or failed upload leaves no files behind
                drop_upload(upload, col)
            raise
        finally:
            server.forget_records()

    return run


def drop_upload(folder: Path, col: Collection | None = None) -> None:
    """Remove the files of a failed upload that the catalog of ``col`` does not hold, then
    the folder if it is empty (best effort: a failure here leaves files, never raises)."""
    known: set[str] = set()
    if col is not None:
        with contextlib.suppress(Exception):
            for name in {str(folder), os.path.realpath(folder)}:
                known |= {row.path for row in col.catalog.files_under(name)}
    try:
        files = list(folder.iterdir())
    except OSError:
        return
    for file in files:
        if str(file) not in known and os.path.realpath(file) not in known:
            with contextlib.suppress(OSError):
                file.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def metadata_inside(file: str, roots: list[str]) -> tuple[list[dict], int]:
    """The records of metadata ``file`` whose path is one of ``roots`` or lies under one (as
    written and once links are resolved), and how many were left out."""
    try:
        records = read_metadata(file)
    except MetadataError as exc:
        raise HTTPException(400, f"metadata: {exc}") from None
    tops = [normal_path(root) for root in roots]
    kept = [
        r for r in records if any(r["path"] == top or path_inside(r["path"], top) for top in tops)
    ]
    return kept, len(records) - len(kept)


def save_uploads(blobs: list[tuple[str, bytes]], folder: Path, max_pixels: int) -> list[Path]:
    """Check every upload is a usable image (400 naming the first that is not), then save them
    into ``folder`` under their own (cleaned) names and the suffix of their real format."""
    kinds = []
    for name, data in blobs:
        try:
            if not data:
                raise ImageError("empty file")
            kinds.append(load_image(data, min_side=64, max_pixels=max_pixels).format)
        except ImageError as exc:
            err = image_error(exc)
            raise HTTPException(err.status_code, f"{name}: {err.detail}") from None
    saved = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for (name, data), kind in zip(blobs, kinds, strict=True):
            stem = re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._")[:80] or "upload"
            suffix = FORMAT_SUFFIX.get(kind.upper())
            if suffix is None:
                own = Path(name).suffix.lower()
                suffix = own if own in IMAGE_EXTENSIONS else ".jpg"
            target = unique_name(folder, stem, suffix)
            target.write_bytes(data)
            saved.append(target)
    except BaseException:
        drop_upload(folder)  # half an upload is no upload
        raise
    return saved


def unique_name(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem+suffix``, or ``stem_1``, ``stem_2``... the first that is free."""
    for n in itertools.count():
        candidate = folder / (f"{stem}{suffix}" if n == 0 else f"{stem}_{n}{suffix}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise AssertionError("unreachable")
