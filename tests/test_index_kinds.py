"""The table of index kinds: each local kind creates, saves and loads its own index class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lookalike.features.registry import CLASSES, all_features
from lookalike.index import kinds
from lookalike.index.base import Capabilities, VectorIndex
from lookalike.index.store import new_index


def _rows(info, n: int, rng: np.random.Generator) -> np.ndarray:
    if info.kind == "classes":
        from lookalike.index.classes import pack

        p = rng.random((n, 1000)).astype(np.float32)
        return pack(p / p.sum(axis=1, keepdims=True))
    if info.binary or info.dtype == np.uint8:
        return rng.integers(0, 256, (n, info.width), dtype=np.uint8)
    x = rng.random((n, info.width)).astype(np.float32) + 0.01
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(info.dtype)


def test_every_local_kind_round_trips_through_its_table_entry(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for info in [*all_features().values(), CLASSES]:
        kind = kinds.local(info)
        index: VectorIndex = new_index(info)
        assert index.kind == kind.name and isinstance(index.capabilities, Capabilities)
        index.add(np.arange(20, dtype=np.int64) + 5, _rows(info, 20, rng))
        path = tmp_path / f"{info.name}.g1{kind.extension}"
        index.save(path)
        again = kind.load(path, info, None)  # type: ignore[arg-type]
        assert again.kind == kind.name and sorted(again.ids().tolist()) == list(range(5, 25))
        query = _rows(info, 1, rng)
        np.testing.assert_array_equal(index.search(query, 5)[1], again.search(query, 5)[1])
        seen.add(kind.name)
    assert seen == {"flat", "binary", "exact", "classes"}
    assert set(kinds.KINDS) == seen | {"milvus"}


def test_milvus_serves_the_local_kinds_it_names() -> None:
    assert set(kinds.IN_MILVUS) <= set(kinds.KINDS)
    assert kinds.KINDS["milvus"].extension not in {
        kind.extension for name, kind in kinds.KINDS.items() if name != "milvus"
    }
