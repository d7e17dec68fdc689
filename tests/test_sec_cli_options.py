"""Hostile command lines: out-of-range numbers, missing label files, closed pipes, odd names.

Issue #14 items 10 (``dups --threshold -1 --move-to DIR`` moved 52 of 53 unrelated images),
15 (``tune --labels MISSING.csv`` walked the file system first), 16 (``| head`` ended in a
BrokenPipe traceback), and the adversarial pass over every subcommand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images

import lookalike
from lookalike.cli import main
from lookalike.dups import MAX_K, find_duplicates, similarity_groups

LOOKALIKE = str(Path(sys.executable).with_name("lookalike"))
HUGE = str(10**18)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """12 unrelated generated photos (long names), 3 broken files, indexed."""
    root = tmp_path_factory.mktemp("cli-options")
    photos = root / "photos"
    make_images(photos, 12)
    for p in sorted(photos.iterdir()):  # long names: a few searches print more than a pipe holds
        p.rename(photos / (p.stem + "_" + "x" * 150 + ".jpg"))
    for i in range(3):
        (photos / f"broken{i}_{'y' * 150}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    db = root / "index"
    with lookalike.open(db) as col:
        col.add([photos], workers=1)
    return {"root": root, "photos": photos, "db": str(db), "files": sorted(photos.glob("gen*"))}


# -- item 10: every numeric option has a range ---------------------------------------------------

BAD_OPTIONS = [
    (["index", "x"], "--workers", v) for v in ("0", "-1", HUGE, "two", "1.5")
] + [
    (["index", "x"], "--threads", v) for v in ("0", "100000000")
] + [
    (["index", "x"], "--batch-size", v) for v in ("0", "-3", HUGE)
] + [
    (["index", "x"], "--max-pixels", v) for v in ("0", "-5", str(10**30))
] + [
    (["search", "q.jpg"], "-k", v) for v in ("0", "-1", HUGE, "nan", "1e3", "")
] + [
    (["search", "q.jpg"], "--shortlist", v) for v in ("0", HUGE)
] + [
    (["search", "q.jpg"], "--threads", v) for v in ("0", "100000000")
] + [
    (["search", "--text", "cat"], "--weight", v) for v in ("-0.1", "1.1", "nan", "inf", "-inf")
] + [
    (["check", "q.jpg"], "-k", v) for v in ("0", "-2", HUGE)
] + [
    (["dups"], "--threshold", v) for v in ("-1", "-0.01", "1.01", "nan", "inf", "-inf", "x", "")
] + [
    (["demo"], "--port", v) for v in ("-1", "65536", HUGE)
] + [
    (["serve"], "--port", v) for v in ("-1", "65536", "99999", HUGE)
] + [
    (["serve"], "--max-upload-mb", v) for v in ("0", "-1", "inf", "1e308", "nan", "x")
] + [
    (["serve"], "--readers", v) for v in ("0", "100000000")
] + [
    (["serve"], "--workers", v) for v in ("0", "100000000")
]  # fmt: skip


@pytest.mark.parametrize(
    ("command", "option", "value"),
    BAD_OPTIONS,
    ids=[f"{c[0]} {o} {v!r}" for c, o, v in BAD_OPTIONS],
)
def test_numeric_option_out_of_range_is_exit_2(
    tmp_path: Path, capsys, command: list, option: str, value: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--db", str(tmp_path / "db"), f"{option}={value}"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert f"argument {option}" in err and "Traceback" not in err
    assert not (tmp_path / "db").exists()  # refused before anything is opened


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [(["search", "q.jpg"], "-k", "1000000"), (["dups"], "--threshold", "0"),
     (["dups"], "--threshold", "1"), (["search", "--text", "x"], "--weight", "1"),
     (["demo"], "--port", "0"), (["serve"], "--port", "65535"),
     (["serve"], "--max-upload-mb", "0.5")],
)  # fmt: skip
def test_numeric_option_edges_are_accepted(command: list, option: str, value: str) -> None:
    from lookalike.cli import build_parser

    args = build_parser().parse_args([*command, option, value])
    assert float(getattr(args, option.lstrip("-").replace("-", "_"))) == float(value)


def test_dups_threshold_minus_one_moves_nothing(indexed: dict, tmp_path: Path, capsys) -> None:
    target = tmp_path / "moved"
    with pytest.raises(SystemExit) as exc:
        main(["dups", "--threshold", "-1", "--move-to", str(target), "--db", indexed["db"]])
    assert exc.value.code == 2
    assert "--threshold" in capsys.readouterr().err
    assert not target.exists()
    assert all(f.is_file() for f in indexed["files"])


@pytest.mark.parametrize("threshold", [-1, -0.5, 1.5, float("nan"), float("inf"), "0.9", True])
def test_dups_api_refuses_bad_thresholds(indexed: dict, threshold: object) -> None:
    with lookalike.open(indexed["db"], create=False) as col, pytest.raises(ValueError, match="thr"):
        find_duplicates(col, "near", threshold=threshold)
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="threshold"):
        similarity_groups(np.arange(4), x, threshold)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1, 10**18, 2.5, None])
def test_dups_api_refuses_bad_k(indexed: dict, k: object) -> None:
    with (
        lookalike.open(indexed["db"], create=False) as col,
        pytest.raises(ValueError, match="k must"),
    ):
        find_duplicates(col, "near", k=k)  # type: ignore[arg-type]


def test_dups_api_in_range_still_groups(indexed: dict) -> None:
    with lookalike.open(indexed["db"], create=False) as col:
        assert find_duplicates(col, "near", threshold=1.0) == []
        everything = find_duplicates(col, "similar", threshold=0.0, k=MAX_K)
    assert sum(len(g.files) for g in everything) == 12


# -- item 15: tune --labels MISSING.csv ----------------------------------------------------------


def _no_walk(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the folder was walked")

    monkeypatch.setattr("lookalike.eval.labels.image_files", refuse)


def test_tune_missing_labels_fails_at_once(
    indexed: dict, tmp_path: Path, capsys, monkeypatch
) -> None:
    _no_walk(monkeypatch)
    monkeypatch.chdir(tmp_path)
    status = main(["tune", "--labels", "MISSING.csv", "--db", indexed["db"]])
    err = capsys.readouterr().err
    assert status == 1
    assert err == f"lookalike: no such labels file: {tmp_path / 'MISSING.csv'}\n"


@pytest.mark.parametrize("labels", ["/dev/zero", "."])
def test_tune_labels_not_a_file(indexed: dict, capsys, monkeypatch, labels: str) -> None:
    _no_walk(monkeypatch)
    assert main(["tune", "--labels", labels, "--db", indexed["db"]]) == 1
    err = capsys.readouterr().err
    assert "not a labels file" in err and err.count("\n") == 1


def test_eval_missing_labels_fails_before_the_walk(
    indexed: dict, tmp_path: Path, capsys, monkeypatch
) -> None:
    _no_walk(monkeypatch)
    status = main(["eval", str(indexed["photos"]), "--labels", str(tmp_path / "nope.csv")])
    assert status == 1 and "no such labels file" in capsys.readouterr().err


def test_tune_with_labels_alone_reads_only_the_named_files(
    indexed: dict, tmp_path: Path, capsys, monkeypatch
) -> None:
    # the CSV's folder holds the photos: without DIR it is not listed, the rows are looked up
    files = indexed["files"]
    rows = [f"{f.name},{'ab'[i % 2]}" for i, f in enumerate(files)]
    csv = indexed["photos"] / "labels.csv"
    csv.write_text("path,label\n" + "\n".join(rows) + "\nmissing.jpg,a\n")
    try:
        _no_walk(monkeypatch)
        status = main(["tune", "--labels", str(csv), "--dry-run", "--json", "--db", indexed["db"]])
        out, err = capsys.readouterr()
    finally:
        csv.unlink()
    assert status == 0, err
    report = json.loads(out)
    assert report["images"] == 12 and not report["stored"]
    assert any("match no image file" in n for n in report["notes"])


@pytest.mark.parametrize(
    "content", [b"\xff\xfe bad utf-8", b"path,label\na.jpg,\x00x\n"], ids=["not-utf8", "nul"]
)
def test_unreadable_labels_csv_is_one_line(
    indexed: dict, tmp_path: Path, capsys, content: bytes
) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_bytes(content)
    status = main(["tune", str(indexed["photos"]), "--labels", str(csv), "--db", indexed["db"]])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("lookalike: ") and err.count("\n") == 1


# -- item 16: a reader that goes away ------------------------------------------------------------


def _piped(command: str, reader: str, env: dict | None = None) -> tuple[int, str]:
    """Run ``lookalike COMMAND | READER`` in bash: lookalike's exit status and its stderr."""
    script = f'{LOOKALIKE} {command} 2>"$ERR" | {reader}; exit ${{PIPESTATUS[0]}}'
    err = Path(os.environ.get("TMPDIR", "/tmp")) / f"lookalike-pipe-{os.getpid()}.err"
    proc = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, **(env or {}), "ERR": str(err)},
        capture_output=True,
        timeout=120,
    )
    text = err.read_text(errors="replace")
    err.unlink()
    return proc.returncode, text


@pytest.mark.parametrize("reader", ["head -1", "true"])
@pytest.mark.parametrize(
    "command",
    [
        "search -f -k 12 {q}",
        "search -k 12 {q}",
        "search --json -k 12 {q}",
        "dups --preset similar --threshold 0",
        "dups --preset similar --threshold 0 --to-remove",
        "info --errors",
        "info --json",
        "features --no-speed",
    ],
)
def test_closed_pipe_exits_quietly(indexed: dict, command: str, reader: str) -> None:
    queries = " ".join(f"'{f}'" for f in indexed["files"] * 3)  # ~170 KB of -f output
    line = command.format(q=queries) + f" --db '{indexed['db']}'"
    status, err = _piped(line, reader)
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err
    assert status == 0, err


# -- output of names that the terminal cannot print ----------------------------------------------


def test_names_the_locale_cannot_encode_still_print(indexed: dict, tmp_path: Path) -> None:
    # PYTHONIOENCODING sets the 'strict' error handler: printing a non-UTF-8 query name, or
    # any non-ASCII name in an ASCII locale, raised UnicodeEncodeError
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "ü中.jpg").write_bytes(indexed["files"][0].read_bytes())
    latin = Path(os.fsdecode(bytes(odd) + b"/caf\xe9.jpg"))  # not UTF-8: a query, not indexed
    latin.write_bytes(indexed["files"][1].read_bytes())
    db = str(tmp_path / "db")
    assert main(["index", str(odd), "--db", db, "-q"]) == 0
    for encoding in ("ascii", "latin-1", "utf-8"):
        commands = (
            ["search", str(latin)],
            ["search", "-f", str(odd / "ü中.jpg")],
            ["info", "--errors"],
            ["dups", "--preset", "similar", "--threshold", "0"],
        )
        for command in commands:
            proc = subprocess.run(
                [LOOKALIKE, *command, "--db", db],
                env={**os.environ, "PYTHONIOENCODING": encoding},
                capture_output=True,
                timeout=120,
            )
            assert proc.returncode == 0, proc.stderr.decode(errors="replace")
            assert b"Traceback" not in proc.stderr
            if command[1] == str(latin):  # the name's own bytes, usable by the next command
                assert b"/caf\xe9.jpg:" in proc.stdout


# -- other errors: one line, never a traceback ---------------------------------------------------


def test_os_errors_are_one_line(indexed: dict, tmp_path: Path, capsys) -> None:
    for argv in (
        ["dups", "--preset", "similar", "--threshold", "0", "--html", str(tmp_path)],
        ["dups", "--preset", "similar", "--threshold", "0", "--move-to", "/dev/null"],
    ):
        status = main([*argv, "--db", indexed["db"]])
        err = capsys.readouterr().err
        assert status == 1 and err.startswith("lookalike: ") and err.count("\n") == 1, err
    assert all(f.is_file() for f in indexed["files"])


def test_permission_error_on_a_query_is_one_line(indexed: dict, capsys, monkeypatch) -> None:
    # root reads anything: make the error appear where a user's query would hit it
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/secret.jpg")

    monkeypatch.setattr("lookalike.collection.Collection.search", denied)
    status = main(["search", str(indexed["files"][0]), "--db", indexed["db"]])
    err = capsys.readouterr().err
    assert status == 1 and err == "lookalike: /secret.jpg: Permission denied\n"


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.mark.parametrize("source", ["/dev/zero", "{photos}"], ids=["device", "folder"])
def test_metadata_from_a_device_or_folder_is_refused(indexed: dict, source: str) -> None:
    # /dev/zero was read to the end of memory (MemoryError traceback); a 4 GiB address-space
    # limit keeps a regression from taking the machine with it
    proc = subprocess.run(
        [LOOKALIKE, "index", "--metadata", source.format(**indexed), "--db", indexed["db"]],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_memory,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("lookalike: --metadata") and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("query", ["/dev/zero", "/dev/null", "{photos}", "/dev/stdin"], ids=str)
def test_odd_queries_do_not_hang(indexed: dict, query: str) -> None:
    proc = subprocess.run(
        [LOOKALIKE, "search", query.format(**indexed), "--db", indexed["db"]],
        stdin=subprocess.PIPE,  # /dev/stdin: a pipe never written to, never closed
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "cannot read query" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_where_injection_is_only_a_value(indexed: dict, capsys) -> None:
    q = str(indexed["files"][0])
    for where in ("x = 1; drop table files", "x = '1; drop table files'", "`; drop` is null"):
        status = main(["search", q, "--db", indexed["db"], "-f", "--where", where])
        assert status in (0, 2)
    capsys.readouterr()
    with lookalike.open(indexed["db"], create=False) as col:
        assert col.info()["images"] == 12


@pytest.mark.parametrize(
    "argv",
    [["remove", ""], ["index", ""], ["info", "--db", ""], ["search", "q.jpg", "--folder", ""],
     ["dups", "--move-to", ""], ["dups", "--html", " "], ["tune", "--labels", ""],
     ["eval", ""], ["search", ""], ["check", ""], ["index", "--metadata", ""],
     ["demo", "--dir", ""]],
    ids=" ".join,
)  # fmt: skip
def test_empty_paths_are_usage_errors(tmp_path: Path, capsys, monkeypatch, argv: list) -> None:
    # `remove ""` (an unset shell variable) forgot every file under the current folder
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "expected a path, got an empty one" in capsys.readouterr().err


def test_remove_of_an_empty_path_forgets_nothing(indexed: dict, capsys, monkeypatch) -> None:
    monkeypatch.chdir(indexed["photos"])
    with pytest.raises(SystemExit):
        main(["remove", "", "--db", indexed["db"]])
    capsys.readouterr()
    with lookalike.open(indexed["db"], create=False) as col:
        assert col.info()["images"] == 12


def test_long_search_text_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    # 120 KB of text took 50 s and 2.7 GB; the server has always refused more than 500 characters
    with pytest.raises(SystemExit) as exc:
        main(["search", "--text", "x" * 120_000, "--db", str(tmp_path / "db")])
    assert exc.value.code == 2 and "at most 500 characters" in capsys.readouterr().err


def test_value_error_from_deep_code_is_one_line(indexed: dict, capsys, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise ValueError("weight must be in [0, 1]")

    monkeypatch.setattr("lookalike.collection.Collection.remove", refuse)
    status = main(["remove", str(indexed["files"][0]), "--db", indexed["db"]])
    assert status == 1 and capsys.readouterr().err == "lookalike: weight must be in [0, 1]\n"


@pytest.mark.parametrize(
    ("command", "redirect"),
    [("index {photos} -q", "2>&-"), ("index {photos}", "2>&-"), ("search -f {q}", ">&-"),
     ("dups --preset similar --threshold 0", ">&-"), ("info --errors", ">&- 2>&-")],
)  # fmt: skip
def test_closed_stdout_or_stderr(indexed: dict, command: str, redirect: str) -> None:
    # Python sets a stream closed at start to None: `sys.stderr.isatty()` and the final
    # flush of stdout raised AttributeError (exit 1, its traceback lost on the closed stream)
    line = command.format(photos=f"'{indexed['photos']}'", q=f"'{indexed['files'][0]}'")
    script = f"{LOOKALIKE} {line} --db '{indexed['db']}' {redirect}"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def test_where_that_is_not_utf8_is_exit_2(tmp_path: Path) -> None:
    where = os.fsdecode(b"x = '\xff'")  # bytes of another encoding on the command line
    proc = subprocess.run(
        [LOOKALIKE, "search", "q.jpg", "--db", str(tmp_path / "db"), "--where", where],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(b"lookalike: bad --where:") and b"not valid UTF-8" in proc.stderr
