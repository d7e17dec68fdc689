"""Writing a file so that readers see the old content or the new, never half of either."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt


def write_atomic(path: str | os.PathLike, data: bytes | np.ndarray) -> None:
    """Write ``data`` (bytes, or an array's buffer) to ``path``: a temporary file in the same
    folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data if isinstance(data, bytes) else data.data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def savez_atomic(path: str | os.PathLike, **arrays: npt.ArrayLike) -> None:
    """``numpy.savez`` through :func:`write_atomic`."""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)  # numbers and text only
    write_atomic(path, buffer.getvalue())
