"""The SQLite catalog: schema versions, typed rows, orphans and consistency."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from lookalike.catalog import SCHEMA_VERSION, Catalog, CatalogError, NewContent


def _add(catalog: Catalog, sha: str, value: float = 1.0, feature: str = "deep") -> int:
    content_id = catalog.insert_content(NewContent(sha, 10, 20, "JPEG"))
    catalog.put_vector(content_id, feature, np.full(4, value, dtype=np.float32))
    return content_id


def test_new_catalog_is_at_current_schema(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite")
    assert catalog.schema_version == SCHEMA_VERSION
    assert catalog.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert catalog.generation("deep") == 0


def test_catalog_from_newer_lookalike_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(CatalogError, match="newer"):
        Catalog(path)


def test_not_a_database_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CatalogError, match="cannot open catalog"):
        Catalog(path)


def test_missing_catalog_without_create(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no catalog"):
        Catalog(tmp_path / "missing.sqlite", create=False)


def test_vectors_files_and_orphans(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite")
    with catalog.transaction():
        a = _add(catalog, "a", 1.0)
        b = _add(catalog, "b", 2.0)
        catalog.upsert_file("/x/a.jpg", 1, 1, content_id=a)
        catalog.upsert_file("/x/a-copy.jpg", 1, 1, content_id=a)
        catalog.upsert_file("/x/b.jpg", 2, 2, content_id=b)
        catalog.upsert_file("/x/bad.jpg", 3, 3, error="truncated")
    ids, vectors = catalog.vectors("deep", 4)
    assert ids.tolist() == [a, b]
    assert vectors[1].tolist() == [2.0] * 4
    assert catalog.count_images() == 3
    assert catalog.count_contents() == 2
    assert catalog.errors() == [("/x/bad.jpg", "truncated")]
    hits = catalog.hits_for_contents([a])
    assert [h.path for h in hits[a]] == ["/x/a-copy.jpg", "/x/a.jpg"]
    assert {r.path for r in catalog.files_under("/x")} == {
        "/x/a.jpg",
        "/x/a-copy.jpg",
        "/x/b.jpg",
        "/x/bad.jpg",
    }
    assert catalog.files_under("/x/a.jpg")[0].content_id == a
    # "/x/a" is not a folder prefix of "/x/a.jpg"
    assert catalog.files_under("/x/a") == []

    with catalog.transaction():
        catalog.delete_files([catalog.files_under("/x/b.jpg")[0].id])
    assert catalog.count_contents() == 1  # b's content went with its last file
    assert catalog.vectors("deep", 4)[0].tolist() == [a]
    assert catalog.check_consistency() == []


def test_file_must_have_content_or_error(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite")
    with pytest.raises(sqlite3.IntegrityError), catalog.transaction():
        catalog.upsert_file("/x/none.jpg", 1, 1)
    assert catalog.files_by_path() == {}


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite")
    with pytest.raises(RuntimeError), catalog.transaction():
        _add(catalog, "a")
        raise RuntimeError("boom")
    assert catalog.count_contents() == 0


def test_migrations_upgrade_an_older_catalog_in_place(tmp_path: Path, monkeypatch) -> None:
    import lookalike.catalog_schema as catalog_module

    path = tmp_path / "c.sqlite"
    old = Catalog(path)
    with old.transaction():
        content = _add(old, "a")
        old.upsert_file("/x/a.jpg", 1, 1, content_id=content)
    old.close()

    later = dict(catalog_module.MIGRATIONS)
    later[SCHEMA_VERSION + 1] = "ALTER TABLE files ADD COLUMN note TEXT"
    monkeypatch.setattr(catalog_module, "MIGRATIONS", later)
    monkeypatch.setattr(catalog_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    upgraded = Catalog(path)
    assert upgraded.schema_version == SCHEMA_VERSION + 1
    assert upgraded.files_by_path()["/x/a.jpg"].content_id == content  # data kept
    columns = [row[1] for row in upgraded.conn.execute("PRAGMA table_info(files)")]
    assert "note" in columns


def test_failed_migration_leaves_the_catalog_as_it_was(tmp_path: Path, monkeypatch) -> None:
    import lookalike.catalog_schema as catalog_module

    path = tmp_path / "c.sqlite"
    Catalog(path).close()
    later = dict(catalog_module.MIGRATIONS)
    later[SCHEMA_VERSION + 1] = "ALTER TABLE files ADD COLUMN x TEXT; THIS IS NOT SQL"
    monkeypatch.setattr(catalog_module, "MIGRATIONS", later)
    monkeypatch.setattr(catalog_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(CatalogError):
        Catalog(path)
    monkeypatch.undo()
    again = Catalog(path)
    assert again.schema_version == SCHEMA_VERSION
    assert "x" not in [row[1] for row in again.conn.execute("PRAGMA table_info(files)")]


def test_features_generations_and_backfill_queries(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite")
    with catalog.transaction():
        a = _add(catalog, "a")
        b = _add(catalog, "b")
        catalog.put_vector(a, "phash", np.arange(8, dtype=np.uint8))
        catalog.upsert_file("/x/b2.jpg", 1, 1, content_id=b)
        catalog.upsert_file("/x/b1.jpg", 1, 1, content_id=b)
        catalog.bump_generation(["deep", "phash"])
    assert catalog.features_by_content() == {a: {"deep", "phash"}, b: {"deep"}}
    assert catalog.stored_features() == ["deep", "phash"]
    assert (catalog.generation("deep"), catalog.generation("phash")) == (1, 1)
    with catalog.transaction():
        catalog.bump_generation(["phash"])
    assert (catalog.generation("deep"), catalog.generation("phash")) == (1, 2)
    assert catalog.files_of_contents([b])[b].path == "/x/b1.jpg"
    ids, codes = catalog.vectors("phash", 8, np.uint8)
    assert ids.tolist() == [a] and codes.dtype == np.uint8 and codes[0].tolist() == list(range(8))
    with catalog.transaction():
        assert catalog.delete_vectors("phash") == 1
    assert catalog.features_by_content()[a] == {"deep"}


def test_version_1_catalog_gains_the_feature_index(tmp_path: Path, monkeypatch) -> None:
    import lookalike.catalog_schema as catalog_module

    path = tmp_path / "c.sqlite"
    monkeypatch.setattr(catalog_module, "SCHEMA_VERSION", 1)
    old = Catalog(path)
    with old.transaction():
        content = _add(old, "a")
        old.upsert_file("/x/a.jpg", 1, 1, content_id=content)
    old.close()
    monkeypatch.undo()
    current = Catalog(path)
    assert current.schema_version == SCHEMA_VERSION >= 2
    indexes = [r[1] for r in current.conn.execute("PRAGMA index_list(vectors)")]
    assert "vectors_by_feature" in indexes
    plan = " ".join(
        str(r)
        for r in current.conn.execute(
            "EXPLAIN QUERY PLAN SELECT content_id FROM vectors WHERE feature = 'deep'"
        )
    )
    assert "vectors_by_feature" in plan
    assert current.vector_ids("deep").tolist() == [content]
