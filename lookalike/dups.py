"""Find duplicate and near-duplicate images in a collection, report them, move the extras.

Example::

    import lookalike
    from lookalike.dups import find_duplicates, move_files, write_html_report

    col = lookalike.open("~/my-index")
    groups = find_duplicates(col, "near")
    write_html_report(groups, "dups.html")
    move_files([f for g in groups for f in g.to_remove], "~/dups-review")

Presets (cosine similarity of the L2-normalised 1280-d ``deep`` vectors):

* ``exact``: files with byte-identical content (same SHA-256); no vectors are read.
* ``near`` (0.95): exact copies plus resized / recompressed / re-encoded copies. Pairs from
  0.85 up also count when their 64-bit pHashes differ in at most 2 bits (confirmation: the
  deep vectors of a copy resized to half and recompressed can fall to 0.87-0.93, its pHash
  barely moves; two frames of one scene, such as a stereo pair, differ in 4 or more bits).
* ``similar`` (0.85): also the same scene or product shot from a slightly different view.

How the thresholds were chosen, and the speed at 10,000 images: bench/README.md, "(i) Duplicates".
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.catalog import IndexedFile

PRESETS: dict[str, float | None] = {"exact": None, "near": 0.95, "similar": 0.85}
#: ``near``: pairs from this cosine up are also near duplicates when their pHashes agree
CONFIRM_FLOOR = 0.85
#: the largest pHash Hamming distance (of 64 bits) that confirms a borderline pair; 4 would
#: also join distinct frames of one scene (the stereo pair motorcycle_left/right: 4 bits)
CONFIRM_HAMMING = 2
#: decode side for the on-the-fly pHash (it looks at 32x32 pixels; JPEG DCT scaling makes it fast)
CONFIRM_DECODE_SIDE = 64
THUMB_SIZE = 160
DEEP_FEATURE = "deep"

#: one file of a duplicate group, as the report, ``--json`` and :func:`move_files` read it
FileInfo = dict[str, Any]


def file_info(found: IndexedFile) -> FileInfo:
    """The indexed file ``found`` as a duplicate group lists it."""
    return {
        "id": found.id,
        "path": found.path,
        "size": found.size,
        "width": found.width,
        "height": found.height,
        "mtime_ns": found.mtime_ns,
        "mtime": found.mtime_ns / 1e9,
        "added": found.added_at,
        "content_id": found.content_id,
    }


@dataclass
class DupGroup:
    """A set of files that show the same image; ``keeper`` is the one to keep."""

    files: list[FileInfo]
    score: float  # the lowest similarity between two members (1.0 for exact copies)
    keeper: FileInfo = field(init=False)
    to_remove: list[FileInfo] = field(init=False)

    def __post_init__(self) -> None:
        self.files = sorted(self.files, key=_keep_order)
        self.keeper = self.files[0]
        self.to_remove = self.files[1:]

    def as_dict(self) -> dict:
        return {"score": self.score, "keeper": self.keeper, "to_remove": self.to_remove}


def _keep_order(f: Mapping) -> tuple:
    """Sort key, best keeper first: resolution, file size, oldest mtime, shortest path."""
    pixels = int(f.get("width") or 0) * int(f.get("height") or 0)
    return (-pixels, -int(f.get("size") or 0), int(f.get("mtime_ns") or 0), len(f["path"]),
            f["path"])  # fmt: skip


# -- the graph part: vectors in, groups out ---------------------------------------------------

#: Most neighbours per image in the kNN graph (faiss holds ``N * k`` scores at once).
MAX_K = 1000


def check_threshold(threshold: object) -> float:
    """``threshold`` as a float if it is a cosine similarity from 0 to 1, else ValueError.

    Below 0 every pair of images would count as duplicates (``-1`` links everything).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number):
        raise ValueError(f"threshold must be a number from 0 to 1, got {threshold!r}")
    value = float(threshold)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"threshold must be a number from 0 to 1, got {value}")
    return value


def check_k(k: object) -> int:
    """``k`` if it is a whole number from 1 to :data:`MAX_K`, else ValueError."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
    return int(k)


def similarity_groups(
    ids: np.ndarray,
    vectors: np.ndarray,
    threshold: float,
    k: int = 10,
    block: int = 1024,
    confirm: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    floor: float = CONFIRM_FLOOR,
) -> list[tuple[np.ndarray, float]]:
    """Connected components of the kNN graph whose edges have cosine >= ``threshold``.

    Args:
        ids: ``[N]`` integer ids of the vectors.
        vectors: ``[N, D]`` vectors (normalised here to unit length).
        threshold: the lowest cosine similarity that links two vectors.
        k: neighbours looked up per vector (a group member needs a link within its ``k``
            nearest; larger ``k`` finds larger groups of copies).
        block: queries per faiss search call.
        confirm: also link pairs with ``floor <= cosine < threshold`` for which
            ``confirm(ids_a, ids_b)`` (arrays of the pairs' ids) returns True.
        floor: the lowest cosine a pair needs to be offered to ``confirm``.

    Returns:
        ``(member ids, min pairwise similarity)`` for every component of two or more,
        largest group first.
    """
    import faiss
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    check_threshold(threshold)
    check_k(k)
    if isinstance(block, bool) or not isinstance(block, int | np.integer) or block < 1:
        raise ValueError(f"block must be a whole number of 1 or more, got {block!r}")
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    n = len(ids)
    if n < 2:
        return []
    x = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    faiss.normalize_L2(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    kk = min(k + 1, n)  # the query itself is among its neighbours
    lowest = min(threshold, floor) if confirm is not None else threshold
    rows, cols, sims = [], [], []
    for start in range(0, n, block):
        scores, nbrs = index.search(x[start : start + block], kk)
        keep = (scores >= lowest) & (nbrs >= 0)
        q = np.broadcast_to(np.arange(start, start + len(nbrs))[:, None], nbrs.shape)
        keep &= nbrs != q
        rows.append(q[keep])
        cols.append(nbrs[keep])
        sims.append(scores[keep])
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    sim = np.concatenate(sims)
    if confirm is not None and len(r):
        borderline = sim < threshold
        if borderline.any():
            a, b = np.minimum(r, c)[borderline], np.maximum(r, c)[borderline]
            pairs = np.unique(np.stack([a, b], axis=1), axis=0)
            ok = np.asarray(confirm(ids[pairs[:, 0]], ids[pairs[:, 1]]), dtype=bool)
            r = np.concatenate([r[~borderline], pairs[ok, 0]])
            c = np.concatenate([c[~borderline], pairs[ok, 1]])
    if not len(r):
        return []
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=True, connection="weak")
    sizes = np.bincount(labels)
    members = np.flatnonzero(sizes[labels] >= 2)
    order = members[np.argsort(labels[members], kind="stable")]
    splits = np.flatnonzero(np.diff(labels[order])) + 1
    out = []
    for part in np.split(order, splits):
        sub = x[part]
        score = float(np.clip((sub @ sub.T).min(), -1.0, 1.0))
        out.append((ids[part], score))
    out.sort(key=lambda item: (-len(item[0]), -item[1]))
    return out


# -- whole collections ------------------------------------------------------------------------


def _file_table(col) -> dict[int, list[FileInfo]]:
    """Every indexed file as a dict, by content id."""
    out: dict[int, list[FileInfo]] = {}
    for found in col.catalog.indexed_files():
        out.setdefault(found.content_id, []).append(file_info(found))
    return out


def _phash_confirmer(
    col, files: Mapping[int, list[FileInfo]]
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``confirm(a, b)``: content pairs whose 64-bit pHashes differ in <= CONFIRM_HAMMING bits.

    The collection's stored ``phash`` codes when it has them; otherwise each content met is
    decoded once, small (JPEG DCT scaling), from the first of its files that reads. A content
    none of whose files reads confirms nothing.
    """
    from concurrent.futures import ThreadPoolExecutor

    from lookalike.features.hashes import phash_code
    from lookalike.features.registry import info
    from lookalike.images import ImageError, load_image

    codes: dict[int, np.ndarray | None] = {}

    def decode(cid: int) -> np.ndarray | None:
        for f in files.get(cid, []):
            try:
                image = load_image(f["path"], min_side=CONFIRM_DECODE_SIDE).image
            except (ImageError, OSError):
                continue
            return phash_code(image)
        return None

    def confirm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        wanted = sorted({int(i) for i in np.concatenate([a, b])} - codes.keys())
        if wanted and "phash" in col.features:
            spec = info("phash")
            have = set(col.catalog.vector_ids("phash").tolist())
            stored_ids = [i for i in wanted if i in have]  # the others are decoded below
            stored = col.catalog.vectors_for("phash", spec.width, stored_ids, spec.dtype)
            codes.update(zip(stored_ids, stored, strict=True))
            wanted = [i for i in wanted if i not in have]
        if wanted:
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                codes.update(zip(wanted, pool.map(decode, wanted), strict=True))
        out = np.zeros(len(a), dtype=bool)
        for n, (x, y) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
            cx, cy = codes.get(x), codes.get(y)
            if cx is not None and cy is not None:
                distance = int(np.unpackbits(np.bitwise_xor(cx, cy)).sum())
                out[n] = distance <= CONFIRM_HAMMING
        return out

    return confirm


def find_duplicates(
    col,
    preset: str = "near",
    threshold: float | None = None,
    k: int = 10,
    confirm: bool = True,
) -> list[DupGroup]:
    """Groups of duplicate files in the collection ``col``, largest first.

    Args:
        col: an open :class:`lookalike.collection.Collection`.
        preset: ``"exact"`` (same bytes), ``"near"`` or ``"similar"`` (see module doc).
        threshold: cosine similarity overriding the preset's (ignored for ``"exact"``).
        k: neighbours per image in the kNN graph.
        confirm: with ``"near"``, also group pairs from cosine :data:`CONFIRM_FLOOR` up whose
            pHashes agree (within :data:`CONFIRM_HAMMING` bits): resized and recompressed
            copies that the deep vectors alone place below the threshold.

    Raises:
        ValueError: unknown preset, or no deep vectors in a collection for near/similar.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if threshold is not None:
        check_threshold(threshold)
    check_k(k)
    files = _file_table(col)
    if preset == "exact":
        groups = [DupGroup(fs, 1.0) for fs in files.values() if len(fs) > 1]
        groups.sort(key=lambda g: (-len(g.files), g.keeper["path"]))
        return groups
    limit = threshold if threshold is not None else PRESETS[preset]
    assert limit is not None  # every preset but "exact" (answered above) has a threshold
    if DEEP_FEATURE not in col.features:
        raise ValueError("near/similar duplicates need the 'deep' feature in the collection")
    from lookalike.features.registry import info

    spec = info(DEEP_FEATURE)
    ids, vectors = col.catalog.vectors(DEEP_FEATURE, spec.dim, spec.dtype)
    present = np.fromiter((i in files for i in ids), dtype=bool, count=len(ids))
    ids, vectors = ids[present], vectors[present]
    confirmer = _phash_confirmer(col, files) if confirm and preset == "near" else None
    groups = []
    grouped: set[int] = set()
    found = similarity_groups(ids, vectors, float(limit), k=k, confirm=confirmer)
    for members, score in found:
        grouped.update(int(m) for m in members)
        # byte-identical copies inside a group are similarity 1; the group's min still holds
        groups.append(DupGroup([f for m in members for f in files[int(m)]], score))
    groups += [DupGroup(fs, 1.0) for cid, fs in files.items() if len(fs) > 1 and cid not in grouped]
    groups.sort(key=lambda g: (-len(g.files), -g.score, g.keeper["path"]))
    return groups


# -- the HTML report --------------------------------------------------------------------------


def _thumbnail_uri(path: str, size: int = THUMB_SIZE) -> str | None:
    """A base64 JPEG data URI of the image at ``path`` fitted in ``size`` px, or None.

    Decoded through :func:`lookalike.images.load_image`, so the pixel, byte and shape limits
    hold here too (a file swapped for a bomb after indexing gets a placeholder).
    """
    from lookalike.images import ImageError, load_image

    try:
        im = load_image(path, min_side=size).image
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80)
    except (ImageError, OSError, ValueError):  # a missing or broken file gets a placeholder
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#f6f6f6;color:#222}
h1{font-size:1.4em} .summary{color:#555}
.group{background:#fff;border:1px solid #ddd;border-radius:6px;margin:1em 0;padding:.8em}
.group h2{font-size:1em;margin:0 0 .6em}
.files{display:flex;flex-wrap:wrap;gap:.8em}
.file{width:180px;border:2px solid #ccc;border-radius:4px;padding:6px;font-size:12px;
  word-break:break-all;background:#fafafa}
.file.keep{border-color:#2a9d2a;background:#eefbea}
.file.remove{border-color:#d9534f}
.thumb{width:160px;height:160px;display:flex;align-items:center;justify-content:center;
  background:#eee;margin-bottom:4px}
.thumb img{max-width:160px;max-height:160px}
.tag{font-weight:bold;font-size:11px;text-transform:uppercase}
.keep .tag{color:#2a9d2a} .remove .tag{color:#d9534f}
"""


def write_html_report(groups: Iterable[DupGroup], path: str | os.PathLike) -> Path:
    """Write a self-contained HTML page (inline CSS, embedded thumbnails) of ``groups``."""
    groups = list(groups)
    esc = html.escape
    removable = sum(len(g.to_remove) for g in groups)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>lookalike duplicates</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Duplicate images</h1>",
        f"<p class='summary'>{len(groups)} groups, {removable} files suggested for removal "
        "(green: suggested keeper).</p>",
    ]
    for number, group in enumerate(groups, 1):
        parts.append(
            f"<div class='group'><h2>Group {number}: {len(group.files)} files, "
            f"similarity {group.score:.3f}</h2><div class='files'>"
        )
        for f in group.files:
            keep = f is group.keeper
            uri = _thumbnail_uri(f["path"])
            thumb = f"<img src='{uri}' alt=''>" if uri else "unreadable"
            when = dt.datetime.fromtimestamp(f["mtime_ns"] / 1e9).strftime("%Y-%m-%d %H:%M")
            parts.append(
                f"<div class='file {'keep' if keep else 'remove'}'>"
                f"<div class='thumb'>{thumb}</div>"
                f"<div class='tag'>{'keep' if keep else 'remove?'}</div>"
                f"<div>{esc(str(f['path']))}</div>"
                f"<div>{f['width']}&times;{f['height']} &middot; {_human_size(f['size'])}</div>"
                f"<div>{when}</div></div>"
            )
        parts.append("</div></div>")
    parts.append("</body></html>")
    out = Path(path)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


# -- moving files -----------------------------------------------------------------------------


def _free_name(target: Path) -> Path:
    """``target``, or ``name_1.ext``, ``name_2.ext``... the first that does not exist."""
    if not os.path.lexists(target):
        return target
    n = 1
    while True:
        candidate = target.with_name(f"{target.stem}_{n}{target.suffix}")
        if not os.path.lexists(candidate):
            return candidate
        n += 1


def _move_no_overwrite(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; raises FileExistsError rather than replace ``dst``."""
    try:
        os.link(src, dst)  # fails if dst exists: atomic no-clobber on one file system
    except FileExistsError:
        raise
    except OSError:  # another file system, or no hard links: copy exclusively
        with open(src, "rb") as fin, open(dst, "xb") as fout:
            shutil.copyfileobj(fin, fout)
        shutil.copystat(src, dst)
    os.unlink(src)


def move_files(
    files: Iterable[Mapping | str | os.PathLike],
    dest_dir: str | os.PathLike,
    root: str | os.PathLike | None = None,
) -> list[tuple[str, str]]:
    """Move ``files`` (dicts with a ``path``, or paths) into ``dest_dir``; never overwrites.

    With ``root``, files under it keep their path relative to ``root``; others (or all,
    without ``root``) go directly into ``dest_dir``. A name already taken gets ``_1``,
    ``_2``... appended. Missing sources are skipped. Nothing is deleted: every file ends up
    in ``dest_dir``. The catalog is not changed (run ``add(..., prune=True)`` afterwards).

    Returns:
        ``(source, destination)`` of every file moved.
    """
    dest = Path(dest_dir).expanduser().absolute()
    base = Path(root).expanduser().absolute() if root is not None else None
    moved: list[tuple[str, str]] = []
    for item in files:
        src = Path(item["path"] if isinstance(item, Mapping) else item).absolute()
        if not src.is_file():
            continue
        rel = Path(src.name)
        if base is not None and src.is_relative_to(base):
            rel = src.relative_to(base)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # another process may take the name between check and link
            dst = _free_name(target)
            try:
                _move_no_overwrite(src, dst)
            except FileExistsError:
                continue
            moved.append((str(src), str(dst)))
            break
    return moved
