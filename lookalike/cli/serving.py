"""The commands that serve: serve (web page and HTTP API) and demo (sample photos)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lookalike.cli.args import (
    MAX_READERS,
    MAX_UPLOAD_MB,
    MAX_WORKERS,
    host_name,
    int_in,
    megabytes,
    path_arg,
    positive_int,
)
from lookalike.cli.common import CommandError, Commands, common_options, show_progress


def add_serve_parser(commands: Commands, common: argparse.ArgumentParser) -> None:
    """``lookalike serve``."""
    p = commands.add_parser(
        "serve", parents=[common], help="web page and HTTP API: search, filter, dups, check"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument(
        "--port", type=int_in(0, 65535), default=8000, help="port (8000; 0: any free one)"
    )
    p.add_argument(
        "--token",
        help="bearer token for adding and deleting images (default: $LOOKALIKE_TOKEN, "
        "else a new one, printed)",
    )
    p.add_argument(
        "--allow-root",
        action="append",
        default=[],
        metavar="DIR",
        help="allow adding server-side files under DIR (repeatable; default: none)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=megabytes,
        default=20.0,
        help=f"largest request body in MB (20; at most {MAX_UPLOAD_MB:,})",
    )
    p.add_argument(
        "--max-pixels", type=positive_int, help="refuse images larger than this (100,000,000)"
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow cross-origin requests from ORIGIN (repeatable; default: none)",
    )
    p.add_argument(
        "--allow-url-fetch",
        action="store_true",
        help="let clients search by an image URL that the server downloads (off; only public "
        "addresses are fetched, but anyone who reaches the server can make it download)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        type=host_name,
        metavar="NAME",
        help="accept requests that name the server NAME (repeatable; loopback names and --host "
        "always work; '*' turns the Host check against DNS rebinding off)",
    )
    p.add_argument("--readers", type=int_in(1, MAX_READERS), default=2, help="query threads (2)")
    p.add_argument("--workers", type=int_in(1, MAX_WORKERS), help="decode processes when adding")
    p.set_defaults(run=cmd_serve)


def add_demo_parser(commands: Commands, common: argparse.ArgumentParser) -> None:
    """``lookalike demo``."""
    p = commands.add_parser(
        "demo", parents=[common], help="index built-in sample photos and search them"
    )
    p.add_argument(
        "--dir",
        default="demo-data",
        type=path_arg,
        help="folder for the demo photos and index (./demo-data)",
    )
    p.add_argument(
        "--serve", action="store_true", help="then serve the demo collection (lookalike serve)"
    )
    p.add_argument("--host", default="127.0.0.1", help="with --serve: address (127.0.0.1)")
    p.add_argument("--port", type=int_in(0, 65535), default=8000, help="with --serve: port (8000)")
    p.set_defaults(run=cmd_demo)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the web page and HTTP API until interrupted."""
    import lookalike
    from lookalike.collection import default_location
    from lookalike.server import ServerConfig, serve
    from lookalike.server.app import DEFAULT_MAX_PIXELS

    token, source = args.token, "--token"
    if not token and os.environ.get("LOOKALIKE_TOKEN"):
        token, source = os.environ["LOOKALIKE_TOKEN"], "$LOOKALIKE_TOKEN"
    for root in args.allow_root:
        if not Path(root).expanduser().is_dir():
            raise CommandError(f"--allow-root {root}: no such folder")
    db = Path(args.db).expanduser() if args.db else default_location()
    lookalike.open(db, create=True).close()
    config = ServerConfig(
        db=db,
        allow_roots=[Path(r) for r in args.allow_root],
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        cors_origins=args.cors_origin,
        allow_url_fetch=args.allow_url_fetch,
        host=args.host,
        allow_hosts=args.allow_host,
        readers=args.readers,
        workers=args.workers,
        **({"token": token} if token else {}),
    )
    return serve(
        config, args.host, args.port, token_source=source if token else "generated",
        quiet=args.quiet,
    )  # fmt: skip


def cmd_demo(args: argparse.Namespace) -> int:
    """Index the built-in sample photos and search them (``--serve``: then serve them)."""
    from lookalike.demo import run_demo

    status = run_demo(Path(args.dir), as_json=args.json, progress=show_progress(args))
    if not args.serve:
        return status
    serve = ["serve", "--db", str(Path(args.dir) / "index"), "--allow-root", args.dir]
    serve += ["--host", args.host, "--port", str(args.port)] + (["-q"] if args.quiet else [])
    print(flush=True)
    return cmd_serve(_serve_parser().parse_args(serve))


def _serve_parser() -> argparse.ArgumentParser:
    """A parser of ``lookalike serve`` alone (what ``demo --serve`` passes on)."""
    parser = argparse.ArgumentParser(prog="lookalike")
    add_serve_parser(parser.add_subparsers(dest="command", required=True), common_options())
    return parser
