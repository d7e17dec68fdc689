"""One writer at a time per index folder, with a clear message for the second."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from lookalike.errors import Busy


class LockedError(Busy):
    """Another process is writing to the same index."""


class WriterLock:
    """An exclusive, non-blocking advisory lock on ``folder/lock``; released on exit or crash."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        from lookalike.catalog import READ_ONLY_ERRNOS, CatalogError, read_only_error

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in READ_ONLY_ERRNOS:
                raise read_only_error(self.path.parent, exc.strerror) from None
            raise CatalogError(
                f"cannot open the lock file {self.path}: {exc.strerror}; move whatever is "
                "there aside and run again"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"index {self.path.parent} is locked by process {holder} "
                "(another lookalike is writing to it); try again when it has finished"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
