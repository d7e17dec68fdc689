"""ASGI middleware of the server: the upload size limit, the Host and Origin checks (DNS
rebinding, cross-site requests) and the security headers on every response."""

from __future__ import annotations

import ipaddress
import json
import re

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.server.config import ServerConfig

PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


class BodyTooLarge(HTTPException):
    """413: a request body above the upload limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"upload too large: the limit is {limit / 2**20:g} MB")


class BodyLimit:
    """ASGI middleware: 413 for a body above ``limit`` bytes, by header or while reading."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await send_json(send, 413, BodyTooLarge(self.limit).detail, close=True)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as exc:
            if started:
                raise
            await send_json(send, 413, exc.detail, close=True)


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def split_host(value: str) -> tuple[str, str] | None:
    """``(name, port)`` of a Host header or ``--allow-host`` value (name lowercased, without
    brackets or a final dot; port ``""`` if none), or None when it is not a host at all."""
    value = value.strip().lower()
    if value.startswith("["):  # [IPv6] or [IPv6]:port
        name, sep, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
        if not sep or (rest and not rest.startswith(":")) or ":" not in name:
            return None
    elif value.count(":") > 1:  # a bare IPv6 address (a --host or --allow-host value)
        name, port = value, ""
    else:
        name, _, port = value.partition(":")
        name = name[:-1] if name.endswith(".") else name
    if port and not re.fullmatch(r"[0-9]{1,5}", port):
        return None
    if ":" in name:
        return (name, port) if is_ip(name) else None
    if len(name) > 253 or not re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*", name):
        return None
    return name, port


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostCheck:
    """ASGI middleware against DNS rebinding and cross-site requests.

    * The ``Host`` header must name this server: a loopback name, the address it listens on,
      or a name allowed with ``--allow-host`` (when it listens on every address, any IP
      address too); else 400. A page of another site that rebinds its own name to this
      server's address sends its own name, so it is refused.
    * A changing request (not GET/HEAD/OPTIONS) that carries an ``Origin`` must come from a
      page of this server (same host), from an allowed host name, or from a ``--cors-origin``;
      else 403. Browsers add ``Origin`` to every cross-site POST or DELETE.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        allowed = [split_host(h) for h in config.allow_hosts if h.strip() != "*"]
        self.any_host = any(h.strip() == "*" for h in config.allow_hosts)
        bound = split_host(config.host)
        self.names = set(LOOPBACK_NAMES) | {h[0] for h in allowed if h}
        self.any_ip = False
        if bound is not None:
            self.names.add(bound[0])
            if is_ip(bound[0]) and ipaddress.ip_address(bound[0]).is_unspecified:
                self.any_ip = True  # 0.0.0.0 or ::, reached by any of the machine's addresses
        self.origins = {o.rstrip("/").lower() for o in config.cors_origins}

    def name_allowed(self, name: str) -> bool:
        """A loopback name or address, the bound address, or a name given with --allow-host."""
        return name in self.names or (is_ip(name) and ipaddress.ip_address(name).is_loopback)

    def host_allowed(self, host: str) -> bool:
        parts = split_host(host)
        if parts is None:
            return False
        return self.name_allowed(parts[0]) or (self.any_ip and is_ip(parts[0]))

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """Same host as the request, a ``--cors-origin``, or an allowed name (not merely any IP:
        a page from some IP address must not drive a server that listens on every address)."""
        origin = origin.strip().lower().rstrip("/")
        if origin in self.origins:
            return True
        scheme, sep, netloc = origin.partition("://")
        if not sep or scheme not in ("http", "https") or "/" in netloc or "@" in netloc:
            return False
        if host is not None and netloc == host.strip().lower():
            return True  # the server's own page
        parts = split_host(netloc)
        return parts is not None and self.name_allowed(parts[0])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for key, value in scope.get("headers") or []:
            if key in (b"host", b"origin"):
                if key in headers:  # two Host or Origin headers: ambiguous, refused
                    await send_json(send, 400, f"more than one {key.decode()} header", close=True)
                    return
                headers[key] = value
        host = headers[b"host"].decode("latin-1") if b"host" in headers else None
        if host is not None and not self.any_host and not self.host_allowed(host):
            detail = (
                f"this server does not answer to the host name {host[:100]!r}; open it as "
                "http://localhost:PORT/, or start it with --allow-host NAME to accept that name"
            )
            await send_json(send, 400, detail, close=True)
            return
        origin = headers.get(b"origin")
        if (
            origin is not None
            and scope.get("method", "GET") not in ("GET", "HEAD", "OPTIONS")
            and not self.origin_allowed(origin.decode("latin-1"), host)
        ):
            detail = (
                "cross-site request refused: a page of another site cannot change or query this "
                "server (start it with --cors-origin ORIGIN to allow that site)"
            )
            await send_json(send, 403, detail)
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: security headers on every response; the page's CSP on HTML."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if scope["path"] == "/" or scope["path"].startswith("/static/"):
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, add)


async def send_json(send: Send, status: int, detail: str, close: bool = False) -> None:
    """Answer ``{"detail": detail}`` with ``status`` from inside a middleware."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
