"""Metadata attached to images, and filters applied inside the search (the shop case)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images

import lookalike
from lookalike.catalog import SCHEMA_VERSION, Catalog, NewContent
from lookalike.cli import main
from lookalike.filters import (
    And,
    Condition,
    FilterError,
    Not,
    Or,
    filter_from_dict,
    parse_filter,
    to_sql,
)
from lookalike.index import subset
from lookalike.index.binary import BinaryIndex
from lookalike.index.exact import ExactIndex
from lookalike.index.flat import FlatIndex
from lookalike.metadata import MetadataError, read_metadata

# -- the expression language -------------------------------------------------------------------


def test_expressions_parse_into_trees() -> None:
    c = Condition
    assert parse_filter("category = 'shoes'") == c("category", "eq", ("shoes",))
    assert parse_filter("price<50") == c("price", "lt", (50,))
    assert parse_filter("price >= -1.5e1") == c("price", "ge", (-15.0,))
    assert parse_filter("a = 1 or b = 2 and c = 3") == Or(
        (c("a", "eq", (1,)), And((c("b", "eq", (2,)), c("c", "eq", (3,)))))
    )
    assert parse_filter("(a = 1 OR b = 2) AND NOT c != 'x'") == And(
        (Or((c("a", "eq", (1,)), c("b", "eq", (2,)))), Not(c("c", "ne", ("x",))))
    )
    assert parse_filter("brand in ('a', \"b\", 3,)") == c("brand", "in", ("a", "b", 3))
    assert parse_filter("brand not in ('a')") == c("brand", "nin", ("a",))
    assert parse_filter("title like 'red%'") == c("title", "like", ("red%",))
    assert parse_filter("title not like '%x'") == c("title", "nlike", ("%x",))
    assert parse_filter("sale is null") == c("sale", "null")
    assert parse_filter("sale is not null") == c("sale", "notnull")
    assert parse_filter("in_stock = true") == c("in_stock", "eq", (1,))
    assert parse_filter("`unit price` <> 2") == c("unit price", "ne", (2,))
    assert parse_filter("size.eu == 42") == c("size.eu", "eq", (42,))
    assert parse_filter("name = 'it''s'") == c("name", "eq", ("it's",))
    assert parse_filter("catégorie = 'chaussures'") == c("catégorie", "eq", ("chaussures",))
    assert parse_filter("   ") is None


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("price <", "expected a value, found the end of the filter at character 8"),
        ("category = shoes", "expected a value (quote strings"),
        ("(a = 1", "expected ')'"),
        ("a = 1 b = 2", "expected 'and', 'or' or the end of the filter, found 'b'"),
        ("a = 'open", "unterminated string"),
        ("a ~ 1", "unexpected character '~' at character 3"),
        ("and a = 1", "expected a field name"),
        ("a in 1", "expected '(' after 'in'"),
        ("a like 5", "a quoted pattern"),
        ("a is 5", "expected 'null'"),
        ("a", "an operator after 'a'"),
        ("a = 1 and", "expected a field name, found the end of the filter"),
        ("in = 1", "backticks"),
        ("a = null", "expected a value"),
    ],
)
def test_malformed_expressions_say_what_and_where(text: str, where: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(text)
    assert where in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_limits_on_size_and_depth() -> None:
    with pytest.raises(FilterError, match="nested more than"):
        parse_filter("(" * 100 + "a = 1" + ")" * 100)
    with pytest.raises(FilterError, match="too long"):
        parse_filter("a = 1 or " * 5000 + "a = 1")
    with pytest.raises(FilterError, match="too large"):
        to_sql({"a": {"in": list(range(40_000))}})


def test_user_values_never_reach_the_sql_text() -> None:
    evil = "x' OR 1=1; DROP TABLE files; --"
    sql, params = to_sql(f"title = '{evil.replace(chr(39), chr(39) * 2)}' or `a) OR (1=1` = 2")
    assert evil in params and "a) OR (1=1" in params
    assert "DROP" not in sql and "1=1" not in sql
    sql, params = to_sql({"title": evil, "b": {"in": [evil]}})
    assert "DROP" not in sql and params.count(evil) == 2


def test_dict_filters() -> None:
    c = Condition
    tree = filter_from_dict(
        {"category": "shoes", "price": {"lt": 50, "gte": 10}, "brand": {"in": ["a", "b"]}}
    )
    assert tree == And(
        (
            c("category", "eq", ("shoes",)),
            c("price", "lt", (50,)),
            c("price", "ge", (10,)),
            c("brand", "in", ("a", "b")),
        )
    )
    assert filter_from_dict({"tag": ["x", 2]}) == c("tag", "in", ("x", 2))
    assert filter_from_dict({"sale": None}) == c("sale", "null")
    assert filter_from_dict({"sale": {"exists": True}}) == c("sale", "notnull")
    assert filter_from_dict({"ok": True}) == c("ok", "eq", (1,))
    assert filter_from_dict({}) is None
    for bad, message in [
        ({"price": {"less": 5}}, "unknown operator 'less'"),
        ({"price": {"in": 5}}, "needs a list"),
        ({"price": {"lt": [1]}}, "strings or numbers"),
        ({"price": {}}, "no operator"),
        ({"price": float("nan")}, "not a usable number"),
        ({"": 1}, "non-empty"),
        ({"a": {"like": 3}}, "text pattern"),
    ]:
        with pytest.raises(FilterError, match=message):
            filter_from_dict(bad)
    with pytest.raises(FilterError, match="expression or a dict"):
        to_sql(42)  # type: ignore[arg-type]


# -- filters against a catalog (no model needed) -----------------------------------------------


@pytest.fixture()
def shop_catalog(tmp_path: Path) -> Catalog:
    """Files under /shop with typed metadata, one file failed, one path not indexed."""
    catalog = Catalog(tmp_path / "c.sqlite")
    rows = {
        "/shop/shoes/a.jpg": {"category": "shoes", "price": 9, "code": "007", "title": "Red boot"},
        "/shop/shoes/b.jpg": {"category": "shoes", "price": 10, "title": "blue sneaker"},
        "/shop/shoes-old/c.jpg": {"category": "shoes", "price": 100.5, "sale": 1},
        "/shop/hats/d.jpg": {"category": "hats", "price": "9", "title": "red cap"},
        "/shop/hats/e.jpg": {"category": "hats"},
        "/shop/f.jpg": {},
    }
    with catalog.transaction():
        for n, path in enumerate(rows):
            content = catalog.insert_content(NewContent(f"sha{n}", 10, 10, "JPEG"))
            catalog.upsert_file(path, 1, 1, content_id=content)
        catalog.upsert_file("/shop/broken.jpg", 1, 1, error="not an image")
        catalog.put_metadata(list(rows.items()))
        catalog.put_metadata([("/shop/broken.jpg", {"category": "shoes"})])
        catalog.put_metadata([("/elsewhere/x.jpg", {"category": "shoes"})])
    return catalog


def _names(catalog: Catalog, where=None, folder: str | None = None) -> list[str]:
    sql, params = to_sql(where)
    ids = {file_id for file_id, _ in catalog.matching_files(sql, params, folder)}
    paths = {row.id: row.path for row in catalog.files_by_path().values()}
    return sorted(os.path.basename(paths[i]) for i in ids)


def test_numbers_compare_as_numbers_and_strings_as_strings(shop_catalog: Catalog) -> None:
    names = lambda where: _names(shop_catalog, where)  # noqa: E731
    assert names("price < 10") == ["a.jpg"]  # 9 < 10 (as strings '9' > '10'); text '9' is no number
    assert names("price < 50") == ["a.jpg", "b.jpg"]
    assert names("price <= 100.5 and price > 9") == ["b.jpg", "c.jpg"]
    assert names("price = '9'") == ["a.jpg", "d.jpg"]  # a quoted number matches both kinds
    assert names("price = 9") == ["a.jpg"]
    assert names("price > 'A'") == []  # no text price sorts after 'A'
    assert names("code = '007'") == ["a.jpg"]  # a code with a leading zero stays text
    assert names("code = 7") == []
    assert names({"price": {"gte": 10, "lt": 101}}) == ["b.jpg", "c.jpg"]


def test_boolean_logic_and_missing_fields(shop_catalog: Catalog) -> None:
    names = lambda where: _names(shop_catalog, where)  # noqa: E731
    assert names("category = 'shoes' and price < 50") == ["a.jpg", "b.jpg"]
    assert names("category = 'hats' or sale = 1") == ["c.jpg", "d.jpg", "e.jpg"]
    assert names("category != 'shoes'") == ["d.jpg", "e.jpg"]  # f.jpg has no category
    assert names("not category = 'shoes'") == ["d.jpg", "e.jpg", "f.jpg"]  # complement
    assert names("colour = 'red'") == []  # unknown field: no match, no error
    assert names("not colour = 'red'") == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"]
    assert names("sale is null and category = 'shoes'") == ["a.jpg", "b.jpg"]
    assert names("sale is not null") == ["c.jpg"]
    assert names("category in ('hats', 'bags')") == ["d.jpg", "e.jpg"]
    assert names("price not in (9, 10)") == ["c.jpg", "d.jpg"]
    assert names("title like 'red%'") == ["a.jpg", "d.jpg"]  # ASCII case ignored
    assert names("title like '%SNEAK%' or title not like '%r%'") == ["b.jpg"]
    assert names("path like '%/hats/%'") == ["d.jpg", "e.jpg"]
    assert names("path = '/shop/f.jpg'") == ["f.jpg"]
    assert names("category = 'x'' OR ''1''=''1'") == []  # an odd value, not SQL
    assert names(None) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"]  # indexed only


def test_folder_matches_on_path_boundaries(shop_catalog: Catalog) -> None:
    assert _names(shop_catalog, folder="/shop/shoes") == ["a.jpg", "b.jpg"]  # not shoes-old
    assert _names(shop_catalog, folder="/shop/shoes/") == ["a.jpg", "b.jpg"]
    assert _names(shop_catalog, folder="/shop/sho") == []
    assert _names(shop_catalog, folder="/shop/hats/d.jpg") == ["d.jpg"]
    assert len(_names(shop_catalog, folder="/")) == 6
    assert _names(shop_catalog, "price > 50", folder="/shop") == ["c.jpg"]


def test_metadata_reads_keys_and_merges(shop_catalog: Catalog) -> None:
    keys = shop_catalog.metadata_keys()
    assert keys["category"] == {
        "type": "string", "count": 5, "distinct": 2, "values": ["hats", "shoes"],
        "values_complete": True,
    }  # fmt: skip
    assert keys["price"]["type"] == "mixed" and keys["price"]["count"] == 4
    assert (keys["price"]["min"], keys["price"]["max"]) == (9, 100.5)
    assert keys["sale"] == {"type": "number", "count": 1, "min": 1, "max": 1}
    assert shop_catalog.metadata_keys(max_values=1)["category"]["values"] == ["shoes"]

    with shop_catalog.transaction():
        shop_catalog.put_metadata([("/shop/hats/e.jpg", {"price": 5, "category": None})])
    e = "/shop/hats/e.jpg"
    assert shop_catalog.metadata_of_paths([e]) == {e: {"price": 5}}
    with shop_catalog.transaction():
        shop_catalog.put_metadata([("/shop/hats/e.jpg", {"title": "x"})], replace=True)
    assert shop_catalog.metadata_of_paths(["/shop/hats/e.jpg"])["/shop/hats/e.jpg"] == {
        "title": "x"
    }
    by_path = {row.path: row.id for row in shop_catalog.files_by_path().values()}
    got = shop_catalog.metadata_of_files(
        [by_path["/shop/f.jpg"], by_path["/shop/shoes/b.jpg"], 999]
    )
    assert got == {
        by_path["/shop/f.jpg"]: {},
        by_path["/shop/shoes/b.jpg"]: {"category": "shoes", "price": 10, "title": "blue sneaker"},
    }
    assert shop_catalog.indexed_paths(["/shop/f.jpg", "/shop/broken.jpg", "/nope"]) == {
        "/shop/f.jpg"
    }


def test_version_2_catalog_gains_the_metadata_table(tmp_path: Path, monkeypatch) -> None:
    import lookalike.catalog_schema as catalog_module

    path = tmp_path / "c.sqlite"
    monkeypatch.setattr(catalog_module, "SCHEMA_VERSION", 2)
    old = Catalog(path)
    assert old.schema_version == 2
    assert "metadata" not in [r[0] for r in old.conn.execute("SELECT name FROM sqlite_master")]
    with old.transaction():
        content = old.insert_content(NewContent("a", 1, 1, "JPEG"))
        old.upsert_file("/x/a.jpg", 1, 1, content_id=content)
    old.close()
    monkeypatch.undo()

    current = Catalog(path)
    assert current.schema_version == SCHEMA_VERSION >= 3
    assert current.files_by_path()["/x/a.jpg"].content_id == content  # data kept
    with current.transaction():
        current.put_metadata([("/x/a.jpg", {"n": 12, "s": "12", "f": 1.5})])
    stored = current.conn.execute("SELECT key, typeof(value) FROM metadata ORDER BY key").fetchall()
    assert stored == [("f", "real"), ("n", "integer"), ("s", "text")]  # no type coercion
    assert current.metadata_of_paths(["/x/a.jpg"])["/x/a.jpg"] == {"f": 1.5, "n": 12, "s": "12"}
    plan = " ".join(
        str(r)
        for r in current.conn.execute(
            "EXPLAIN QUERY PLAN SELECT path FROM metadata WHERE key = 'n' AND value < 5"
        )
    )
    assert "metadata_by_key" in plan


# -- reading metadata files --------------------------------------------------------------------


def test_csv_is_read_with_types_and_relative_paths(tmp_path: Path) -> None:
    file = tmp_path / "cat" / "products.csv"
    file.parent.mkdir()
    file.write_text(
        "\ufeffsku,Path,price,title,code,empty\n"
        'A1,img/a.jpg,49.90,"Boots, red",007,\n'
        "\n"
        "A2,/abs/b.jpg,-3,1e3x,0,\n"
        "A3,../c.jpg,12\n",
        encoding="utf-8",
    )
    records = read_metadata(file)
    assert records == [
        {"path": str(tmp_path / "cat" / "img" / "a.jpg"), "sku": "A1", "price": 49.9,
         "title": "Boots, red", "code": "007", "empty": None},
        {"path": "/abs/b.jpg", "sku": "A2", "price": -3, "title": "1e3x", "code": 0,
         "empty": None},
        {"path": str(tmp_path / "c.jpg"), "sku": "A3", "price": 12, "title": None, "code": None,
         "empty": None},
    ]  # fmt: skip
    semi = tmp_path / "semi.csv"
    semi.write_text("path;price\nx.jpg;3,5\n", encoding="utf-8")
    assert read_metadata(semi) == [{"path": str(tmp_path / "x.jpg"), "price": "3,5"}]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("path\ttitle\nx.jpg\ta, b\n", encoding="utf-8")
    assert read_metadata(tsv)[0]["title"] == "a, b"


def test_json_lines_and_json_are_read(tmp_path: Path) -> None:
    file = tmp_path / "p.jsonl"
    file.write_text(
        '{"path": "a.jpg", "price": 5, "tags": ["x"], "ok": true}\n\n{"path": "/b.jpg"}\n',
        encoding="utf-8",
    )
    assert read_metadata(file) == [
        {"path": str(tmp_path / "a.jpg"), "price": 5, "tags": ["x"], "ok": True},
        {"path": "/b.jpg"},
    ]
    array = tmp_path / "p.json"
    array.write_text('[{"path": "a.jpg", "n": 1}]', encoding="utf-8")
    assert read_metadata(array) == [{"path": str(tmp_path / "a.jpg"), "n": 1}]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "sku,price\nA,1\n", r"a\.csv: line 1: no 'path' column in the header \('sku'"),
        ("a.csv", "", "empty file"),
        ("a.csv", "path,a,a\nx,1,2\n", "column 'a' appears twice"),
        ("a.csv", "path,,b\nx,1,2\n", "column 2 has no name"),
        ("a.csv", "path,a\nx,1\ny,1,2\n", r"line 3: 3 cells, the header has 2"),
        ("a.csv", "path,a\nx,1\n,2\n", "line 3: the path is empty"),
        ("a.csv", 'path,a\nx,"open\n', "line 2: unexpected end of data"),
        ("a.jsonl", '{"path": "x"}\n{"path": "y",}\n', r"a\.jsonl: line 2: not valid JSON"),
        ("a.jsonl", '{"path": "x"}\n[1]\n', "line 2: expected a JSON object, got a list"),
        ("a.ndjson", '{"sku": "x"}\n', "line 1: the object has no 'path'"),
        ("a.jsonl", '{"path": 5}\n', "line 1: the path is empty or not text"),
        ("a.json", '{"path": "x"}', "expected a JSON list of objects"),
    ],
)
def test_malformed_metadata_files_name_file_and_line(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    file = tmp_path / name
    file.write_text(content, encoding="utf-8")
    with pytest.raises(MetadataError, match=message) as caught:
        read_metadata(file)
    assert isinstance(caught.value, ValueError)


def test_unreadable_metadata_files(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="cannot read metadata file"):
        read_metadata(tmp_path / "missing.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("path,t\nx,caf\xe9\n".encode("latin-1"))
    with pytest.raises(MetadataError, match="line 2: not UTF-8"):
        read_metadata(bad)


# -- index-level restricted search -------------------------------------------------------------


@pytest.fixture(params=["direct", "selector"])
def path_kind(request, monkeypatch) -> str:
    if request.param == "selector":  # force faiss id selectors even for small sets
        monkeypatch.setattr(subset, "EXACT_MAX", 0)
        monkeypatch.setattr(subset, "EXACT_FRACTION", 0.0)
    return request.param


def test_indexes_rank_only_allowed_ids(path_kind: str) -> None:
    rng = np.random.default_rng(5)
    ids = np.arange(300, dtype=np.int64) * 7 + 3
    allowed = np.array([3, 10, 2000, 703, 1389, 99999], dtype=np.int64)  # 2000, 99999 absent
    inside = np.array([3, 10, 703, 1389])
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[[5, 77]]
    codes = rng.integers(0, 256, (300, 8), dtype=np.uint8)
    cases = [
        (FlatIndex(16), vectors, queries, lambda q, v: -(q @ v.T)),
        (ExactIndex(16, "l2"), vectors, queries,
         lambda q, v: np.linalg.norm(q[:, None] - v[None], axis=2)),
        (BinaryIndex(64), codes, codes[[5, 77]],
         lambda q, v: np.unpackbits(q[:, None] ^ v[None], axis=2).sum(axis=2)),
    ]  # fmt: skip
    for index, data, query, distance in cases:
        index.add(ids, data)
        raw, found = index.search(query, 6, ids=allowed)
        expected = np.sort(distance(query, data[np.searchsorted(ids, inside)]), axis=1)
        for row in range(2):  # the allowed ids present, nearest first (ties in any order)
            assert sorted(found[row, :4].tolist()) == inside.tolist(), type(index).__name__
            got = distance(query[row : row + 1], data[np.searchsorted(ids, found[row, :4])])
            np.testing.assert_allclose(got[0], expected[row], rtol=1e-5, atol=1e-6)
        assert (found[:, 4:] == -1).all()
        _, none = index.search(query, 3, ids=np.array([], dtype=np.int64))
        assert (none == -1).all()
        full_raw, full = index.search(query, 300)
        assert set(full[0].tolist()) == set(ids.tolist())  # unfiltered search is unchanged
        np.testing.assert_allclose(raw[0, 0], full_raw[0][full[0] == found[0, 0]][0], rtol=1e-5)
        index.remove(np.array([3]))
        assert 3 not in index.search(query, 6, ids=allowed)[1]


def test_the_direct_path_is_chosen_for_small_sets() -> None:
    assert subset.score_directly(10, 1_000_000, 5120)
    assert subset.score_directly(2000, 2000, 5120)
    assert subset.score_directly(9_000, 1_000_000, 512)
    assert not subset.score_directly(9_000, 100_000, 512)
    assert not subset.score_directly(9_000, 1_000_000, 51200)  # 460 MB of vectors: faiss


# -- the collection ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shop")
    make_images(folder / "hats", 24, seed=31, size=96)
    make_images(folder / "shoes", 6, seed=32, size=96)
    make_images(folder / "shoes-old", 2, seed=33, size=96)
    shutil.copy(folder / "hats" / "gen_31_0000.jpg", folder / "shoes" / "same-as-hat.jpg")
    return folder


@pytest.fixture(scope="module")
def col(tmp_path_factory: pytest.TempPathFactory, shop: Path):
    with lookalike.open(tmp_path_factory.mktemp("shop-index")) as collection:
        report = collection.add([shop], features="deep,phash,color", workers=2)
        assert (report.embedded, report.linked) == (32, 1)
        records = [
            {"path": str(p), "category": p.parent.name, "price": n}
            for n, p in enumerate(sorted(shop.rglob("*.jpg")))
        ]
        counts = collection.set_metadata([*records, {"path": str(shop / "gone.jpg"), "x": 1}])
        assert counts == {
            "rows": 34, "attached": 33, "unmatched": 1,
            "unmatched_paths": [str(shop / "gone.jpg")],
        }  # fmt: skip
        yield collection


SEARCHES = [
    {"feature": "deep"},
    {"feature": "phash"},  # binary codes, Hamming
    {"feature": "color"},  # chi-square, numpy
    {"feature": "color", "metric": "l2"},
    {"feature": "phash", "rerank": "deep"},
]


@pytest.mark.parametrize("how", SEARCHES, ids=lambda h: "-".join(h.values()))
def test_filtered_search_returns_k_when_k_pass(col, shop: Path, how: dict, path_kind) -> None:
    query = shop / "hats" / "gen_31_0003.jpg"
    ranking = col.search(query, k=40, **how)
    assert len(ranking) == 33
    last = [m.path for m in ranking[-3:]]  # the three least similar: far outside any top k
    with col.catalog.transaction():
        col.catalog.delete_metadata(None)
    try:
        col.set_metadata([{"path": p, "tag": "rare"} for p in last])
        best = sorted((m.score for m in ranking[-3:]), reverse=True)
        for k in (1, 2, 3, 10):
            got = col.search(query, k=k, where="tag = 'rare'", **how)
            assert len(got) == min(k, 3)
            assert all(m.metadata == {"tag": "rare"} and m.path in last for m in got)
            # the best of the allowed ones, as the unfiltered ranking orders them
            assert [m.score for m in got] == pytest.approx(best[: min(k, 3)], abs=1e-5)
        if "rerank" not in how:
            vectors = col.embed([query], feature=how["feature"])
            (rows,) = col.search_vectors(
                vectors, 5, feature=how["feature"], metric=how.get("metric"),
                where={"tag": "rare"},
            )  # fmt: skip
            assert sorted(m.path for m in rows) == sorted(last)
        assert col.search(query, k=5, where="tag = 'common'", **how) == []
    finally:
        with col.catalog.transaction():
            col.catalog.delete_metadata(None)
        records = [
            {"path": str(p), "category": p.parent.name, "price": n}
            for n, p in enumerate(sorted(shop.rglob("*.jpg")))
        ]
        col.set_metadata(records)


def test_matches_carry_their_metadata(col, shop: Path) -> None:
    matches = col.search(shop / "shoes" / "gen_32_0001.jpg", k=3)
    top = matches[0]
    assert top.path.endswith("gen_32_0001.jpg") and top.metadata["category"] == "shoes"
    assert top.as_dict()["metadata"] == top.metadata
    assert isinstance(top.metadata["price"], int)
    assert col.metadata([m.id for m in matches]) == {m.id: m.metadata for m in matches}
    hash(top)  # still usable in sets


def test_filters_on_metadata_and_folder(col, shop: Path) -> None:
    query = shop / "hats" / "gen_31_0000.jpg"
    got = col.search(query, k=10, where="category = 'shoes' and price >= 0")
    assert len(got) == 7 and all(m.metadata["category"] == "shoes" for m in got)
    # the copy of the query in shoes/ comes first; its twin in hats/ does not pass
    assert got[0].path == str(shop / "shoes" / "same-as-hat.jpg")
    folder = col.search(query, k=50, folder=shop / "shoes")
    assert {Path(m.path).parent.name for m in folder} == {"shoes"} and len(folder) == 7
    both = col.search(query, k=50, folder=str(shop / "shoes"), where={"category": "hats"})
    assert both == []
    old = col.search(query, k=50, folder=shop / "shoes-old")
    assert len(old) == 2
    cheap = col.search(query, k=50, where={"price": {"lt": 5}}, feature="phash")
    assert sorted(m.metadata["price"] for m in cheap) == [0, 1, 2, 3, 4]
    with pytest.raises(FilterError):
        col.search(query, where="price <")
    with pytest.raises(FilterError):
        col.search(b"not even an image", where="price <")  # the filter is checked first
    keys = col.metadata_keys()
    assert keys["category"]["values"] == ["hats", "shoes", "shoes-old"]
    assert (keys["price"]["min"], keys["price"]["max"]) == (0, 32)
    assert "x" not in keys  # the row of a file that is not indexed


def test_metadata_attached_before_indexing_and_kept_on_reindex(tmp_path: Path) -> None:
    images = make_images(tmp_path / "imgs", 3, seed=41, size=80)
    with lookalike.open(tmp_path / "index") as col:
        counts = col.set_metadata([{"path": str(images[0]), "sku": "S-1", "ok": True}])
        assert counts["unmatched"] == 1 and counts["attached"] == 0
        csv = tmp_path / "imgs" / "more.csv"
        csv.write_text("path,sku\ngen_41_0001.jpg,S-2\nnot-there.jpg,S-9\n", encoding="utf-8")
        report = col.add([tmp_path / "imgs"], workers=1, metadata=csv)
        assert report.metadata["attached"] == 1 and report.metadata["unmatched"] == 1
        assert report.as_dict()["metadata"] == report.metadata
        got = {Path(m.path).name: m.metadata for m in col.search(images[0], k=3)}
        assert got["gen_41_0000.jpg"] == {"sku": "S-1", "ok": 1}
        assert got["gen_41_0001.jpg"] == {"sku": "S-2"}
        assert got["gen_41_0002.jpg"] == {}
        # the file changes and is indexed again: its metadata stays
        make_images(tmp_path / "other", 1, seed=42, size=80)[0].replace(images[0])
        assert col.add([tmp_path / "imgs"], workers=1).embedded == 1
        assert col.search(images[0], k=1, where="sku = 'S-1'")[0].path == str(images[0])
        assert col.clear_metadata([images[0]]) == 2
        assert col.search(images[0], k=3, where="sku = 'S-1'") == []
        bad = tmp_path / "bad.csv"
        bad.write_text("sku\nx\n", encoding="utf-8")
        with pytest.raises(MetadataError, match="no 'path' column"):
            col.add([tmp_path / "imgs"], metadata=bad)
        with pytest.raises(MetadataError, match="record 1: no 'path'"):
            col.set_metadata([{"sku": 1}])
        with pytest.raises(MetadataError, match="cannot store"):
            col.set_metadata([{"path": "/x.jpg", "when": object()}])


# -- the command line --------------------------------------------------------------------------


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_metadata_and_where(capsys, tmp_path: Path) -> None:
    images = make_images(tmp_path / "shop", 8, seed=51, size=80)
    db = str(tmp_path / "index")
    csv = tmp_path / "products.csv"
    csv.write_text(
        "path,category,price\n"
        + "".join(
            f"shop/{p.name},{'shoes' if n < 3 else 'hats'},{n * 10}\n" for n, p in enumerate(images)
        )
        + "shop/missing.jpg,shoes,1\n",
        encoding="utf-8",
    )
    status, out, _ = _run(capsys, "index", str(tmp_path / "shop"), "--metadata", str(csv),
                          "--db", db, "--json", "--workers", "1")  # fmt: skip
    assert status == 0
    report = json.loads(out)
    assert report["embedded"] == 8
    assert (report["metadata"]["attached"], report["metadata"]["unmatched"]) == (8, 1)

    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"path": str(images[7]), "sale": True}) + "\n", encoding="utf-8")
    status, out, _ = _run(capsys, "index", "--metadata", str(extra), "--db", db)
    assert status == 0 and "attached to 1 indexed files" in out

    status, out, _ = _run(capsys, "search", str(images[7]), "--db", db, "--json", "-k", "5",
                          "--where", "category = 'shoes' and price < 25")  # fmt: skip
    assert status == 0
    results = json.loads(out)["results"]
    assert len(results) == 3
    assert all(r["metadata"]["category"] == "shoes" and r["metadata"]["price"] < 25
               for r in results)  # fmt: skip
    status, out, _ = _run(capsys, "search", str(images[7]), "--db", db, "-k", "1",
                          "--where", "sale = 1")  # fmt: skip
    assert status == 0 and "sale=1" in out and images[7].name in out
    status, out, _ = _run(capsys, "search", str(images[0]), "--db", db, "-f", "-k", "9",
                          "--folder", str(tmp_path / "shop"), "--where", "price >= 70")  # fmt: skip
    assert out.split() == [str(images[7])]
    status, out, _ = _run(capsys, "search", str(images[0]), "--db", db, "--where", "nope = 1")
    assert status == 0 and "no image passes the filter" in out

    status, out, err = _run(capsys, "search", str(images[0]), "--db", db, "--where", "price <")
    assert status == 2 and out == ""
    assert err.startswith("lookalike: bad --where: expected a value") and err.count("\n") == 1

    status, out, _ = _run(capsys, "info", "--db", db, "--json")
    keys = json.loads(out)["metadata"]
    assert keys["category"]["values"] == ["hats", "shoes"] and keys["sale"]["count"] == 1
    status, out, _ = _run(capsys, "info", "--db", db)
    assert "metadata" in out and "category" in out

    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n", encoding="utf-8")
    status, _, err = _run(capsys, "index", "--metadata", str(bad), "--db", db)
    assert status == 1 and "bad.jsonl: line 1: not valid JSON" in err
    with pytest.raises(SystemExit) as exc:
        main(["index", "--db", db])
    assert exc.value.code == 2 and "--metadata" in capsys.readouterr().err
