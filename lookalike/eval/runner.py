"""``lookalike eval``: index a labelled folder and measure each descriptor or setting on it.

A setting is a descriptor name (``deep``, ``color``, ``phash``... compared by its own metric)
or ``deep`` with re-ranking and projections added with ``+`` (the same steps apply to
``lite2``, the stronger EfficientNet-Lite2 model, except ``tuned``):

* ``deep+center``: vectors centred on the collection's mean; ``deep+qe``: alpha query
  expansion; ``deep+center+qe`` is what ``lookalike search`` does by default;
  ``deep+dba``: database-side augmentation;
* ``deep+whiten``: PCA-whitening learned on the evaluated images (shrinkage 0.5);
  ``deep+pcaN`` (e.g. ``deep+pca256``): PCA to ``N`` dimensions, no whitening;
* ``deep+tuned``: the projection of ``lookalike tune`` stored in ``--db`` (error without one).

Images are indexed into ``--db`` when given (reused on the next run: only new files are
embedded), else into a temporary index that is deleted afterwards.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.errors import BadInput
from lookalike.eval.labels import LabelledSet, load_labelled_set
from lookalike.eval.retrieval import Evaluation, evaluate_scores
from lookalike.features.projection import load_projection

DEFAULT_SETTINGS = ("deep", "deep+center+qe")
BLOCK = 256
_STEP = re.compile(r"^(center|qe|dba|whiten|tuned|pca(\d+))$")


class EvalError(BadInput):
    """A setting that cannot be evaluated (unknown name, no tuning stored...)."""


@dataclass
class EvalRun:
    """Everything ``lookalike eval`` reports."""

    folder: Path
    data: LabelledSet
    results: list[Evaluation]
    index_failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "folder": str(self.folder),
            "set": self.data.as_dict(),
            "notes": self.notes,
            "index_failed": [{"path": p, "error": e} for p, e in self.index_failed],
            "results": [r.as_dict() for r in self.results],
        }


def parse_settings(text: str | Sequence[str] | None) -> list[str]:
    """Setting names from ``"deep,deep+qe,color"`` (or a list); checks each one."""
    from lookalike.features.registry import info, require

    if text is None:
        return list(DEFAULT_SETTINGS)
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise EvalError("--features needs at least one name")
    for name in names:
        base, *steps = name.split("+")
        try:
            require(base)  # also says what to install for an optional model (lite2)
        except ValueError as exc:
            raise EvalError(str(exc)) from None
        for step in steps:
            if info(base).source != "model" or (step == "tuned" and base != "deep"):
                raise EvalError(
                    f"{name}: re-ranking and projections apply to model features "
                    "(deep, lite2); tuned to deep only"
                )
            if not _STEP.match(step):
                raise EvalError(
                    f"{name}: unknown step {step!r}; use center, qe, dba, whiten, pcaN or tuned"
                )
    return names


def _transform(col, name: str, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(database vectors, query vectors) of a ``deep+...`` setting."""
    from lookalike.features.whiten import Whitening
    from lookalike.index.query_expansion import QE_K, augment_database, expand_queries

    db = np.asarray(vectors, dtype=np.float32)
    steps = name.split("+")[1:]
    for step in steps:
        if step == "center":
            db = Whitening.fit(db, None, 1.0).project(db)
        elif step == "whiten":
            db = Whitening.fit(db, None, 0.5).project(db)
        elif step.startswith("pca"):
            dim = int(step[3:])
            if not 1 <= dim <= min(db.shape):
                raise EvalError(f"{name}: pca needs 1 <= N <= {min(db.shape)}")
            db = Whitening.fit(db, dim, 1.0).project(db)
        elif step == "tuned":
            projection = load_projection(col.catalog, col.folder) if col is not None else None
            if projection is None:
                raise EvalError(f"{name}: no tuning stored; run `lookalike tune` with --db first")
            db = projection.project(db)
        elif step == "dba":
            db = augment_database(db)
    queries = expand_queries(db, db, QE_K + 1) if "qe" in steps else db
    return db, queries


def evaluate_vectors(
    name: str,
    data: LabelledSet,
    vectors: np.ndarray,
    metric: str = "cosine",
    bits: int | None = None,
    col=None,
) -> Evaluation:
    """One setting's figures from the stored vectors of ``data``'s images (in its order)."""
    from lookalike.features.metrics import scores

    start = time.perf_counter()
    excluded = data.excluded()
    if "+" in name:  # deep+..., lite2+...
        db, queries = _transform(col, name, vectors)

        def score(rows: slice) -> np.ndarray:
            return queries[rows] @ db.T
    else:

        def score(rows: slice) -> np.ndarray:
            return scores(metric, vectors[rows], vectors, bits=bits)[0]

    blocks = [(slice(b, b + BLOCK), score(slice(b, b + BLOCK))) for b in range(0, len(data), BLOCK)]
    result = evaluate_scores(name, blocks, data.labels, excluded)
    result.seconds = time.perf_counter() - start
    return result


def run_eval(
    folder: Path,
    labels: Path | None = None,
    settings: Sequence[str] | None = None,
    db: Path | None = None,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
) -> EvalRun:
    """Index ``folder`` (into ``db`` or a temporary index) and evaluate every setting."""
    from lookalike.collection import open as open_collection
    from lookalike.features.registry import info

    names = parse_settings(settings)
    data = load_labelled_set(folder, labels)
    bases = list(dict.fromkeys(n.split("+")[0] for n in names))
    say = say or (lambda _: None)
    with tempfile.TemporaryDirectory(prefix="lookalike-eval-") as tmp:
        col = open_collection(db if db is not None else Path(tmp) / "index")
        try:
            features = bases if db is None else "+" + ",".join(bases)
            say(f"indexing {len(data)} labelled images ...")
            report = col.add(data.paths, features=features, progress=progress)
            rows = col.catalog.files_by_path()
            content = []
            for p in data.paths:
                row = rows.get(str(p.absolute()))
                content.append(row.content_id if row is not None else None)
            keep = [i for i, c in enumerate(content) if c is not None]
            notes = []
            if len(keep) < len(data):
                notes.append(f"{len(data) - len(keep)} image(s) could not be read; left out")
                data = data.subset(keep)
                content = [content[i] for i in keep]
            results = []
            for name in names:
                spec = info(name.split("+")[0])
                say(f"evaluating {name} ...")
                ids, vectors = col.catalog.vectors(spec.name, spec.width, spec.dtype)
                rows_of = np.searchsorted(ids, np.asarray(content, dtype=np.int64))
                results.append(
                    evaluate_vectors(name, data, vectors[rows_of], spec.metric, spec.dim, col)
                )
        finally:
            col.close()
    return EvalRun(Path(folder), data, results, list(report.errors), notes + data.notes())


def table(run: EvalRun) -> str:
    """The human-readable report: overall figures per setting, then per class."""
    from lookalike.eval.retrieval import metric_names

    cols = metric_names()
    lines = [f"{len(run.data)} images, {len(run.data.classes)} classes in {run.folder}"]
    lines += [f"note: {n}" for n in run.notes]
    width = max(len(r.name) for r in run.results) + 2
    lines.append("")
    lines.append("setting".ljust(width) + "".join(c.rjust(9) for c in cols))
    for r in run.results:
        lines.append(r.name.ljust(width) + "".join(f"{r.overall[c]:9.3f}" for c in cols))
    lines.append("")
    lines.append("mAP per class".ljust(width) + "".join(r.name[:14].rjust(16) for r in run.results))
    for label in run.data.classes:
        cells = []
        for r in run.results:
            value = r.per_class[label]["mAP"]
            cells.append(("n/a (1 image)" if np.isnan(value) else f"{value:.3f}").rjust(16))
        lines.append(label[: width - 1].ljust(width) + "".join(cells))
    return "\n".join(lines)
