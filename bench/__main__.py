"""Run every benchmark and print one table: each figure beside its baseline or limit.

    python -m bench [--photos DIR] [--quick] [--only PART,...]   # parts: see PARTS below
    python -m bench load                # one part (or several: python -m bench search load)
    ./run.sh bench [...]

Results also go to ``bench/results/latest.json``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.indexing import cores, large_jpegs
from bench.report import Row, render

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
PARTS = (
    "indexing", "search", "copies", "copydetect", "dups", "features", "load", "text", "scale",
    "quality", "stress", "memory",
)  # fmt: skip


def find_photos(given: Path | None) -> tuple[Path | None, str]:
    """The folder of large JPEGs to use, and how it was found (or why there is none)."""
    if given is not None:
        given = given.expanduser()
        if not given.is_dir():
            return None, f"--photos {given} is not a folder"
        if not large_jpegs(given) and (given / "photos").is_dir():
            given = given / "photos"
        return given, "from --photos"
    local = REPO / ".bench-data"
    if (local / "photos").is_dir() and large_jpegs(local / "photos"):
        return local / "photos", "earlier download"
    print(f"no photos yet: running bench/get_photos.sh {local} ...", file=sys.stderr)
    try:
        subprocess.run(["bash", str(REPO / "bench" / "get_photos.sh"), str(local)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, (
            f"bench/get_photos.sh failed ({exc}); it needs apt-get download of Debian wallpaper "
            "packages (network). Pass --photos DIR with >= 8 MP JPEGs instead"
        )
    if large_jpegs(local / "photos"):
        return local / "photos", "downloaded by bench/get_photos.sh"
    return None, f"no >= 8 MP JPEG in {local / 'photos'} after bench/get_photos.sh"


# -- formatting ---------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "ok" if ok else "BELOW GOAL"


def indexing_rows(r: dict) -> list[Row]:
    """Table rows for ``bench.indexing.measure_indexing``."""
    p, m, m1, d, w, a, c = (
        r["photos"], r["model"], r["model_1thread"], r["decode"], r["worker"], r["add"], r["cli"]
    )  # fmt: skip
    n = r["cores"]
    rows: list[Row] = [
        (
            f"photos: {p['images']} JPEGs, {p['megapixels_mean']:.1f} MP mean "
            f"(min {p['megapixels_min']:.1f})",
            f"{p['copied']} real",
            f"+ {p['variants']} cropped re-encodes",
            f"{p['distinct_originals']} distinct",
        ),
        (
            f"(a) model only, batch {m['batch']}, {m['threads']} threads",
            f"{m['images_per_s']:.1f} img/s",
            f"1 thread: {m1['images_per_s']:.1f} img/s",
            "",
        ),
        (
            "(a) inference CPU-s / image",
            f"{m['cpu_s_per_image'] * 1000:.1f} ms",
            f"1 thread: {m1['cpu_s_per_image'] * 1000:.1f} ms",
            "",
        ),
        (
            "(b) decode only, Pillow draft (min side 448)",
            f"{d['draft']['images_per_s']:.1f} img/s",
            f"full decode: {d['full']['images_per_s']:.1f} img/s",
            f"{d['draft_speedup']:.2f}x",
        ),
        (
            "(b) worker CPU-s / file (read+sha256+draft+preprocess)",
            f"{w['cpu_s_per_image'] * 1000:.1f} ms",
            f"draft decode alone: {d['draft']['cpu_s_per_image'] * 1000:.1f} ms",
            "",
        ),
        (
            f"(c) col.add, fresh index ({a['workers']} workers, {a['threads']} threads)",
            f"{a['images_per_s']:.1f} img/s",
            f"ideal {n}/(worker+inference CPU): {r['ideal_images_per_s']:.1f} img/s",
            "",
        ),
        (
            "(c) col.add re-run, unchanged folder",
            f"{a['rerun_s'] * 1000:.1f} ms",
            f"first run {a['wall_s']:.2f} s; "
            f"ratio {a['rerun_ratio']:.4f} (limit {r['rerun_limit']})",
            _verdict(a["rerun_ratio"] < r["rerun_limit"]),
        ),
        (
            "(c) CLI `lookalike index DIR --db TMP -q`, first run",
            f"{c['first_s']:.2f} s = {c['images_per_s']:.1f} img/s",
            f"col.add in-process: {a['wall_s']:.2f} s",
            "",
        ),
        (
            "(c) CLI re-run, unchanged folder",
            f"{c['rerun_s']:.2f} s",
            f"ratio {c['rerun_ratio']:.3f} (limit {r['rerun_limit']})",
            _verdict(c["rerun_ratio"] < r["rerun_limit"]),
        ),
        (
            "(d) pipeline efficiency, col.add",
            f"{r['efficiency']:.2f}",
            f"goal {r['efficiency_goal']}",
            _verdict(r["efficiency"] >= r["efficiency_goal"]),
        ),
        (
            "(d) pipeline efficiency, CLI (incl. start-up)",
            f"{r['efficiency_cli']:.2f}",
            f"goal {r['efficiency_goal']}",
            _verdict(r["efficiency_cli"] >= r["efficiency_goal"]),
        ),
        (
            "    why: core utilisation during col.add",
            f"{a['core_utilisation']:.2f}",
            "1.00 = all cores busy",
            "",
        ),
        (
            "    why: CPU-s / image inside col.add",
            f"{a['cpu_s_per_image'] * 1000:.1f} ms",
            f"isolated worker+inference: "
            f"{(w['cpu_s_per_image'] + m['cpu_s_per_image']) * 1000:.1f} ms",
            "",
        ),
        (
            "    why: main process in inference / blocked on workers",
            f"{a['encode_wall_s']:.2f} s / {a['main_blocked_on_workers_s']:.2f} s",
            f"of {a['wall_s']:.2f} s wall; first result after {a['first_result_s']:.2f} s",
            "",
        ),
    ]
    for g in r.get("grid", []):
        eff = g["images_per_s"] / r["ideal_images_per_s"]
        rows.append(
            (
                f"    grid: workers={g['workers']} threads={g['threads']} batch={g['batch_size']}",
                f"{g['images_per_s']:.1f} img/s",
                f"efficiency {eff:.2f} (goal {r['efficiency_goal']}); "
                f"util {g['core_utilisation']:.2f}",
                _verdict(eff >= r["efficiency_goal"]),
            )
        )
    return rows


def search_rows(r: dict) -> list[Row]:
    """Table rows for ``bench.search.measure_search``."""
    rows: list[Row] = []
    for n, e in r["sizes"].items():
        f, b = e["flat"], e["numpy"]
        for key, label in (("single", "1 query"), ("batch100_per_query", "batch of 100")):
            rows.append(
                (
                    f"(e) FlatIndex, {int(n):,} x {r['dim']} synthetic, k={r['k']}, {label}",
                    f"p50 {f[key]['p50_ms']:.2f} / p95 {f[key]['p95_ms']:.2f} ms/q",
                    f"numpy M@q: p50 {b[key]['p50_ms']:.2f} / p95 {b[key]['p95_ms']:.2f} ms/q",
                    f"{b[key]['p50_ms'] / f[key]['p50_ms']:.2f}x numpy",
                )
            )
    return rows


def copies_rows(r: dict) -> list[Row]:
    """Table rows for ``bench.copies.measure_copies``."""
    name = r["dataset"]
    if "skipped" in r:
        return [(f"(f) copy detection, {name}", "skipped", r["skipped"], "")]
    from bench.copies import ACCEPTANCE

    rows: list[Row] = [
        (
            f"(f) copy detection, {name}: {r['indexed']} indexed, {r['originals']} originals",
            f"{r['queries']} queries",
            "hit = original or its natural duplicate",
            "",
        ),
        (
            f"    CLI index, {r['indexed']} images, first run",
            f"{r['index_seconds']:.1f} s",
            f"{r['indexed'] / r['index_seconds']:.1f} img/s",
            "",
        ),
        (
            "    CLI re-run, unchanged folder",
            f"{r['reindex_seconds']:.2f} s, {r['reindex_embedded']} embedded",
            f"ratio {r['reindex_seconds'] / r['index_seconds']:.3f} (limit 0.05)",
            _verdict(
                r["reindex_seconds"] < 0.05 * r["index_seconds"] and r["reindex_embedded"] == 0
            ),
        ),
    ]
    for t, v in r["recall_at_1"].items():
        extra = "" if t in ACCEPTANCE else " (extra)"
        verified = r["recall_at_1_verified"][t]
        rows.append(
            (
                f"    recall@1 {t}{extra}",
                f"{v:.3f} (verified {verified:.3f})",
                f"goal {r['goal']}" if not extra else "",
                _verdict(verified >= r["goal"]) if not extra else "",
            )
        )
    rows.append(
        (
            "    recall@1 cropped, rescaled, recompressed",
            f"{r['overall_acceptance']:.3f} (verified {r['overall_acceptance_verified']:.3f})",
            f"goal {r['goal']}",
            _verdict(r["overall_acceptance"] >= r["goal"]),
        )
    )
    rows.append(
        (
            "    recall@1 all STANDARD transforms",
            f"{r['overall_all']:.3f}",
            f"{r['unlisted_copies_hit']} top hits were unlisted copies (SIFT-verified)",
            "",
        )
    )
    return rows


# -- main ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, help="folder of >= 8 MP JPEGs (default: see README)")
    ap.add_argument("--quick", action="store_true", help="fewer photos, no grid, mfood7 only")
    ap.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    ap.add_argument("--no-grid", action="store_true", help="skip the workers x threads grid")
    ap.add_argument("part", nargs="*", help=f"parts to run (same as --only): {', '.join(PARTS)}")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if args.part:
        parts = [p.strip() for text in args.part for p in text.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    os.environ.setdefault("LOOKALIKE_CACHE", str(Path.home() / ".cache" / "lookalike"))

    started = time.perf_counter()
    results: dict = {
        "machine": {
            "cores": cores(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "quick": args.quick,
        "notes": [],
    }
    rows: list[Row] = []

    if "indexing" in parts:
        from bench.indexing import measure_indexing

        photos, how = find_photos(args.photos)
        if photos is None:
            results["indexing"] = {"skipped": how}
            rows.append(("(a)-(d) indexing", "skipped", how, ""))
            print(f"indexing benchmark skipped: {how}", file=sys.stderr)
        else:
            print(f"indexing: photos from {photos} ({how}) ...", file=sys.stderr)
            r = measure_indexing(photos, quick=args.quick, grid=not (args.quick or args.no_grid))
            r["photos"]["found_by"] = how
            results["indexing"] = r
            rows += indexing_rows(r)
            if r["photos"]["variants"]:
                results["notes"].append(
                    f"only {r['photos']['distinct_originals']} distinct >= 8 MP JPEGs: "
                    f"{r['photos']['variants']} distinct variants made by cropping 8-32 px and "
                    "re-encoding (Pillow, quality 90) in a temporary folder"
                )

    if "search" in parts:
        from bench.search import measure_search

        print("search latency ...", file=sys.stderr)
        r = measure_search(repeats=20 if args.quick else 50)
        results["search"] = r
        rows += search_rows(r)
        results["notes"].append("search vectors are synthetic random unit vectors (dim 1280)")

    if "copies" in parts:
        from bench.copies import measure_copies

        results["copies"] = []
        for name in ("mfood7",) if args.quick else ("mfood7", "web_animals4"):
            print(f"copy detection on {name} ...", file=sys.stderr)
            r = measure_copies(name)
            results["copies"].append(r)
            rows += copies_rows(r)
        results["notes"].append(
            "copy detection counts a top-1 hit on a natural duplicate of the original "
            "(duplicates.json) as correct: identical content ties on score"
        )

    if "copydetect" in parts:
        from bench.copydetect import RESULTS as COPYDETECT_RESULTS
        from bench.copydetect import copydetect_rows, measure_copy_detection

        print("copy detection, DISC style (micro AP, recall at P0.99) ...", file=sys.stderr)
        r = measure_copy_detection(
            n_originals=100 if args.quick else 300, n_unindexed=100 if args.quick else 300
        )
        results["copydetect"] = r
        rows += copydetect_rows(r)
        if "skipped" not in r:
            COPYDETECT_RESULTS.parent.mkdir(parents=True, exist_ok=True)
            COPYDETECT_RESULTS.write_text(json.dumps(r, indent=2, default=float) + "\n")

    if "dups" in parts:
        from bench.dups import RESULTS as DUPS_RESULTS
        from bench.dups import dups_rows, measure_dups

        print("dups: 10,000 files (real + generated copies) ...", file=sys.stderr)
        r = measure_dups(total=4000 if args.quick else 10_000)
        results["dups"] = r
        rows += dups_rows(r)
        if "skipped" not in r:
            DUPS_RESULTS.parent.mkdir(parents=True, exist_ok=True)
            DUPS_RESULTS.write_text(json.dumps(r, indent=2) + "\n")

    if "load" in parts:
        from bench.load import load_rows, measure_load

        print("load test of lookalike serve on loopback ...", file=sys.stderr)
        r = measure_load(clients=16, seconds=5.0 if args.quick else 15.0)
        results["load"] = r
        rows += load_rows(r)

    if "text" in parts:
        from bench.text import measure_text, text_rows

        print("text search: precision@20 on web_animals4, latency at 100k ...", file=sys.stderr)
        r = measure_text(quick=args.quick)
        results["text"] = r
        rows += text_rows(r)
        results["notes"].append(
            "text search latency uses 100,000 SYNTHETIC class-probability rows; precision uses "
            "web_animals4's labels (approximate: a few images sit in the wrong class)"
        )

    if "scale" in parts:
        from bench.scale import RESULTS as SCALE_RESULTS
        from bench.scale import measure_scale, scale_rows

        n = 100_000 if args.quick else 1_000_000
        print(f"scale: {n:,} vectors, exact / auto / IVF-PQ / binary ...", file=sys.stderr)
        r = measure_scale(n)
        results["scale"] = r
        rows += scale_rows(r)
        if "skipped" not in r:
            SCALE_RESULTS.parent.mkdir(parents=True, exist_ok=True)
            SCALE_RESULTS.write_text(json.dumps(r, indent=2) + "\n")

    if "stress" in parts:
        from bench.stress import measure_stress, stress_rows

        print("stress: searches + adds + deletes against lookalike serve ...", file=sys.stderr)
        r = measure_stress(rounds=3 if args.quick else 6, seconds=10.0 if args.quick else 20.0)
        results["stress"] = r
        rows += stress_rows(r)

    if "memory" in parts:
        from bench.memory import measure_memory, memory_rows

        n = 10_000 if args.quick else 100_000
        print(f"memory: indexing {n:,} generated images (~30 min at 100k) ...", file=sys.stderr)
        r = measure_memory(count=n)
        results["memory"] = r
        rows += memory_rows(r)

    descriptor_lines: list[str] = []
    if "features" in parts:
        from bench.features import RESULTS as FEATURES_RESULTS
        from bench.features import measure_features, table_lines

        print("descriptors: speed, copy recall, mAP, latency per feature ...", file=sys.stderr)
        r = measure_features(two_stage=not args.quick)
        results["features"] = r
        descriptor_lines = table_lines(r)
        if "skipped" in r:
            rows.append(("(g) descriptors", "skipped", r["skipped"], ""))
            print(f"features benchmark skipped: {r['skipped']}", file=sys.stderr)
        else:
            rows.append(("(g) descriptors", f"{len(r['rows'])} features", "table below", ""))
            FEATURES_RESULTS.parent.mkdir(parents=True, exist_ok=True)
            FEATURES_RESULTS.write_text(json.dumps(r, indent=2) + "\n")

    if "quality" in parts:
        from bench.quality import RESULTS as QUALITY_RESULTS
        from bench.quality import measure_quality
        from bench.quality import table_lines as quality_lines

        print("retrieval quality: baseline vs each improvement vs tune ...", file=sys.stderr)
        r = measure_quality()
        results["quality"] = r
        descriptor_lines += ["", *quality_lines(r)]
        rows.append(("(q) retrieval quality", "table below", "baseline: average pooling", ""))
        QUALITY_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        QUALITY_RESULTS.write_text(json.dumps(r, indent=2) + "\n")

    results["seconds"] = time.perf_counter() - started
    print()
    print(f"lookalike benchmarks -- {cores()} cores, {results['seconds']:.0f} s")
    print(render(rows))
    for note in results["notes"]:
        print(f"note: {note}")
    if descriptor_lines:
        print()
        print("\n".join(descriptor_lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
