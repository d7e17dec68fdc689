"""Scanning: the image files under folders, with their stat (or why they cannot be read)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from lookalike.images import IMAGE_EXTENSIONS

#: A folder holding this file is a lookalike index (``Collection``'s catalog): its thumbnails,
#: uploads and index files are never scanned as photos.
INDEX_MARKER = "catalog.sqlite"


def is_index_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is a lookalike index folder (it holds the catalog file)."""
    return os.path.isfile(os.path.join(folder, INDEX_MARKER))


def scan(
    roots: Iterable[Path], skipped: list[str] | None = None
) -> Iterator[tuple[str, os.stat_result | None, str | None]]:
    """Yield ``(path, stat, error)`` for every image file under ``roots``.

    Folders are walked recursively without following symbolic links to folders, and hidden
    folders (name starting with ``.``) are skipped, as are lookalike index folders (their
    thumbnails and uploads are no photos of the collection; a root that is one is skipped as
    well) whose paths are appended to ``skipped`` when given. A file named directly is always
    yielded. A folder that cannot be listed is yielded with its error (``unreadable folder: ...``).
    """
    for root in roots:
        if root.is_dir():
            if is_index_folder(root):
                if skipped is not None:
                    skipped.append(str(root))
                continue
            failed: list[OSError] = []
            walk = os.walk(root, followlinks=False, onerror=failed.append)
            for folder, dirnames, filenames in walk:
                kept = []
                for d in sorted(dirnames):
                    if d.startswith("."):
                        continue
                    if is_index_folder(os.path.join(folder, d)):
                        if skipped is not None:
                            skipped.append(os.path.join(folder, d))
                        continue
                    kept.append(d)
                dirnames[:] = kept
                for name in sorted(filenames):
                    if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                        yield _stat(os.path.join(folder, name))
                yield from _unlisted(failed)
            yield from _unlisted(failed)
        else:
            yield _stat(str(root))


def _unlisted(failed: list[OSError]) -> Iterator[tuple[str, None, str]]:
    while failed:
        exc = failed.pop(0)
        yield storable_path(str(exc.filename)), None, f"unreadable folder: {exc.strerror or exc}"


def storable_path(path: str) -> str:
    """``path`` as the catalog keeps it: a name that is not valid UTF-8 (SQLite text must be)
    gets its undecodable bytes escaped as ``\\xNN``."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


def _stat(path: str) -> tuple[str, os.stat_result | None, str | None]:
    stored = storable_path(path)
    if stored != path:  # recorded under its escaped name, never read
        return stored, None, "unsupported file name: not valid UTF-8 (rename the file to index it)"
    try:
        st = os.stat(path)
    except OSError as exc:
        return path, None, f"unreadable: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return path, None, "unreadable: not a regular file"
    return path, st, None
