"""A labelled image set for evaluation: which files, which label each, which are duplicates.

Labels come from a CSV file (``path,label`` header; paths relative to the CSV's folder, or to
the image folder, or absolute) or, without one, from the folder layout: every sub-folder of the
image folder is a class, and the images anywhere below it belong to it.

Exact duplicates (the same bytes, by SHA-256) and the clusters of a ``duplicates.json`` beside
the labels (a list of lists of paths, as the shared data sets have) are excluded from each
other's rankings: finding a byte-identical copy says nothing about category retrieval.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.errors import BadInput

IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif",
}  # fmt: skip
EXAMPLES = 5


class LabelsError(BadInput):
    """A labels file that cannot be read (missing columns, no usable rows)."""


@dataclass
class LabelledSet:
    """Images with one label each, and what to exclude from each query's ranking."""

    paths: list[Path]
    labels: list[str]
    groups: list[list[int]] = field(default_factory=list)  # positions of duplicate clusters
    unmatched: int = 0  # label rows naming no image file
    unmatched_examples: list[str] = field(default_factory=list)
    unlabelled: int = 0  # image files without a label
    singletons: list[str] = field(default_factory=list)  # classes with a single image

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def excluded(self) -> np.ndarray:
        """``[N, N]`` booleans: each image itself and its duplicates."""
        out = np.eye(len(self.paths), dtype=bool)
        for group in self.groups:
            g = np.asarray(group)
            out[np.ix_(g, g)] = True
        return out

    def notes(self) -> list[str]:
        """What a reader must know about the set: unmatched labels, single-image classes."""
        out = []
        if self.unmatched:
            out.append(
                f"{self.unmatched} label row(s) match no image file "
                f"(e.g. {', '.join(self.unmatched_examples)}); left out"
            )
        if self.unlabelled:
            out.append(f"{self.unlabelled} image file(s) have no label; left out")
        if self.singletons:
            out.append(
                f"{len(self.singletons)} class(es) with a single image have no relevant item and "
                f"are excluded from mAP ({', '.join(self.singletons[:EXAMPLES])}); their images "
                "still appear in the other queries' rankings"
            )
        dup_images = sum(len(g) for g in self.groups)
        if dup_images:
            out.append(
                f"{len(self.groups)} group(s) of duplicates ({dup_images} images) are excluded "
                "from each other's rankings"
            )
        return out

    def as_dict(self) -> dict:
        return {
            "images": len(self.paths),
            "classes": len(self.classes),
            "unmatched_labels": self.unmatched,
            "unmatched_examples": self.unmatched_examples,
            "unlabelled_images": self.unlabelled,
            "single_image_classes": self.singletons,
            "duplicate_groups": len(self.groups),
        }

    def subset(self, keep: list[int]) -> LabelledSet:
        """This set restricted to the positions ``keep`` (groups renumbered)."""
        new = {old: i for i, old in enumerate(keep)}
        groups = [[new[i] for i in g if i in new] for g in self.groups]
        return LabelledSet(
            paths=[self.paths[i] for i in keep],
            labels=[self.labels[i] for i in keep],
            groups=[g for g in groups if len(g) > 1],
            unmatched=self.unmatched,
            unmatched_examples=self.unmatched_examples,
            unlabelled=self.unlabelled,
            singletons=self.singletons,
        )


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (by suffix), sorted, hidden ones skipped."""
    return sorted(
        p
        for p in Path(folder).rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _read_csv(path: Path) -> list[tuple[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            sample = fh.read(4096)
            fh.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            reader = csv.DictReader(fh, dialect=dialect)
            fields = [f.strip().lower() for f in reader.fieldnames or []]
            if "path" not in fields or "label" not in fields:
                raise LabelsError(
                    f"{path}: needs a header with 'path' and 'label' columns, has {fields}"
                )
            rows = []
            for row in reader:
                row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                if row["path"] and row["label"]:
                    rows.append((row["path"], row["label"]))
            return rows
    except OSError as exc:
        raise LabelsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise LabelsError(f"cannot read {path}: not UTF-8 text (expected a CSV)") from None
    except csv.Error as exc:
        raise LabelsError(f"cannot read {path}: not a usable CSV ({exc})") from None


def _resolve(rel: str, bases: list[Path], files: dict[Path, Path]) -> Path | None:
    p = Path(rel).expanduser()
    candidates = [p] if p.is_absolute() else [b / p for b in bases]
    for c in candidates:
        c = c.absolute()
        if c in files:
            return files[c]
        try:
            resolved = c.resolve()
        except OSError:
            continue
        if resolved in files:
            return files[resolved]
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _listed_files(rows: list[tuple[str, str]], bases: list[Path]) -> list[Path]:
    """The image files the label rows name (no folder walk), sorted."""
    out: set[Path] = set()
    for rel, _ in rows:
        p = Path(rel).expanduser()
        for c in [p] if p.is_absolute() else [b / p for b in bases]:
            with contextlib.suppress(OSError, ValueError):
                if c.suffix.lower() in IMAGE_SUFFIXES and c.is_file():
                    out.add(c.absolute())
    return sorted(out)


def check_labels_file(labels: str | Path) -> Path:
    """The absolute path of a labels file that exists and can be read, else LabelsError."""
    path = Path(labels).expanduser().absolute()
    if not path.exists():
        raise LabelsError(f"no such labels file: {path}")
    if not path.is_file():
        raise LabelsError(f"not a labels file: {path} (expected a CSV with path,label columns)")
    if not os.access(path, os.R_OK):
        raise LabelsError(f"cannot read labels file {path}: permission denied")
    return path


def load_labelled_set(folder: Path, labels: Path | None = None, walk: bool = True) -> LabelledSet:
    """The labelled images of ``folder`` (see the module's docstring).

    ``walk=False`` (with ``labels``) takes only the files the labels name instead of listing
    every image under ``folder`` (then nothing counts as unlabelled).

    Raises:
        LabelsError: missing or unreadable labels, or fewer than two labelled images.
        FileNotFoundError: ``folder`` does not exist.
    """
    folder = Path(folder).expanduser().absolute()
    rows: list[tuple[str, str]] = []
    if labels is not None:  # before any folder walk: a missing file fails at once
        labels = check_labels_file(labels)
        rows = _read_csv(labels)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    if labels is not None and not walk:
        found = _listed_files(rows, [labels.parent, folder])
    else:
        found = image_files(folder)
    files: dict[Path, Path] = {}
    for f in found:
        files[f.absolute()] = f
        with contextlib.suppress(OSError):
            files.setdefault(f.resolve(), f)
    pairs: list[tuple[Path, str]] = []
    unmatched: list[str] = []
    if labels is not None:
        bases = [labels.parent, folder]
        seen: set[Path] = set()
        for rel, label in rows:
            path = _resolve(rel, bases, files)
            if path is None:
                unmatched.append(rel)
            elif path not in seen:
                seen.add(path)
                pairs.append((path, label))
    else:
        for f in found:
            parts = f.relative_to(folder).parts
            if len(parts) >= 2:
                pairs.append((f, parts[0]))
    pairs.sort(key=lambda pl: str(pl[0]))
    if len(pairs) < 2:
        how = f"the labels in {labels}" if labels else "one sub-folder per class"
        raise LabelsError(
            f"fewer than 2 labelled images in {folder} (labels from {how}; "
            f"{len(unmatched)} label row(s) matched no file)"
        )
    paths = [p for p, _ in pairs]
    names = [label for _, label in pairs]
    position = {p: i for i, p in enumerate(paths)}
    groups = _duplicate_groups(paths, position, labels.parent if labels else folder, folder)
    counts = Counter(names)
    return LabelledSet(
        paths=paths,
        labels=names,
        groups=groups,
        unmatched=len(unmatched),
        unmatched_examples=unmatched[:EXAMPLES],
        unlabelled=len(found) - len(paths),
        singletons=sorted(label for label, n in counts.items() if n == 1),
    )


def _duplicate_groups(
    paths: list[Path], position: dict[Path, int], labels_dir: Path, folder: Path
) -> list[list[int]]:
    """Clusters of identical files (by hash) merged with ``duplicates.json`` clusters."""
    parent = list(range(len(paths)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    by_hash: dict[str, int] = {}
    for i, p in enumerate(paths):
        try:
            digest = _sha256(p)
        except OSError:
            continue
        if digest in by_hash:
            union(i, by_hash[digest])
        else:
            by_hash[digest] = i
    dup_file = labels_dir / "duplicates.json"
    if dup_file.is_file():
        try:
            clusters = json.loads(dup_file.read_text())
        except (OSError, ValueError) as exc:
            raise LabelsError(f"cannot read {dup_file}: {exc}") from exc
        for cluster in clusters:
            members = [
                position[(base / rel).absolute()]
                for rel in cluster
                for base in (labels_dir, folder)
                if (base / rel).absolute() in position
            ]
            for a, b in zip(members, members[1:], strict=False):
                union(a, b)
    clusters_by_root: dict[int, list[int]] = {}
    for i in range(len(paths)):
        clusters_by_root.setdefault(find(i), []).append(i)
    return [g for g in clusters_by_root.values() if len(g) > 1]
