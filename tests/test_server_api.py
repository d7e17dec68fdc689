"""`lookalike serve`: the HTTP API, driven in-process (FastAPI's TestClient).

One demo collection (scikit-image's sample photos, two near-duplicates, a catalogue of
category / price / title) is indexed per module; tests that change it add their own files.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import make_images
from PIL import Image

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def demo_collection(folder: Path, workers: int = 1) -> tuple[Path, Path, Path]:
    """The demo photos, catalogue and index in ``folder``: (index, photos, queries)."""
    import lookalike
    from lookalike.demo import write_demo_catalogue, write_demo_photos

    photos, queries = write_demo_photos(folder)
    catalogue = write_demo_catalogue(folder, photos)
    with lookalike.open(folder / "index") as col:
        col.add([photos], workers=workers, metadata=catalogue)
    return folder / "index", photos, queries


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("served")
    index, photos, queries = demo_collection(root)
    extra = root / "extra"  # files the tests add through the API
    extra.mkdir()
    return {"root": root, "index": index, "photos": photos, "queries": queries, "extra": extra}


@pytest.fixture(scope="module")
def client(demo: dict):
    from fastapi.testclient import TestClient

    from lookalike.server import ServerConfig, create_app

    config = ServerConfig(
        db=demo["index"], token=TOKEN, allow_roots=[demo["root"]], workers=1, readers=2
    )
    with TestClient(create_app(config), base_url="http://localhost") as c:  # a Host it accepts
        yield c


def search(client, data: bytes, k: int = 5, **params) -> dict:
    r = client.post(
        "/api/search", params={"k": k, **params}, files={"image": ("q.jpg", data, "image/jpeg")}
    )
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(client, job: dict, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while job["status"] in ("queued", "running"):
        assert time.time() < deadline, job
        time.sleep(0.1)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


# -- the stable core ---------------------------------------------------------------------------


def test_health(client) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_search_contract(client, demo: dict) -> None:
    query = (demo["queries"] / "astronaut-crop70.jpg").read_bytes()
    body = search(client, query, k=4)
    results = body["results"]
    assert len(results) == 4
    assert Path(results[0]["path"]).name == "astronaut.jpg"
    for hit in results:
        assert {"id", "path", "score", "metadata"} <= set(hit)
        assert isinstance(hit["id"], int) and isinstance(hit["score"], float)
    scores = [h["score"] for h in results]
    assert scores == sorted(scores, reverse=True)
    assert results[0]["metadata"] == {
        "category": "people", "price": 120, "title": "Astronaut portrait"
    }  # fmt: skip


def test_search_k_and_bad_k(client, demo: dict) -> None:
    query = (demo["photos"] / "coffee.jpg").read_bytes()
    assert len(search(client, query, k=1)["results"]) == 1
    r = client.post("/api/search", params={"k": 0}, files={"image": ("q.jpg", query)})
    assert r.status_code == 422 and "k" in r.json()["detail"]
    r = client.post("/api/search", params={"k": "many"}, files={"image": ("q.jpg", query)})
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)


def test_search_without_image(client) -> None:
    r = client.post("/api/search")
    assert r.status_code == 400
    assert "image" in r.json()["detail"] and "text" in r.json()["detail"]
    r = client.post("/api/search", data={"text": "   "})  # blank words are no query either
    assert r.status_code == 400


# -- filters ------------------------------------------------------------------------------------


def test_metadata_filter_dict_and_expression(client, demo: dict) -> None:
    query = (demo["queries"] / "coffee-half_size.jpg").read_bytes()
    where = {"category": "science", "price": {"gte": 80, "lt": 200}}
    hits = search(client, query, k=20, where=json.dumps(where))["results"]
    assert hits, "some science photos cost 80 to 199"
    for hit in hits:
        assert hit["metadata"]["category"] == "science"
        assert 80 <= hit["metadata"]["price"] < 200
    same = search(client, query, k=20, where="category = 'science' and price >= 80 and price < 200")
    assert [h["id"] for h in same["results"]] == [h["id"] for h in hits]
    nothing = search(client, query, k=5, where='{"category": "no such thing"}')["results"]
    assert nothing == []


def test_bad_filter_is_400(client, demo: dict) -> None:
    query = (demo["photos"] / "coffee.jpg").read_bytes()
    for where in ("price <", "{not json", '["a list"]'):
        r = client.post("/api/search", params={"where": where}, files={"image": ("q.jpg", query)})
        assert r.status_code == 400, (where, r.text)
        assert r.json()["detail"]


def test_folder_filter(client, demo: dict) -> None:
    query = (demo["photos"] / "coffee.jpg").read_bytes()
    hits = search(client, query, k=50, folder=str(demo["photos"]))["results"]
    assert len(hits) >= 20
    assert search(client, query, k=5, folder=str(demo["queries"]))["results"] == []


def test_filters_endpoint(client, demo: dict) -> None:
    body = client.get("/api/filters").json()
    assert {"path": str(demo["photos"]), "images": 24} in body["folders"]
    keys = body["metadata"]
    assert keys["price"]["type"] == "number" and keys["price"]["min"] == 2
    assert "science" in keys["category"]["values"]


# -- by id: more like this, info, thumbnails --------------------------------------------------


def test_more_like_this(client, demo: dict) -> None:
    first = search(client, (demo["photos"] / "moon.jpg").read_bytes(), k=1)["results"][0]
    r = client.post(f"/api/search/by-id/{first['id']}", params={"k": 3})
    assert r.status_code == 200
    hits = r.json()["results"]
    assert hits[0]["id"] == first["id"] and hits[0]["score"] > 0.999
    assert Path(hits[1]["path"]).name == "moon-small.jpg"  # its near-duplicate
    r = client.post(f"/api/search/by-id/{first['id']}", params={"k": 3, "where": "price < 50"})
    assert all(h["metadata"]["price"] < 50 for h in r.json()["results"])
    assert client.post("/api/search/by-id/999999").status_code == 404


# -- text search --------------------------------------------------------------------------------


def test_text_search(client, demo: dict) -> None:
    r = client.post("/api/search", params={"k": 3}, data={"text": "a cup of espresso"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert Path(body["results"][0]["path"]).name == "coffee.jpg"
    assert body["results"][0]["metadata"]["category"]  # hits carry metadata as image hits do
    how = body["text"]
    assert how["matched"] is True and how["model"] == "concepts" and how["warning"] is None
    assert "espresso" in [c["concept"] for c in how["concepts"]] and how["weight"] is None
    cat = client.post("/api/search", params={"k": 1}, data={"text": "kitty"}).json()
    assert Path(cat["results"][0]["path"]).name == "chelsea.jpg"


def test_text_search_says_when_nothing_matches(client) -> None:
    body = client.post("/api/search", data={"text": "quantum entanglement"}).json()
    assert body["text"]["matched"] is False
    assert "quantum entanglement" in body["text"]["warning"]
    assert all(h["score"] < 0.2 for h in body["results"])


def test_text_with_image_and_filters(client, demo: dict) -> None:
    coffee = (demo["photos"] / "coffee.jpg").read_bytes()
    files = {"image": ("q.jpg", coffee, "image/jpeg")}
    by_image = client.post("/api/search", params={"k": 1}, files=files,
                           data={"text": "cat", "weight": "0"}).json()  # fmt: skip
    assert Path(by_image["results"][0]["path"]).name == "coffee.jpg"
    assert by_image["text"]["weight"] == 0.0
    by_text = client.post("/api/search", params={"k": 1}, files=files,
                          data={"text": "cat", "weight": "1"}).json()  # fmt: skip
    assert Path(by_text["results"][0]["path"]).name == "chelsea.jpg"
    cheap = client.post("/api/search", params={"k": 5, "where": "price < 50"},
                        data={"text": "cat"}).json()  # fmt: skip
    assert cheap["results"] and all(h["metadata"]["price"] < 50 for h in cheap["results"])
    r = client.post("/api/search", files=files, data={"text": "cat", "weight": "2"})
    assert r.status_code == 422 and "weight" in r.json()["detail"]
    r = client.post("/api/search", data={"text": "x" * 501})
    assert r.status_code == 422 and "text" in r.json()["detail"]


def test_more_like_this_with_text(client, demo: dict) -> None:
    coffee = search(client, (demo["photos"] / "coffee.jpg").read_bytes(), k=1)["results"][0]
    plain = client.post(f"/api/search/by-id/{coffee['id']}", params={"k": 1}).json()
    assert plain["text"] is None and plain["results"][0]["id"] == coffee["id"]
    r = client.post(
        f"/api/search/by-id/{coffee['id']}", params={"k": 1, "text": "tabby cat", "weight": 1}
    )
    assert r.status_code == 200, r.text
    assert Path(r.json()["results"][0]["path"]).name == "chelsea.jpg"
    assert r.json()["text"]["matched"] is True


def test_image_info_and_thumbnails(client, demo: dict) -> None:
    hit = search(client, (demo["photos"] / "rocket.jpg").read_bytes(), k=1)["results"][0]
    info = client.get(f"/api/images/{hit['id']}").json()
    assert info["path"] == hit["path"] and info["metadata"]["category"] == "objects"
    assert info["width"] > 0 and info["size"] == os.path.getsize(hit["path"])

    r = client.get(f"/api/images/{hit['id']}/thumbnail", params={"size": 200})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "max-age" in r.headers["cache-control"] and r.headers["etag"]
    thumb = Image.open(io.BytesIO(r.content))
    assert max(thumb.size) == 256  # sizes round up to 128/256/384/512
    again = client.get(
        f"/api/images/{hit['id']}/thumbnail",
        params={"size": 200},
        headers={"If-None-Match": r.headers["etag"]},
    )
    assert again.status_code == 304 and not again.content

    big = client.get(f"/api/images/{hit['id']}/view")
    assert big.status_code == 200 and big.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(big.content)).size) <= 1600
    assert client.get("/api/images/999999/thumbnail").status_code == 404


def test_path_traversal_is_404(client) -> None:
    for url in (
        "/api/images/..%2F..%2F..%2Fetc%2Fpasswd/thumbnail",
        "/api/images/%2Fetc%2Fpasswd",
        "/api/images/..%2F..%2Fetc%2Fpasswd/view",
        "/api/images/-1/thumbnail",
        "/api/images/1.5/view",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/%2E%2E/app.py",
    ):
        r = client.get(url)
        assert r.status_code == 404, url
        assert r.headers["content-type"].startswith("application/json"), url
        assert "root:" not in r.text
    # a path in the query is ignored: files are served by id only
    r = client.get("/api/images/1/thumbnail", params={"path": "/etc/passwd"})
    assert r.headers["content-type"] == "image/jpeg"


# -- safety: token, limits, bad uploads --------------------------------------------------------


def test_changes_need_the_token(client, demo: dict) -> None:
    hit = search(client, (demo["photos"] / "brick.jpg").read_bytes(), k=1)["results"][0]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = client.delete(f"/api/images/{hit['id']}", headers=headers)
        assert r.status_code == 401
        assert "token" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
    r = client.post("/api/images", files={"files": ("a.jpg", b"x")})
    assert r.status_code == 401
    r = client.post("/api/images/paths", json={"paths": [str(demo["photos"])]})
    assert r.status_code == 401
    assert client.get(f"/api/images/{hit['id']}").status_code == 200  # still there


def test_upload_limit_is_413(client) -> None:
    big = os.urandom(30 * 1024 * 1024)
    r = client.post("/api/search", files={"image": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413
    assert "20 MB" in r.json()["detail"]
    r = client.post("/api/images", headers=AUTH, files={"files": ("big.jpg", big)})
    assert r.status_code == 413

    def chunks():  # a valid multipart body without Content-Length: counted while reading
        yield (
            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n"
        )
        for _ in range(30):
            yield b"\xff" * (1024 * 1024)
        yield b"\r\n--xyz--\r\n"

    r = client.post(
        "/api/search",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert r.status_code == 413
    assert client.get("/api/health").status_code == 200


def test_bad_images_are_4xx_and_the_server_goes_on(client, demo: dict) -> None:
    good = (demo["photos"] / "coffee.jpg").read_bytes()
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # 144 MP in ~20 KB
    cases = {
        "corrupt": (b"\xff\xd8\xff\xe0" + os.urandom(5000), 400),
        "text": (b"hello, this is not an image\n" * 20, 400),
        "truncated": (good[: len(good) // 3], 400),
        "empty": (b"", 400),
        "bomb": (bomb.getvalue(), 413),
    }
    for name, (data, status) in cases.items():
        r = client.post("/api/search", files={"image": (f"{name}.jpg", data, "image/jpeg")})
        assert r.status_code == status, (name, r.text)
        assert r.json()["detail"], name
        r = client.post("/api/check", files={"image": (f"{name}.jpg", data, "image/jpeg")})
        assert r.status_code == status, (name, r.text)
    assert (
        "too big"
        in client.post("/api/search", files={"image": ("b.png", bomb.getvalue())}).json()["detail"]
    )
    r = client.post("/api/images", headers=AUTH, files={"files": ("bad.jpg", b"not an image")})
    assert r.status_code == 400 and "bad.jpg" in r.json()["detail"]
    assert search(client, good, k=1)["results"][0]["path"].endswith("coffee.jpg")


def test_urls_are_not_fetched_by_default(client) -> None:
    r = client.post("/api/search", data={"url": "http://127.0.0.1:1/x.jpg"})
    assert r.status_code == 403 and "--allow-url-fetch" in r.json()["detail"]


def test_cors_is_off_by_default(client) -> None:
    r = client.options(
        "/api/search",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/api/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_and_url_fetch_when_enabled(demo: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import functools
    import http.server

    from fastapi.testclient import TestClient

    from lookalike.server import ServerConfig, create_app, fetch

    # the fetch refuses non-public addresses; this test's image server is on 127.0.0.1
    monkeypatch.setattr(fetch, "public_address", lambda address: address == "127.0.0.1")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(demo["photos"]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    config = ServerConfig(
        db=demo["index"],
        token=TOKEN,
        cors_origins=["https://shop.example"],
        allow_url_fetch=True,
        readers=1,
    )
    try:
        with TestClient(create_app(config), base_url="http://localhost") as c:
            preflight = {"Access-Control-Request-Method": "POST"}
            r = c.options("/api/search", headers={"Origin": "https://shop.example", **preflight})
            assert r.headers["access-control-allow-origin"] == "https://shop.example"
            r = c.options("/api/search", headers={"Origin": "https://evil.example", **preflight})
            assert "access-control-allow-origin" not in r.headers
            url = f"http://127.0.0.1:{httpd.server_port}/coffee.jpg"
            r = c.post("/api/search", params={"k": 1}, data={"url": url})
            assert r.status_code == 200 and r.json()["results"][0]["path"].endswith("coffee.jpg")
            r = c.post("/api/search", data={"url": "file:///etc/passwd"})
            assert r.status_code == 400
            r = c.post("/api/search", data={"url": url.replace("coffee", "missing")})
            assert r.status_code == 400 and "cannot fetch" in r.json()["detail"]
    finally:
        httpd.shutdown()


def test_errors_are_json(client) -> None:
    r = client.get("/api/nothing-here")
    assert r.status_code == 404 and r.json()["detail"]
    r = client.get("/api/jobs/nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = client.get("/api/duplicates", params={"preset": "fuzzy"})
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)


# -- adding and deleting -----------------------------------------------------------------------


def test_upload_add_search_delete(client, demo: dict, sample_photos) -> None:
    picture = sample_photos["camera"].rotate(90, expand=True)  # a new picture
    meta = {"category": "uploads", "price": 7}
    r = client.post(
        "/api/images",
        headers=AUTH,
        files=[("files", ("my photo?.jpg", jpeg(picture), "image/jpeg"))],
        data={"metadata": json.dumps(meta)},
    )
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json())
    assert job["status"] == "done", job
    assert job["done"] == job["total"] == 1
    (added,) = job["result"]["files"]
    assert Path(added["path"]).name == "my_photo.jpg"  # a cleaned name, in the upload folder

    hits = search(client, jpeg(picture, 70), k=1, where='{"category": "uploads"}')["results"]
    assert hits[0]["id"] == added["id"] and hits[0]["metadata"] == meta
    assert client.get(f"/api/images/{added['id']}/thumbnail").status_code == 200

    r = client.delete(f"/api/images/{added['id']}", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"deleted": added["id"], "path": added["path"]}
    assert not Path(added["path"]).exists()  # uploads belong to the server
    assert client.get(f"/api/images/{added['id']}").status_code == 404
    assert client.get(f"/api/images/{added['id']}/thumbnail").status_code == 404
    assert client.delete(f"/api/images/{added['id']}", headers=AUTH).status_code == 404
    hits = search(client, jpeg(picture, 70), k=3)["results"]
    assert added["id"] not in [h["id"] for h in hits]


def test_add_server_paths(client, demo: dict, tmp_path: Path) -> None:
    folder = demo["extra"] / "paths"
    made = make_images(folder, 3, seed=41)
    catalogue = demo["extra"] / "paths.csv"
    elsewhere = demo["photos"] / "not-added.jpg"
    catalogue.write_text(
        f"path,category\n{made[0]},generated\n/etc/passwd,stolen\n{elsewhere},stolen\n"
    )
    body = {"paths": [str(folder)], "metadata": str(catalogue)}
    r = client.post("/api/images/paths", headers=AUTH, json=body)
    assert r.status_code == 202
    job = wait_job(client, r.json())
    assert job["status"] == "done" and job["result"]["embedded"] == 3
    # rows naming files outside the paths added are left out and counted, never stored
    assert job["result"]["metadata"]["outside_paths"] == 2
    with sqlite3.connect(demo["index"] / "catalog.sqlite") as db:
        assert not db.execute("SELECT 1 FROM metadata WHERE value = 'stolen'").fetchall()
    assert len(job["result"]["files"]) == 3
    hits = search(client, made[0].read_bytes(), k=1)["results"]
    assert hits[0]["path"] == str(made[0]) and hits[0]["metadata"] == {"category": "generated"}
    r = client.post(
        "/api/images/paths", headers=AUTH, json={"paths": [str(folder)], "metadata": "/etc/passwd"}
    )
    assert r.status_code == 403

    outside = tmp_path / "outside"
    make_images(outside, 1, seed=42)
    link = demo["extra"] / "sneaky"
    link.symlink_to(outside, target_is_directory=True)
    for path in (str(outside), str(link), "/etc", f"{demo['root']}/../../etc"):
        r = client.post("/api/images/paths", headers=AUTH, json={"paths": [path]})
        assert r.status_code == 403, path
    r = client.post(
        "/api/images/paths", headers=AUTH, json={"paths": [str(demo["root"] / "missing")]}
    )
    assert r.status_code == 404
    r = client.post("/api/images/paths", headers=AUTH, json={"paths": []})
    assert r.status_code == 400
    # wait=true answers when the job has finished
    r = client.post("/api/images/paths?wait=true", headers=AUTH, json={"paths": [str(folder)]})
    assert r.status_code == 200 and r.json()["status"] == "done"
    assert r.json()["result"]["unchanged"] == 3


def test_duplicates(client) -> None:
    body = client.get("/api/duplicates", params={"preset": "near"}).json()
    names = [sorted(Path(f["path"]).name for f in g["files"]) for g in body["groups"]]
    assert ["moon-small.jpg", "moon.jpg"] in names and ["horse-copy.jpg", "horse.jpg"] in names
    for group in body["groups"]:
        keepers = [f for f in group["files"] if f["keep"]]
        assert len(keepers) == 1 and keepers[0] == group["files"][0]
        assert all(isinstance(f["id"], int) for f in group["files"])
    exact = client.get("/api/duplicates", params={"preset": "exact"}).json()
    assert exact["total_groups"] == 0


def test_copy_check(client, demo: dict) -> None:
    crop = (demo["queries"] / "retina-crop80_jpeg50.jpg").read_bytes()
    r = client.post("/api/check", files={"image": ("suspect.jpg", crop, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"] == "copy" and body["score"] >= 0.5
    assert Path(body["match"]["path"]).name == "retina.jpg"
    assert body["evidence"]["inliers"] >= body["evidence"]["threshold"]
    x0, y0, x1, y1 = body["region_box"]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1

    other = Image.new("RGB", (300, 200), (20, 120, 200))
    r = client.post("/api/check", files={"image": ("plain.jpg", jpeg(other), "image/jpeg")})
    assert r.json()["verdict"] == "no_copy" and r.json()["match"] is None


def test_stats(client) -> None:
    body = client.get("/api/stats").json()
    assert body["images"] >= 24 and body["model"]
    assert body["limits"]["max_upload_bytes"] == 20 * 1024 * 1024


def test_docs_and_page_are_local(client) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    spec = client.get("/openapi.json").json()
    assert {"/api/search", "/api/images/{image_id}", "/api/health"} <= set(spec["paths"])
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    remote = re.compile(
        r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|fetch\(\s*["'`]https?:"""
    )
    assert not remote.search(page.text)
    for asset in ("/static/app.js", "/static/style.css", "/static/favicon.svg"):
        r = client.get(asset)
        assert r.status_code == 200 and not remote.search(r.text), asset


# -- concurrency -------------------------------------------------------------------------------


@pytest.mark.slow
def test_searches_keep_working_while_adding(client, demo: dict) -> None:
    folder = demo["extra"] / "bulk"
    make_images(folder, 60, seed=43, size=320)
    query = (demo["photos"] / "chelsea.jpg").read_bytes()
    before = search(client, query, k=3)["results"]
    r = client.post("/api/images/paths", headers=AUTH, json={"paths": [str(folder)]})
    job_id = r.json()["id"]
    seen_running, counts, failures, done = 0, [], [], set()

    def images() -> int:
        return client.get("/api/stats").json()["images"]

    def watch_progress() -> None:  # a cheap, tight poll: partial progress lasts a fraction of a s
        while True:
            job = client.get(f"/api/jobs/{job_id}").json()
            done.add(job["done"])
            if job["status"] in ("done", "failed"):
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch_progress, daemon=True)
    watcher.start()

    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        r = client.post("/api/search", params={"k": 3}, files={"image": ("q.jpg", query)})
        if r.status_code != 200:
            failures.append(r.text)
        else:
            # the same best match whatever the writer is doing, and every hit readable
            hits = r.json()["results"]
            if hits[0]["id"] != before[0]["id"]:
                failures.append(hits)
            for hit in hits:
                if client.get(f"/api/images/{hit['id']}").status_code != 200:
                    failures.append(hit)
        if job["status"] == "running":
            seen_running += 1
            counts.append(images())
        if job["status"] in ("done", "failed"):
            break
    watcher.join(timeout=30)
    assert job["status"] == "done" and job["result"]["embedded"] == 60, job
    assert not failures
    assert seen_running >= 2, "the add finished before any search ran beside it"
    assert counts == sorted(counts), "the collection never shrinks while adding"
    assert any(0 < n < 60 for n in done), f"no progress seen between 0 and 60: {done}"
    hits = search(client, (folder / "gen_43_0007.jpg").read_bytes(), k=1)["results"]
    assert Path(hits[0]["path"]).name == "gen_43_0007.jpg"


def test_job_progress_is_reported(client, demo: dict) -> None:
    folder = demo["extra"] / "progress"
    make_images(folder, 12, seed=44)
    r = client.post("/api/images/paths", headers=AUTH, json={"paths": [str(folder)]})
    first = r.json()
    assert first["kind"] == "add" and first["status"] in ("queued", "running")
    job = wait_job(client, first)
    assert job["status"] == "done" and job["done"] == job["total"] == 12
    assert job["progress"] == 1.0 and job["finished"] >= job["started"]
    assert any(j["id"] == job["id"] for j in client.get("/api/jobs").json())


# -- the command ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_serve_command_binds_loopback_and_prints_token(demo: dict) -> None:
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "lookalike.cli", "serve", "--db", str(demo["index"]),
         "--port", "0", "--readers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={k: v for k, v in os.environ.items() if k != "LOOKALIKE_TOKEN"},
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.time() + 60
        while not any("token" in line for line in lines):
            assert proc.poll() is None and time.time() < deadline, "".join(lines)
            time.sleep(0.1)
        url = next(line.split()[-1] for line in lines if line.strip().startswith("open"))
        token = next(line.split()[1] for line in lines if line.strip().startswith("token"))
        assert url.startswith("http://127.0.0.1:"), url
        assert len(token) >= 20
        assert httpx.get(url + "api/health", timeout=10).json()["status"] == "ok"
        r = httpx.delete(url + "api/images/1", timeout=10)
        assert r.status_code == 401
        r = httpx.delete(url + "api/images/999999", timeout=10,
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert r.status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        reader.join(timeout=5)
    assert proc.returncode in (0, -15), "".join(lines)


def test_cli_serve_defaults() -> None:
    from lookalike.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8000
    assert args.allow_root == [] and args.cors_origin == [] and not args.allow_url_fetch
    assert args.max_upload_mb == 20


def test_package_data_lists_the_static_files() -> None:
    text = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert "server/static/*" in text
    static = Path(__file__).parent.parent / "lookalike" / "server" / "static"
    assert {p.name for p in static.iterdir()} >= {"index.html", "app.js", "style.css"}


@pytest.mark.slow
@pytest.mark.integration
def test_load_benchmark_runs_without_errors() -> None:
    from bench.load import load_rows, measure_load

    r = measure_load(clients=4, seconds=1.5, warmup=0.5, baseline_seconds=0.5)
    assert r["requests"] > 10 and r["server_errors"] == 0 and r["non_2xx"] == 0
    assert r["upload_search"]["p50_ms"] > 0 and r["baseline"]["searches_per_s"] > 0
    assert len(load_rows(r)) == 4
