"""A linear projection of the deep vectors learned from labels, and its file in the index folder.

The projection whitens the within-class scatter (how images of one label differ) and then
keeps the directions along which the whitened images spread most: a regularised linear
discriminant analysis that keeps every direction rather than only ``classes - 1``, the
"learned whitening" of Radenović, Tolias and Chum (2018) with classes in place of matching
pairs. Directions in which images of one label differ a lot are shrunk; what separates labels
is kept. The within-class covariance is shrunk towards a multiple of the identity, so that a
few hundred images do not make it singular.

How it is fitted to a collection and measured on held-out images: :mod:`lookalike.eval.tuning`;
search applies it through :meth:`lookalike.index.store.IndexStore.expanded`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.atomic import savez_atomic
from lookalike.catalog import Catalog
from lookalike.errors import BadInput
from lookalike.features.pooling import l2_normalize

DEFAULT_SHRINKAGE = 0.9
TUNING_KEY = "tuned:deep"  # catalog setting naming the projection file of the collection


class TuneError(BadInput):
    """Labels that cannot teach a projection (too few images or labels)."""


@dataclass
class Projection:
    """``project(x) = normalise((x - mean) @ matrix)``; ``matrix`` is ``[D, dim]``."""

    mean: np.ndarray
    matrix: np.ndarray
    shrinkage: float
    feature: str = "deep"

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        labels: np.ndarray | list,
        shrinkage: float = DEFAULT_SHRINKAGE,
        dim: int | None = None,
        feature: str = "deep",
    ) -> Projection:
        """Learn the projection from ``vectors`` ``[N, D]`` and one label per row.

        Raises:
            TuneError: fewer than 2 labels with at least 2 images each.
        """
        return fit_many(vectors, labels, [shrinkage], [dim], feature)[(shrinkage, dim)]

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Projected, L2-normalised ``[N, dim]`` float32 vectors."""
        x = np.asarray(vectors, dtype=np.float32)
        return l2_normalize((x - self.mean) @ self.matrix).astype(np.float32)

    def save(self, path: Path) -> None:
        """Write to ``path`` (``.npz``) atomically."""
        savez_atomic(
            path,
            mean=self.mean,
            matrix=self.matrix,
            shrinkage=np.float64(self.shrinkage),
            feature=np.array(self.feature),
        )

    @classmethod
    def load(cls, path: Path) -> Projection:
        """Read what :meth:`save` wrote."""
        with np.load(Path(path)) as data:
            return cls(data["mean"], data["matrix"], float(data["shrinkage"]), str(data["feature"]))


def fit_many(
    vectors: np.ndarray,
    labels: np.ndarray | list,
    shrinkages: Sequence[float],
    dims: Sequence[int | None],
    feature: str = "deep",
) -> dict[tuple[float, int | None], Projection]:
    """:meth:`Projection.fit` for every ``(shrinkage, dim)``, sharing the decompositions."""
    x = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(labels)
    names, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if np.sum(counts >= 2) < 2:
        raise TuneError("tuning needs at least 2 labels with 2 or more images each")
    usable = counts[inverse] >= 2
    x, inverse = x[usable], inverse[usable]
    d = x.shape[1]
    for dim in dims:
        if dim is not None and not 1 <= dim <= d:
            raise TuneError(f"dim must be in [1, {d}]")
    mean = x.mean(axis=0)
    centres = np.zeros((len(names), d))
    np.add.at(centres, inverse, x)
    centres /= np.maximum(np.bincount(inverse, minlength=len(names)), 1)[:, None]
    within = x - centres[inverse]
    # thin SVDs: cost O(N^2 D) when there are fewer images than dimensions
    _, sing, vt = np.linalg.svd(within, full_matrices=False)
    values = sing**2 / max(len(x) - 1, 1)
    floor = float(values.sum()) / d  # the mean of all D eigenvalues (the rest are 0)
    out = {}
    for shrinkage in shrinkages:
        # Sw^(-1/2) of the shrunk covariance: c0 off the span of the data, f on it
        c0 = 1.0 / np.sqrt(max(shrinkage * floor, 1e-12))
        f = 1.0 / np.sqrt(np.maximum((1.0 - shrinkage) * values + shrinkage * floor, 1e-12))
        whiten = c0 * np.eye(d) + (vt.T * (f - c0)) @ vt
        _, _, rotate = np.linalg.svd((x - mean) @ whiten, full_matrices=False)
        for dim in dims:
            matrix = (whiten @ rotate[: dim or d].T).astype(np.float32)
            out[(shrinkage, dim)] = Projection(
                mean.astype(np.float32), matrix, float(shrinkage), feature
            )
    return out


# -- stored with a collection -------------------------------------------------------------------


def projection_file(catalog: Catalog, folder: Path) -> Path | None:
    """The file of the projection stored with the collection in ``folder``, or None."""
    name = catalog.get_meta(TUNING_KEY)
    return folder / name if name else None


def load_projection(catalog: Catalog, folder: Path) -> Projection | None:
    """The projection stored with the collection in ``folder``, or None when it is not tuned."""
    path = projection_file(catalog, folder)
    if path is None or not path.is_file():
        return None
    return Projection.load(path)


def save_projection(catalog: Catalog, folder: Path, projection: Projection | None) -> None:
    """Store ``projection`` with the collection in ``folder`` (None forgets the tuning)."""
    old = catalog.get_meta(TUNING_KEY) or ""
    if projection is None:
        name = ""
    else:
        number = int(old.split(".")[1]) + 1 if old.startswith("tuned.") else 1
        name = f"tuned.{number}.npz"
        projection.save(folder / name)
    with catalog.transaction():
        catalog.set_meta(TUNING_KEY, name)
    if old and old != name:
        (folder / old).unlink(missing_ok=True)
