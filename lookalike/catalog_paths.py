"""Paths as the catalog keeps them: absolute, in normal form, valid UTF-8."""

from __future__ import annotations

import os


def normal_path(path: str | os.PathLike) -> str:
    """``path`` as the catalog keeps it: absolute and in normal form, lexically (``..``, ``.``
    and repeated separators removed, as :func:`os.path.abspath` does; a leading ``//`` too),
    and valid UTF-8 (SQLite text must be: undecodable bytes of a name are kept as ``\\xNN``,
    as the indexer stores such names)."""
    if isinstance(path, bytes | bytearray):  # a blob written into the catalog by hand
        path = os.fsdecode(bytes(path))
    elif not isinstance(path, str | os.PathLike):
        path = str(path)
    out = os.path.abspath(os.fspath(path))
    if out.startswith("//"):
        out = "/" + out.lstrip("/")
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        try:
            out = os.fsencode(out).decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
            out = out.encode("utf-8", "backslashreplace").decode("utf-8")
    return out


def path_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` lies inside ``folder`` both as written (in normal form) and once every
    symbolic link on either side is resolved; ``folder`` itself is not inside."""
    lexical, root = normal_path(path), normal_path(folder)
    real, real_root = os.path.realpath(lexical), os.path.realpath(root)
    for child, parent in ((lexical, root), (real, real_root)):
        if child == parent or os.path.commonpath([child, parent]) != parent:
            return False
    return True
