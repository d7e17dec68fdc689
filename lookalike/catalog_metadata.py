"""The catalog's metadata table: values attached to images by path, and the filters on them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from lookalike.catalog_paths import normal_path
from lookalike.catalog_sqlite import chunks


class MetadataTables:
    """The metadata statements of :class:`lookalike.catalog.Catalog` (its part on ``metadata``
    and on the files a filter admits)."""

    conn: sqlite3.Connection

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
        for chunk in chunks(list(set(paths)), 500):
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
        for chunk in chunks(list(set(paths)), 500):
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
        for chunk in chunks([int(i) for i in set(file_ids)], 500):
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
