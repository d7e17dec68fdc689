"""Which index a collection gets: ``auto`` chooses by size and memory budget, as autofaiss does.

Exact search while a scan of every vector is fast enough, then HNSW (over PCA-reduced vectors
when the vectors are wide: less memory, a faster build, exact re-scoring from the catalog),
then HNSW over 8-bit scalar codes, then IVF-PQ when even those do not fit the budget.
Binary codes: an exact Hamming scan up to :data:`BINARY_EXACT_MAX` codes, multi-index hashing
beyond. The settings live in the catalog's meta table (:func:`read_settings`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from lookalike.index.ann import HNSW_M, Plan, parse_plan, pq_size

#: Exact search while the vectors take at most this many bytes (about 10 ms a query).
FLAT_MAX_BYTES = 128 << 20
#: Reduce wider vectors to this many dimensions for HNSW and IVF-PQ.
PCA_DIM = 256
#: PCA is fitted once there are this many vectors per output dimension.
PCA_MIN_FACTOR = 4
#: Exact Hamming scans up to this many codes; multi-index hashing beyond.
BINARY_EXACT_MAX = 10_000_000
#: Per-vector bytes of an HNSW graph with M links (two levels on average, 4-byte links) + id.
_GRAPH_BYTES = HNSW_M * 2 * 4 + 8 + 16

KEY_INDEX = "index:kind"
KEY_BUDGET = "index:memory_budget"
KEY_BINARY = "index:binary"


@dataclass(frozen=True)
class Settings:
    """``index``: auto or a plan name; ``memory_budget``: bytes (0: half the machine's memory);
    ``binary``: auto, flat or mih."""

    index: str = "auto"
    memory_budget: int = 0
    binary: str = "auto"


def parse_size(text: str | int) -> int:
    """Bytes from ``"8G"``, ``"512M"``, ``"1.5GB"`` or a number of bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise ValueError(f"not a size: {text!r} (e.g. 8G, 512M)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2)]
    return int(float(match.group(1)) * scale)


def check_settings(settings: Settings) -> Settings:
    """``settings`` if valid, else ValueError saying what is allowed."""
    if settings.index != "auto":
        parse_plan(settings.index)
    if settings.binary not in ("auto", "flat", "mih"):
        raise ValueError(f"unknown binary index {settings.binary!r}; choose auto, flat or mih")
    if settings.memory_budget < 0:
        raise ValueError("the memory budget cannot be negative")
    return settings


def read_settings(catalog) -> Settings:
    """The collection's index settings (defaults when none were given)."""
    return Settings(
        index=catalog.get_meta(KEY_INDEX) or "auto",
        memory_budget=int(catalog.get_meta(KEY_BUDGET) or 0),
        binary=catalog.get_meta(KEY_BINARY) or "auto",
    )


def write_settings(catalog, settings: Settings) -> bool:
    """Store ``settings`` (inside a write transaction); whether they changed."""
    changed = read_settings(catalog) != settings
    catalog.set_meta(KEY_INDEX, settings.index)
    catalog.set_meta(KEY_BUDGET, str(settings.memory_budget))
    catalog.set_meta(KEY_BINARY, settings.binary)
    return changed


def machine_memory() -> int:
    """Physical memory in bytes (8 GiB when it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def budget(settings: Settings) -> int:
    return settings.memory_budget or machine_memory() // 2


def plan_bytes(plan: Plan, n: int, dim: int) -> int:
    """Estimated memory of ``plan`` holding ``n`` vectors of ``dim`` float32."""
    width = plan.pca or dim
    if plan.kind == "flat":
        return n * (4 * dim + 8)
    if plan.kind == "hnsw":
        return n * (4 * width + _GRAPH_BYTES)
    if plan.kind == "hnsw-sq8":
        return n * (width + _GRAPH_BYTES)
    return n * (pq_size(width) + 8 + 8)  # PQ codes, list id, id map


def choose(settings: Settings, n: int, dim: int) -> Plan:
    """The plan for ``n`` vectors of ``dim`` under ``settings``."""
    if settings.index != "auto":
        plan = parse_plan(settings.index)
        if plan.pca and (plan.pca >= dim or n < PCA_MIN_FACTOR * plan.pca):
            plan = Plan(plan.kind)  # PCA needs more dimensions, and vectors to fit it on
        return plan
    limit = budget(settings)
    if n * 4 * dim <= FLAT_MAX_BYTES and plan_bytes(Plan("flat"), n, dim) <= limit:
        return Plan("flat")
    pca = PCA_DIM if dim > PCA_DIM and n >= PCA_MIN_FACTOR * PCA_DIM else 0
    for plan in (Plan("hnsw", pca), Plan("hnsw-sq8", pca), Plan("ivfpq", pca)):
        if plan_bytes(plan, n, dim) <= limit:
            return plan
    return Plan("ivfpq", pca)


def binary_kind(settings: Settings, n: int) -> str:
    """``"flat"`` (exact Hamming scan) or ``"mih"`` (multi-index hashing)."""
    if settings.binary != "auto":
        return settings.binary
    return "flat" if n <= BINARY_EXACT_MAX else "mih"
