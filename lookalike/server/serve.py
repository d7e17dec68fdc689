"""Run the app with uvicorn on a socket bound first, so that the printed address is right."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import sys
from collections.abc import Callable

from lookalike.server.app import ServerConfig, create_app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def serve(
    config: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    token_source: str = "generated",
    log_level: str = "warning",
    quiet: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Serve ``config.db`` on ``host:port`` until interrupted; returns an exit status."""
    import uvicorn

    try:
        sock = bind(host, port)
    except OSError as exc:
        print(f"lookalike: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if config.host != host:  # the Host header check accepts the address listened on
        config = dataclasses.replace(config, host=host)
    app = create_app(config)
    url = address_of(sock)
    if quiet:
        print(url, flush=True)
        if token_source == "generated":
            print(f"token {config.token}", flush=True)
    else:
        print(f"lookalike: serving {config.db}", flush=True)
        print(f"  open      {url}", flush=True)
        print(f"  API docs  {url}docs", flush=True)
        if token_source == "generated":
            print(
                f"  token     {config.token}   (for adding and deleting images; "
                "set --token or $LOOKALIKE_TOKEN to choose one)",
                flush=True,
            )
        else:
            print(f"  token     from {token_source}", flush=True)
        if config.allow_roots:
            print(
                "  server-side paths allowed under: "
                + ", ".join(str(r) for r in config.allow_roots),
                flush=True,
            )
        if not _is_loopback(host):
            print(f"  warning: listening on {host}, reachable from other machines", flush=True)
        if config.allow_hosts and "*" not in [h.strip() for h in config.allow_hosts]:
            print("  host names accepted too: " + ", ".join(config.allow_hosts), flush=True)
        if config.allow_url_fetch:
            print(
                "  warning: --allow-url-fetch lets anyone who reaches the server make it "
                "download public URLs",
                flush=True,
            )
        print("  Ctrl+C stops it.", flush=True)
    if "*" in [h.strip() for h in config.allow_hosts]:
        print(
            "lookalike: warning: --allow-host '*' turns off the Host check: any web page the "
            "user opens can read this collection (DNS rebinding)",
            file=sys.stderr,
            flush=True,
        )
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5, access_log=False)
    )
    if on_ready is not None:
        on_ready(url)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0
