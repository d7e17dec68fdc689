"""Checking a collection for damage, and mending what a crash or a manual edit left.

``verify`` reads the catalog in one snapshot and compares it with itself (SQLite's integrity
check, foreign keys, files pointing at missing contents, contents no file points at, vectors of
the wrong size or of unknown features) and with the search index files on disk. ``repair``
takes the writer lock, removes what cannot be right (its files are indexed again by the next
``lookalike index`` of their folder), rebuilds damaged or stale index files from the catalog
and deletes leftovers; a catalog file damaged beyond mending in place is salvaged
(:mod:`lookalike.salvage`). The audit's SQL is in :mod:`lookalike.catalog_audit`.

Problems are ``error`` (something a search could get wrong, or data to re-index) or ``note``
(a cache that is rebuilt on its own, a leftover file): a collection is consistent when it has
no errors.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from lookalike.catalog import Catalog, CatalogDamaged, CatalogError
from lookalike.lock import WriterLock
from lookalike.salvage import Salvageable, salvage

if TYPE_CHECKING:
    from lookalike.features.registry import FeatureInfo
    from lookalike.index.store import IndexStore


class Collection(Salvageable, Protocol):
    """What checking and mending need of a collection (:class:`lookalike.Collection`)."""

    folder: Path
    catalog: Catalog
    store: IndexStore

    def vector_features(self) -> list[FeatureInfo]: ...


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


def _bad_values(catalog: Catalog, spec: FeatureInfo) -> list[int]:
    """Content ids whose ``spec`` vector has the right size but values it cannot have: not
    finite, or (for a model's embeddings, stored L2-normalised) not of unit length."""
    if spec.dtype.kind != "f":
        return []
    bad: list[int] = []
    for rows in catalog.vector_blocks(spec.name, spec.bytes_per_image):
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
    catalog: Catalog, specs: list, checked: dict, problems: list[Problem]
) -> list[Problem]:
    """Problems inside the catalog, appended to ``problems`` as they are found (those found
    before a damaged page stops the check are kept); call within one read transaction."""
    rows = catalog.integrity_check(20)
    if rows != ["ok"]:
        problems.append(
            Problem(
                "sqlite",
                "SQLite integrity check: " + "; ".join(rows),
                len(rows),
                fix="rebuild the catalog's indexes (REINDEX, VACUUM)",
            )
        )
    fk = catalog.foreign_key_violations()
    if fk:
        problems.append(
            Problem(
                "foreign_key",
                f"{fk} rows point at rows that do not exist",
                fk,
                fix="delete them",
            )
        )
    checked.update(catalog.table_counts())
    dup = catalog.count_duplicate_paths()
    if dup:
        problems.append(
            Problem(
                "duplicate_path",
                f"{dup} paths listed twice",
                dup,
                fix="keep the newest row of each",
            )
        )
    dangling = catalog.count_dangling_files()
    if dangling:
        problems.append(
            Problem(
                "dangling_file",
                f"{dangling} files point at missing contents",
                dangling,
                fix="forget them; " + _REINDEX,
            )
        )
    neither = catalog.count_malformed_files()
    if neither:
        problems.append(
            Problem(
                "bad_file_row",
                f"{neither} file rows with neither a content nor an error (or both)",
                neither,
                fix="forget them; " + _REINDEX,
            )
        )
    orphans = catalog.count_orphan_contents()
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
    lost = catalog.count_orphan_vectors()
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
    for feature in catalog.features_with_vectors():
        if feature not in names:
            n = catalog.count_vectors(feature)
            problems.append(
                Problem(
                    "unused_feature",
                    f"{n} vectors of {feature!r}, a feature the collection does not use",
                    n,
                    fix="delete them",
                )
            )
    generations = set(catalog.stored_features())
    contents = checked["contents"]
    for spec in specs:
        bad = catalog.count_wrong_size_vectors(spec.name, spec.bytes_per_image)
        values = len(_bad_values(catalog, spec))
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
        have = catalog.count_vectors(spec.name)
        checked.setdefault("features", {})[spec.name] = have
        lacking = catalog.count_contents_lacking(spec.name)
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
        index = col.store.read(path, spec)
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
    with col.catalog.audit_snapshot():  # one read: counts, generations and ids agree
        try:
            _catalog_problems(col.catalog, specs, report.checked, report.problems)
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
    try:
        col.catalog.rebuild_sql_indexes()
    except sqlite3.DatabaseError as exc:
        raise CatalogError(
            f"the catalog {col.catalog.path} is damaged beyond repair in place ({exc}); "
            "index your images again into a new --db folder"
        ) from exc
    return ["rebuilt the catalog's SQL indexes (REINDEX) and compacted it (VACUUM)"]


def _mend_catalog(col: Collection, specs: list) -> list[str]:
    done: list[str] = []
    names = [spec.name for spec in specs]
    catalog = col.catalog

    def note(what: str, n: int) -> None:
        if n > 0:
            done.append(f"{what}: {n}")

    with catalog.transaction():
        note("deleted duplicated file rows", catalog.delete_duplicate_file_rows())
        note("forgot files pointing at missing contents", catalog.delete_dangling_files())
        note("forgot malformed file rows", catalog.delete_malformed_files())
        note("deleted vectors of missing contents", catalog.delete_orphan_vectors())
        note("deleted vectors of unused features", catalog.delete_vectors_except(names))
        for spec in specs:
            note(
                f"deleted {spec.name} vectors of the wrong size",
                catalog.delete_wrong_size_vectors(spec.name, spec.bytes_per_image),
            )
            values = _bad_values(catalog, spec)
            catalog.delete_vectors_of(spec.name, values)
            if values:
                done.append(f"deleted {spec.name} vectors with impossible values: {len(values)}")
        note("deleted contents no file points at", catalog.delete_orphan_contents())
        catalog.bump_generation(names)  # every index file is brought up to date
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
