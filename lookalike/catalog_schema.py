"""The catalog's schema: its version and the migrations that bring an older catalog to it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from lookalike.catalog_sqlite import CatalogError


class Migratable(Protocol):
    """What a migration needs of the catalog (:class:`lookalike.catalog.Catalog`)."""

    path: Path
    conn: sqlite3.Connection

    @property
    def schema_version(self) -> int: ...

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def normalize_paths(self) -> dict[str, int]: ...


SCHEMA_VERSION = 4

# Migration N brings a catalog from version N-1 to version N: SQL statements, or a function
# given the catalog (inside the migration's transaction). Never edit a released migration;
# append a new one and bump SCHEMA_VERSION.
MIGRATIONS: dict[int, str | Callable[[Migratable], object]] = {
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


def migrate(catalog: Migratable) -> None:
    """Bring ``catalog`` to :data:`SCHEMA_VERSION`, one migration per transaction; a catalog
    newer than this lookalike understands raises :class:`CatalogError`."""
    current = catalog.schema_version
    if current > SCHEMA_VERSION:
        raise CatalogError(
            f"catalog {catalog.path} has schema version {current}, newer than this lookalike "
            f"understands ({SCHEMA_VERSION}); upgrade lookalike"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        with catalog.transaction():
            if catalog.schema_version >= version:  # another process migrated it meanwhile
                continue
            migration = MIGRATIONS[version]
            if callable(migration):
                migration(catalog)
            else:
                for statement in migration.split(";"):
                    if statement.strip():
                        catalog.conn.execute(statement)
            catalog.conn.execute(f"PRAGMA user_version = {version}")
