"""The catalog's self-audit: the queries that find damage and the statements that mend it."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator


class AuditQueries:
    """The audit statements of :class:`lookalike.catalog.Catalog`, used by
    :mod:`lookalike.integrity` (each count a query of its own, so that those made before a
    damaged page stops the audit are kept)."""

    conn: sqlite3.Connection

    @contextlib.contextmanager
    def audit_snapshot(self) -> Iterator[None]:
        """A read transaction for one consistent audit; it ends quietly even when the catalog
        failed inside it."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("COMMIT")

    # -- finding ------------------------------------------------------------------------------

    def integrity_check(self, limit: int = 20) -> list[str]:
        """SQLite's own integrity check: ``["ok"]``, or up to ``limit`` problems."""
        return [r[0] for r in self.conn.execute(f"PRAGMA integrity_check({int(limit)})")]

    def foreign_key_violations(self) -> int:
        """How many rows point at rows that do not exist."""
        return len(self.conn.execute("PRAGMA foreign_key_check").fetchall())

    def _count(self, sql: str, *args: object) -> int:
        return int(self.conn.execute(sql, args).fetchone()[0])

    def table_counts(self) -> dict[str, int]:
        """Rows of ``files`` (and of them ``failed_files``), ``contents`` and ``vectors``."""
        return {
            "files": self._count("SELECT count(*) FROM files"),
            "failed_files": self._count("SELECT count(*) FROM files WHERE error IS NOT NULL"),
            "contents": self._count("SELECT count(*) FROM contents"),
            "vectors": self._count("SELECT count(*) FROM vectors"),
        }

    def count_duplicate_paths(self) -> int:
        """Paths listed by more than one file row."""
        return self._count(
            "SELECT count(*) FROM (SELECT path FROM files GROUP BY path HAVING count(*) > 1)"
        )

    def count_dangling_files(self) -> int:
        """Files pointing at contents that do not exist."""
        return self._count(
            "SELECT count(*) FROM files f LEFT JOIN contents c ON c.id = f.content_id "
            "WHERE f.content_id IS NOT NULL AND c.id IS NULL"
        )

    def count_malformed_files(self) -> int:
        """File rows with neither a content nor an error, or with both."""
        return self._count(
            "SELECT count(*) FROM files WHERE (content_id IS NULL) = (error IS NULL)"
        )

    def count_orphan_contents(self) -> int:
        """Contents no file points at."""
        return self._count(
            "SELECT count(*) FROM contents WHERE id NOT IN "
            "(SELECT content_id FROM files WHERE content_id IS NOT NULL)"
        )

    def count_orphan_vectors(self) -> int:
        """Vectors of contents that do not exist."""
        return self._count(
            "SELECT count(*) FROM vectors v LEFT JOIN contents c ON c.id = v.content_id "
            "WHERE c.id IS NULL"
        )

    def features_with_vectors(self) -> list[str]:
        """The names of the features that have at least one stored vector."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT feature FROM vectors").fetchall()]

    def count_vectors(self, feature: str) -> int:
        """Stored vectors of ``feature``."""
        return self._count("SELECT count(*) FROM vectors WHERE feature = ?", feature)

    def count_wrong_size_vectors(self, feature: str, size: int) -> int:
        """Vectors of ``feature`` that are not ``size`` bytes long."""
        return self._count(
            "SELECT count(*) FROM vectors WHERE feature = ? AND length(vector) != ?",
            feature,
            size,
        )

    def count_contents_lacking(self, feature: str) -> int:
        """Contents without a vector of ``feature``."""
        return self._count(
            "SELECT count(*) FROM contents c WHERE NOT EXISTS (SELECT 1 FROM vectors v "
            "WHERE v.content_id = c.id AND v.feature = ?)",
            feature,
        )

    def vector_blocks(
        self, feature: str, size: int, block: int = 4096
    ) -> Iterator[list[tuple[int, bytes]]]:
        """``(content id, vector bytes)`` of the ``size``-byte vectors of ``feature``, in
        blocks of at most ``block`` rows."""
        cursor = self.conn.execute(
            "SELECT content_id, vector FROM vectors WHERE feature = ? AND length(vector) = ?",
            (feature, size),
        )
        while rows := cursor.fetchmany(block):
            yield rows

    # -- mending (call inside a transaction; each returns how many rows it removed) ----------

    def rebuild_sql_indexes(self) -> None:
        """Rebuild the catalog's SQL indexes (REINDEX) and compact it (VACUUM); outside a
        transaction. Raises :class:`sqlite3.DatabaseError` when the file is beyond that."""
        self.conn.execute("REINDEX")
        self.conn.execute("VACUUM")

    def delete_duplicate_file_rows(self) -> int:
        """Keep the newest row of each path listed twice."""
        return self.conn.execute(
            "DELETE FROM files WHERE id NOT IN (SELECT max(id) FROM files GROUP BY path)"
        ).rowcount

    def delete_dangling_files(self) -> int:
        """Forget the files pointing at contents that do not exist."""
        return self.conn.execute(
            "DELETE FROM files WHERE content_id IS NOT NULL AND content_id NOT IN "
            "(SELECT id FROM contents)"
        ).rowcount

    def delete_malformed_files(self) -> int:
        """Forget file rows with neither a content nor an error, or with both."""
        return self.conn.execute(
            "DELETE FROM files WHERE (content_id IS NULL) = (error IS NULL)"
        ).rowcount

    def delete_orphan_vectors(self) -> int:
        """Delete the vectors of contents that do not exist."""
        return self.conn.execute(
            "DELETE FROM vectors WHERE content_id NOT IN (SELECT id FROM contents)"
        ).rowcount

    def delete_vectors_except(self, features: Iterable[str]) -> int:
        """Delete the vectors of every feature but ``features``."""
        names = list(features)
        marks = ",".join("?" * len(names)) or "''"
        return self.conn.execute(
            f"DELETE FROM vectors WHERE feature NOT IN ({marks})", names
        ).rowcount

    def delete_wrong_size_vectors(self, feature: str, size: int) -> int:
        """Delete the vectors of ``feature`` that are not ``size`` bytes long."""
        return self.conn.execute(
            "DELETE FROM vectors WHERE feature = ? AND length(vector) != ?", (feature, size)
        ).rowcount

    def delete_vectors_of(self, feature: str, content_ids: Iterable[int]) -> None:
        """Delete the vectors of ``feature`` of ``content_ids``."""
        self.conn.executemany(
            "DELETE FROM vectors WHERE feature = ? AND content_id = ?",
            [(feature, int(i)) for i in content_ids],
        )
