"""The Milvus backend: a feature's vectors (or binary codes) and filterable metadata in Milvus.

``lookalike index DIR --backend milvus --uri http://HOST:19530`` keeps the catalog (files,
contents, vectors, metadata: the store of record) where it is and puts each searchable feature
in a Milvus collection through ``pymilvus.MilvusClient``, one row per content: ``id`` (the
content id), ``vec``, ``path`` (its file's path), ``multi`` (true when several files share the
content) and ``meta`` (the file's metadata, JSON). :class:`MilvusIndex` has the same protocol
as the faiss indexes, so the store keeps it in step with the catalog the same way; the index
file ``NAME.gN.milvus`` only names the Milvus collection.

Metadata filters are pushed down as Milvus expressions (:mod:`lookalike.index.milvus_filter`);
a filter Milvus cannot express exactly is sent as the allowed ids instead.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.atomic import write_atomic
from lookalike.errors import Unavailable
from lookalike.features.registry import FeatureInfo
from lookalike.index.base import Capabilities
from lookalike.index.flat import MISSING_SCORE, _as_ids

KEY_BACKEND = "backend"
KEY_URI = "milvus:uri"
KEY_PREFIX = "milvus:prefix"
#: Rows per insert request (a 1280-d float row is 5 kB; gRPC messages stay far below 64 MB).
BATCH = 1000
#: Milvus index per ``--index`` choice (``auto``: Milvus's own choice, HNSW on a server).
MILVUS_INDEX = {
    "auto": ("AUTOINDEX", {}),
    "flat": ("FLAT", {}),
    "hnsw": ("HNSW", {"M": 32, "efConstruction": 40}),
    "hnsw-sq8": ("IVF_SQ8", {"nlist": 1024}),
    "ivfpq": ("IVF_PQ", {"nlist": 1024, "m": 64, "nbits": 8}),
}
MISSING_DISTANCE = np.iinfo(np.int32).max
#: Ids per query when listing a collection (Milvus's largest answer).
WINDOW = 16_384

_clients: dict[str, Any] = {}  # pymilvus MilvusClient (an untyped package)


class MilvusError(Unavailable, RuntimeError):
    """Milvus cannot be reached or refused a request: the message says which server and why."""


def read_backend(catalog) -> dict | None:
    """``{"uri", "prefix"}`` when the collection keeps its vectors in Milvus, else None."""
    if catalog.get_meta(KEY_BACKEND) != "milvus":
        return None
    return {"uri": catalog.get_meta(KEY_URI), "prefix": catalog.get_meta(KEY_PREFIX)}


def write_backend(catalog, backend: str, uri: str | None) -> bool:
    """Record the backend (inside a write transaction); whether it changed."""
    before = read_backend(catalog)
    if backend == "faiss":
        catalog.set_meta(KEY_BACKEND, "faiss")
        return before is not None
    catalog.set_meta(KEY_BACKEND, "milvus")
    if uri:
        catalog.set_meta(KEY_URI, uri)
    if not catalog.get_meta(KEY_PREFIX):
        catalog.set_meta(KEY_PREFIX, "lookalike_" + uuid.uuid4().hex[:12])
    return before != read_backend(catalog)


def client(uri: str):
    """One ``MilvusClient`` per URI and process."""
    if uri not in _clients:
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:  # pragma: no cover - pymilvus is a dependency
            raise MilvusError("the Milvus backend needs pymilvus (pip install pymilvus)") from exc
        try:
            _clients[uri] = MilvusClient(uri=uri)
        except Exception as exc:
            raise MilvusError(f"cannot reach Milvus at {uri}: {exc}") from exc
    return _clients[uri]


def forget_client(uri: str) -> None:
    """Close and drop the cached client of ``uri`` (tests stop servers)."""
    found = _clients.pop(uri, None)
    if found is not None:
        with contextlib.suppress(Exception):
            found.close()


def collection_name(prefix: str, feature: str) -> str:
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', feature)}"


def _index_choice(catalog) -> str:
    from lookalike.index.choose import read_settings

    kind = read_settings(catalog).index
    return kind.split("-", 1)[1] if kind.startswith("pca") else kind


class MilvusIndex:
    """One feature's vectors in a Milvus collection, behind the faiss indexes' protocol."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        exact=False, filters_itself=True, keeps_vectors=True
    )
    kind: ClassVar[str] = "milvus"

    def __init__(self, settings: dict, info: FeatureInfo, catalog, name: str) -> None:
        self.uri, self.prefix = settings["uri"], settings["prefix"]
        self.info, self.catalog, self.name = info, catalog, name
        self.binary = bool(info.binary)
        self.dim = info.width
        self._client = client(self.uri)
        self._count: int | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def create(cls, settings: dict, info: FeatureInfo, catalog) -> MilvusIndex:
        """The feature's Milvus collection, created when missing (kept when its schema fits)."""
        name = collection_name(settings["prefix"], info.name)
        index = cls(settings, info, catalog, name)
        index._ensure()
        return index

    def same_place(self, settings: dict) -> bool:
        return settings["uri"] == self.uri and settings["prefix"] == self.prefix

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MilvusError:
            raise
        except Exception as exc:
            raise MilvusError(f"Milvus at {self.uri} failed to {what}: {exc}") from exc

    def _ensure(self) -> None:
        from pymilvus import DataType

        c = self._client
        if self._call("list collections", c.has_collection, self.name):
            fields = self._call("describe", c.describe_collection, self.name)["fields"]
            vec = next((f for f in fields if f["name"] == "vec"), None)
            dim = (vec or {}).get("params", {}).get("dim")
            if dim is not None and int(dim) == (self.info.dim if self.binary else self.dim):
                self._call("load the collection", c.load_collection, self.name)
                return
            self._call("drop a stale collection", c.drop_collection, self.name)
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        if self.binary:
            schema.add_field("vec", DataType.BINARY_VECTOR, dim=self.info.dim)
        else:
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("path", DataType.VARCHAR, max_length=65535)
        schema.add_field("multi", DataType.BOOL)
        schema.add_field("meta", DataType.JSON)
        params = c.prepare_index_params()
        if self.binary:
            params.add_index("vec", index_type="BIN_FLAT", metric_type="HAMMING")
        else:
            kind, extra = MILVUS_INDEX.get(_index_choice(self.catalog), MILVUS_INDEX["auto"])
            if kind == "IVF_PQ":
                extra = {**extra, "m": _pq_m(self.dim)}
            params.add_index("vec", index_type=kind, metric_type="IP", params=extra)
        self._call(
            "create a collection",
            c.create_collection,
            self.name,
            schema=schema,
            index_params=params,
            consistency_level="Strong",
        )

    def drop(self) -> None:
        """Delete the Milvus collection."""
        self._call("drop the collection", self._client.drop_collection, self.name)

    # -- protocol -------------------------------------------------------------------------------

    def __len__(self) -> int:
        if self._count is None:
            rows = self._call(
                "count", self._client.query, self.name, filter="", output_fields=["count(*)"]
            )
            self._count = int(rows[0]["count(*)"]) if rows else 0
        return self._count

    def ids(self) -> np.ndarray:
        """Every content id in the collection (queried in windows of ids: Milvus answers at
        most 16,384 rows a query, and content ids are unique integers below the catalog's
        highest ever)."""
        highest = self.catalog.highest_content_id()
        found: list[int] = []
        for low in range(0, highest + 1, WINDOW):
            rows = self._call(
                "list ids",
                self._client.query,
                self.name,
                filter=f"id >= {low} and id < {low + WINDOW}",
                output_fields=["id"],
                limit=WINDOW,
            )
            found.extend(int(r["id"]) for r in rows)
        return np.asarray(sorted(found), dtype=np.int64)

    def _rows(self, ids: np.ndarray, vectors: np.ndarray) -> list[dict]:
        hits = self.catalog.hits_for_contents([int(i) for i in ids])
        paths = {h.path for found in hits.values() for h in found}
        metadata = self.catalog.metadata_of_paths(paths) if paths else {}
        rows = []
        for content_id, vector in zip(ids, vectors, strict=True):
            files = hits.get(int(content_id), [])
            path = files[0].path if files else ""
            multi = len(files) > 1
            rows.append(
                {
                    "id": int(content_id),
                    "vec": bytes(vector) if self.binary else vector.tolist(),
                    "path": path,
                    "multi": multi,
                    "meta": {} if multi else metadata.get(path, {}),
                }
            )
        return rows

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert (upsert: a repeated id replaces its row) vectors with their metadata."""
        ids = _as_ids(ids)
        vectors = np.ascontiguousarray(vectors, dtype=np.uint8 if self.binary else np.float32)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        for start in range(0, len(ids), BATCH):
            rows = self._rows(ids[start : start + BATCH], vectors[start : start + BATCH])
            self._call("insert", self._client.upsert, self.name, rows)
        self._count = None

    def update_metadata(self, ids: np.ndarray) -> None:
        """Rewrite the rows of ``ids`` after their files' metadata changed."""
        ids = np.intersect1d(_as_ids(ids), self.ids())
        if len(ids):
            self.add(ids, self.vectors_of(ids, exact_dtype=True))

    def remove(self, ids: np.ndarray) -> int:
        ids = _as_ids(ids)
        if not len(ids):
            return 0
        before = len(self)
        for start in range(0, len(ids), BATCH):
            chunk = [int(i) for i in ids[start : start + BATCH]]
            self._call("delete", self._client.delete, self.name, ids=chunk)
        self._count = None
        return before - len(self)

    def vectors_of(self, ids: np.ndarray, exact_dtype: bool = False) -> np.ndarray:
        """Stored vectors of ``ids`` (read from the catalog, the store of record)."""
        ids = _as_ids(ids)
        info = self.info
        out = self.catalog.vectors_for(info.name, info.width, [int(i) for i in ids], info.dtype)
        return out if exact_dtype or self.binary else np.asarray(out, dtype=np.float32)

    def search(
        self, queries: np.ndarray, k: int, ids: np.ndarray | None = None, expr: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores or Hamming distances [Q, k], ids [Q, k])``, best first; missing: id -1.

        ``ids``: rank only these contents; ``expr``: a Milvus filter expression.
        """
        if k <= 0:
            raise ValueError("k must be positive")
        if ids is not None:
            allowed = ",".join(str(int(i)) for i in np.unique(_as_ids(ids)))
            if not allowed:
                return self._empty(len(queries), k)
            expr = f"id in [{allowed}]"
        if self.binary:
            data = [bytes(row) for row in np.ascontiguousarray(queries, dtype=np.uint8)]
            params = {"metric_type": "HAMMING", "params": {}}
        else:
            data = np.ascontiguousarray(queries, dtype=np.float32).tolist()
            params = {"metric_type": "IP", "params": {"ef": max(64, k), "nprobe": 32}}
        limit = min(k, 16384)
        results = self._call(
            "search",
            self._client.search,
            self.name,
            data=data,
            limit=limit,
            filter=expr or "",
            search_params=params,
            output_fields=[],
        )
        scores, found = self._empty(len(queries), k)
        for q, hits in enumerate(results):
            for j, hit in enumerate(list(hits)[:k]):
                found[q, j] = int(hit["id"])
                scores[q, j] = hit["distance"]
        return scores, found

    def _empty(self, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.binary:
            return np.full((n, k), MISSING_DISTANCE, np.int32), np.full((n, k), -1, np.int64)
        return np.full((n, k), MISSING_SCORE, np.float32), np.full((n, k), -1, np.int64)

    def search_filtered(
        self, queries: np.ndarray, k: int, where, folder, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search with the metadata filter pushed down as a Milvus expression; ids when the
        filter has no exact Milvus form. Contents shared by several files are always
        candidates (the catalog's check of each file decides)."""
        from lookalike.index.milvus_filter import to_milvus

        expr = to_milvus(where, folder)
        if expr == "":
            return self.search(queries, k)
        if expr is None:
            return self.search(queries, k, ids=allowed)
        return self.search(queries, k, expr=f"({expr}) or multi == true")

    # -- files ----------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the marker naming the Milvus collection (the vectors live in Milvus)."""
        marker = {"uri": self.uri, "prefix": self.prefix, "collection": self.name}
        write_atomic(Path(path), json.dumps(marker).encode())

    @classmethod
    def load(cls, path: Path, info: FeatureInfo, catalog) -> MilvusIndex:
        """The collection a marker names (ValueError when the settings moved elsewhere)."""
        marker = json.loads(Path(path).read_text())
        settings = read_backend(catalog)
        if settings is None or settings["uri"] != marker["uri"]:
            raise ValueError(f"{path} names another Milvus server")
        index = cls(settings, info, catalog, marker["collection"])
        if not index._call("find the collection", index._client.has_collection, index.name):
            raise ValueError(f"Milvus has no collection {index.name}")
        return index


def _pq_m(dim: int) -> int:
    want = max(1, min(64, dim // 8))
    return max(m for m in range(1, want + 1) if dim % m == 0)
