"""Checking a collection for damage, and mending what a crash or a manual edit left.

``verify`` reads the catalog in one snapshot and compares it with itself (SQLite's integrity
check, foreign keys, files pointing at missing contents, contents no file points at, vectors of
the wrong size or of unknown features) and with the search index files on disk. ``repair``
takes the writer lock, removes what cannot be right (its files are indexed again by the next
``lookalike index`` of their folder), rebuilds damaged or stale index files from the catalog
and deletes leftovers.

Problems are ``error`` (something a search could get wrong, or data to re-index) or ``note``
(a cache that is rebuilt on its own, a leftover file): a collection is consistent when it has
no errors.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike.catalog import CatalogError
from lookalike.lock import WriterLock

if TYPE_CHECKING:
    from lookalike.collection import Collection
    from lookalike.features.registry import FeatureInfo


@dataclass(frozen=True)
class Problem:
    """One thing found wrong: its kind, how many rows or files, and what ``repair`` does."""

    kind: str
    message: str
    count: int = 1
    severity: str = "error"  # "error" | "note"
    fix: str = ""

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "count": self.count,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass
class IntegrityReport:
    """What ``verify`` found (and, after ``repair``, what was mended)."""

    problems: list[Problem] = field(default_factory=list)
    checked: dict = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        """True when nothing a search could get wrong was found."""
        return not self.errors

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "problems": [p.as_dict() for p in self.problems],
            "repaired": self.repaired,
        }


_REINDEX = "run `lookalike index` on its folders again to compute them"


def _specs(col: Collection) -> list[FeatureInfo]:
    """The features the collection keeps vectors and index files for (fitted ones only)."""
    out = []
    for spec in col._stored(col.features):
        if spec.source == "learned" and col._learned_model(spec.name) is None:
            continue  # not fitted yet: no vectors expected
        out.append(spec)
    return out


def _bad_values(conn: sqlite3.Connection, spec: FeatureInfo, block: int = 4096) -> list[int]:
    """Content ids whose ``spec`` vector has the right size but values it cannot have: not
    finite, or (for a model's embeddings, stored L2-normalised) not of unit length."""
    if spec.dtype.kind != "f":
        return []
    cursor = conn.execute(
        "SELECT content_id, vector FROM vectors WHERE feature = ? AND length(vector) = ?",
        (spec.name, spec.bytes_per_image),
    )
    bad: list[int] = []
    while rows := cursor.fetchmany(block):
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        data = np.frombuffer(b"".join(r[1] for r in rows), dtype=spec.dtype)
        vectors = data.reshape(len(rows), -1).astype(np.float64)
        wrong = ~np.isfinite(vectors).all(axis=1)
        if spec.metric == "cosine" and spec.source == "model":  # deep, CLIP
            with np.errstate(all="ignore"):
                wrong |= ~(np.abs(np.linalg.norm(vectors, axis=1) - 1.0) < 1e-3)
        bad += ids[wrong].tolist()
    return bad


def _catalog_problems(conn: sqlite3.Connection, specs: list, checked: dict) -> list[Problem]:
    """Problems inside the catalog; call within one read transaction."""
    problems: list[Problem] = []
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
    if rows != ["ok"]:
        problems.append(
            Problem(
                "sqlite",
                "SQLite integrity check: " + "; ".join(rows),
                len(rows),
                fix="rebuild the catalog's indexes (REINDEX, VACUUM)",
            )
        )
    fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    if fk:
        problems.append(
            Problem(
                "foreign_key",
                f"{len(fk)} rows point at rows that do not exist",
                len(fk),
                fix="delete them",
            )
        )

    def count(sql: str, *args: object) -> int:
        return int(conn.execute(sql, args).fetchone()[0])

    checked.update(
        files=count("SELECT count(*) FROM files"),
        failed_files=count("SELECT count(*) FROM files WHERE error IS NOT NULL"),
        contents=count("SELECT count(*) FROM contents"),
        vectors=count("SELECT count(*) FROM vectors"),
    )
    dup = count("SELECT count(*) FROM (SELECT path FROM files GROUP BY path HAVING count(*) > 1)")
    if dup:
        problems.append(
            Problem(
                "duplicate_path",
                f"{dup} paths listed twice",
                dup,
                fix="keep the newest row of each",
            )
        )
    dangling = count(
        "SELECT count(*) FROM files f LEFT JOIN contents c ON c.id = f.content_id "
        "WHERE f.content_id IS NOT NULL AND c.id IS NULL"
    )
    if dangling:
        problems.append(
            Problem(
                "dangling_file",
                f"{dangling} files point at missing contents",
                dangling,
                fix="forget them; " + _REINDEX,
            )
        )
    neither = count("SELECT count(*) FROM files WHERE (content_id IS NULL) = (error IS NULL)")
    if neither:
        problems.append(
            Problem(
                "bad_file_row",
                f"{neither} file rows with neither a content nor an error (or both)",
                neither,
                fix="forget them; " + _REINDEX,
            )
        )
    orphans = count(
        "SELECT count(*) FROM contents WHERE id NOT IN "
        "(SELECT content_id FROM files WHERE content_id IS NOT NULL)"
    )
    if orphans:
        problems.append(
            Problem(
                "orphan_content",
                f"{orphans} contents no file points at",
                orphans,
                "note",
                fix="delete them",
            )
        )
    lost = count(
        "SELECT count(*) FROM vectors v LEFT JOIN contents c ON c.id = v.content_id "
        "WHERE c.id IS NULL"
    )
    if lost:
        problems.append(
            Problem(
                "orphan_vector",
                f"{lost} vectors of contents that do not exist",
                lost,
                fix="delete them",
            )
        )
    names = {spec.name for spec in specs}
    for (feature,) in conn.execute("SELECT DISTINCT feature FROM vectors").fetchall():
        if feature not in names:
            n = count("SELECT count(*) FROM vectors WHERE feature = ?", feature)
            problems.append(
                Problem(
                    "unused_feature",
                    f"{n} vectors of {feature!r}, a feature the collection does not use",
                    n,
                    fix="delete them",
                )
            )
    generations = {
        r[0] for r in conn.execute("SELECT substr(key, 12) FROM meta WHERE key LIKE 'generation:%'")
    }
    contents = checked["contents"]
    for spec in specs:
        bad = count(
            "SELECT count(*) FROM vectors WHERE feature = ? AND length(vector) != ?",
            spec.name,
            spec.bytes_per_image,
        )
        values = len(_bad_values(conn, spec))
        if bad or values:
            problems.append(
                Problem(
                    "bad_vector",
                    f"{spec.name}: {bad + values} vectors of the wrong size "
                    f"(not {spec.bytes_per_image} bytes) or with impossible values",
                    bad + values,
                    fix="delete them; " + _REINDEX,
                )
            )
        have = count("SELECT count(*) FROM vectors WHERE feature = ?", spec.name)
        checked.setdefault("features", {})[spec.name] = have
        lacking = count(
            "SELECT count(*) FROM contents c WHERE NOT EXISTS (SELECT 1 FROM vectors v "
            "WHERE v.content_id = c.id AND v.feature = ?)",
            spec.name,
        )
        if lacking and contents:
            problems.append(
                Problem(
                    "missing_vector",
                    f"{spec.name}: {lacking} images lack this feature",
                    lacking,
                    fix=_REINDEX,
                )
            )
        if have and spec.name not in generations:
            problems.append(
                Problem(
                    "generation",
                    f"{spec.name}: vectors without a generation counter",
                    fix="set it (index files are rebuilt)",
                )
            )
    return problems


def _index_problems(col: Collection, specs: list, generations: dict, wanted: dict) -> list:
    """Each feature's index file for its catalog generation against the catalog's ids."""
    problems: list[Problem] = []
    keep: set[Path] = set()
    for spec in specs:
        path = col.store.path(spec, generations[spec.name])
        keep.add(path)
        if not path.exists():
            if len(wanted[spec.name]):
                problems.append(
                    Problem(
                        "index_missing",
                        f"{spec.name}: no index file for the "
                        "catalog's generation (rebuilt from the catalog at the "
                        "next search)",
                        severity="note",
                        fix="write it",
                    )
                )
            continue
        index = col.store._read(path, spec)
        if index is None:
            problems.append(
                Problem(
                    "index_damaged",
                    f"{spec.name}: index file {path.name} cannot be read",
                    fix="rebuild it from the catalog",
                )
            )
            continue
        ids = np.asarray(index.ids(), dtype=np.int64)
        if len(ids) != len(np.unique(ids)):
            problems.append(
                Problem(
                    "index_duplicates",
                    f"{spec.name}: index file holds duplicated ids",
                    fix="rebuild it from the catalog",
                )
            )
        extra = np.setdiff1d(ids, wanted[spec.name])
        missing = np.setdiff1d(wanted[spec.name], ids)
        if len(extra) or len(missing):
            problems.append(
                Problem(
                    "index_mismatch",
                    f"{spec.name}: index file has {len(extra)} "
                    f"vectors the catalog lacks and lacks {len(missing)} of the "
                    "catalog's",
                    len(extra) + len(missing),
                    fix="rebuild it from the catalog",
                )
            )
    leftovers = [p for p in col.folder.glob("*.tmp")]
    for spec in specs:
        leftovers += [p for _, p in col.store.files(spec.name) if p not in keep]
    if leftovers:
        problems.append(
            Problem(
                "leftover_file",
                f"{len(leftovers)} leftover files (older index "
                "generations, interrupted writes): "
                + ", ".join(sorted(p.name for p in leftovers)[:5]),
                len(leftovers),
                "note",
                fix="delete them",
            )
        )
    return problems


def verify(col: Collection) -> IntegrityReport:
    """Check the catalog and the index files of ``col``; changes nothing."""
    report = IntegrityReport()
    specs = _specs(col)
    conn = col.catalog.conn
    conn.execute("BEGIN")  # one read snapshot: counts, generations and ids agree
    try:
        report.problems += _catalog_problems(conn, specs, report.checked)
        generations = {spec.name: col.catalog.generation(spec.name) for spec in specs}
        wanted = {spec.name: col.catalog.vector_ids(spec.name) for spec in specs}
    except sqlite3.DatabaseError as exc:
        report.problems.append(
            Problem(
                "sqlite",
                f"the catalog cannot be read: {exc}",
                fix="rebuild the catalog's indexes (REINDEX, VACUUM)",
            )
        )
        return report
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("COMMIT")
    report.problems += _index_problems(col, specs, generations, wanted)
    report.checked["index_files"] = sum(
        1 for spec in specs if col.store.path(spec, generations[spec.name]).exists()
    )
    return report


def repair(col: Collection) -> IntegrityReport:
    """Mend what :func:`verify` finds, holding the writer lock; the report after the repair.

    Raises:
        LockedError: another process is writing to the collection.
        CatalogError: the catalog file is too damaged to be mended in place.
    """
    with WriterLock(col.folder):
        before = verify(col)
        kinds = {p.kind for p in before.problems}
        done: list[str] = []
        if "sqlite" in kinds:
            done += _mend_sqlite(col)
        catalog_kinds = {
            "foreign_key",
            "duplicate_path",
            "dangling_file",
            "bad_file_row",
            "orphan_content",
            "orphan_vector",
            "unused_feature",
            "bad_vector",
            "generation",
        }
        if kinds & catalog_kinds:
            done += _mend_catalog(col, _specs(col))
        done += _mend_index_files(col, before)
        after = verify(col)
    after.repaired = done
    return after


def _mend_sqlite(col: Collection) -> list[str]:
    conn = col.catalog.conn
    try:
        conn.execute("REINDEX")
        conn.execute("VACUUM")
    except sqlite3.DatabaseError as exc:
        raise CatalogError(
            f"the catalog {col.catalog.path} is damaged beyond repair in place ({exc}); "
            "index your images again into a new --db folder"
        ) from exc
    return ["rebuilt the catalog's SQL indexes (REINDEX) and compacted it (VACUUM)"]


def _mend_catalog(col: Collection, specs: list) -> list[str]:
    done: list[str] = []
    names = [spec.name for spec in specs]
    with col.catalog.transaction() as conn:

        def run(sql: str, args: tuple, what: str) -> None:
            n = conn.execute(sql, args).rowcount
            if n > 0:
                done.append(f"{what}: {n}")

        run(
            "DELETE FROM files WHERE id NOT IN (SELECT max(id) FROM files GROUP BY path)",
            (),
            "deleted duplicated file rows",
        )
        run(
            "DELETE FROM files WHERE content_id IS NOT NULL AND content_id NOT IN "
            "(SELECT id FROM contents)",
            (),
            "forgot files pointing at missing contents",
        )
        run(
            "DELETE FROM files WHERE (content_id IS NULL) = (error IS NULL)",
            (),
            "forgot malformed file rows",
        )
        run(
            "DELETE FROM vectors WHERE content_id NOT IN (SELECT id FROM contents)",
            (),
            "deleted vectors of missing contents",
        )
        marks = ",".join("?" * len(names)) or "''"
        run(
            f"DELETE FROM vectors WHERE feature NOT IN ({marks})",
            tuple(names),
            "deleted vectors of unused features",
        )
        for spec in specs:
            run(
                "DELETE FROM vectors WHERE feature = ? AND length(vector) != ?",
                (spec.name, spec.bytes_per_image),
                f"deleted {spec.name} vectors of the wrong size",
            )
            values = _bad_values(conn, spec)
            conn.executemany(
                "DELETE FROM vectors WHERE feature = ? AND content_id = ?",
                [(spec.name, i) for i in values],
            )
            if values:
                done.append(f"deleted {spec.name} vectors with impossible values: {len(values)}")
        n = col.catalog.delete_orphan_contents()
        if n:
            done.append(f"deleted contents no file points at: {n}")
        col.catalog.bump_generation(names)  # every index file is brought up to date
    return done


def _mend_index_files(col: Collection, before: IntegrityReport) -> list[str]:
    """Rebuild damaged or wrong index files from the catalog, write missing ones, drop leftovers."""
    specs = _specs(col)
    bad = {
        p.message.split(":")[0]
        for p in before.problems
        if p.kind in ("index_damaged", "index_duplicates", "index_mismatch")
    }
    done: list[str] = []
    for spec in specs:
        if spec.name in bad:  # a file that lies is not a base to update: start from nothing
            for _, path in col.store.files(spec.name):
                path.unlink(missing_ok=True)
            done.append(f"rebuilt the {spec.name} index from the catalog")
    col.store._cache.clear()
    tmp = list(col.folder.glob("*.tmp"))
    for path in tmp:
        path.unlink(missing_ok=True)
    had = {
        spec.name: col.store.path(spec, col.catalog.generation(spec.name)).exists()
        for spec in specs
    }
    col.store.refresh(specs)
    written = [n for n, existed in had.items() if not existed and n not in bad]
    if written:
        done.append("wrote index files: " + ", ".join(written))
    if tmp:
        done.append(f"deleted {len(tmp)} leftover temporary files")
    return done
