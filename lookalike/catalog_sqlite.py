"""The SQLite connection under the catalog: its failures as the library's errors (damaged,
read-only, full), and write transactions."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, Self

from lookalike.errors import LookalikeError, Unavailable


class CatalogError(LookalikeError):
    """The catalog cannot be opened or used as asked (none there, too new, wrong model)."""

    http_status = 400


class StorageUnavailable(Unavailable, CatalogError):
    """The index folder cannot be used as it is now (read-only, damaged, full): a problem of
    the storage, not of the request (a server answers 503)."""

    http_status = 503


class StorageFullError(StorageUnavailable):
    """A write failed for want of space (disk full, quota, file size limit); rolled back."""


class ReadOnlyError(StorageUnavailable):
    """A write was refused: the index folder (or its catalog) is read-only or not ours."""


class CatalogDamaged(StorageUnavailable, sqlite3.DatabaseError):
    """The catalog file is damaged (a corrupt page, or not an SQLite database at all)."""


def read_only_error(folder: str | os.PathLike, reason: object) -> ReadOnlyError:
    """The clear error for a write refused in the index folder ``folder``."""
    return ReadOnlyError(
        f"cannot write to the index at {folder}: it is read-only ({reason}); make the folder "
        "and its files writable by this user (or work on a copy) and run again"
    )


def damaged_error(path: Path, reason: object) -> CatalogDamaged:
    """The clear error for a damaged catalog file, saying how to salvage it."""
    return CatalogDamaged(
        f"cannot use catalog {path}: it is damaged ({reason}); run `lookalike verify --repair --db "
        f"{path.parent}` to salvage what can be read into a new catalog (the damaged file "
        "is kept beside it)"
    )


def converted_error(exc: sqlite3.Error, path: Path) -> Exception | None:
    """The library's error for an SQLite error that means damage or a read-only folder."""
    if isinstance(exc, CatalogError):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        out: Exception = damaged_error(path, exc)
    elif primary == sqlite3.SQLITE_READONLY or (
        primary == sqlite3.SQLITE_CANTOPEN and not os.access(path.parent, os.W_OK)
    ):
        out = read_only_error(path.parent, exc)
    else:
        return None
    out.sqlite_errorcode = code  # type: ignore[attr-defined]
    out.sqlite_errorname = getattr(exc, "sqlite_errorname", "")  # type: ignore[attr-defined]
    return out


class _Cursor(sqlite3.Cursor):
    """A cursor that reports a damaged or read-only catalog as the library's errors."""

    def _fail(self, exc: sqlite3.Error) -> NoReturn:
        connection = self.connection
        assert isinstance(connection, _Connection)
        converted = converted_error(exc, connection.catalog_path)
        if converted is not None:
            raise converted from exc
        raise exc

    def execute(self, *args: Any) -> Self:
        try:
            return super().execute(*args)
        except sqlite3.Error as exc:
            self._fail(exc)

    def executemany(self, *args: Any) -> Self:
        try:
            return super().executemany(*args)
        except sqlite3.Error as exc:
            self._fail(exc)

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.Error as exc:
            self._fail(exc)

    def fetchmany(self, *args: Any) -> list[Any]:
        try:
            return super().fetchmany(*args)
        except sqlite3.Error as exc:
            self._fail(exc)

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.Error as exc:
            self._fail(exc)

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.Error as exc:
            self._fail(exc)


class _Connection(sqlite3.Connection):
    """A connection whose statements run on :class:`_Cursor`."""

    catalog_path: Path

    def execute(self, *args: Any) -> sqlite3.Cursor:
        return self.cursor(_Cursor).execute(*args)

    def executemany(self, *args: Any) -> sqlite3.Cursor:
        return self.cursor(_Cursor).executemany(*args)


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, factory=_Connection)
    conn.catalog_path = path
    return conn


def configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")


class Transaction:
    """A write transaction on ``conn``: commits or rolls back; a write that failed for want of
    space raises :class:`StorageFullError`."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None = None) -> None:
        self.conn = conn
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _storage_error(exc, self.path) or exc from None
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.Error as failure:
                exc = failure
        if self.conn.in_transaction:  # SQLite may have rolled back already (disk full)
            self.conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            full = _storage_error(exc, self.path)
            if full is not None:
                raise full from exc
            if exc_type is None:
                raise exc


def _storage_error(exc: sqlite3.Error, path: Path | None) -> StorageFullError | None:
    """The clear error for a write that failed for want of space (SQLITE_FULL, or an I/O
    error on writing, as a file size limit gives), else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or (code != sqlite3.SQLITE_FULL and code & 0xFF != sqlite3.SQLITE_IOERR):
        return None
    where = f"the index at {path.parent}" if path is not None else "the index"
    hint = "" if code == sqlite3.SQLITE_FULL else " (is the disk full?)"
    return StorageFullError(
        f"cannot write to {where}: {exc}{hint}; this write was undone and "
        "everything committed before it is kept: free some space and run again"
    )


def chunks(items: list, size: int) -> Iterator[list]:
    """``items`` in slices of at most ``size`` (statements take at most so many parameters)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
