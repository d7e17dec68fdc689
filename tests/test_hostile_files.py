"""Hostile files: fuzzed image bytes through the loader, and strange files through `index`.

The fuzzer (hypothesis) mutates small valid JPEG, PNG, GIF, WebP and TIFF files -- bit flips,
bytes set to boundary values, insertions, deletions, truncations, repeated chunks, mostly in
the headers -- and feeds 10,000 of them to ``load_image``: each must decode to an RGB image or
raise ``ImageError`` with a reason, within a per-file time limit. Then a folder of strange files
(decompression bombs, empty files, symlink loops, unreadable and changing files, names that are
not UTF-8 or too long) goes through the whole indexing pipeline.
"""

from __future__ import annotations

import collections
import faulthandler
import io
import os
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import lookalike
from lookalike.images import ImageError, load_image
from lookalike.integrity import verify
from lookalike.pipeline import FeatureJob, run_index

EXAMPLES = 10_000
SLOW_FILE_S = 10.0  # a file slower than this fails the test
HANG_S = 120.0  # the process is stopped with a traceback of the hang (no silent CI hang)


def _seed_images() -> dict[str, bytes]:
    """Small valid files of each format, with the structures decoders parse."""
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    pixels[10:30, 12:36] = (200, 30, 60)
    rgb = Image.fromarray(pixels)
    out: dict[str, bytes] = {}

    def save(name: str, image: Image.Image, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        image.save(buf, fmt, **kw)
        out[name] = buf.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6
    save("jpeg", rgb, "JPEG", quality=80, exif=exif.tobytes())
    save("jpeg-progressive", rgb, "JPEG", quality=60, progressive=True)
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    save("png", palette, "PNG")
    save("png-rgba", rgb.convert("RGBA"), "PNG")
    frames = [palette, palette.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out["gif"] = buf.getvalue()
    save("webp", rgb, "WEBP", quality=70)
    save("webp-lossless", rgb.convert("RGBA"), "WEBP", lossless=True)
    save("tiff", rgb, "TIFF", compression="tiff_lzw")
    save("tiff-16bit", Image.fromarray(pixels[..., 0].astype(np.uint16) * 257), "TIFF")
    return out


SEEDS = _seed_images()
INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff", b"\x00\x00", b"\x7f\xff\xff\xff",
               b"\x80\x00\x00\x00", b"\xff\xff\xff\xff", b"\x00\x01\x00\x00"]  # fmt: skip


@st.composite
def mutated_image(draw) -> tuple[str, bytes]:
    """A seed file with 1-8 mutations, positions drawn mostly from its first 64 bytes."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 8))):
        n = len(data)
        if n == 0:
            break
        at = draw(st.one_of(st.integers(0, min(63, n - 1)), st.integers(0, n - 1)))
        op = draw(st.sampled_from(["flip", "byte", "boundary", "insert", "delete", "truncate",
                                   "repeat"]))  # fmt: skip
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[at] = draw(st.integers(0, 255))
        elif op == "boundary":
            value = draw(st.sampled_from(INTERESTING))
            data[at : at + len(value)] = value
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 256))]
        elif op == "truncate":
            del data[at:]
        else:
            size = draw(st.integers(1, 512))
            data[at:at] = data[at : at + size] * draw(st.integers(1, 4))
    return name, bytes(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on mangled TIFF/PNG tags
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fuzzed_images_decode_or_fail_cleanly() -> None:
    outcomes: collections.Counter = collections.Counter()
    slowest = [0.0, ""]

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same 10,000 inputs on every run
        database=None,
        deadline=None,  # timed below, with a hard stop for a real hang
        suppress_health_check=list(HealthCheck),
    )
    @given(mutated_image())
    def load(case: tuple[str, bytes]) -> None:
        name, data = case
        faulthandler.dump_traceback_later(HANG_S, exit=True)
        started = time.perf_counter()
        try:
            decoded = load_image(data)
            assert decoded.image.mode == "RGB" and min(decoded.image.size) > 0
            assert decoded.width > 0 and decoded.height > 0
            outcomes["decoded"] += 1
        except ImageError as exc:
            assert exc.reason, name
            outcomes[exc.reason.split(":")[0]] += 1
        finally:
            faulthandler.cancel_dump_traceback_later()
        elapsed = time.perf_counter() - started
        if elapsed > slowest[0]:
            slowest[:] = [elapsed, name]
        assert elapsed < SLOW_FILE_S, f"{name}: {elapsed:.1f} s"

    load()
    print(f"\n{sum(outcomes.values())} fuzzed files: {dict(outcomes.most_common())}; "
          f"slowest {slowest[0] * 1000:.0f} ms ({slowest[1]})")  # fmt: skip
    assert sum(outcomes.values()) >= EXAMPLES
    assert outcomes["decoded"] > 0 and len(outcomes) > 2  # mutations both kept and broke files


# -- the pipeline on strange files ------------------------------------------------------------


def _bombs(folder: Path) -> list[str]:
    """Small files that claim or hold far more pixels than the limit."""
    Image.new("1", (20_000, 20_000)).save(folder / "bomb.png")  # 400 MP in ~50 KB
    gif = bytearray(SEEDS["gif"])
    gif[6:10] = b"\xff\xff\xff\xff"  # logical screen 65535 x 65535
    (folder / "bomb.gif").write_bytes(bytes(gif))
    jpeg = bytearray(SEEDS["jpeg"])
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = b"\xff\xf0\xff\xf0"  # 65520 x 65520 in the frame header
    (folder / "bomb.jpg").write_bytes(bytes(jpeg))
    return ["bomb.png", "bomb.gif", "bomb.jpg"]


def _long_path(folder: Path) -> str:
    """A file whose full path is longer than PATH_MAX (4096), made by walking down."""
    fd = os.open(folder, os.O_RDONLY)
    path = str(folder)
    try:
        for _ in range(20):
            name = "d" * 250
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, path = child, path + "/" + name
        file_fd = os.open("deep.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(file_fd, SEEDS["jpeg"])
        os.close(file_fd)
    finally:
        os.close(fd)
    return path + "/deep.jpg"


@pytest.mark.slow
def test_strange_files_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    good = {p.name for p in make_images(photos, 6, seed=81, size=160)}
    expected_errors = {
        "empty.jpg": "empty file",
        "loop1.jpg": "unreadable",
        "loop2.jpg": "unreadable",
        "self.jpg": "unreadable",
        "dangling.jpg": "unreadable",
        "device.jpg": "unreadable: not a regular file",
        "fifo.jpg": "unreadable: not a regular file",
        "sparse.jpg": "too big",
        "text.png": "not an image",
        "bomb.png": "too big",
        "bomb.gif": "too big",
        "bomb.jpg": "too big",
    }
    (photos / "empty.jpg").touch()
    os.symlink("loop2.jpg", photos / "loop1.jpg")
    os.symlink("loop1.jpg", photos / "loop2.jpg")
    os.symlink("self.jpg", photos / "self.jpg")
    os.symlink("nowhere.jpg", photos / "dangling.jpg")
    os.symlink("/dev/zero", photos / "device.jpg")
    os.mkfifo(photos / "fifo.jpg")
    with open(photos / "sparse.jpg", "wb") as fh:  # 2 GiB, no blocks: never read
        fh.truncate(2 << 30)
    (photos / "text.png").write_text("not a picture\n" * 50)
    _bombs(photos)
    os.mkdir(photos / "folder.jpg")  # a folder with an image's name: not a file
    os.symlink("..", photos / "folder.jpg" / "up")  # a folder loop: links are not followed
    long_name = "L" * 251 + ".jpg"  # the longest name most filesystems allow (255 bytes)
    (photos / long_name).write_bytes((photos / "gen_81_0001.jpg").read_bytes()[:-2] + b"\xff\xd9")
    good.add(long_name)
    too_long = _long_path(photos)  # its folder cannot even be listed
    raw_name = os.fsencode(str(photos)) + b"/caf\xe9-latin1.jpg"  # not UTF-8
    with open(raw_name, "wb") as fh:
        fh.write(SEEDS["jpeg"])
    locked = photos / "no-permission.jpg"
    locked.write_bytes((photos / "gen_81_0002.jpg").read_bytes() + b"\0")
    locked.chmod(0)
    root = os.geteuid() == 0  # root reads a chmod 000 file: it is then simply indexed
    if root:
        good.add(locked.name)
    else:
        expected_errors[locked.name] = "unreadable: permission denied"

    with lookalike.open(tmp_path / "index") as col:
        report = col.add([photos], workers=2)
        errors = dict(report.errors)
        by_name = {os.path.basename(p): e for p, e in errors.items()}
        for name, reason in expected_errors.items():
            assert by_name.get(name, "").startswith(reason), (name, by_name.get(name))
        unlisted = [p for p in errors if len(p) > 250 and too_long.startswith(p + "/")]
        assert len(unlisted) == 1 and errors[unlisted[0]].startswith("unreadable folder")
        latin = [p for p in errors if "caf" in p]
        assert latin == [str(photos) + "/caf\\xe9-latin1.jpg"]
        assert "not valid UTF-8" in errors[latin[0]]
        indexed = {Path(p).name for (p,) in col.catalog.conn.execute(
            "SELECT path FROM files WHERE content_id IS NOT NULL")}  # fmt: skip
        assert indexed == good
        assert report.failed == len(expected_errors) + 2 == len(errors)  # + latin-1, folder
        assert verify(col).ok
        again = col.add([photos], workers=2)  # nothing retried, nothing new
        assert (again.embedded, again.failed, again.linked) == (0, 0, 0)
        assert col.search(photos / long_name, k=1)[0].path == str(photos / long_name)
    locked.chmod(stat.S_IRUSR | stat.S_IWUSR)


@pytest.mark.slow
def test_a_file_that_changes_while_indexed(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_images(photos, 40, seed=82, size=200)
    versions = [p.read_bytes() for p in make_images(tmp_path / "versions", 3, seed=83)]
    target = photos / "changing.jpg"
    target.write_bytes(versions[0])
    stop = threading.Event()

    def churn() -> None:  # rewrite in place, in pieces: readers see whole, torn or empty files
        n = 0
        while not stop.is_set():
            data = versions[n % 3]
            with open(target, "r+b" if target.exists() else "wb") as fh:
                fh.truncate(0)
                for i in range(0, len(data), 4096):
                    fh.write(data[i : i + 4096])
                    fh.flush()
            n += 1

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        with lookalike.open(tmp_path / "index") as col:
            for _ in range(3):
                report = col.add([photos], workers=2)
                assert report.scanned == 41
                assert all(p == str(target) for p, _ in report.errors), report.errors
    finally:
        stop.set()
        thread.join()
    final = target.read_bytes()
    with lookalike.open(tmp_path / "index") as col:
        col.add([photos], workers=2)  # settled: the file as it is now
        row = col.catalog.conn.execute(
            "SELECT c.sha256 FROM files f JOIN contents c ON c.id = f.content_id WHERE f.path = ?",
            (str(target),),
        ).fetchone()
        import hashlib

        assert row is not None and row[0] == hashlib.sha256(final).hexdigest()
        assert col.info()["images"] == 41 and verify(col).ok


HANG_SIZE = (11, 19)


def preprocess_or_hang(image):
    """The real preprocessing, except that an 11x19 image never finishes."""
    if image.size == HANG_SIZE:
        while True:
            time.sleep(1)
    from lookalike.features.efficientnet import preprocess

    return preprocess(image)


@pytest.mark.slow
def test_a_file_that_hangs_its_decoder_is_an_error_and_the_run_goes_on(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_images(photos, 20, seed=84)
    Image.new("RGB", HANG_SIZE, "blue").save(photos / "gen_84_0010b.png")
    with lookalike.open(tmp_path / "index") as col:
        job = FeatureJob("deep", preprocess_or_hang, lambda pixels: col.feature.encode(pixels))
        started = time.monotonic()
        report = run_index(
            col.catalog, [photos], jobs=[job], min_side=448, workers=2, batch_size=8,
            time_limit=4.0,
        )  # fmt: skip
        assert time.monotonic() - started < 60
        assert report.embedded == 20
        assert report.errors == [
            (str(photos / "gen_84_0010b.png"), "decoding took longer than 4 s (time limit)")
        ]
