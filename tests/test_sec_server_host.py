"""`lookalike serve` answers only to its own host names (DNS rebinding) and refuses changing
requests from other sites' pages (CSRF) (issue #14, item 6). Driven against the middleware
around a tiny app, and through the real app once to show it is in place."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from lookalike.server.app import ServerConfig
from lookalike.server.middleware import HostCheck as _HostCheck
from lookalike.server.middleware import split_host


def _client(tmp_path: Path, **options) -> TestClient:
    async def hello(request) -> JSONResponse:
        return JSONResponse({"ok": True})

    inner = Starlette(routes=[Route("/", hello, methods=["GET", "POST", "DELETE"])])
    config = ServerConfig(db=tmp_path / "index", token="t", **options)
    return TestClient(_HostCheck(inner, config), base_url="http://localhost")


def test_forged_host_names_are_refused(tmp_path: Path) -> None:
    client = _client(tmp_path)
    for host in (
        "evil.example",
        "evil.example:8000",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "attacker",
        "10.0.0.7:8000",  # an IP, but this server listens on loopback only
        "",
        "local host",
        "[::1",
        "localhost:80:80",
        "localhost:http",
        "lo\u0441alhost",  # a Cyrillic letter
    ):
        r = client.get("/", headers={"Host": host.encode()})
        assert r.status_code == 400, host
        assert "--allow-host" in r.json()["detail"], host


def test_loopback_names_and_the_bound_host_are_accepted(tmp_path: Path) -> None:
    client = _client(tmp_path, host="192.168.1.20")
    for host in (
        "localhost",
        "localhost:8000",
        "LOCALHOST:8000",
        "localhost.",
        "127.0.0.1",
        "127.0.0.1:8000",
        "127.0.0.2:8000",
        "[::1]",
        "[::1]:8000",
        "192.168.1.20:8000",
    ):
        r = client.get("/", headers={"Host": host})
        assert r.status_code == 200, host


def test_allow_host_adds_names_and_star_turns_the_check_off(tmp_path: Path) -> None:
    client = _client(tmp_path, allow_hosts=["photos.lan", "Shop.Example.COM"])
    assert client.get("/", headers={"Host": "photos.lan:8000"}).status_code == 200
    assert client.get("/", headers={"Host": "shop.example.com"}).status_code == 200
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    client = _client(tmp_path, allow_hosts=["*"])
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 200


def test_listening_on_every_address_accepts_ip_addresses_not_names(tmp_path: Path) -> None:
    client = _client(tmp_path, host="0.0.0.0")
    assert client.get("/", headers={"Host": "10.0.0.7:8000"}).status_code == 200
    assert client.get("/", headers={"Host": "[2001:db8::5]:8000"}).status_code == 200
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400


def test_two_host_headers_are_refused(tmp_path: Path) -> None:
    client = _client(tmp_path)
    headers = [("Host", "localhost"), ("Host", "evil.example")]
    r = client.get("/", headers=headers)
    assert r.status_code == 400


def test_changing_requests_from_other_sites_are_refused(tmp_path: Path) -> None:
    client = _client(tmp_path, cors_origins=["https://shop.example"])
    host = {"Host": "localhost:8000"}
    for origin in ("https://evil.example", "null", "http://localhost.evil.example", "file://"):
        for method in ("POST", "DELETE"):
            r = client.request(method, "/", headers={**host, "Origin": origin})
            assert r.status_code == 403, (origin, method)
            assert "cross-site" in r.json()["detail"]
        assert client.get("/", headers={**host, "Origin": origin}).status_code == 200  # reads
    for origin in (
        "http://localhost:8000",  # the server's own page
        "http://127.0.0.1:9999",  # another local page
        "https://shop.example",  # allowed with --cors-origin
    ):
        r = client.post("/", headers={**host, "Origin": origin})
        assert r.status_code == 200, origin
    assert client.post("/", headers=host).status_code == 200  # no Origin: not a browser page


def test_a_page_on_some_ip_cannot_drive_a_server_on_every_address(tmp_path: Path) -> None:
    client = _client(tmp_path, host="0.0.0.0")
    r = client.post("/", headers={"Host": "10.0.0.7:8000", "Origin": "http://203.0.113.9"})
    assert r.status_code == 403
    r = client.post("/", headers={"Host": "10.0.0.7:8000", "Origin": "http://10.0.0.7:8000"})
    assert r.status_code == 200


def test_split_host() -> None:
    assert split_host("LocalHost:8000") == ("localhost", "8000")
    assert split_host("[::1]:80") == ("::1", "80")
    assert split_host("::1") == ("::1", "")
    assert split_host("photos.lan.") == ("photos.lan", "")
    for bad in ("", "a b", "[::1", "[nope]", "x:y", "a/b", "a@b", "x:1:2:3", "é.example"):
        assert split_host(bad) is None, bad


def test_cli_allow_host(tmp_path: Path) -> None:
    from lookalike.cli import build_parser

    args = build_parser().parse_args(["serve", "--allow-host", "a.lan", "--allow-host", "*"])
    assert args.allow_host == ["a.lan", "*"]
    assert build_parser().parse_args(["serve"]).allow_host == []
    for bad in ("bad host/", "", "evil.example/path"):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["serve", "--allow-host", bad])
        assert exited.value.code == 2


def test_the_app_checks_the_host(tmp_path: Path) -> None:
    """The real app (no collection needed for health) has the check in place."""
    from lookalike.server import create_app

    config = ServerConfig(db=tmp_path / "index", token="t", readers=1, warm_text=False)
    with TestClient(create_app(config), base_url="http://localhost") as client:
        assert client.get("/api/health").status_code == 200
        r = client.get("/api/stats", headers={"Host": "rebound.evil.example"})
        assert r.status_code == 400
        assert r.headers["x-frame-options"] == "DENY"  # security headers on the refusal too
        r = client.post("/api/search", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_serve_accepts_the_address_it_listens_on(tmp_path: Path, host: str) -> None:
    client = _client(tmp_path, host=host)
    assert client.get("/", headers={"Host": "127.0.0.1:1"}).status_code == 200
