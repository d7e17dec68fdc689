"""Reading the rows that can still be read out of a damaged catalog, and storing them anew."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

#: Each table's columns, and the orders to read it in (from each end: a damaged page in the
#: middle stops one direction, the other reads on from the far end).
TABLES = {
    "meta": ("key, value", ("rowid",)),
    "contents": ("id, sha256, width, height, format, created_at", ("id",)),
    "files": (
        "id, path, size, mtime_ns, content_id, error, added_at, updated_at",
        ("id",),
    ),
    "vectors": ("content_id, feature, vector", ("rowid",)),
    "metadata": ("path, key, value", ("path, key",)),
}


def _readable_rows(src: sqlite3.Connection, table: str) -> tuple[list[tuple], bool]:
    """The rows of ``table`` that can be read, and whether that is all of them."""
    columns, (order,) = TABLES[table]
    found: dict[tuple, tuple] = {}
    width = 2 if table in ("vectors", "metadata") else 1
    for direction in ("", " DESC"):
        descending = ", ".join(f"{c.strip()}{direction}" for c in order.split(","))
        try:
            for row in src.execute(f"SELECT {columns} FROM {table} ORDER BY {descending}"):
                found[row[:width]] = row
        except sqlite3.DatabaseError:
            continue
        if not direction:
            return list(found.values()), True  # read to the end in one go
    if table == "metadata":  # its index on (key, value) holds every column: read through it
        with contextlib.suppress(sqlite3.DatabaseError):
            for row in src.execute(f"SELECT {columns} FROM metadata INDEXED BY metadata_by_key"):
                found.setdefault(row[:width], row)
    if table == "files":  # path and content of the indexed files are in its SQL indexes
        with contextlib.suppress(sqlite3.DatabaseError):
            paths = dict(
                src.execute("SELECT id, path FROM files INDEXED BY sqlite_autoindex_files_1")
            )
            contents = src.execute(
                "SELECT id, content_id FROM files INDEXED BY files_content "
                "WHERE content_id IS NOT NULL"
            )
            for file_id, content_id in contents:
                if (file_id,) not in found and file_id in paths:
                    # size and time unknown: the next `lookalike index` reads the file again
                    found[(file_id,)] = (file_id, paths[file_id], -1, -1, content_id, None, 0, 0)
    return list(found.values()), False


def readable_rows(path: Path) -> tuple[dict[str, list[tuple]], list[str]]:
    """The rows of each table of the damaged catalog at ``path`` that can be read (in the
    columns of :data:`TABLES`), and the tables that could not be read in full."""
    rows: dict[str, list[tuple]] = {}
    lost: list[str] = []
    try:
        src: sqlite3.Connection | None = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        src = None
    for table in TABLES:
        try:
            if src is None:
                raise sqlite3.DatabaseError("cannot open")
            rows[table], complete = _readable_rows(src, table)
        except sqlite3.DatabaseError:
            rows[table], complete = [], False
        if not complete:
            lost.append(table)
    if src is not None:
        src.close()
    return rows, lost


class SalvageTables:
    """The salvage statements of :class:`lookalike.catalog.Catalog`: rows read out of a
    damaged catalog stored in a new one."""

    conn: sqlite3.Connection

    def restore_rows(self, rows: dict[str, list[tuple]]) -> set[str]:
        """Store the ``contents``, ``files``, ``vectors`` and ``metadata`` rows of
        :func:`readable_rows` (files and vectors only when they hold together); call inside
        a transaction. Returns the names of the features that have vectors."""
        self.conn.executemany("INSERT OR IGNORE INTO contents VALUES (?, ?, ?, ?, ?, ?)",
                              rows["contents"])  # fmt: skip
        contents = {r[0] for r in rows["contents"]}
        files = [
            r for r in rows["files"]
            if (r[4] is None) != (r[5] is None) and (r[4] is None or r[4] in contents)
        ]  # fmt: skip
        self.conn.executemany("INSERT OR IGNORE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)", files)
        vectors = [r for r in rows["vectors"] if r[0] in contents]
        self.conn.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?)", vectors)
        self.conn.executemany("INSERT OR IGNORE INTO metadata VALUES (?, ?, ?)", rows["metadata"])
        return {r[1] for r in vectors}

    def row_counts(self) -> dict[str, int]:
        """Rows of ``files``, ``contents``, ``vectors``, ``metadata`` and ``meta``."""
        return {
            what: int(self.conn.execute(f"SELECT count(*) FROM {what}").fetchone()[0])
            for what in ("files", "contents", "vectors", "metadata", "meta")
        }
