"""The SQLite catalog: files, their contents (by hash), vectors, and a schema version.

The catalog is the store of record. Vectors live here too, in the same transactions as the
files they belong to, so a crash can never leave a file marked done without its vector. Search
indexes (``lookalike.index``) are caches rebuilt from it when they fall behind. Every SQL
statement lives in the ``catalog*`` modules: this one (:class:`Catalog` and its records),
``catalog_schema`` (version, migrations), ``catalog_metadata`` (the metadata table),
``catalog_filters`` (filters compiled to SQL), ``catalog_audit`` (the integrity audit),
``catalog_salvage`` (rows read out of a damaged catalog), ``catalog_sqlite`` (connection,
errors, transactions) and ``catalog_paths`` (paths in normal form).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike import catalog_schema
from lookalike.catalog_audit import AuditQueries
from lookalike.catalog_metadata import MetadataTables
from lookalike.catalog_paths import normal_path, path_inside
from lookalike.catalog_salvage import SalvageTables
from lookalike.catalog_schema import MIGRATIONS, SCHEMA_VERSION
from lookalike.catalog_sqlite import (
    CatalogDamaged,
    CatalogError,
    ReadOnlyError,
    StorageFullError,
    StorageUnavailable,
    Transaction,
    chunks,
    configure,
    connect,
    converted_error,
    damaged_error,
    read_only_error,
)
from lookalike.errors import READ_ONLY_ERRNOS

__all__ = [
    "MIGRATIONS",
    "READ_ONLY_ERRNOS",
    "SCHEMA_VERSION",
    "Catalog",
    "CatalogDamaged",
    "CatalogError",
    "FileRow",
    "IndexedFile",
    "NewContent",
    "ReadOnlyError",
    "StorageFullError",
    "StorageUnavailable",
    "counter",
    "damaged_error",
    "normal_path",
    "path_inside",
    "read_only_error",
]


def counter(value: object) -> int:
    """A stored counter as an int; 0 for anything else (a value edited by hand: the index
    files of that generation are then rebuilt)."""
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() else 0


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
class IndexedFile:
    """An indexed file with its content: what a listing of the collection shows of it."""

    id: int
    path: str
    size: int
    mtime_ns: int
    added_at: float
    content_id: int
    width: int
    height: int
    sha256: str


#: the columns of an :class:`IndexedFile`, in order, from ``files f JOIN contents c``
_INDEXED_FILE = (
    "f.id, f.path, f.size, f.mtime_ns, f.added_at, f.content_id, c.width, c.height, c.sha256"
)


@dataclass(frozen=True)
class NewContent:
    """A newly seen image content: its hash and original size."""

    sha256: str
    width: int
    height: int
    format: str


class Catalog(MetadataTables, AuditQueries, SalvageTables):
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
            self.conn = connect(self.path)
        except sqlite3.Error as exc:
            raise converted_error(exc, self.path) or CatalogError(
                f"cannot open catalog {self.path}: {exc}"
            ) from exc
        try:
            configure(self.conn)
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
        catalog_schema.migrate(self)

    def close(self) -> None:
        self.conn.close()

    # -- transactions -------------------------------------------------------------------------

    def transaction(self) -> Transaction:
        """A write transaction: ``with catalog.transaction(): ...`` commits or rolls back."""
        return Transaction(self.conn, self.path)

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
            for chunk in chunks(drop, 500):
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
        assert cur.lastrowid is not None  # set by every INSERT
        return cur.lastrowid

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
        for chunk in chunks(list(content_ids), 500):
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
        for chunk in chunks(ids, 500):
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
        for chunk in chunks(list(ids), 500):
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

    def hits_for_contents(self, content_ids: Sequence[int]) -> dict[int, list[IndexedFile]]:
        """Files attached to each content id, in path order."""
        out: dict[int, list[IndexedFile]] = {}
        for chunk in chunks(list(content_ids), 500):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT {_INDEXED_FILE} FROM files f "
                f"JOIN contents c ON c.id = f.content_id WHERE c.id IN ({marks}) "
                "ORDER BY f.path",
                chunk,
            ).fetchall()
            for row in rows:
                record = IndexedFile(*row)
                out.setdefault(record.content_id, []).append(record)
        return out

    def indexed_files(self) -> list[IndexedFile]:
        """Every indexed file (one with a content), in path order."""
        rows = self.conn.execute(
            f"SELECT {_INDEXED_FILE} FROM files f JOIN contents c ON c.id = f.content_id "
            "ORDER BY f.path"
        ).fetchall()
        return [IndexedFile(*row) for row in rows]

    def content_ids_of_paths(self, paths: Iterable[str] | None = None) -> np.ndarray:
        """The distinct content ids of the indexed files at ``paths`` (None: of every file)."""
        if paths is None:
            rows = self.conn.execute("SELECT DISTINCT content_id FROM files").fetchall()
        else:
            rows = []
            for chunk in chunks(list(paths), 500):
                marks = ",".join("?" * len(chunk))
                rows += self.conn.execute(
                    f"SELECT DISTINCT content_id FROM files WHERE path IN ({marks})", chunk
                ).fetchall()
        return np.asarray([r[0] for r in rows if r[0] is not None], dtype=np.int64)

    def highest_content_id(self) -> int:
        """The highest content id ever given (ids are never reused); 0 before the first."""
        row = self.conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'contents'"
        ).fetchone()
        return int(row[0]) if row else 0

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: the reads inside it all see the catalog as one moment."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

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

    def file_with_content(self, file_id: int) -> IndexedFile | None:
        """The indexed file ``file_id`` (one with a content), or None."""
        row = self.conn.execute(
            f"SELECT {_INDEXED_FILE} FROM files f JOIN contents c ON c.id = f.content_id "
            "WHERE f.id = ?",
            (int(file_id),),
        ).fetchone()
        return IndexedFile(*row) if row is not None else None

    def image_paths(self) -> list[str]:
        """The paths of the indexed files (those with a content)."""
        rows = self.conn.execute("SELECT path FROM files WHERE content_id IS NOT NULL")
        return [path for (path,) in rows]

    def count_written_since(self, roots: Iterable[str], since: float) -> int:
        """How many files at or under the folders ``roots`` were written at ``since`` or later."""
        written = 0
        for root in roots:
            prefix = root.rstrip("/") + "/"
            written += self.conn.execute(
                "SELECT count(*) FROM files WHERE updated_at >= ? "
                "AND (path = ? OR substr(path, 1, ?) = ?)",
                (since, root, len(prefix), prefix),
            ).fetchone()[0]
        return written
