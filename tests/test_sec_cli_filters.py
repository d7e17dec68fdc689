"""Hostile filters: long and/or chains, deep nesting, deep JSON; only FilterError, never a crash.

Issue #14 item 8: 988 ``or`` conditions (7 KB, under the 20 KB limit) ended in SQLite's
``Expression tree is too large`` (HTTP 500, CLI traceback); deeply nested JSON in ``where`` or in
upload metadata in ``RecursionError``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookalike.catalog import Catalog, NewContent
from lookalike.cli import main
from lookalike.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_JSON_DEPTH,
    Condition,
    FilterError,
    Not,
    Or,
    as_filter,
    filter_from_dict,
    load_json,
    parse_filter,
    to_sql,
)
from lookalike.metadata import MetadataError, normalize_records, read_metadata

LOOKALIKE = str(Path(sys.executable).with_name("lookalike"))


def chain(n: int, joiner: str = " or ") -> str:
    return joiner.join(f"x = {i}" for i in range(n))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory):
    """A small real catalog: four files with a mix of metadata types."""
    folder = tmp_path_factory.mktemp("filters")
    cat = Catalog(folder / "catalog.sqlite")
    values = [
        {"x": 1, "price": 9.5, "category": "shoes", "code": "007"},
        {"x": "1", "price": 120, "category": "hats", "size.eu": 42},
        {"x": 2, "title": "Red 100% cotton", "flag": 1},
        {},
    ]
    with cat.transaction():
        for i, meta in enumerate(values):
            cid = cat.insert_content(NewContent(f"{i:064x}", 10, 10, "JPEG"))
            path = str(folder / f"img{i}.jpg")
            cat.upsert_file(path, 1, 1, content_id=cid)
            if meta:
                cat.put_metadata([(path, meta)])
    yield cat
    cat.close()


def run_filter(cat: Catalog, where: object) -> list:
    """Compile ``where`` and run it on ``cat``: FilterError is the only failure allowed."""
    sql, params = to_sql(where)
    return cat.matching_files(sql, params)


# -- the reported attacks ----------------------------------------------------------------------


@pytest.mark.parametrize("joiner", [" or ", " and "])
def test_988_conditions_are_refused_with_the_limit_named(joiner: str) -> None:
    text = chain(988, joiner)
    assert len(text) < 20_000  # under the documented length limit: it used to reach SQLite
    with pytest.raises(FilterError, match=f"more than {MAX_CONDITIONS} conditions"):
        to_sql(text)


@pytest.mark.parametrize("joiner", [" or ", " and "])
def test_longest_allowed_chain_runs_under_a_low_sqlite_depth_limit(
    catalog: Catalog, joiner: str
) -> None:
    # SQLite nests a flat `a OR b OR c ...` one level per term (limit 1000). The compiled SQL
    # is a balanced tree: with the limit lowered to 100 the longest allowed chain still runs.
    sql, params = to_sql(chain(MAX_CONDITIONS, joiner))
    conn = sqlite3.connect(catalog.path)
    try:
        conn.setlimit(sqlite3.SQLITE_LIMIT_EXPR_DEPTH, 100)
        rows = conn.execute(f"SELECT f.id FROM files f WHERE {sql}", params).fetchall()
    finally:
        conn.close()
    assert len(rows) == (2 if joiner == " or " else 0)  # x = 1 and x = 2 (numbers)


def test_deepest_allowed_nesting_runs(catalog: Catalog) -> None:
    text = "(" * (MAX_DEPTH - 1) + "x = 1 or x = 2" + ")" * (MAX_DEPTH - 1)
    assert len(run_filter(catalog, text)) == 2  # img0 (x = 1) and img2 (x = 2)
    with pytest.raises(FilterError, match="nested more than"):
        parse_filter("not " * (MAX_DEPTH + 1) + "x = 1")


def test_tree_built_in_code_is_checked_without_recursion() -> None:
    node: object = Condition("x", "eq", (1,))
    for _ in range(100_000):  # RecursionError in the SQL compiler before
        node = Not(node)
    with pytest.raises(FilterError, match="nested more than"):
        to_sql(node)
    wide = Or(tuple(Condition("x", "eq", (i,)) for i in range(MAX_CONDITIONS + 1)))
    with pytest.raises(FilterError, match="conditions"):
        as_filter(wide)
    with pytest.raises(FilterError, match="not a filter node"):
        to_sql(Or(("x = 1",)))


def test_dict_form_with_too_many_conditions() -> None:
    spec = {f"k{i}": i for i in range(MAX_CONDITIONS + 1)}
    with pytest.raises(FilterError, match="conditions"):
        filter_from_dict(spec)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_deep_json_is_a_decode_error_not_recursion(depth: int) -> None:
    for text in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        with pytest.raises(json.JSONDecodeError, match="nested more than"):
            load_json(text)
    assert load_json('{"a": "[[[[{{{{", "b": [[1]]}') == {"a": "[[[[{{{{", "b": [[1]]}


def test_deep_json_metadata_file_and_record(tmp_path: Path) -> None:
    deep = '{"path": "a.jpg", "v": ' + "[" * 5000 + "]" * 5000 + "}\n"
    (tmp_path / "m.jsonl").write_text(deep)
    with pytest.raises(MetadataError, match="nested more than"):
        read_metadata(tmp_path / "m.jsonl")
    (tmp_path / "m.json").write_text("[" + deep + "]")
    with pytest.raises(MetadataError, match="nested more than"):
        read_metadata(tmp_path / "m.json")
    value: list = []
    for _ in range(100_000):  # built in Python: json.dumps would recurse
        value = [value]
    with pytest.raises(MetadataError, match="nested too deeply"):
        normalize_records([{"path": "/x.jpg", "v": value}])


def test_huge_numbers_everywhere(catalog: Catalog) -> None:
    # found by the property test below: OverflowError / "Exceeds the limit (4300 digits)"
    for where in ({"x": 2**63}, {"x": {"in": [-(2**63) - 1, 1]}}, "x = 9223372036854775808"):
        run_filter(catalog, where)
    for where in ({"x": 10**400}, {"x": {"lt": -(10**400)}}, "x = " + "9" * 5000):
        with pytest.raises(FilterError, match="out of range"):
            to_sql(where)
    for quoted in ("x = '" + "9" * 400 + "'", "x = '" + "9" * 5000 + "'"):
        run_filter(catalog, quoted)  # text that is too big a number stays text
    with pytest.raises(json.JSONDecodeError):
        load_json("[" + "1" * 5000 + "]")
    with pytest.raises(MetadataError, match="out of range"):
        normalize_records([{"path": "/x.jpg", "v": 10**400}])
    assert normalize_records([{"path": "/x.jpg", "v": 2**64}])[0][1] == {"v": float(2**64)}


# -- property: anything in, FilterError or a query that runs out -----------------------------

_TOKENS = [
    "x", "price", "category", "path", "`odd name`", "size.eu", "=", "==", "!=", "<>", "<", "<=",
    ">", ">=", "in", "not", "like", "is", "null", "and", "or", "(", ")", ",", "'1'", "'shoes'",
    "'%o%'", "'_'", "'\\%'", "1", "-2.5", "1e3", "007", "true", "false", "'", '"', "`", "1e999",
    "99999999999999999999999", ";", "--", "drop table files", "'; drop table files; --'",
]  # fmt: skip
token_soup = st.lists(st.sampled_from(_TOKENS), max_size=40).map(" ".join)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.one_of(st.text(max_size=200), token_soup))
def test_any_text_is_a_filter_error_or_runs(catalog: Catalog, text: str) -> None:
    try:
        rows = run_filter(catalog, text)
    except FilterError:
        return
    assert len(rows) <= 4


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 10**400, -(10**400)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "eq",
                    "ne",
                    "lt",
                    "lte",
                    "gt",
                    "gte",
                    "in",
                    "nin",
                    "like",
                    "exists",
                    "x",
                    "",
                    "price",
                    "path",
                ]
            ),  # fmt: skip
            inner,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=json_values)
def test_any_json_is_a_filter_error_or_runs(catalog: Catalog, spec: object) -> None:
    try:
        rows = run_filter(catalog, spec if isinstance(spec, dict) else {"x": spec})
    except FilterError:
        return
    assert len(rows) <= 4


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(min_value=0, max_value=3000), kind=st.sampled_from(["[]", "{}"]))
def test_any_nesting_of_json_text_loads_or_is_refused(depth: int, kind: str) -> None:
    opening, closing = ('{"a":', "}") if kind == "{}" else ("[", "]")
    text = opening * depth + "1" + closing * depth
    try:
        load_json(text)
    except json.JSONDecodeError:
        assert depth > MAX_JSON_DEPTH


def test_injection_attempts_stay_values(catalog: Catalog) -> None:
    for text in ("x = '1; drop table files'", "x = 1; drop table files", "`x; --` = 1"):
        with contextlib.suppress(FilterError):
            run_filter(catalog, text)
    assert catalog.conn.execute("SELECT count(*) FROM files").fetchone()[0] == 4


# -- the command line: exit status 2, one line -------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        chain(988),
        chain(988, " and "),
        "(" * 200 + "x = 1" + ")" * 200,
        "x = 1; drop table files",
        "x" * 30_000,
    ],
    ids=["988-or", "988-and", "deep-parens", "injection", "too-long"],
)
def test_cli_bad_where_is_exit_2_one_line(tmp_path: Path, capsys, where: str) -> None:
    status = main(
        ["search", str(tmp_path / "q.jpg"), "--db", str(tmp_path / "db"), "--where", where]
    )
    out, err = capsys.readouterr()
    assert status == 2
    assert err.startswith("lookalike: bad --where:") and err.count("\n") == 1
    assert "Traceback" not in err and out == ""


def test_cli_bad_where_in_a_real_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [LOOKALIKE, "search", "q.jpg", "--db", str(tmp_path / "db"), "--where", chain(988)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert f"more than {MAX_CONDITIONS} conditions" in proc.stderr


# -- HTTP: 400 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    from conftest import make_images
    from fastapi.testclient import TestClient

    import lookalike
    from lookalike.server import ServerConfig, create_app

    root = tmp_path_factory.mktemp("served-filters")
    photos = make_images(root / "photos", 3)
    with lookalike.open(root / "index") as col:
        col.add([root / "photos"], workers=1)
        col.set_metadata([{"path": str(p), "x": i} for i, p in enumerate(photos)])
    config = ServerConfig(db=root / "index", token="t0ken", allow_roots=[root], workers=1)
    with TestClient(create_app(config), base_url="http://localhost") as c:
        yield c


@pytest.mark.parametrize(
    "where",
    [
        chain(988),
        chain(988, " and "),
        '{"x": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"x":' * 1500 + "1" + "}" * 1500,  # json.loads: RecursionError from about 1000
        "(" * 500 + "x = 1" + ")" * 500,
    ],
    ids=["988-or", "988-and", "deep-json-list", "deep-json-object", "deep-parens"],
)
def test_http_bad_where_is_400(client, where: str) -> None:
    r = client.post("/api/search/by-id/1", params={"k": 3, "where": where})
    assert r.status_code == 400, r.text[:300]
    assert "deep" in r.text or "conditions" in r.text


def test_http_allowed_filters_still_work(client) -> None:
    r = client.post("/api/search/by-id/1", params={"k": 3, "where": chain(MAX_CONDITIONS)})
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["results"]) == 3
    r = client.post("/api/search/by-id/1", params={"k": 3, "where": '{"x": {"in": [0, 2]}}'})
    assert r.status_code == 200 and len(r.json()["results"]) == 2


def test_http_deep_upload_metadata_is_400(client) -> None:
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    r = client.post(
        "/api/images",
        headers={"Authorization": "Bearer t0ken"},
        files=[("files", ("a.jpg", b"\xff\xd8\xff", "image/jpeg"))],
        data={"metadata": deep},
    )
    assert r.status_code == 400, r.text[:300]
    assert "nested more than" in r.text
