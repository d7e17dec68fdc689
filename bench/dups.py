"""Duplicate finding at 10,000 images: time of `lookalike dups`, natural duplicates found.

The collection: every image of ``mfood7`` and ``web_animals4`` (3,197 real web photos, read in
place) plus generated light copies of them (seed 0: resized to 50-90 % and re-encoded as JPEG
quality 70-95, or cropped by 2-5 % per side, or byte-identical copies) written to a temporary
folder, up to 10,000 files. Figures:

* wall time of ``find_duplicates`` per preset (in-process) and of the CLI
  ``lookalike dups --json`` (a fresh process: start-up, catalog read, kNN graph, output);
  limit 30 s for 10,000 images;
* natural duplicates found: clusters of ``duplicates.json`` whose files all land in one group
  of the ``near`` preset;
* generated copies grouped with their source (``near``), per kind of copy.

Run: ``python -m bench.dups`` (about 2 minutes on 2 cores), or ``python -m bench dups``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

import lookalike
from bench.copies import DATASETS, _duplicates
from lookalike.dups import PRESETS, find_duplicates

RESULTS = Path(__file__).resolve().parent / "results" / "dups.json"
TOTAL = 10_000
LIMIT_S = 30.0
KINDS = ("resized_jpeg", "cropped", "byte_copy")


def _make_copy(src: Path, dst_dir: Path, i: int, rng: random.Random) -> tuple[Path, str]:
    """One light copy of ``src`` in ``dst_dir``; returns its path and its kind."""
    kind = KINDS[i % len(KINDS)]
    if kind == "byte_copy":
        dst = dst_dir / f"c{i:05d}{src.suffix.lower()}"
        shutil.copyfile(src, dst)
        return dst, kind
    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        if kind == "resized_jpeg":
            f = rng.uniform(0.5, 0.9)
            im = im.resize((max(16, round(w * f)), max(16, round(h * f))), Image.LANCZOS)
        else:
            m = rng.uniform(0.02, 0.05)
            im = im.crop((round(w * m), round(h * m), round(w * (1 - m)), round(h * (1 - m))))
        dst = dst_dir / f"c{i:05d}.jpg"
        im.save(dst, quality=rng.randint(70, 95))
    return dst, kind


def measure_dups(total: int = TOTAL, seed: int = 0, workers: int | None = None) -> dict:
    """Time and recall of duplicate finding on ``total`` files; ``{"skipped": why}`` if no data."""
    roots = [DATASETS / "mfood7", DATASETS / "web_animals4"]
    for root in roots:
        if not (root / "labels.csv").exists():
            return {"skipped": f"{root} not found (data set absent on this machine)"}
    real = sorted(p for root in roots for p in (root / "images").rglob("*") if p.is_file())
    rng = random.Random(seed)
    out: dict = {"real_images": len(real), "seed": seed}
    with tempfile.TemporaryDirectory(prefix="lookalike-dups-bench-") as tmp:
        copies_dir = Path(tmp) / "copies"
        copies_dir.mkdir()
        made: dict[str, tuple[str, str]] = {}  # copy path -> (source path, kind)
        t0 = time.perf_counter()
        for i in range(max(0, total - len(real))):
            src = rng.choice(real)
            dst, kind = _make_copy(src, copies_dir, i, rng)
            made[str(dst.resolve())] = (str(src.resolve()), kind)
        out["copies_made"] = len(made)
        out["copy_seconds"] = time.perf_counter() - t0

        db = Path(tmp) / "index"
        col = lookalike.open(db)
        t0 = time.perf_counter()
        report = col.add([str(r / "images") for r in roots] + [str(copies_dir)], progress=False,
                         workers=workers)  # fmt: skip
        out["index_seconds"] = time.perf_counter() - t0
        out["indexed_files"] = col.info()["images"]
        out["index_failed"] = report.failed

        out["presets"] = {}
        groups_by_preset = {}
        for preset in PRESETS:
            t0 = time.perf_counter()
            groups = find_duplicates(col, preset)
            seconds = time.perf_counter() - t0
            groups_by_preset[preset] = groups
            out["presets"][preset] = {
                "seconds": seconds,
                "groups": len(groups),
                "files_in_groups": sum(len(g.files) for g in groups),
                "largest_group": max((len(g.files) for g in groups), default=0),
            }
        col.close()

        env = dict(os.environ)
        t0 = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "lookalike", "dups", "--db", str(db), "--json", "-q"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        out["cli_seconds"] = time.perf_counter() - t0
        out["cli_exit"] = run.returncode
        out["cli_groups"] = sum(1 for line in run.stdout.splitlines() if line.strip())

        group_of: dict[str, int] = {}
        for n, g in enumerate(groups_by_preset["near"]):
            for f in g.files:
                group_of[f["path"]] = n
        out["natural"] = {}
        for root in roots:
            clusters = {frozenset(c) for c in _duplicates(root).values()}
            found = 0
            for cluster in clusters:
                paths = [str((root / p).resolve()) for p in cluster]
                found += len({group_of.get(p, -1 - k) for k, p in enumerate(paths)}) == 1
            out["natural"][root.name] = {"clusters": len(clusters), "found": found}
        per_kind: dict[str, list[int]] = {k: [0, 0] for k in KINDS}
        for copy, (src, kind) in made.items():
            per_kind[kind][1] += 1
            per_kind[kind][0] += copy in group_of and group_of.get(src) == group_of[copy]
        out["copies_grouped_near"] = {
            k: {"grouped": g, "copies": n, "recall": g / n if n else None}
            for k, (g, n) in per_kind.items()
        }
    return out


def dups_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """Rows for ``python -m bench``'s table."""
    if "skipped" in r:
        return [("(i) dups at 10,000 images", "skipped", r["skipped"], "")]
    n = r["indexed_files"]
    rows = [
        (
            f"(i) dups: {n:,} indexed files ({r['real_images']:,} real + "
            f"{r['copies_made']:,} generated copies)",
            f"indexed in {r['index_seconds']:.1f} s",
            "",
            "",
        ),
        (
            "    CLI `lookalike dups --json` (near), fresh process",
            f"{r['cli_seconds']:.2f} s, {r['cli_groups']} groups",
            f"limit {LIMIT_S:.0f} s",
            "ok" if r["cli_seconds"] < LIMIT_S and r["cli_exit"] == 0 else "BELOW GOAL",
        ),
    ]
    for preset, p in r["presets"].items():
        rows.append(
            (
                f"    find_duplicates preset={preset}",
                f"{p['seconds']:.2f} s, {p['groups']} groups",
                f"{p['files_in_groups']} files in groups, largest {p['largest_group']}",
                "",
            )
        )
    for name, c in r["natural"].items():
        rows.append(
            (
                f"    natural duplicates found ({name}, near)",
                f"{c['found']}/{c['clusters']}",
                "goal: all",
                "ok" if c["found"] == c["clusters"] else "BELOW GOAL",
            )
        )
    for kind, c in r["copies_grouped_near"].items():
        if c["copies"]:
            rows.append(
                (
                    f"    generated {kind} grouped with source (near)",
                    f"{c['recall']:.3f}",
                    f"{c['grouped']}/{c['copies']}",
                    "",
                )
            )
    return rows


def main() -> None:
    from bench.report import render

    result = measure_dups()
    print(render(dups_rows(result)))
    if "skipped" not in result:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
