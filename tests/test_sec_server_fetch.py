"""`serve --allow-url-fetch` is not an SSRF: only public addresses, redirects checked, one
deadline, one error message (issue #14, item 7).

No test connects anywhere but 127.0.0.1: name resolution is faked, and any connection the
fetch would open to a refused address fails the test.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from lookalike.server import fetch
from lookalike.server.fetch import FAILED, FetchFailed, fetch_url, public_address

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.5",
    "172.16.3.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",  # site-local
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:db8::1",  # documentation
    "not-an-address",
]


def _infos(*addresses: str, port: int = 80) -> list:
    out = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
        out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
    return out


def _resolver(*addresses: str, asked: list | None = None):
    """A fake ``socket.getaddrinfo`` answering ``addresses`` for any name."""

    def resolve(host, port, *args, **kwargs) -> list:
        if asked is not None:
            asked.append(host)
        return _infos(*addresses, port=int(port or 0))

    return resolve


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list:
    """Fail the test if the fetch opens any connection."""
    tried: list = []

    def refuse(address, *args, **kwargs):
        tried.append(address)
        raise AssertionError(f"the fetch connected to {address}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return tried


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not public_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert public_address(address)


@pytest.mark.parametrize("address", [a for a in REFUSED if a != "not-an-address"])
def test_a_name_that_resolves_to_a_private_address_is_never_connected(
    address: str, monkeypatch: pytest.MonkeyPatch, no_connections: list
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolver(address))
    with pytest.raises(FetchFailed) as caught:
        fetch_url("http://images.example/cat.jpg", 1000)
    assert str(caught.value) == FAILED
    assert no_connections == []


def test_one_private_answer_among_public_ones_is_refused(
    monkeypatch: pytest.MonkeyPatch, no_connections: list
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolver("8.8.8.8", "10.1.2.3"))
    with pytest.raises(FetchFailed):
        fetch_url("https://images.example/cat.jpg", 1000)
    assert no_connections == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://0x7f.1/",
        "http://0/",
        "http://[::1]:8000/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost/",
        "ftp://example.com/cat.jpg",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://user:secret@example.com/",
        "http:///nohost",
        "http://example.com:99999/",
        "http://" + "a" * 5000 + ".example/",
    ],
)
def test_urls_that_are_refused_before_any_connection(url: str, no_connections: list) -> None:
    with pytest.raises(FetchFailed) as caught:
        fetch_url(url, 1000)
    assert str(caught.value) == FAILED
    assert no_connections == []


def test_the_route_gives_one_message_for_every_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A closed port, an open one that answers 404 and a private address read the same."""
    from fastapi import HTTPException

    from lookalike.server.queries import fetch_image as _fetch

    monkeypatch.setattr(fetch, "public_address", lambda address: address == "127.0.0.1")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    details = set()
    with _server(lambda handler: handler.send_error(404)) as open_port:
        for url in (
            f"http://127.0.0.1:{port}/x.jpg",
            f"http://127.0.0.1:{open_port}/x.jpg",
            "http://10.0.0.1/x.jpg",
        ):
            with pytest.raises(HTTPException) as caught:
                _fetch(url, 1000)
            assert caught.value.status_code == 400
            details.add(caught.value.detail)
    assert details == {FAILED}


# -- against a local server (loopback allowed for these tests only) ------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    respond = staticmethod(lambda handler: None)
    seen: list

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append((self.path, self.headers.get("Host")))
        self.respond(self)

    def log_message(self, *args) -> None:
        pass


class _server:
    """A one-purpose HTTP server on 127.0.0.1; ``respond(handler)`` answers every GET."""

    def __init__(self, respond) -> None:
        handler = type("H", (_Handler,), {"respond": staticmethod(respond), "seen": []})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.seen = handler.seen

    def __enter__(self) -> int:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.httpd.server_port

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list:
    """Treat 127.0.0.1 as public; record every connection (and fail on any other address)."""
    monkeypatch.setattr(fetch, "public_address", lambda address: address == "127.0.0.1")
    real = socket.create_connection
    opened: list = []

    def connect(address, *args, **kwargs):
        assert address[0] == "127.0.0.1", address
        opened.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", connect)
    return opened


def _body(data: bytes):
    def respond(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return respond


def _redirect(location: str):
    def respond(handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return respond


def test_fetches_a_public_url_by_the_checked_address_naming_the_host(
    monkeypatch: pytest.MonkeyPatch, loopback_only: list
) -> None:
    answers: list = []
    monkeypatch.setattr(socket, "getaddrinfo", _resolver("127.0.0.1", asked=answers))
    with _server(_body(b"picture")) as port:
        data = fetch_url(f"http://images.example:{port}/cat.jpg?x=1", 1000)
    assert data == b"picture"
    assert answers.count("images.example") == 1  # the name is resolved once, by the fetch
    assert loopback_only == [("127.0.0.1", port)]  # connected to the address it checked


def test_the_request_names_the_original_host(
    monkeypatch: pytest.MonkeyPatch, loopback_only: list
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolver("127.0.0.1"))
    server = _server(_body(b"ok"))
    with server as port:
        fetch_url(f"http://images.example:{port}/a.jpg", 100)
    assert server.seen == [("/a.jpg", f"images.example:{port}")]


def test_redirects_are_checked_at_every_hop(loopback_only: list) -> None:
    for location in (
        "ftp://127.0.0.1/x.jpg",
        "file:///etc/passwd",
        "http://10.0.0.1/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.jpg",
    ):
        with _server(_redirect(location)) as port, pytest.raises(FetchFailed) as caught:
            fetch_url(f"http://127.0.0.1:{port}/start", 1000)
        assert str(caught.value) == FAILED, location
    assert all(address[0] == "127.0.0.1" for address in loopback_only)


def test_redirects_are_followed_a_few_times_only(loopback_only: list) -> None:
    hops = []

    def respond(handler) -> None:
        hops.append(handler.path)
        _redirect(f"/hop{len(hops)}")(handler)

    with _server(respond) as port, pytest.raises(FetchFailed):
        fetch_url(f"http://127.0.0.1:{port}/start", 1000)
    assert len(hops) == fetch.MAX_REDIRECTS + 1
    # one hop (to a public address, here the same server) is followed
    good = _server(lambda h: (_redirect("/b") if h.path == "/a" else _body(b"img"))(h))
    with good as port:
        assert fetch_url(f"http://127.0.0.1:{port}/a", 100) == b"img"


def test_the_size_is_capped(loopback_only: list) -> None:
    with _server(_body(b"x" * 5000)) as port, pytest.raises(FetchFailed):
        fetch_url(f"http://127.0.0.1:{port}/big", 1000)

    def no_length(handler) -> None:  # no Content-Length: counted while reading
        handler.send_response(200)
        handler.end_headers()
        for _ in range(50):
            handler.wfile.write(b"y" * 100)
        handler.close_connection = True

    with _server(no_length) as port, pytest.raises(FetchFailed) as caught:
        fetch_url(f"http://127.0.0.1:{port}/big", 1000)
    assert "too large" in caught.value.reason


@pytest.fixture
def dripping() -> Iterator[int]:
    """A server on 127.0.0.1 that sends a 200 with a long body one byte at a time."""
    stop = threading.Event()

    def respond(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.flush()
        while not stop.is_set():
            try:
                handler.wfile.write(b"x")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.02)

    with _server(respond) as port:
        yield port
        stop.set()


def test_one_deadline_for_the_whole_fetch(dripping: int, loopback_only: list) -> None:
    """Each read gets a byte quickly, but the whole body would take far longer than the
    deadline: a fake clock that moves 1 s per look ends the fetch after about 10 looks."""
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    with pytest.raises(FetchFailed) as caught:
        fetch_url(f"http://127.0.0.1:{dripping}/slow.jpg", 10**6, deadline_s=10, clock=clock)
    assert caught.value.reason == "deadline passed"
    assert now[0] <= 12  # the clock was read a handful of times: it gave up at the deadline


def test_a_server_that_never_finishes_its_headers_is_cut_off(loopback_only: list) -> None:
    """The watchdog shuts the socket at the deadline, even inside a blocking read."""
    stop = threading.Event()

    def respond(handler) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 100_000:
            if stop.is_set():
                return
            try:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.02)

    result: dict = {}

    def run(port: int) -> None:
        try:
            fetch_url(f"http://127.0.0.1:{port}/slow.jpg", 1000, deadline_s=0.5)
        except FetchFailed as exc:
            result["reason"] = exc.reason

    with _server(respond) as port:
        worker = threading.Thread(target=run, args=(port,), daemon=True)
        worker.start()
        worker.join(60)  # a generous bound: without the watchdog it would take ~30 minutes
        stop.set()
    assert not worker.is_alive(), "the fetch outlived its deadline"
    assert "reason" in result
