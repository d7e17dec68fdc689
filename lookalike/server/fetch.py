"""Download a query image from a public http(s) URL, safely (``serve --allow-url-fetch``).

The server fetches on behalf of any client that reaches it, so a fetch must not become a way
into the server's own network (SSRF):

* only ``http`` and ``https``, without user names in the URL;
* the host name is resolved here and every address it resolves to must be public (global
  unicast): loopback, private, link-local, carrier-grade NAT, multicast, reserved,
  unspecified, and IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4, Teredo) are
  refused. The connection goes to the address that was checked (the request still names the
  host, and TLS checks its certificate), so a second DNS answer cannot swap in another one;
* redirects are followed by hand, at most :data:`MAX_REDIRECTS`, each checked the same way;
* one deadline for the whole fetch (resolving, connecting, redirects, headers and body), kept
  by a watchdog that shuts the socket, so a server that sends a byte a second cannot hold it;
* at most ``limit`` bytes;
* every failure raises :class:`FetchFailed` with the same message, so that the answers say
  nothing about which hosts or ports exist.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit, urlunsplit

from lookalike.errors import BadInput

#: seconds for the whole fetch, redirects included
DEADLINE_S = 10.0
MAX_REDIRECTS = 3
MAX_URL = 4096
REDIRECTS = (301, 302, 303, 307, 308)
#: the one message of every failure
FAILED = (
    "url: cannot fetch that URL (only public http and https addresses that answer with an "
    "image in time are fetched; send the image itself instead)"
)

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class FetchFailed(BadInput):
    """The URL was not fetched; ``str()`` is :data:`FAILED`, the reason is in ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(FAILED)
        self.reason = reason


def public_address(address: str) -> bool:
    """Whether the server may connect to ``address``: a global unicast IP address only."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None or ip.sixtofour is not None or ip.teredo is not None:
            return False
        if any(ip in net for net in _NAT64) or int(ip) >> 32 == 0:  # NAT64, IPv4-compatible
            return False
        if ip.is_site_local:
            return False
    bad = (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )
    return ip.is_global and not bad


class _Deadline:
    """Seconds left until the fetch must have ended (``clock`` is swappable for tests)."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.end = clock() + seconds

    def left(self) -> float:
        left = self.end - self.clock()
        if left <= 0:
            raise FetchFailed("deadline passed")
        return left


def _resolve(host: str, port: int, deadline: _Deadline) -> str:
    """A public address of ``host`` (every address it resolves to must be public)."""
    found: dict = {}

    def work() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            found["error"] = exc

    worker = threading.Thread(target=work, name="lookalike-resolve", daemon=True)
    worker.start()
    worker.join(deadline.left())
    if "infos" not in found:
        raise FetchFailed(f"cannot resolve {host!r}: {found.get('error', 'timed out')}")
    addresses = [str(info[4][0]) for info in found["infos"]]
    refused = [a for a in addresses if not public_address(a)]
    if not addresses or refused:
        raise FetchFailed(f"{host!r} resolves to a non-public address {refused[:1]}")
    return addresses[0]


class _Watchdog:
    """Shuts the fetch's socket when the deadline passes, so no blocking read outlives it."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.fired and sock is not None:
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._sock is not None:
                _shutdown(self._sock)

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:  # after this, _fire never touches a socket again
            self._sock = None


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _connection(
    scheme: str, host: str, port: int, address: str, deadline: _Deadline, dog: _Watchdog
) -> http.client.HTTPConnection:
    """A connection to ``address`` that names ``host`` (Host header, TLS server name)."""
    timeout = deadline.left()
    if scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def connect(_address, timeout=None, source_address=None) -> socket.socket:
        sock = socket.create_connection((address, port), deadline.left())
        dog.watch(sock)  # a TLS socket shares its file descriptor: shutting this one stops both
        return sock

    conn._create_connection = connect  # type: ignore[attr-defined]
    return conn


def fetch_url(
    url: str,
    limit: int,
    *,
    deadline_s: float = DEADLINE_S,
    clock: Callable[[], float] = time.monotonic,
) -> bytes:
    """The body of a GET of ``url`` (at most ``limit`` bytes); raises :class:`FetchFailed`."""
    deadline = _Deadline(deadline_s, clock)
    dog = _Watchdog(deadline_s)
    try:
        return _fetch(url, limit, deadline, dog)
    except FetchFailed:
        raise
    except (OSError, http.client.HTTPException, ValueError, UnicodeError) as exc:
        raise FetchFailed(f"{type(exc).__name__}: {exc}") from None
    finally:
        dog.stop()


def _fetch(url: str, limit: int, deadline: _Deadline, dog: _Watchdog) -> bytes:
    if len(url) > MAX_URL:
        raise FetchFailed("URL too long")
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise FetchFailed(f"not an http(s) URL: {scheme!r}")
        if parts.username is not None or parts.password is not None:
            raise FetchFailed("a user name in the URL")
        host = (
            parts.hostname.encode("idna").decode("ascii")
            if ":" not in parts.hostname
            else parts.hostname
        )
        port = parts.port or (443 if scheme == "https" else 80)
        address = _resolve(host, port, deadline)
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        conn = _connection(scheme, host, port, address, deadline, dog)
        try:
            conn.request("GET", target, headers={"User-Agent": "lookalike", "Accept": "image/*"})
            response = conn.getresponse()
            if response.status in REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise FetchFailed(f"redirect {response.status} without a Location")
                url = urljoin(url, location.strip())
                continue
            if response.status != 200:
                raise FetchFailed(f"HTTP status {response.status}")
            length = response.getheader("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) > limit:
                raise FetchFailed(f"too large: {length} bytes")
            chunks, size = [], 0
            while True:
                if conn.sock is not None:
                    conn.sock.settimeout(deadline.left())
                chunk = response.read1(65536)
                if dog.fired:
                    raise FetchFailed("deadline passed")
                deadline.left()
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise FetchFailed(f"too large: over {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            dog.watch(None)
            conn.close()
    raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")
