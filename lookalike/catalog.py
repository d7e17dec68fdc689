"""The SQLite catalog: files, their contents (by hash), vectors, and a schema version.

The catalog is the store of record. Vectors live here too, in the same transactions as the
files they belong to, so a crash can never leave a file marked done without its vector. Search
indexes (``lookalike.index``) are caches rebuilt from it when they fall behind.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 4

# Migration N brings a catalog from version N-1 to version N: SQL statements, or a function
# given the catalog (inside the migration's transaction). Never edit a released migration;
# append a new one and bump SCHEMA_VERSION.
MIGRATIONS: dict[int, str | Callable[[Catalog], object]] = {
    1: """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE contents (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        sha256     TEXT NOT NULL UNIQUE,
        width      INTEGER NOT NULL,
        height     INTEGER NOT NULL,
        format     TEXT,
        created_at REAL NOT NULL
    );
    CREATE TABLE files (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        path       TEXT NOT NULL UNIQUE,
        size       INTEGER NOT NULL,
        mtime_ns   INTEGER NOT NULL,
        content_id INTEGER REFERENCES contents(id),
        error      TEXT,
        added_at   REAL NOT NULL,
        updated_at REAL NOT NULL,
        CHECK ((content_id IS NULL) <> (error IS NULL))
    );
    CREATE INDEX files_content ON files(content_id);
    CREATE TABLE vectors (
        content_id INTEGER NOT NULL REFERENCES contents(id) ON DELETE CASCADE,
        feature    TEXT NOT NULL,
        vector     BLOB NOT NULL,
        PRIMARY KEY (content_id, feature)
    );
    """,
    # many features per image: find one feature's vectors without scanning the others
    2: """
    CREATE INDEX vectors_by_feature ON vectors(feature, content_id);
    """,
    # metadata attached to images by path (kept across re-indexing; attachable before it).
    # ``value`` has no declared type: integers and reals stay numbers, text stays text.
    3: """
    CREATE TABLE metadata (
        path  TEXT NOT NULL,
        key   TEXT NOT NULL,
        value NOT NULL,
        PRIMARY KEY (path, key)
    ) WITHOUT ROWID;
    CREATE INDEX metadata_by_key ON metadata(key, value);
    """,
    # paths in normal form (no `..`, `.` or `//`): rows of one file under two spellings merge
    4: lambda catalog: catalog.normalize_paths(),
}

#: errno values of a write refused because the storage is read-only or not ours to write.
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


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


def counter(value: object) -> int:
    """A stored counter as an int; 0 for anything else (a value edited by hand: the index
    files of that generation are then rebuilt)."""
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() else 0


def path_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` lies inside ``folder`` both as written (in normal form) and once every
    symbolic link on either side is resolved; ``folder`` itself is not inside."""
    lexical, root = normal_path(path), normal_path(folder)
    real, real_root = os.path.realpath(lexical), os.path.realpath(root)
    for child, parent in ((lexical, root), (real, real_root)):
        if child == parent or os.path.commonpath([child, parent]) != parent:
            return False
    return True


class CatalogError(Exception):
    """The catalog cannot be opened or used (too new, corrupt, wrong model)."""


class StorageUnavailable(CatalogError):
    """The index folder cannot be used as it is now (read-only, damaged, full): a problem of
    the storage, not of the request (a server answers 503)."""


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


def _converted(exc: sqlite3.Error, path: Path) -> Exception | None:
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

    def _fail(self, exc: sqlite3.Error) -> None:
        converted = _converted(exc, self.connection.catalog_path)
        if converted is not None:
            raise converted from exc
        raise exc

    def execute(self, *args):  # type: ignore[override]
        try:
            return super().execute(*args)
        except sqlite3.Error as exc:
            self._fail(exc)

    def executemany(self, *args):  # type: ignore[override]
        try:
            return super().executemany(*args)
        except sqlite3.Error as exc:
            self._fail(exc)

    def fetchone(self):  # type: ignore[override]
        try:
            return super().fetchone()
        except sqlite3.Error as exc:
            self._fail(exc)

    def fetchmany(self, *args):  # type: ignore[override]
        try:
            return super().fetchmany(*args)
        except sqlite3.Error as exc:
            self._fail(exc)

    def fetchall(self):  # type: ignore[override]
        try:
            return super().fetchall()
        except sqlite3.Error as exc:
            self._fail(exc)

    def __next__(self):
        try:
            return super().__next__()
        except sqlite3.Error as exc:
            self._fail(exc)


class _Connection(sqlite3.Connection):
    """A connection whose statements run on :class:`_Cursor`."""

    catalog_path: Path

    def execute(self, *args):  # type: ignore[override]
        return self.cursor(_Cursor).execute(*args)

    def executemany(self, *args):  # type: ignore[override]
        return self.cursor(_Cursor).executemany(*args)


@dataclass(frozen=True)
class FileRow:
    """One file as the catalog knows it."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_id: int | None
    error: str | None


@dataclass(frozen=True)
class Hit:
    """A file attached to a content id, with the content's dimensions."""

    file_id: int
    path: str
    content_id: int
    width: int
    height: int


@dataclass(frozen=True)
class NewContent:
    """A newly seen image content: its hash and original size."""

    sha256: str
    width: int
    height: int
    format: str


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, factory=_Connection)
    conn.catalog_path = path
    return conn


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")


class Catalog:
    """Typed access to the catalog database at ``path``.

    With ``damaged_ok`` a damaged file still opens: ``damaged`` then holds the error, every
    query raises :class:`CatalogDamaged`, and ``lookalike.integrity.repair`` can salvage it.
    """

    def __init__(self, path: Path, *, create: bool = True, damaged_ok: bool = False) -> None:
        self.path = Path(path)
        self.damaged: CatalogDamaged | None = None
        if not create and not self.path.exists():
            raise CatalogError(f"no catalog at {self.path}")
        if self.path.is_dir():
            raise CatalogError(
                f"the catalog {self.path} is a folder, not a file; move it aside and run again"
            )
        try:
            self.conn = _connect(self.path)
        except sqlite3.Error as exc:
            raise _converted(exc, self.path) or CatalogError(
                f"cannot open catalog {self.path}: {exc}"
            ) from exc
        try:
            _configure(self.conn)
            self._migrate()
        except CatalogDamaged as exc:
            if not damaged_ok:
                self.conn.close()
                raise CatalogDamaged(str(exc).replace("cannot use", "cannot open", 1)) from exc
            self.damaged = exc
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise CatalogError(f"cannot open catalog {self.path}: {exc}") from exc
        except BaseException:
            self.conn.close()
            raise

    # -- schema -------------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise CatalogError(
                f"catalog {self.path} has schema version {current}, newer than this lookalike "
                f"understands ({SCHEMA_VERSION}); upgrade lookalike"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                if self.schema_version >= version:  # another process migrated it meanwhile
                    continue
                migration = MIGRATIONS[version]
                if callable(migration):
                    migration(self)
                else:
                    for statement in migration.split(";"):
                        if statement.strip():
                            self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {version}")

    def close(self) -> None:
        self.conn.close()

    # -- transactions -------------------------------------------------------------------------

    def transaction(self) -> _Transaction:
        """A write transaction: ``with catalog.transaction(): ...`` commits or rolls back."""
        return _Transaction(self.conn, self.path)

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def generation(self, feature: str) -> int:
        """A counter bumped by every transaction that changes ``feature``'s vectors."""
        return counter(self.get_meta(f"generation:{feature}", "0"))

    def bump_generation(self, features: Iterable[str] | None = None) -> None:
        """Mark ``features`` (default: every feature with vectors) as changed."""
        names = list(features) if features is not None else self.stored_features()
        for name in names:
            self.set_meta(f"generation:{name}", str(self.generation(name) + 1))

    def stored_features(self) -> list[str]:
        """Names of the features whose vectors the catalog keeps (those with a generation)."""
        rows = self.conn.execute(
            "SELECT substr(key, 12) FROM meta WHERE key LIKE 'generation:%'"
        ).fetchall()
        return sorted(r[0] for r in rows)

    # -- files --------------------------------------------------------------------------------

    def abnormal_paths(self) -> dict[str, int]:
        """Stored paths not in normal form (:func:`normal_path`): ``files`` rows, ``aliases``
        (those of them naming a file that another row lists too) and ``metadata`` paths."""
        paths = [r[0] for r in self.conn.execute("SELECT path FROM files").fetchall()]
        normal = [normal_path(p) for p in paths]
        abnormal = {p for p, n in zip(paths, normal, strict=True) if p != n}
        counts: dict[str, int] = {}
        for n in normal:
            counts[n] = counts.get(n, 0) + 1
        aliases = sum(1 for p in abnormal if counts[normal_path(p)] > 1)
        meta = [r[0] for r in self.conn.execute("SELECT DISTINCT path FROM metadata").fetchall()]
        return {
            "files": len(abnormal),
            "aliases": aliases,
            "metadata": sum(1 for p in meta if normal_path(p) != p),
        }

    def normalize_paths(self) -> dict[str, int]:
        """Rewrite stored paths in normal form, merging the rows of a file listed under several
        spellings (the most recently written row of each file is kept; a metadata value already
        under the normal path wins); call inside a transaction. Returns the counts of file rows
        ``rewritten`` and ``merged`` away, and of metadata paths ``moved``."""
        rows = self.conn.execute("SELECT id, path, updated_at FROM files").fetchall()
        groups: dict[str, list] = {}
        for row in rows:
            groups.setdefault(normal_path(row[1]), []).append(row)
        rewritten = merged = 0
        for path, group in groups.items():
            if len(group) == 1 and group[0][1] == path:
                continue
            keep = max(group, key=lambda r: (r[2], r[0]))
            drop = [r[0] for r in group if r is not keep]
            for chunk in _chunks(drop, 500):
                self.conn.execute(
                    f"DELETE FROM files WHERE id IN ({','.join('?' * len(chunk))})", chunk
                )
            merged += len(drop)
            if keep[1] != path:
                self.conn.execute("UPDATE files SET path = ? WHERE id = ?", (path, keep[0]))
                rewritten += 1
        moved = 0
        for (old,) in self.conn.execute("SELECT DISTINCT path FROM metadata").fetchall():
            path = normal_path(old)
            if path != old:
                self.conn.execute(
                    "INSERT OR IGNORE INTO metadata(path, key, value) "
                    "SELECT ?, key, value FROM metadata WHERE path = ?",
                    (path, old),
                )
                self.conn.execute("DELETE FROM metadata WHERE path = ?", (old,))
                moved += 1
        if merged:
            self.delete_orphan_contents()
        if merged or rewritten:
            self.bump_generation()
        return {"rewritten": rewritten, "merged": merged, "moved": moved}

    def files_by_path(self) -> dict[str, FileRow]:
        """Every file row, keyed by path."""
        rows = self.conn.execute(
            "SELECT id, path, size, mtime_ns, content_id, error FROM files"
        ).fetchall()
        return {r[1]: FileRow(*r) for r in rows}

    def files_under(self, path: str) -> list[FileRow]:
        """File rows whose path is ``path`` or lies inside the folder ``path``."""
        path = normal_path(path)
        prefix = path.rstrip("/") + "/"
        rows = self.conn.execute(
            "SELECT id, path, size, mtime_ns, content_id, error FROM files "
            "WHERE path = ? OR substr(path, 1, ?) = ?",
            (path, len(prefix), prefix),
        ).fetchall()
        return [FileRow(*r) for r in rows]

    def content_ids_by_hash(self) -> dict[str, int]:
        """Content id of every known hash (every content has its vectors)."""
        rows = self.conn.execute("SELECT sha256, id FROM contents").fetchall()
        return dict(rows)

    def upsert_file(
        self,
        path: str,
        size: int,
        mtime_ns: int,
        *,
        content_id: int | None = None,
        error: str | None = None,
    ) -> None:
        """Record ``path`` (in normal form) as pointing at ``content_id``, or as failed."""
        path = normal_path(path)
        now = time.time()
        self.conn.execute(
            "INSERT INTO files(path, size, mtime_ns, content_id, error, added_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, "
            "content_id = excluded.content_id, error = excluded.error, "
            "updated_at = excluded.updated_at",
            (path, size, mtime_ns, content_id, error, now, now),
        )

    def insert_content(self, content: NewContent) -> int:
        """Store a new content; returns its id (ids are never reused)."""
        cur = self.conn.execute(
            "INSERT INTO contents(sha256, width, height, format, created_at) VALUES (?,?,?,?,?)",
            (content.sha256, content.width, content.height, content.format, time.time()),
        )
        return int(cur.lastrowid)

    def put_vector(self, content_id: int, feature: str, vector: np.ndarray) -> None:
        """Store (or replace) the vector of ``feature`` for a content; any dtype, as bytes."""
        self.conn.execute(
            "INSERT OR REPLACE INTO vectors(content_id, feature, vector) VALUES (?, ?, ?)",
            (content_id, feature, np.ascontiguousarray(vector).tobytes()),
        )

    def delete_vectors(self, feature: str) -> int:
        """Drop every vector of ``feature``; returns how many."""
        return self.conn.execute("DELETE FROM vectors WHERE feature = ?", (feature,)).rowcount

    def forget_feature(self, feature: str) -> None:
        """Drop ``feature`` entirely: its vectors and its generation counter."""
        self.delete_vectors(feature)
        self.conn.execute("DELETE FROM meta WHERE key = ?", (f"generation:{feature}",))

    def features_by_content(self) -> dict[int, set[str]]:
        """For every content id, the names of the features it has vectors for."""
        out: dict[int, set[str]] = {}
        for content_id, feature in self.conn.execute(
            "SELECT content_id, feature FROM vectors"
        ).fetchall():
            out.setdefault(content_id, set()).add(feature)
        for (content_id,) in self.conn.execute("SELECT id FROM contents").fetchall():
            out.setdefault(content_id, set())
        return out

    def files_of_contents(self, content_ids: Iterable[int]) -> dict[int, FileRow]:
        """One file row (the first by path) for each content id that still has files."""
        out: dict[int, FileRow] = {}
        for chunk in _chunks(list(content_ids), 500):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                "SELECT id, path, size, mtime_ns, content_id, error FROM files "
                f"WHERE content_id IN ({marks}) ORDER BY path",
                chunk,
            ).fetchall()
            for row in rows:
                out.setdefault(row[4], FileRow(*row))
        return out

    def delete_files(self, file_ids: Iterable[int]) -> int:
        """Forget files; contents no file points at any more are dropped with their vectors."""
        ids = list(file_ids)
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            self.conn.execute(f"DELETE FROM files WHERE id IN ({marks})", chunk)
        self.delete_orphan_contents()
        return len(ids)

    def delete_orphan_contents(self) -> int:
        """Drop contents (and their vectors) that no file points at; returns how many."""
        cur = self.conn.execute(
            "DELETE FROM contents WHERE id NOT IN "
            "(SELECT content_id FROM files WHERE content_id IS NOT NULL)"
        )
        return cur.rowcount

    # -- reading ------------------------------------------------------------------------------

    def vectors(
        self, feature: str, dim: int, dtype: np.dtype | type = np.float32
    ) -> tuple[np.ndarray, np.ndarray]:
        """All vectors of ``feature`` as ``(ids int64 [N], vectors [N, dim] of dtype)``."""
        rows = self.conn.execute(
            "SELECT content_id, vector FROM vectors WHERE feature = ? ORDER BY content_id",
            (feature,),
        ).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, np.zeros((0, dim), dtype=dtype)
        data = np.frombuffer(b"".join(r[1] for r in rows), dtype=dtype)
        return ids, data.reshape(len(rows), dim)

    def vector_ids(self, feature: str) -> np.ndarray:
        """Content ids that have a vector of ``feature`` (ids are never reused)."""
        rows = self.conn.execute(
            "SELECT content_id FROM vectors WHERE feature = ?", (feature,)
        ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vectors_for(
        self, feature: str, dim: int, ids: Sequence[int], dtype: np.dtype | type = np.float32
    ) -> np.ndarray:
        """Vectors of ``feature`` for ``ids``, in that order, as ``[len(ids), dim]`` of dtype."""
        found: dict[int, bytes] = {}
        for chunk in _chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            found.update(
                self.conn.execute(
                    f"SELECT content_id, vector FROM vectors WHERE feature = ? "
                    f"AND content_id IN ({marks})",
                    [feature, *chunk],
                ).fetchall()
            )
        data = b"".join(found[int(i)] for i in ids)
        return np.frombuffer(data, dtype=dtype).reshape(len(ids), dim)

    def hits_for_contents(self, content_ids: Sequence[int]) -> dict[int, list[Hit]]:
        """Files attached to each content id, in path order."""
        out: dict[int, list[Hit]] = {}
        for chunk in _chunks(list(content_ids), 500):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                "SELECT f.id, f.path, c.id, c.width, c.height FROM files f "
                f"JOIN contents c ON c.id = f.content_id WHERE c.id IN ({marks}) "
                "ORDER BY f.path",
                chunk,
            ).fetchall()
            for row in rows:
                out.setdefault(row[2], []).append(Hit(*row))
        return out

    # -- metadata -----------------------------------------------------------------------------

    def put_metadata(self, records: Iterable[tuple[str, dict]], *, replace: bool = False) -> None:
        """Attach ``{key: value}`` to paths; call inside a transaction.

        Values are numbers or strings; None removes the key. With ``replace``, a path's other
        keys are removed too. A path given twice: the later values win.
        """
        merged: dict[str, dict] = {}
        for path, values in records:
            merged.setdefault(normal_path(path), {}).update(values)
        if replace:
            self.conn.executemany("DELETE FROM metadata WHERE path = ?", [(p,) for p in merged])
        self.conn.executemany(
            "DELETE FROM metadata WHERE path = ? AND key = ?",
            [(p, k) for p, values in merged.items() for k, v in values.items() if v is None],
        )
        self.conn.executemany(
            "INSERT INTO metadata(path, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT(path, key) DO UPDATE SET value = excluded.value",
            [(p, k, v) for p, values in merged.items() for k, v in values.items() if v is not None],
        )

    def delete_metadata(self, paths: Iterable[str] | None = None) -> int:
        """Remove the metadata of ``paths`` (default: all); returns how many values."""
        if paths is None:
            return self.conn.execute("DELETE FROM metadata").rowcount
        cur = self.conn.executemany(
            "DELETE FROM metadata WHERE path = ?", [(p,) for p in {normal_path(p) for p in paths}]
        )
        return cur.rowcount

    def indexed_paths(self, paths: Iterable[str]) -> set[str]:
        """Those of ``paths`` that are indexed (searchable) files."""
        out: set[str] = set()
        for chunk in _chunks(list(set(paths)), 500):
            marks = ",".join("?" * len(chunk))
            out.update(
                r[0]
                for r in self.conn.execute(
                    f"SELECT path FROM files WHERE content_id IS NOT NULL AND path IN ({marks})",
                    chunk,
                )
            )
        return out

    def has_metadata(self) -> bool:
        return self.conn.execute("SELECT EXISTS (SELECT 1 FROM metadata)").fetchone()[0] == 1

    def metadata_of_paths(self, paths: Iterable[str]) -> dict[str, dict]:
        """``{path: {key: value}}`` for those of ``paths`` that have metadata (keys sorted)."""
        out: dict[str, dict] = {}
        for chunk in _chunks(list(set(paths)), 500):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT path, key, value FROM metadata WHERE path IN ({marks}) ORDER BY path, key",
                chunk,
            )
            for path, key, value in rows:
                out.setdefault(path, {})[key] = value
        return out

    def metadata_of_files(self, file_ids: Iterable[int]) -> dict[int, dict]:
        """``{file id: {key: value}}`` for each known file id (an empty dict when it has none)."""
        out: dict[int, dict] = {}
        for chunk in _chunks([int(i) for i in set(file_ids)], 500):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                "SELECT f.id, m.key, m.value FROM files f "
                f"LEFT JOIN metadata m ON m.path = f.path WHERE f.id IN ({marks}) "
                "ORDER BY f.id, m.key",
                chunk,
            )
            for file_id, key, value in rows:
                values = out.setdefault(file_id, {})
                if key is not None:
                    values[key] = value
        return out

    def metadata_keys(self, max_values: int = 50) -> dict[str, dict]:
        """Every metadata key of indexed files: its type (``number``, ``string`` or ``mixed``),
        how many files have it, ``min``/``max`` of its numbers, and for strings the number of
        ``distinct`` values and the ``max_values`` most frequent ones (sorted)."""
        rows = self.conn.execute(
            "SELECT m.key, "
            "sum(typeof(m.value) IN ('integer', 'real')), sum(typeof(m.value) = 'text'), "
            "min(CASE WHEN typeof(m.value) IN ('integer', 'real') THEN m.value END), "
            "max(CASE WHEN typeof(m.value) IN ('integer', 'real') THEN m.value END), "
            "count(DISTINCT CASE WHEN typeof(m.value) = 'text' THEN m.value END) "
            "FROM metadata m JOIN files f ON f.path = m.path "
            "WHERE f.content_id IS NOT NULL GROUP BY m.key ORDER BY m.key"
        ).fetchall()
        out: dict[str, dict] = {}
        for key, numbers, texts, low, high, distinct in rows:
            kind = "mixed" if numbers and texts else "number" if numbers else "string"
            entry: dict = {"type": kind, "count": int(numbers + texts)}
            if numbers:
                entry.update(min=low, max=high)
            if texts:
                values = self.conn.execute(
                    "SELECT m.value FROM metadata m JOIN files f ON f.path = m.path "
                    "WHERE m.key = ? AND typeof(m.value) = 'text' AND f.content_id IS NOT NULL "
                    "GROUP BY m.value ORDER BY count(*) DESC, m.value LIMIT ?",
                    (key, max_values),
                ).fetchall()
                entry.update(
                    distinct=int(distinct),
                    values=sorted(v[0] for v in values),
                    values_complete=distinct <= max_values,
                )
            out[key] = entry
        return out

    def matching_files(
        self, condition: str = "1", params: Sequence = (), folder: str | None = None
    ) -> list[tuple[int, int]]:
        """``(file id, content id)`` of indexed files satisfying a filter and inside a folder.

        ``condition`` is SQL on ``files`` aliased ``f`` as ``lookalike.filters.to_sql`` makes it
        (user values only in ``params``); ``folder`` an absolute path: the files inside it.
        """
        sql = (
            "SELECT f.id, f.content_id FROM files f "
            f"WHERE f.content_id IS NOT NULL AND ({condition})"
        )
        args = list(params)
        if folder is not None:
            folder = normal_path(folder)
            prefix = folder.rstrip("/") + "/"
            sql += " AND (f.path = ? OR substr(f.path, 1, ?) = ?)"
            args += [folder, len(prefix), prefix]
        return self.conn.execute(sql, args).fetchall()

    def count_images(self) -> int:
        query = "SELECT count(*) FROM files WHERE content_id IS NOT NULL"
        return int(self.conn.execute(query).fetchone()[0])

    def count_contents(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM contents").fetchone()[0])

    def errors(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every file that failed."""
        return self.conn.execute(
            "SELECT path, error FROM files WHERE error IS NOT NULL ORDER BY path"
        ).fetchall()

    def count_errors(self) -> int:
        return int(
            self.conn.execute("SELECT count(*) FROM files WHERE error IS NOT NULL").fetchone()[0]
        )

    def check_consistency(self) -> list[str]:
        """Problems found in the catalog (empty when it is consistent)."""
        problems = []
        dup = self.conn.execute(
            "SELECT count(*) FROM (SELECT path FROM files GROUP BY path HAVING count(*) > 1)"
        ).fetchone()[0]
        if dup:
            problems.append(f"{dup} duplicated paths")
        orphans = self.conn.execute(
            "SELECT count(*) FROM vectors v LEFT JOIN contents c ON c.id = v.content_id "
            "WHERE c.id IS NULL"
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} vectors of contents that do not exist")
        dangling = self.conn.execute(
            "SELECT count(*) FROM files f LEFT JOIN contents c ON c.id = f.content_id "
            "WHERE f.content_id IS NOT NULL AND c.id IS NULL"
        ).fetchone()[0]
        if dangling:
            problems.append(f"{dangling} files pointing at missing contents")
        integrity = self.conn.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            problems.append(f"sqlite integrity check: {integrity}")
        return problems


class _Transaction:
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


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
