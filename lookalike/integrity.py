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
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lookalike.catalog import Catalog, CatalogDamaged, CatalogError, counter
from lookalike.lock import WriterLock

if TYPE_CHECKING:
    from lookalike.features.registry import FeatureInfo
    from lookalike.index.store import IndexStore


class Collection(Protocol):
    """What checking and mending need of a collection (:class:`lookalike.Collection`)."""

    folder: Path
    catalog: Catalog
    store: IndexStore

    def vector_features(self) -> list[FeatureInfo]: ...

    def replace_catalog(self, catalog: Catalog) -> None: ...


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


def _catalog_problems(
    conn: sqlite3.Connection, specs: list, checked: dict, problems: list[Problem]
) -> list[Problem]:
    """Problems inside the catalog, appended to ``problems`` as they are found (those found
    before a damaged page stops the check are kept); call within one read transaction."""
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
        if path.is_dir():
            problems.append(
                Problem(
                    "index_damaged",
                    f"{spec.name}: {path.name} is a folder where the index file should be",
                    fix="move the folder aside (kept, renamed aside-...) and rebuild the index",
                )
            )
            continue
        index: Any = col.store.read(path, spec)  # a VectorIndex
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


def _damaged(exc: CatalogDamaged) -> Problem:
    reason = exc.__cause__ or exc
    return Problem(
        "damaged_catalog",
        f"the catalog file is damaged ({reason})",
        fix="salvage what can be read (metadata, files, images, vectors) into a new catalog; "
        "the damaged file is kept beside it",
    )


def _path_problems(col: Collection) -> list[Problem]:
    """Stored paths not in normal form (``..``, ``.``, ``//``), and second listings of a file."""
    counts = col.catalog.abnormal_paths()
    if not counts["files"] and not counts["metadata"]:
        return []
    return [
        Problem(
            "abnormal_path",
            f"{counts['files']} file paths and {counts['metadata']} metadata paths not in "
            f"normal form (with '..', '.' or '//'); {counts['aliases']} of the files are "
            "listed a second time under another spelling",
            counts["files"] + counts["metadata"],
            fix="rewrite them in normal form and merge the listings of one file",
        )
    ]


def verify(col: Collection) -> IntegrityReport:
    """Check the catalog and the index files of ``col``; changes nothing."""
    report = IntegrityReport()
    if col.catalog.damaged is not None:
        report.problems.append(_damaged(col.catalog.damaged))
        return report
    try:
        specs = col.vector_features()
    except CatalogDamaged as exc:
        report.problems.append(_damaged(exc))
        return report
    conn = col.catalog.conn
    conn.execute("BEGIN")  # one read snapshot: counts, generations and ids agree
    try:
        _catalog_problems(conn, specs, report.checked, report.problems)
        report.problems += _path_problems(col)
        generations = {spec.name: col.catalog.generation(spec.name) for spec in specs}
        wanted = {spec.name: col.catalog.vector_ids(spec.name) for spec in specs}
    except CatalogDamaged as exc:
        report.problems.append(_damaged(exc))
        return report
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
        if kinds & {"sqlite", "damaged_catalog"}:
            if col.catalog.damaged is None:
                with contextlib.suppress(CatalogError):  # a damaged table: salvage below
                    done += _mend_sqlite(col)
            if col.catalog.damaged is not None or "damaged_catalog" in {
                p.kind for p in verify(col).problems
            }:
                done += salvage(col)
            before = verify(col)
            kinds = {p.kind for p in before.problems}
        if "abnormal_path" in kinds:
            with col.catalog.transaction():
                counts = col.catalog.normalize_paths()
            done.append(
                "rewrote paths in normal form: {rewritten} file paths, {moved} metadata "
                "paths; merged {merged} second listings of a file".format(**counts)
            )
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
            done += _mend_catalog(col, col.vector_features())
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
    specs = col.vector_features()
    bad = {
        p.message.split(":")[0]
        for p in before.problems
        if p.kind in ("index_damaged", "index_duplicates", "index_mismatch")
    }
    done: list[str] = []
    for spec in specs:
        if spec.name in bad:  # a file that lies is not a base to update: start from nothing
            for _, path in col.store.files(spec.name):
                aside = col.store.discard(path)
                if aside is not None:
                    done.append(f"moved the folder {path.name} aside to {aside.name}")
            done.append(f"rebuilt the {spec.name} index from the catalog")
    col.store.forget()
    folders = [p for spec in specs for _, p in col.store.files(spec.name) if p.is_dir()]
    tmp = list(col.folder.glob("*.tmp"))
    for path in folders + tmp:
        aside = col.store.discard(path)
        if aside is not None:
            done.append(f"moved the folder {path.name} aside to {aside.name}")
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


# -- salvaging a damaged catalog ----------------------------------------------------------------

#: Each table's columns, and the orders to read it in (from each end: a damaged page in the
#: middle stops one direction, the other reads on from the far end).
_TABLES = {
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
    columns, (order,) = _TABLES[table]
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


def _backup_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        candidate = path.with_name(f"{path.stem}.damaged-{stamp}{f'-{n}' if n else ''}.sqlite")
        if not os.path.lexists(candidate):
            return candidate
    raise CatalogError(f"cannot find a free name beside {path} to keep the damaged catalog")


def _model_number(path: Path) -> int:
    digits = path.name.split(".model", 1)[-1].split(".")[0]
    return int(digits) if digits.isdigit() else -1


def salvage(col: Collection) -> list[str]:
    """Move the damaged catalog aside and copy what can be read of it (metadata first: it
    cannot be recomputed; then files, images and vectors) into a new one; call holding the
    writer lock. What was lost is indexed again by the next ``lookalike index``."""
    old = col.catalog.path
    col.catalog.close()
    fresh = old.with_name("catalog.salvaged.sqlite")  # moved into place once complete
    for suffix in ("", "-wal", "-shm"):
        Path(f"{fresh}{suffix}").unlink(missing_ok=True)
    try:
        catalog, kept, lost = _copy_readable(col, old, fresh)
    except BaseException:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{fresh}{suffix}").unlink(missing_ok=True)
        col.replace_catalog(Catalog(old, damaged_ok=True))
        raise
    catalog.close()
    backup = _backup_name(old)
    for suffix in ("", "-wal", "-shm"):  # committed pages not yet in the main file go along
        if os.path.lexists(f"{old}{suffix}"):
            os.replace(f"{old}{suffix}", f"{backup}{suffix}")
    for suffix in ("", "-wal", "-shm"):
        if os.path.lexists(f"{fresh}{suffix}"):
            os.replace(f"{fresh}{suffix}", f"{old}{suffix}")
    col.replace_catalog(Catalog(old))
    done = [
        f"the catalog was damaged: moved it aside to {backup} and copied what could be read "
        f"into a new catalog: {kept['files']} files, {kept['contents']} images, "
        f"{kept['vectors']} vectors, {kept['metadata']} metadata values, {kept['meta']} settings"
    ]
    if lost:
        done.append(
            "could not read all of: " + ", ".join(lost) + "; run `lookalike index` on your "
            "folders to add what was lost again (settings lost: index options and a CLIP "
            "model must be given again)"
        )
    return done


def _copy_readable(
    col: Collection, old: Path, fresh: Path
) -> tuple[Catalog, dict[str, int], list[str]]:
    """A new catalog at ``fresh`` with what can be read of ``old``; row counts, and the tables
    that could not be read in full."""
    from lookalike.features.models import MODEL_NAME
    from lookalike.features.registry import LEARNED_BITS, all_features

    rows: dict[str, list[tuple]] = {}
    lost: list[str] = []
    try:
        src = sqlite3.connect(f"file:{old}?mode=ro", uri=True)
    except sqlite3.Error:
        src = None
    for table in _TABLES:
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

    catalog = Catalog(fresh)
    with catalog.transaction() as conn:
        conn.executemany("INSERT OR IGNORE INTO contents VALUES (?, ?, ?, ?, ?, ?)",
                         rows["contents"])  # fmt: skip
        contents = {r[0] for r in rows["contents"]}
        files = [
            r for r in rows["files"]
            if (r[4] is None) != (r[5] is None) and (r[4] is None or r[4] in contents)
        ]  # fmt: skip
        conn.executemany("INSERT OR IGNORE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)", files)
        vectors = [r for r in rows["vectors"] if r[0] in contents]
        conn.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?)", vectors)
        conn.executemany("INSERT OR IGNORE INTO metadata VALUES (?, ?, ?)", rows["metadata"])
        meta = dict(rows["meta"])
        stored = {r[1] for r in vectors}
        if "features" not in meta and stored:  # lost: the features that have vectors
            known = [n for n in all_features() if n in stored]
            meta["features"] = ",".join(known)
        if "model" not in meta and stored:
            meta["model"] = MODEL_NAME
        for name in stored & set(LEARNED_BITS):
            if f"model:{name}" not in meta:  # the fitted model file is still there: use it
                models = sorted(col.folder.glob(f"{name}.model*.npz"), key=_model_number)
                if models:
                    meta[f"model:{name}"] = models[-1].name
        for key, value in meta.items():
            if not key.startswith("generation:"):
                catalog.set_meta(key, str(value))
        for name in stored:  # newer than every index file on disk: all are rebuilt
            on_disk = [g for g, _ in col.store.files(name)]
            old_generation = counter(meta.get(f"generation:{name}", 0))
            catalog.set_meta(f"generation:{name}", str(max([old_generation, *on_disk]) + 1))
        catalog.normalize_paths()
        catalog.delete_orphan_contents()
        kept = {
            what: catalog.conn.execute(f"SELECT count(*) FROM {what}").fetchone()[0]
            for what in ("files", "contents", "vectors", "metadata", "meta")
        }
    return catalog, kept, lost
