"""The indexing pipeline's own promises: worker crashes, scan rules, reports."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import CRASH_SIZE, make_images, preprocess_or_crash
from PIL import Image

import lookalike
from lookalike.pipeline import FeatureJob, run_index, scan


def test_a_file_that_kills_its_decoder_is_an_error_and_the_run_goes_on(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_images(photos, 30, seed=7)
    Image.new("RGB", CRASH_SIZE, "red").save(photos / "gen_7_0015b.png")
    with lookalike.open(tmp_path / "index") as col:
        job = FeatureJob("deep", preprocess_or_crash, lambda pixels: col.feature.encode(pixels))
        report = run_index(
            col.catalog,
            [photos],
            jobs=[job],
            min_side=448,
            workers=2,
            batch_size=8,
        )
        assert report.embedded == 30
        assert report.errors == [
            (str(photos / "gen_7_0015b.png"), "decoder crashed (its worker process died)")
        ]
        assert col.catalog.count_images() == 30 and col.catalog.count_errors() == 1
        assert report.decode_cpu_s > 0 and report.encode_cpu_s > 0


def test_scan_skips_hidden_folders_and_other_files(tmp_path: Path) -> None:
    make_images(tmp_path / "a", 2)
    make_images(tmp_path / ".thumbnails", 2)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "UPPER.JPG").write_bytes((tmp_path / "a" / "gen_0_0000.jpg").read_bytes())
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a folder link loop is not followed
    found = sorted(Path(p).relative_to(tmp_path).as_posix() for p, _, _ in scan([tmp_path]))
    assert found == ["UPPER.JPG", "a/gen_0_0000.jpg", "a/gen_0_0001.jpg"]
    # a file named directly is taken whatever its name
    ((path, st, error),) = list(scan([tmp_path / "notes.txt"]))
    assert error is None and st.st_size == 5


def test_backfill_prepares_only_missing_features_unless_the_file_changed(tmp_path: Path) -> None:
    from lookalike import pipeline
    from lookalike.features.efficientnet import preprocess
    from lookalike.features.hashes import PHASH

    (path,) = make_images(tmp_path, 1, seed=5)
    pipeline._init_worker(frozenset(), {"deep": preprocess, "phash": PHASH.compute}, 448, None)
    try:
        st = os.stat(path)
        first = pipeline.process_file(pipeline.Candidate(str(path), st.st_size, st.st_mtime_ns))
        assert set(first.prepared) == {"deep", "phash"}
        backfill = pipeline.Candidate(
            str(path), st.st_size, st.st_mtime_ns, ("phash",), first.sha256
        )
        assert set(pipeline.process_file(backfill).prepared) == {"phash"}
        changed = pipeline.Candidate(str(path), st.st_size, st.st_mtime_ns, ("phash",), "0" * 64)
        assert set(pipeline.process_file(changed).prepared) == {"deep", "phash"}
    finally:
        import signal

        signal.signal(signal.SIGINT, signal.default_int_handler)
