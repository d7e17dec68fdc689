"""Hostile clients of `lookalike serve` (issue #14): links out of the allowed roots (item 5),
ids in other digits (item 14), refused uploads leaving files (item 17), and the adversarial
pass over every endpoint: never a 5xx."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import pytest
from conftest import make_images
from PIL import Image

TOKEN = "sec-token-456"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An allowed root with three photos indexed, and a folder outside it with a secret."""
    import lookalike

    base = tmp_path_factory.mktemp("sec-server")
    root = base / "allowed"
    photos = make_images(root / "photos", 3, seed=7)
    outside = base / "outside"
    secret = make_images(outside, 1, seed=8)[0]
    with lookalike.open(base / "index") as col:
        col.add([root / "photos"], workers=1)
    return {"base": base, "root": root, "photos": photos, "outside": outside, "secret": secret}


def _app(site: dict, **options):
    from lookalike.server import ServerConfig, create_app

    config = ServerConfig(
        db=site["base"] / "index",
        token=TOKEN,
        allow_roots=[site["root"]],
        workers=1,
        readers=1,
        warm_text=False,
        **options,
    )
    return create_app(config)


@pytest.fixture(scope="module")
def client(site: dict):
    from fastapi.testclient import TestClient

    with TestClient(_app(site), base_url="http://localhost") as c:
        yield c


def _ids(client, site: dict) -> dict[str, int]:
    """Image id by file name, for the files of the allowed root."""
    data = (site["photos"][0]).read_bytes()
    r = client.post("/api/search", params={"k": 50}, files={"image": ("q.jpg", data)})
    assert r.status_code == 200, r.text
    return {Path(h["path"]).name: h["id"] for h in r.json()["results"]}


def _jpeg(size=(200, 160), colour=(200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


# -- item 14: ids are ASCII digits ---------------------------------------------------------------

ODD_IDS = ["\u00b2", "\u0663", "\uff11", "1\u0663", "\U0001d7cf", "\u00b9", "+1", " 1", "1 ", "0x1"]


@pytest.mark.parametrize("odd", ODD_IDS)
def test_ids_in_other_digits_are_404_on_every_endpoint(client, site: dict, odd: str) -> None:
    ids = _ids(client, site)
    assert 1 in ids.values()  # so "maps to id 1" would show
    calls = [
        ("GET", f"/api/images/{odd}", {}),
        ("GET", f"/api/images/{odd}/thumbnail", {}),
        ("GET", f"/api/images/{odd}/view", {}),
        ("POST", f"/api/search/by-id/{odd}", {}),
        ("DELETE", f"/api/images/{odd}", AUTH),
    ]
    for method, url, headers in calls:
        r = client.request(method, url, headers=headers)
        assert r.status_code == 404, (method, url, r.status_code, r.text)
        assert "digits" in r.json()["detail"], url
    assert client.get("/api/images/1").status_code == 200  # id 1 not deleted


# -- item 5: links out of an allowed root ---------------------------------------------------------


def test_links_out_of_the_root_are_skipped_and_reported(client, site: dict) -> None:
    folder = site["root"] / "links"
    folder.mkdir()
    make_images(folder, 1, seed=9)
    (folder / "to-secret.jpg").symlink_to(site["secret"])  # a file link leaving the root
    (folder / "to-outside").symlink_to(site["outside"], target_is_directory=True)
    (folder / "to-inside.jpg").symlink_to(site["photos"][0])  # stays inside: fine
    r = client.post("/api/images/paths?wait=true", headers=AUTH, json={"paths": [str(folder)]})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["skipped"] == 1
    reason = "not indexed: a link to a file outside the allowed roots"
    assert {"path": str(folder / "to-secret.jpg"), "error": reason} in result["errors"]
    indexed = {f["path"] for f in result["files"]}
    assert str(folder / "to-secret.jpg") not in indexed
    assert not any("to-outside" in p for p in indexed)  # a folder link is not followed
    assert str(folder / "to-inside.jpg") in indexed
    # the secret is not searchable, and nothing serves it
    r = client.post(
        "/api/search", params={"k": 50}, files={"image": ("q.jpg", site["secret"].read_bytes())}
    )
    assert all(site["outside"].name not in h["path"] for h in r.json()["results"])
    assert all("to-secret" not in h["path"] for h in r.json()["results"])
    # named directly, or through a folder link, or with "..": refused
    for path in (
        folder / "to-secret.jpg",
        folder / "to-outside",
        folder / "to-outside" / site["secret"].name,
        f"{site['root']}/links/../../outside",
    ):
        r = client.post("/api/images/paths", headers=AUTH, json={"paths": [str(path)]})
        assert r.status_code == 403, path


def test_a_link_out_beside_an_unreadable_name_still_adds_the_rest(client, site: dict) -> None:
    folder = site["root"] / "mixed"
    good = make_images(folder, 1, seed=12)[0]
    (folder / "to-secret.jpg").symlink_to(site["secret"])
    with open(os.path.join(os.fsencode(folder), b"bad\xff.jpg"), "wb") as f:
        f.write(good.read_bytes())  # a name that is not UTF-8
    r = client.post("/api/images/paths?wait=true", headers=AUTH, json={"paths": [str(folder)]})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["skipped"] == 2
    assert [f["path"] for f in result["files"]] == [str(good)]


def test_stored_links_out_of_the_root_are_not_served(site: dict, tmp_path: Path) -> None:
    """Defence in depth: a catalog that already holds a link out of an allowed root (indexed
    before the fix, or by the command line) never serves the file behind it."""
    from fastapi.testclient import TestClient

    import lookalike
    from lookalike.server import ServerConfig, create_app

    root = tmp_path / "root"
    make_images(root, 1, seed=11)
    (root / "leak.jpg").symlink_to(site["secret"])
    with lookalike.open(tmp_path / "index") as col:
        col.add([root], workers=1)
        rows = {Path(r.path).name: r.id for r in col.catalog.files_under(str(root))}
    assert "leak.jpg" in rows  # the command line follows file links, as documented
    config = ServerConfig(
        db=tmp_path / "index", token=TOKEN, allow_roots=[root], readers=1, warm_text=False
    )
    with TestClient(create_app(config), base_url="http://localhost") as client:
        for what in ("thumbnail", "view"):
            r = client.get(f"/api/images/{rows['leak.jpg']}/{what}")
            assert r.status_code == 403 and "outside the allowed folders" in r.json()["detail"]
            assert r.headers["content-type"].startswith("application/json")
        r = client.post(f"/api/search/by-id/{rows['leak.jpg']}", params={"text": "a cat"})
        assert r.status_code == 403
        real = next(i for name, i in rows.items() if name != "leak.jpg")
        assert client.get(f"/api/images/{real}/thumbnail").status_code == 200
        server = client.app.state.server if hasattr(client.app, "state") else None
        assert server is not None
        assert not server.may_serve(f"{root}/../outside/{site['secret'].name}")
        assert not server.may_serve(f"{root}/leak.jpg")
        assert server.may_serve(str(next(root.glob("gen_*.jpg"))))
        assert server.may_serve(str(site["secret"]))  # indexed elsewhere by the owner: served
        uploads = config.upload_dir
        uploads.mkdir(parents=True, exist_ok=True)
        (uploads / "planted.jpg").symlink_to(site["secret"])
        assert not server.may_serve(str(uploads / "planted.jpg"))


# -- item 17: refused uploads leave no files -------------------------------------------------------


def _upload_files(site: dict) -> list[Path]:
    uploads = site["base"] / "index" / "uploads"
    return [p for p in uploads.rglob("*") if p.is_file()] if uploads.exists() else []


def test_an_upload_refused_with_409_leaves_no_files(client, site: dict) -> None:
    from lookalike.lock import WriterLock

    before = _upload_files(site)
    with WriterLock(site["base"] / "index"):  # another lookalike is writing
        r = client.post("/api/images?wait=true", headers=AUTH, files={"files": ("a.jpg", _jpeg())})
        assert r.status_code == 409, r.text
        assert "locked" in r.json()["detail"]
        r = client.post("/api/images", headers=AUTH, files={"files": ("b.jpg", _jpeg())})
        assert r.status_code == 202
        job = r.json()
        done = client.app.state.server.writer.get(job["id"])
        assert done.wait(60) and done.status == "failed" and done.error_status == 409
    assert _upload_files(site) == before
    # and the same upload works once the other writer is gone
    r = client.post("/api/images?wait=true", headers=AUTH, files={"files": ("a.jpg", _jpeg())})
    assert r.status_code == 200 and r.json()["status"] == "done", r.text
    assert len(_upload_files(site)) == len(before) + 1


def test_an_upload_that_fails_while_saving_leaves_no_files(
    site: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi import HTTPException

    from lookalike.server.adding import save_uploads

    real = Path.write_bytes
    written: list[Path] = []

    def full(self: Path, data: bytes) -> int:
        if written:
            raise OSError(28, "No space left on device")
        written.append(self)
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    folder = tmp_path / "uploads" / "batch"
    with pytest.raises((OSError, HTTPException)):
        save_uploads([("a.jpg", _jpeg()), ("b.jpg", _jpeg())], folder, 10**8)
    assert written and not folder.exists()


# -- adversarial pass ----------------------------------------------------------------------------


def test_k_and_sizes_out_of_range_are_422(client, site: dict) -> None:
    data = site["photos"][0].read_bytes()
    for k in ("-1", "0", "501", "99999999999999999999999", "1e3", "\u0663", "\uff11", "nan", ""):
        r = client.post("/api/search", params={"k": k}, files={"image": ("q.jpg", data)})
        assert r.status_code == 422, (k, r.text)
    ids = _ids(client, site)
    some = next(iter(ids.values()))
    for size in ("-5", "0", "100000", "\uff11\uff12\uff18", "1e400"):
        r = client.get(f"/api/images/{some}/thumbnail", params={"size": size})
        assert r.status_code == 422, (size, r.text)
    for weight in ("nan", "inf", "-0.1", "2"):
        r = client.post(f"/api/search/by-id/{some}", params={"text": "cat", "weight": weight})
        assert r.status_code == 422, (weight, r.text)


def test_unicode_and_hostile_query_strings(client, site: dict) -> None:
    data = site["photos"][0].read_bytes()
    for params in (
        {"where": "caf\u00e9 = '\u2603'"},
        {"where": "\x00"},
        {"where": "{" * 5000},
        {"where": '{"a": ' * 3000 + "1" + "}" * 3000},
        {"where": "[1, 2]"},
        {"folder": "\u202e/etc"},
        {"folder": "/" * 10000},
        {"folder": "\x00"},
        {"feature": "../../etc/passwd"},
        {"feature": "\u0000"},
    ):
        r = client.post("/api/search", params=params, files={"image": ("q.jpg", data)})
        assert r.status_code < 500, (params, r.text)
        assert r.headers["content-type"].startswith("application/json")
    for preset in ("near\u0000", "\u202e"):
        assert client.get("/api/duplicates", params={"preset": preset}).status_code == 422
    r = client.get("/api/jobs/" + "\u0663" * 50)
    assert r.status_code == 404


def test_malformed_multipart_bodies(client) -> None:
    boundary = "xyz"
    bodies = [
        b"--xyz\r\nContent-Disposition: form-data; name=image\r\n\r\nabc",  # no end
        b"garbage without any boundary",
        b"--xyz--\r\n",
        b"--xyz\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--xyz--\r\n",  # no name
        b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff\r\n--xyz--\r\n",
        b"--xyz\r\n" + b"X-Header: " + b"h" * 100_000 + b"\r\n\r\nv\r\n--xyz--\r\n",
    ]
    for body in bodies:
        for url, headers in (("/api/search", {}), ("/api/check", {}), ("/api/images", AUTH)):
            r = client.post(
                url,
                content=body,
                headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            assert 400 <= r.status_code < 500, (url, body[:40], r.status_code, r.text)
    # content-type lies: JSON to a multipart route, multipart to a JSON route, no boundary
    lies = [
        ("/api/search", {"Content-Type": "application/json"}, b'{"image": "x"}'),
        ("/api/search", {"Content-Type": "multipart/form-data"}, b"abc"),
        ("/api/search", {"Content-Type": "multipart/form-data; boundary="}, b"abc"),
        ("/api/search", {"Content-Type": "text/plain"}, b"\xff\xd8"),
        ("/api/images/paths", {**AUTH, "Content-Type": "multipart/form-data; boundary=a"}, b"x"),
        ("/api/images/paths", {**AUTH, "Content-Type": "application/json"}, b"[" * 100_000),
        ("/api/images/paths", {**AUTH, "Content-Type": "application/json"}, b"\xff\xfe"),
        ("/api/images", {**AUTH, "Content-Type": "application/json"}, b"{}"),
    ]
    for url, headers, body in lies:
        r = client.post(url, headers=headers, content=body)
        assert 400 <= r.status_code < 500, (url, headers, r.status_code, r.text)


def test_many_parts_are_refused(client) -> None:
    files = [("files", (f"{i}.jpg", b"x")) for i in range(1001)]
    r = client.post("/api/images", headers=AUTH, files=files)
    assert r.status_code == 400 and "files" in r.json()["detail"].lower()
    fields = {f"f{i}": "v" for i in range(200)}
    r = client.post("/api/search", data=fields, files={"image": ("q.jpg", b"x")})
    assert 400 <= r.status_code < 500, r.text


def test_json_bombs_in_server_paths_and_metadata(client, site: dict) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    r = client.post(
        "/api/images/paths", headers={**AUTH, "Content-Type": "application/json"}, content=deep
    )
    assert 400 <= r.status_code < 500, r.text
    r = client.post("/api/images/paths", headers=AUTH, json={"paths": ["x"] * 100_000})
    assert 400 <= r.status_code < 500
    for meta in ('{"a": ' * 20_000 + "1" + "}" * 20_000, "[]", '"text"', "{"):
        r = client.post(
            "/api/images",
            headers=AUTH,
            files={"files": ("a.jpg", _jpeg())},
            data={"metadata": meta},
        )
        assert 400 <= r.status_code < 500, (meta[:30], r.status_code, r.text)
    # numbers JSON cannot carry back (inf, NaN) are dropped, and every read still answers
    r = client.post(
        "/api/images?wait=true",
        headers=AUTH,
        files={"files": ("inf.jpg", _jpeg(colour=(3, 200, 50)))},
        data={"metadata": '{"big": 1e999999, "nan": NaN, "ok": 5}'},
    )
    assert r.status_code == 200, r.text
    added = r.json()["result"]["files"][0]["id"]
    info = client.get(f"/api/images/{added}")
    assert info.status_code == 200 and info.json()["metadata"] == {"ok": 5}
    assert client.get("/api/filters").status_code == 200


def test_every_changing_endpoint_needs_the_token(client, site: dict) -> None:
    ids = _ids(client, site)
    some = next(iter(ids.values()))
    calls = [
        ("DELETE", f"/api/images/{some}", {}),
        ("POST", "/api/images", {"files": {"files": ("a.jpg", _jpeg())}}),
        ("POST", "/api/images/paths", {"json": {"paths": [str(site["root"])]}}),
    ]
    for token in (None, "", "wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "\u00e9" * 10):
        headers = {} if token is None else {"Authorization": f"Bearer {token}".encode()}
        for method, url, extra in calls:
            r = client.request(method, url, headers=headers, **extra)
            assert r.status_code == 401, (method, url, token, r.status_code)
    for auth in (f"Basic {TOKEN}", f"Token {TOKEN}", f"Bearer  {TOKEN} x", f"Bearer{TOKEN}"):
        r = client.delete(f"/api/images/{some}", headers={"Authorization": auth})
        assert r.status_code == 401, auth
    assert client.get(f"/api/images/{some}").status_code == 200


def test_concurrent_deletes_of_one_image(client, site: dict) -> None:
    r = client.post(
        "/api/images?wait=true", headers=AUTH, files={"files": ("c.jpg", _jpeg(colour=(1, 90, 3)))}
    )
    assert r.status_code == 200, r.text
    added = r.json()["result"]["files"][0]["id"]
    codes: list[int] = []

    def delete() -> None:
        codes.append(client.delete(f"/api/images/{added}", headers=AUTH).status_code)

    threads = [threading.Thread(target=delete) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(codes) == [200] + [404] * 5, codes


def test_path_traversal_and_odd_paths_in_image_routes(client) -> None:
    for url in (
        "/api/images/1/../../../etc/passwd",
        "/api/images/%2e%2e/thumbnail",
        "/api/images/1%00/view",
        "/api/images/1/thumbnail%00",
        "/api/images/" + "9" * 19,
        "/api/images/" + "9" * 18,
        "/api/images/1/view/../../../../etc/passwd",
        "/static/../../pyproject.toml",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
    ):
        r = client.get(url)
        assert r.status_code in (400, 404), (url, r.status_code)
        assert "[project]" not in r.text and "root:" not in r.text


def test_huge_headers_and_cookies_do_not_break_it(client) -> None:
    r = client.get("/api/health", headers={"X-Big": "a" * 200_000, "Cookie": "c=" + "b" * 50_000})
    assert r.status_code == 200
    r = client.get("/api/health", headers=[(f"X-H{i}", "v") for i in range(500)])
    assert r.status_code == 200


def test_upload_metadata_and_names_are_cleaned(client, site: dict) -> None:
    names = ["../../../etc/cron.d/x.jpg", "\u202egpj.exe", "a" * 300 + ".jpg", "...", "<b>.jpg"]
    files = [("files", (n, _jpeg(colour=(i * 40, 10, 200)))) for i, n in enumerate(names)]
    r = client.post("/api/images?wait=true", headers=AUTH, files=files)
    assert r.status_code == 200, r.text
    uploads = (site["base"] / "index" / "uploads").resolve()
    for f in r.json()["result"]["files"]:
        path = Path(f["path"])
        assert path.resolve().parent.parent == uploads
        assert len(path.name) < 100 and "\u202e" not in path.name and "<" not in path.name
    r = client.post("/api/images?wait=true", headers=AUTH, files={"files": ("\x00.jpg", _jpeg())})
    assert r.status_code == 200, r.text
    assert "\x00" not in r.json()["result"]["files"][0]["path"]


def test_cors_is_not_a_wildcard_and_credentials_are_not_shared(site: dict) -> None:
    from fastapi.testclient import TestClient

    with TestClient(
        _app(site, cors_origins=["https://shop.example"]), base_url="http://localhost"
    ) as c:
        r = c.get("/api/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        r = c.get("/api/health", headers={"Origin": "https://shop.example"})
        assert r.headers["access-control-allow-origin"] == "https://shop.example"
        assert r.headers.get("access-control-allow-credentials") != "true"
        r = c.options(
            "/api/images/1",
            headers={
                "Origin": "https://evil.example",
                "Access-Control-Request-Method": "DELETE",
            },
        )
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.slow  # the first text query prepares the text model (tens of seconds)
def test_odd_text_queries(client) -> None:
    for text in ("\u202e\u0000\U0001f600 caf\u00e9", "\u200b" * 499, "\U0001f408" * 200, "%00"):
        r = client.post("/api/search", data={"text": text})
        assert r.status_code < 500, (text[:10], r.text)


def test_odd_forms_and_methods(client, site: dict) -> None:
    data = site["photos"][0].read_bytes()
    r = client.post("/api/search", data={"text": "x" * 501})
    assert r.status_code == 422
    for weight in ("nan", "inf", "-1", "1e400"):
        r = client.post(
            "/api/search", data={"text": "cat", "weight": weight}, files={"image": ("q", data)}
        )
        assert r.status_code == 422, (weight, r.text)
    r = client.post("/api/search", files={"image": ("", b"")})  # an empty file part
    assert 400 <= r.status_code < 500
    r = client.post("/api/search", data={"image": "not a file"})
    assert 400 <= r.status_code < 500
    for method in ("PUT", "PATCH", "TRACE", "CONNECT"):
        r = client.request(method, "/api/search")
        assert r.status_code in (404, 405), (method, r.status_code)
    assert client.head("/api/health").status_code in (200, 405)


def test_a_metadata_path_must_be_a_regular_file(client, site: dict) -> None:
    fifo = site["root"] / "meta.fifo"
    os.mkfifo(fifo)  # reading it would block the writer for ever
    body = {"paths": [str(site["root"] / "photos")], "metadata": str(fifo)}
    r = client.post("/api/images/paths", headers=AUTH, json=body)
    assert r.status_code == 400 and "regular file" in r.json()["detail"]
    body["metadata"] = str(site["root"])
    assert client.post("/api/images/paths", headers=AUTH, json=body).status_code == 400
    r = client.post("/api/images/paths", headers=AUTH, json={"paths": ["/nowhere"] * 1001})
    assert r.status_code == 400 and "at most" in r.json()["detail"]
    assert client.get("/api/health").json()["jobs_active"] == 0


def test_the_server_still_answers(client) -> None:
    """After everything above."""
    assert client.get("/api/health").json()["status"] == "ok"
    assert json.loads(client.get("/api/stats").text)["limits"]["url_fetch"] is False
    assert os.path.isdir(client.app.state.server.config.db)
