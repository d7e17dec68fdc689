"""Salvaging a damaged catalog: what can be read copied into a new one, the damaged file kept.

:func:`salvage` reads every table of the damaged catalog (from both ends, metadata and file
paths also through their SQL indexes: see :mod:`lookalike.catalog_salvage`) into a new catalog
built beside it, infers the settings that were lost, swaps the new catalog in and keeps the
damaged file as ``catalog.damaged-TIME.sqlite``. ``lookalike verify --repair``
(:func:`lookalike.integrity.repair`) calls it when the catalog cannot be mended in place.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from lookalike.catalog import Catalog, CatalogError, counter
from lookalike.catalog_salvage import readable_rows

if TYPE_CHECKING:
    from lookalike.index.store import IndexStore


class Salvageable(Protocol):
    """What salvaging needs of a collection (:class:`lookalike.Collection`)."""

    folder: Path
    catalog: Catalog
    store: IndexStore

    def replace_catalog(self, catalog: Catalog) -> None: ...


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


def salvage(col: Salvageable) -> list[str]:
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
    col: Salvageable, old: Path, fresh: Path
) -> tuple[Catalog, dict[str, int], list[str]]:
    """A new catalog at ``fresh`` with what can be read of ``old``; row counts, and the tables
    that could not be read in full."""
    from lookalike.features.models import MODEL_NAME
    from lookalike.features.registry import LEARNED_BITS, all_features

    rows, lost = readable_rows(old)
    catalog = Catalog(fresh)
    with catalog.transaction():
        stored = catalog.restore_rows(rows)
        meta = dict(rows["meta"])
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
        kept = catalog.row_counts()
    return catalog, kept, lost
