"""The HTTP API and the web page of ``lookalike serve`` (FastAPI; OpenAPI docs at ``/docs``).

Stable core that clients rely on:

* ``POST /api/search?k=N`` with a multipart field ``image`` ->
  ``{"results": [{"id", "path", "score", "metadata", ...}]}``, best first;
* ``DELETE /api/images/{id}`` removes an image (bearer token);
* ``GET /api/health``.

Around it: search by an indexed image (``/api/search/by-id/{id}``), one image's metadata,
thumbnail and large view by id, adding images (upload, or server-side paths under an allowed
root) as jobs with progress, duplicates, copy check, stats, filters. Errors are JSON,
``{"detail": "message"}``, with the fitting status.

Safe by default: changing endpoints need ``Authorization: Bearer TOKEN`` (401 without);
request bodies above the upload limit get 413 (checked from ``Content-Length`` and while
reading); images are decoded with a pixel limit; files are served by image id only, never one
whose link leads out of the allowed folders; requests must name this server as ``Host`` (DNS
rebinding) and changing ones must not come from another site's page; no URL is fetched unless
``allow_url_fetch`` (then public addresses only); no CORS unless origins are given.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from lookalike.filters import load_json
from lookalike.server.engine import (
    FORMAT_SUFFIX,
    AddProgress,
    FileRecord,
    Forbidden,
    Job,
    NotFound,
    ReaderPool,
    Writer,
    file_record,
    folders_of,
    metadata_of,
    unique_name,
)

log = logging.getLogger("lookalike.server")

STATIC = Path(__file__).parent / "static"
MAX_K = 500
THUMB_SIZES = (128, 256, 384, 512)
VIEW_MAX = 1600
#: pixel limit for uploaded and served images (decompression bombs), unless configured
DEFAULT_MAX_PIXELS = 100_000_000
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


@dataclass
class ServerConfig:
    """What ``lookalike serve`` was started with."""

    db: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    allow_roots: list[Path] = field(default_factory=list)
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    cors_origins: list[str] = field(default_factory=list)
    allow_url_fetch: bool = False
    readers: int = 2
    threads: int | None = None  # inference threads per reader (default: cores / readers)
    workers: int | None = None  # decode processes of an add (default: one per core)
    warm_text: bool = True  # prepare the text model at start, so the first text query is quick
    upload_dir: Path | None = None  # default: DB/uploads
    thumb_dir: Path | None = None  # default: DB/thumbs
    #: the address the server listens on; requests must name it (or a loopback name) as Host
    host: str = "127.0.0.1"
    #: more host names that clients may use (``--allow-host``); ``"*"`` turns the check off
    allow_hosts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.db = Path(self.db).expanduser().absolute()
        self.allow_roots = [Path(os.path.realpath(Path(r).expanduser())) for r in self.allow_roots]
        self.upload_dir = Path(self.upload_dir or self.db / "uploads").absolute()
        self.thumb_dir = Path(self.thumb_dir or self.db / "thumbs").absolute()
        if self.threads is None:
            self.threads = max(1, (os.cpu_count() or 1) // max(1, self.readers))


# -- errors ------------------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"upload too large: the limit is {limit / 2**20:g} MB")


def _image_error(exc: Exception) -> HTTPException:
    reason = getattr(exc, "reason", None) or str(exc)
    status = 413 if reason.startswith("too big") else 400
    return HTTPException(status, f"not a usable image: {reason}")


def _raise_for(exc: BaseException) -> None:
    """Turn the library's exceptions into HTTP errors (re-raises anything else)."""
    from lookalike.catalog import CatalogError, StorageUnavailable
    from lookalike.features.registry import UnknownFeature
    from lookalike.images import ImageError
    from lookalike.lock import LockedError

    if isinstance(exc, HTTPException):
        raise exc
    if isinstance(exc, ImageError):
        raise _image_error(exc) from None
    if isinstance(exc, NotFound | FileNotFoundError):
        raise HTTPException(404, str(exc)) from None
    if isinstance(exc, Forbidden):
        raise HTTPException(403, str(exc)) from None
    if isinstance(exc, LockedError):
        raise HTTPException(409, str(exc)) from None
    if isinstance(exc, StorageUnavailable):  # read-only, damaged or full index folder
        raise HTTPException(503, str(exc)) from None
    if isinstance(exc, UnknownFeature | CatalogError | ValueError):  # FilterError is one
        raise HTTPException(400, str(exc)) from None
    raise exc


class _BodyLimit:
    """ASGI middleware: 413 for a body above ``limit`` bytes, by header or while reading."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _json(send, 413, BodyTooLarge(self.limit).detail, close=True)
            return
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracked(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as exc:
            if started:
                raise
            await _json(send, 413, exc.detail, close=True)


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
        return (name, port) if _is_ip(name) else None
    if len(name) > 253 or not re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*", name):
        return None
    return name, port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class _HostCheck:
    """ASGI middleware against DNS rebinding and cross-site requests.

    * The ``Host`` header must name this server: a loopback name, the address it listens on,
      or a name allowed with ``--allow-host`` (when it listens on every address, any IP
      address too); else 400. A page of another site that rebinds its own name to this
      server's address sends its own name, so it is refused.
    * A changing request (not GET/HEAD/OPTIONS) that carries an ``Origin`` must come from a
      page of this server (same host), from an allowed host name, or from a ``--cors-origin``;
      else 403. Browsers add ``Origin`` to every cross-site POST or DELETE.
    """

    def __init__(self, app, config: ServerConfig) -> None:
        self.app = app
        allowed = [split_host(h) for h in config.allow_hosts if h.strip() != "*"]
        self.any_host = any(h.strip() == "*" for h in config.allow_hosts)
        bound = split_host(config.host)
        self.names = set(LOOPBACK_NAMES) | {h[0] for h in allowed if h}
        self.any_ip = False
        if bound is not None:
            self.names.add(bound[0])
            if _is_ip(bound[0]) and ipaddress.ip_address(bound[0]).is_unspecified:
                self.any_ip = True  # 0.0.0.0 or ::, reached by any of the machine's addresses
        self.origins = {o.rstrip("/").lower() for o in config.cors_origins}

    def name_allowed(self, name: str) -> bool:
        """A loopback name or address, the bound address, or a name given with --allow-host."""
        return name in self.names or (_is_ip(name) and ipaddress.ip_address(name).is_loopback)

    def host_allowed(self, host: str) -> bool:
        parts = split_host(host)
        if parts is None:
            return False
        return self.name_allowed(parts[0]) or (self.any_ip and _is_ip(parts[0]))

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

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for key, value in scope.get("headers") or []:
            if key in (b"host", b"origin"):
                if key in headers:  # two Host or Origin headers: ambiguous, refused
                    await _json(send, 400, f"more than one {key.decode()} header", close=True)
                    return
                headers[key] = value
        host = headers[b"host"].decode("latin-1") if b"host" in headers else None
        if host is not None and not self.any_host and not self.host_allowed(host):
            detail = (
                f"this server does not answer to the host name {host[:100]!r}; open it as "
                "http://localhost:PORT/, or start it with --allow-host NAME to accept that name"
            )
            await _json(send, 400, detail, close=True)
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
            await _json(send, 403, detail)
            return
        await self.app(scope, receive, send)


class _Headers:
    """ASGI middleware: security headers on every response; the page's CSP on HTML."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add(message):
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


async def _json(send, status: int, detail: str, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- parameters shared by routes -----------------------------------------------------------------

bearer = HTTPBearer(auto_error=False, description="the token printed by `lookalike serve`")

K = Annotated[int, Query(ge=1, le=MAX_K, description="how many results")]
Where = Annotated[
    str | None,
    Query(
        description='metadata filter: an expression (`category = "shoes" and price < 50`) '
        'or a JSON object (`{"category": "shoes", "price": {"lt": 50}}`)'
    ),
]
Folder = Annotated[str | None, Query(description="only images inside this folder")]
MAX_TEXT = 500
MAX_PATHS = 1000
OUTSIDE_ROOTS = (
    "this image's file is a link that leads outside the allowed folders, so it is not read; "
    "index the real file instead"
)

Wait = Annotated[bool, Query(description="answer when the job has finished")]


# -- response models (for the OpenAPI docs) ----------------------------------------------------


class Hit(BaseModel):
    id: int = Field(description="the image's id (a file of the collection)")
    path: str
    score: float = Field(description="similarity, larger is closer (cosine for deep)")
    distance: float = 0.0
    width: int = 0
    height: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)


class TextInfo(BaseModel):
    text: str = Field(description="the words searched for")
    model: str = Field(description='"concepts" (built in) or "clip-onnx:DIR"')
    matched: bool = Field(description="false when the words name nothing the model knows")
    concepts: list[dict[str, Any]] = Field(
        default_factory=list, description="the ImageNet concepts the words were read as"
    )
    weight: float | None = Field(None, description="the text's share of the score, with an image")
    warning: str | None = Field(None, description="why the results may be unreliable")


class SearchResponse(BaseModel):
    results: list[Hit] = Field(description="best first")
    took_ms: float = 0.0
    text: TextInfo | None = Field(None, description="how a text query was read (text searches)")


class Health(BaseModel):
    status: str
    version: str
    ready: bool
    jobs_active: int


class ImageInfo(BaseModel):
    id: int
    path: str
    size: int
    mtime: float
    content_id: int
    width: int
    height: int
    metadata: dict[str, Any] = Field(default_factory=dict)
    thumbnail: str
    view: str


class JobInfo(BaseModel):
    id: str
    kind: str
    status: str = Field(description="queued | running | done | failed")
    done: int
    total: int | None
    progress: float | None
    message: str
    result: dict[str, Any] | None
    error: str | None
    created: float
    started: float | None
    finished: float | None


class PathsRequest(BaseModel):
    paths: list[str] = Field(description="files or folders on the server, under an allowed root")
    metadata: str | None = Field(
        None, description="a metadata file (CSV or JSON lines) on the server, under an allowed root"
    )


class Deleted(BaseModel):
    deleted: int
    path: str


# -- the app -----------------------------------------------------------------------------------


class Server:
    """What the routes share: configuration, reader pool, writer, caches."""

    def __init__(self, config: ServerConfig) -> None:
        import lookalike

        self.config = config
        with lookalike.open(config.db, create=True):  # a new, empty collection if none
            pass
        self.readers = ReaderPool(config.db, config.readers, config.threads)
        self.writer = Writer(config.db, workers=config.workers)
        self.thumbs = Thumbnails(config.thumb_dir, config.max_pixels)
        self._records: OrderedDict[int, FileRecord] = OrderedDict()
        self._records_lock = threading.Lock()
        self._search_params: set[str] | None = None

    def close(self) -> None:
        self.writer.close()
        self.readers.close()

    # records of files by id, cached until the next write
    async def record(self, file_id: int) -> FileRecord:
        with self._records_lock:
            rec = self._records.get(file_id)
            if rec is not None:
                self._records.move_to_end(file_id)
                return rec
        try:
            rec = await self.readers.run(lambda col: file_record(col, file_id))
        except Exception as exc:  # noqa: BLE001
            _raise_for(exc)
        with self._records_lock:
            self._records[file_id] = rec
            while len(self._records) > 10_000:
                self._records.popitem(last=False)
        return rec

    def forget_records(self) -> None:
        with self._records_lock:
            self._records.clear()

    def filter_args(self, col, where: str | None, folder: str | None, method: str) -> dict:
        """Keyword arguments for ``col.<method>`` carrying the filters (400/501 if unusable)."""
        if where is None and not folder:
            return {}
        params = inspect.signature(getattr(col, method)).parameters
        out: dict = {}
        if where is not None and where.strip():
            if "where" not in params:
                raise HTTPException(501, "this lookalike cannot filter by metadata")
            out["where"] = _parse_where(where)
        if folder:
            if "folder" not in params:
                raise HTTPException(501, "this lookalike cannot filter by folder")
            out["folder"] = folder
        return out

    def check_allowed(self, path: str) -> Path:
        """The real path of ``path`` if it lies under an allowed root; 403 otherwise."""
        if not self.config.allow_roots:
            raise HTTPException(
                403, "adding server-side paths is disabled; start the server with --allow-root DIR"
            )
        if "\0" in path:
            raise HTTPException(400, "a path cannot contain a NUL character")
        real = Path(os.path.realpath(Path(path).expanduser()))
        for root in self.config.allow_roots:
            if real == root or real.is_relative_to(root):
                if not real.exists():
                    raise HTTPException(404, f"no such file or folder: {path}")
                return real
        raise HTTPException(403, f"{path} is outside the allowed roots")

    def _guarded(self) -> tuple[list[str], list[str]]:
        """Folders whose files must really lie inside them: (as written, real), with ``/``."""
        uploads = str(self.config.upload_dir)
        real = [str(r) for r in self.config.allow_roots] + [os.path.realpath(uploads)]
        written = [*real, os.path.abspath(uploads)]
        return [_slash(f) for f in written], [_slash(f) for f in real]

    def inside_roots(self, real: str) -> bool:
        """Whether the real path ``real`` lies inside an allowed root."""
        return any(
            real == str(root) or real.startswith(_slash(str(root)))
            for root in self.config.allow_roots
        )

    def may_serve(self, path: str) -> bool:
        """False for a stored path inside an allowed root or the upload folder whose real
        location (links and ``..`` resolved) is outside all of them; files indexed elsewhere
        (by ``lookalike index``) are the owner's choice and are served."""
        written, real = self._guarded()
        if not any(p.startswith(g) for p in (path, os.path.abspath(path)) for g in written):
            return True
        resolved = os.path.realpath(path)
        return any(resolved.startswith(g) for g in real)

    def vet_paths(self, roots: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
        """What an add of the (allowed, real) ``roots`` may index: a folder as it is, or, when
        some of its files are links that lead outside the allowed roots, its other files one
        by one; and the files left out, with the reason."""
        from lookalike.pipeline import scan

        keep: list[str] = []
        skipped: list[tuple[str, str]] = []
        for root in roots:
            if not os.path.isdir(root):
                keep.append(root)  # a file named directly: check_allowed resolved it
                continue
            files, unreadable, outside = [], [], []
            for path, _st, error in scan([Path(root)]):
                if error is not None:  # reported by the add itself when the folder goes whole
                    unreadable.append((path, error))
                elif self.inside_roots(os.path.realpath(path)):
                    files.append(path)
                else:
                    outside.append(
                        (path, "not indexed: a link to a file outside the allowed roots")
                    )
            if outside:
                keep += files
                skipped += outside + unreadable
            else:
                keep.append(root)
        return keep, skipped


def _slash(folder: str) -> str:
    return folder if folder.endswith(os.sep) else folder + os.sep


def _parse_where(where: str) -> str | dict:
    text = where.strip()
    if text.startswith("{"):
        try:
            value = load_json(text)  # deep nesting: 400, not RecursionError
        except json.JSONDecodeError as exc:
            raise HTTPException(400, f"where: invalid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise HTTPException(400, "where: expected a JSON object")
        return value
    return text


def _warm_text_model() -> None:
    """Load the sentence encoder and embed the concept names (seconds, once per cache)."""
    try:
        from lookalike.text.scoring import default_text_model

        default_text_model().prepare()
    except Exception as exc:  # noqa: BLE001 - text search then reports it on first use
        log.warning("text search not prepared: %s", exc)


def _parse_id(text: str) -> int:
    """An image id from a path parameter: 1 to 18 ASCII digits (404 for anything else, such
    as ``²``, Arabic-Indic or fullwidth digits, which ``int()`` would read as numbers)."""
    if not re.fullmatch(r"[0-9]{1,18}", text):
        raise HTTPException(404, f"no image with id {text!r}: an id is a number (digits 0-9)")
    return int(text)


def _hits(col, matches) -> list[dict]:
    missing = [m.id for m in matches if not hasattr(m, "metadata")]
    extra = metadata_of(col, missing) if missing else {}
    return [
        {
            "id": m.id,
            "path": m.path,
            "score": round(float(m.score), 6),
            "distance": round(float(m.distance), 6),
            "width": m.width,
            "height": m.height,
            "metadata": dict(getattr(m, "metadata", None) or extra.get(m.id) or {}),
        }
        for m in matches
    ]


def _region_box(region: str | None) -> list[float] | None:
    """The query region a copy check matched, as fractions ``[x0, y0, x1, y1]``."""
    if not region:
        return None
    if region in ("whole", "flip"):
        return [0.0, 0.0, 1.0, 1.0]
    if region == "centre70":
        return [0.15, 0.15, 0.85, 0.85]
    m = re.fullmatch(r"grid(\d)_(\d)(\d)_(\d+)", region)
    if not m:
        return None
    n, i, j, keep = int(m[1]), int(m[2]), int(m[3]), int(m[4]) / 100
    x0, y0 = (1 - keep) * j / (n - 1), (1 - keep) * i / (n - 1)
    return [round(x0, 4), round(y0, 4), round(x0 + keep, 4), round(y0 + keep, 4)]


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, dataclasses to dicts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if hasattr(value, "as_dict"):
        return _plain(value.as_dict())
    return value


class Thumbnails:
    """JPEG renditions of indexed images by content hash and size: memory, then disk, then made."""

    def __init__(self, folder: Path, max_pixels: int, memory_items: int = 512) -> None:
        self.folder = folder
        self.max_pixels = max_pixels
        self.memory_items = memory_items
        self._memory: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._making = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))

    def get(self, rec: FileRecord, size: int) -> bytes:
        key = (rec.sha256, size)
        with self._lock:
            data = self._memory.get(key)
            if data is not None:
                self._memory.move_to_end(key)
                return data
        file = self.folder / rec.sha256[:2] / f"{rec.sha256}-{size}.jpg"
        try:
            data = file.read_bytes()
        except OSError:
            with self._making:
                data = self._make(rec.path, size)
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_name(f".{file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, file)
            except OSError:  # a read-only index folder: memory only
                pass
        if size <= max(THUMB_SIZES):
            with self._lock:
                self._memory[key] = data
                while len(self._memory) > self.memory_items:
                    self._memory.popitem(last=False)
        return data

    def _make(self, path: str, size: int) -> bytes:
        import io

        from lookalike.images import ImageError, load_image

        if not os.path.isfile(path):
            raise NotFound(f"the file of this image is gone: {path}")
        try:
            image = load_image(path, min_side=size, max_pixels=self.max_pixels).image
        except ImageError as exc:
            raise NotFound(f"the file of this image cannot be read: {exc.reason}") from None
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85 if size <= 512 else 88, progressive=size > 512)
        return out.getvalue()

    def forget(self, sha256: str) -> None:
        with self._lock:
            for key in [k for k in self._memory if k[0] == sha256]:
                del self._memory[key]
        for file in (self.folder / sha256[:2]).glob(f"{sha256}-*.jpg"):
            file.unlink(missing_ok=True)


def create_app(config: ServerConfig) -> FastAPI:
    """The FastAPI application serving the collection at ``config.db``."""
    from contextlib import asynccontextmanager

    from fastapi_offline import FastAPIOffline

    from lookalike import __version__

    server = Server(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        warm = threading.Thread(target=_warm_text_model, name="warm-text", daemon=True)
        if config.warm_text:
            warm.start()
        yield
        if warm.is_alive():  # never leave it running into interpreter shutdown
            warm.join(timeout=120)
        server.close()

    app = FastAPIOffline(
        title="lookalike",
        version=__version__,
        summary="Search by image: find the same and the most similar images in a collection.",
        description=(__doc__ or "").split("\n\n", 1)[1],
        lifespan=lifespan,
        static_url="/docs-assets",
    )
    app.state.server = server

    def require_token(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        given = (creds.credentials if creds else "").encode()
        if not secrets.compare_digest(given, config.token.encode()):
            raise HTTPException(
                401,
                "this needs the server's token: Authorization: Bearer TOKEN "
                "(printed by `lookalike serve`)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    auth = [Depends(require_token)]

    # -- errors as JSON ------------------------------------------------------------------------

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"not found: {request.url.path}"
        return JSONResponse({"detail": detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, 422)

    from lookalike.catalog import StorageUnavailable

    @app.exception_handler(StorageUnavailable)  # a read-only, damaged or full index folder
    async def unavailable(request: Request, exc: StorageUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 503)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    # -- reading an uploaded query ---------------------------------------------------------------

    async def query_bytes(image: UploadFile | None, url: str | None) -> bytes:
        if image is not None:
            data = await image.read()
        elif url:
            if not config.allow_url_fetch:
                raise HTTPException(
                    403, "fetching URLs is disabled; start the server with --allow-url-fetch"
                )
            data = await run_in_threadpool(_fetch, url, config.max_upload_bytes)
        else:
            raise HTTPException(400, "send the query image in the multipart field 'image'")
        if not data:
            raise HTTPException(400, "not a usable image: empty file")
        return data

    def decode(data: bytes):
        from lookalike.collection import MIN_SIDE
        from lookalike.images import ImageError, load_image

        try:
            return load_image(data, min_side=MIN_SIDE, max_pixels=config.max_pixels).image
        except ImageError as exc:
            raise _image_error(exc) from None

    async def on_reader(fn):
        try:
            return await server.readers.run(fn)
        except Exception as exc:  # noqa: BLE001 - mapped to a status, or re-raised (500)
            _raise_for(exc)

    # -- health, stats, filters -------------------------------------------------------------------

    @app.get("/api/health", response_model=Health, tags=["core"])
    async def health() -> dict:
        """Whether the server is up (cheap: touches no index)."""
        return {
            "status": "ok",
            "version": __version__,
            "ready": server.readers.wait_ready(0),
            "jobs_active": len(server.writer.active),
        }

    @app.get("/api/stats", tags=["collection"])
    async def stats() -> dict:
        """What the collection holds (as `lookalike info --json`), and the running jobs."""

        def work(col):
            out = col.info()
            out["metadata_keys"] = len(col.metadata_keys()) if hasattr(col, "metadata_keys") else 0
            return out

        info = await on_reader(work)
        info["jobs"] = [j.as_dict() for j in server.writer.active]
        info["limits"] = {
            "max_upload_bytes": config.max_upload_bytes,
            "max_pixels": config.max_pixels,
            "server_paths": bool(config.allow_roots),
            "url_fetch": config.allow_url_fetch,
        }
        return _plain(info)

    @app.get("/api/filters", tags=["collection"])
    async def filters() -> dict:
        """What can be filtered on: folders, and metadata keys (type, count, range or values)."""

        def work(col):
            keys = col.metadata_keys() if hasattr(col, "metadata_keys") else {}
            return {"folders": folders_of(col), "metadata": keys}

        return _plain(await on_reader(work))

    # -- search ------------------------------------------------------------------------------------

    @app.post("/api/search", response_model=SearchResponse, tags=["core"])
    async def search(
        k: K = 10,
        where: Where = None,
        folder: Folder = None,
        feature: Annotated[str | None, Query(description="descriptor (default: deep)")] = None,
        image: Annotated[UploadFile | None, File(description="the query image")] = None,
        url: Annotated[str | None, Form(description="an image URL (if enabled)")] = None,
        text: Annotated[
            str | None,
            Form(
                max_length=MAX_TEXT,
                description='search by words ("a cup of espresso"), alone or with `image`',
            ),
        ] = None,
        weight: Annotated[
            float, Form(ge=0.0, le=1.0, description="with `text` and `image`: the text's share")
        ] = 0.5,
    ) -> dict:
        """The `k` indexed images most similar to the uploaded `image`, or that best show what
        `text` names, or both (weighted), best first."""
        text = (text or "").strip() or None
        if text is not None and image is None and not url:
            data = None
        elif text is None and image is None and not url:
            raise HTTPException(
                400, "send the query image in the multipart field 'image', or words in 'text'"
            )
        else:
            data = await query_bytes(image, url)
        started = time.perf_counter()

        def work(col):
            query = decode(data) if data is not None else None
            if text is not None:
                return text_hits(col, text, query, weight, k, where, folder)
            extra = server.filter_args(col, where, folder, "search")
            return _hits(col, col.search(query, k, feature=feature, **extra)), None

        results, how = await on_reader(work)
        took = round((time.perf_counter() - started) * 1e3, 2)
        return {"results": results, "took_ms": took, "text": how}

    def text_hits(
        col, text: str, image, weight: float, k: int, where: str | None, folder: str | None
    ) -> tuple[list, dict]:
        """A text search (with an optional image) on a reader: hits and how the text was read."""
        from lookalike.text.encoder import TextModelMissing

        extra = server.filter_args(col, where, folder, "search_text")
        try:
            found = col.search_text(text, k, image=image, weight=weight, **extra)
        except TextModelMissing as exc:
            raise HTTPException(503, f"text search is not available: {exc}") from None
        how = {
            "text": text,
            "model": found.model,
            "matched": found.matched,
            "concepts": [c.as_dict() for c in found.matched_concepts],
            "weight": weight if image is not None else None,
            "warning": found.warning,
        }
        return _hits(col, found), _plain(how)

    @app.post("/api/search/by-id/{image_id}", response_model=SearchResponse, tags=["search"])
    async def search_by_id(
        image_id: str,
        k: K = 10,
        where: Where = None,
        folder: Folder = None,
        text: Annotated[
            str | None,
            Query(max_length=MAX_TEXT, description="words whose meaning the results share too"),
        ] = None,
        weight: Annotated[
            float, Query(ge=0.0, le=1.0, description="with `text`: the text's share")
        ] = 0.5,
    ) -> dict:
        """More like this: the images most similar to the indexed image `image_id` (and, with
        `text`, that show what the words name)."""
        file_id = _parse_id(image_id)
        text = (text or "").strip() or None
        started = time.perf_counter()

        def work(col):
            from lookalike.features.registry import info as feature_info

            rec = file_record(col, file_id)
            if text is not None:
                if not server.may_serve(rec.path):
                    raise HTTPException(403, OUTSIDE_ROOTS)
                return text_hits(col, text, rec.path, weight, k, where, folder)
            name = col.features[0]  # the stored vector of the index's main feature (deep)
            spec = feature_info(name)
            try:
                vector = col.catalog.vectors_for(name, spec.width, [rec.content_id], spec.dtype)
            except KeyError:
                raise NotFound(f"image {file_id} has no {name} vector yet") from None
            extra = server.filter_args(col, where, folder, "search_vectors")
            # the same ranking as a search with the image itself (col.search's default)
            found = col.search_vectors(vector, k, feature=name, expand=True, **extra)[0]
            return _hits(col, found), None

        results, how = await on_reader(work)
        took = round((time.perf_counter() - started) * 1e3, 2)
        return {"results": results, "took_ms": took, "text": how}

    # -- images by id ------------------------------------------------------------------------------

    @app.get("/api/images/{image_id}", response_model=ImageInfo, tags=["images"])
    async def image_info(image_id: str) -> dict:
        """One image: path, size, dimensions, metadata, and the addresses of its renditions."""
        file_id = _parse_id(image_id)

        def work(col):
            rec = file_record(col, file_id)
            return rec.as_dict() | {"metadata": metadata_of(col, [file_id])[file_id]}

        out = await on_reader(work)
        out["thumbnail"] = f"/api/images/{file_id}/thumbnail"
        out["view"] = f"/api/images/{file_id}/view"
        return _plain(out)

    async def rendition(request: Request, file_id: int, size: int) -> Response:
        rec = await server.record(file_id)
        etag = f'"{rec.sha256[:24]}-{size}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if not await run_in_threadpool(server.may_serve, rec.path):
            raise HTTPException(403, OUTSIDE_ROOTS)
        try:
            data = await run_in_threadpool(server.thumbs.get, rec, size)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(data, media_type="image/jpeg", headers=headers)

    image_responses = {200: {"content": {"image/jpeg": {}}, "description": "a JPEG"}}

    @app.get("/api/images/{image_id}/thumbnail", tags=["images"], responses=image_responses)
    async def thumbnail(
        request: Request,
        image_id: str,
        size: Annotated[int, Query(ge=16, le=1024, description="long side in px")] = 256,
    ) -> Response:
        """A small JPEG of the image (cached; sizes are rounded up to 128, 256, 384 or 512)."""
        file_id = _parse_id(image_id)
        snapped = next((s for s in THUMB_SIZES if s >= size), THUMB_SIZES[-1])
        return await rendition(request, file_id, snapped)

    @app.get("/api/images/{image_id}/view", tags=["images"], responses=image_responses)
    async def view(request: Request, image_id: str) -> Response:
        """The image large (JPEG, long side at most 1600 px), for the big view."""
        return await rendition(request, _parse_id(image_id), VIEW_MAX)

    # -- changing: add, delete, jobs ---------------------------------------------------------------

    def finished(job: Job) -> None:
        server.forget_records()

    def add_job(
        roots: list[str],
        metadata_file: str | None,
        records: list[dict] | None,
        *,
        vet: bool = False,
        upload: Path | None = None,
        outside: int = 0,
    ):
        """The writer's work for an add: ``vet`` for server-side paths (links that leave the
        allowed roots are skipped and reported); ``upload``: the folder of an upload, whose
        files are removed again if the add fails; ``outside``: metadata records left out for
        naming files outside the paths added (reported)."""

        def run(col, job: Job) -> dict:
            from lookalike.pipeline import IndexReport

            try:
                to_add, skipped = server.vet_paths(roots) if vet else (roots, [])
                attached = None
                if records and hasattr(col, "set_metadata"):
                    attached = col.set_metadata(records)
                progress = AddProgress(col.catalog.path, roots, job)
                total = progress.count_work(col.catalog, to_add)
                job.message = f"indexing {total} files"
                kwargs: dict = {"workers": config.workers}
                if metadata_file:
                    kwargs["metadata"] = metadata_file
                with progress:
                    report = col.add(to_add, **kwargs) if to_add else IndexReport()
                report.errors += skipped[:1000]
                if attached is not None or outside:
                    report.metadata = (attached or {}) | {"outside_paths": outside}
                job.done = job.total or job.done
                ids = []
                for root in roots:
                    ids += [
                        {"id": row.id, "path": row.path}
                        for row in col.catalog.files_under(root)
                        if row.content_id is not None
                    ][:1000]
                job.message = (
                    f"{report.embedded} new, {report.linked} linked, {report.unchanged} unchanged, "
                    f"{report.failed} failed"
                ) + (f", {len(skipped)} skipped (see errors)" if skipped else "")
                return _plain(report.as_dict()) | {
                    "images": col.catalog.count_images(),
                    "files": ids,
                    "skipped": len(skipped),
                }
            except BaseException:
                if upload is not None:  # a refused or failed upload leaves no files behind
                    _drop_upload(upload, col)
                raise
            finally:
                finished(job)

        return run

    async def job_response(job: Job, wait: bool) -> JSONResponse:
        if wait:
            await asyncio.to_thread(job.wait, 600)
        if job.status == "failed" and wait:
            return JSONResponse({"detail": job.error, "job": job.as_dict()}, job.error_status)
        status = 200 if job.status in ("done", "failed") else 202
        return JSONResponse(_plain(job.as_dict()), status)

    @app.post(
        "/api/images",
        tags=["images"],
        dependencies=auth,
        status_code=202,
        response_model=JobInfo,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["files"],
                            "properties": {
                                "files": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "binary"},
                                },
                                "metadata": {
                                    "type": "string",
                                    "description": "a JSON object of metadata for every file",
                                },
                            },
                        }
                    }
                },
            }
        },
    )
    async def add_upload(request: Request, wait: Wait = False) -> JSONResponse:
        """Upload images (multipart field `files`, repeated) and index them, as a job.

        Each file is checked to be a usable image first (400 if not). The files are kept in the
        server's upload folder. Answers 202 with the job; poll `GET /api/jobs/{id}`.
        """
        try:
            form = await request.form(max_files=1000, max_fields=100)
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - a malformed multipart body
            raise HTTPException(400, f"cannot read the upload: {exc}") from None
        uploads = [f for key in ("files", "file", "image") for f in form.getlist(key)]
        uploads = [f for f in uploads if not isinstance(f, str)]
        if not uploads:
            raise HTTPException(400, "send the images in the multipart field 'files'")
        shared: dict = {}
        if form.get("metadata"):
            text = form.get("metadata")
            if not isinstance(text, str):
                raise HTTPException(400, "metadata: expected a JSON object as text, not a file")
            try:
                shared = load_json(text)  # deep nesting: 400, not RecursionError
            except json.JSONDecodeError as exc:
                raise HTTPException(400, f"metadata: invalid JSON: {exc}") from None
            if not isinstance(shared, dict):
                raise HTTPException(400, "metadata: expected a JSON object")
            try:
                from lookalike.metadata import normalize_records

                normalize_records([{**shared, "path": "/check"}])
            except ImportError:
                pass
            except ValueError as exc:
                raise HTTPException(400, f"metadata: {exc}") from None
        blobs = [(f.filename or "upload", await f.read()) for f in uploads]
        folder = config.upload_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        try:
            saved = await run_in_threadpool(_save_uploads, blobs, folder, config.max_pixels)
        except OSError as exc:  # a read-only or full upload folder: the server's storage
            raise HTTPException(503, f"cannot save the upload: {exc.strerror}: {folder}") from None
        # each file's own path, never a "path" inside the metadata, says where it goes
        records = [{**shared, "path": str(p)} for p in saved] if shared else None
        job = server.writer.submit("add", add_job([str(folder)], None, records, upload=folder))
        if job.status == "failed":  # never ran (the server is stopping): keep no files
            await run_in_threadpool(_drop_upload, folder, None)
        job.total = len(saved)
        return await job_response(job, wait)

    @app.post(
        "/api/images/paths",
        tags=["images"],
        dependencies=auth,
        status_code=202,
        response_model=JobInfo,
    )
    async def add_paths(body: PathsRequest, wait: Wait = False) -> JSONResponse:
        """Index files or folders on the server (under a root allowed by `--allow-root`)."""
        if not body.paths:
            raise HTTPException(400, "paths: give at least one file or folder")
        if len(body.paths) > MAX_PATHS:
            raise HTTPException(400, f"paths: at most {MAX_PATHS} per request (give folders)")
        roots = [str(server.check_allowed(p)) for p in body.paths]
        meta = str(server.check_allowed(body.metadata)) if body.metadata else None
        if meta is not None and not os.path.isfile(meta):  # a folder, a FIFO, a device
            raise HTTPException(400, "metadata: not a regular file (give a CSV or JSON lines file)")
        records, outside = None, 0
        if meta is not None:  # only rows for files under the paths added: no rows elsewhere
            records, outside = await asyncio.to_thread(_metadata_inside, meta, roots)
        job = server.writer.submit("add", add_job(roots, None, records, vet=True, outside=outside))
        return await job_response(job, wait)

    @app.delete("/api/images/{image_id}", tags=["core"], dependencies=auth, response_model=Deleted)
    async def delete_image(image_id: str) -> JSONResponse:
        """Remove the image from the collection (a file in the upload folder is deleted too;
        other files stay on disk). Waits up to 60 s for the writer, else answers 202 + job."""
        file_id = _parse_id(image_id)

        def run(col, job: Job) -> dict:
            try:
                rec = file_record(col, file_id)
                col.remove([rec.path])
                from lookalike.catalog import normal_path, path_inside

                # the server's own copy (inside uploads/ as written and once links are
                # resolved): gone with its metadata; nothing outside is ever deleted
                if path_inside(rec.path, config.upload_dir):
                    Path(normal_path(rec.path)).unlink(missing_ok=True)
                    if hasattr(col, "clear_metadata"):
                        col.clear_metadata([rec.path])
                if not col.catalog.hits_for_contents([rec.content_id]):
                    server.thumbs.forget(rec.sha256)
                return {"deleted": file_id, "path": rec.path}
            finally:
                finished(job)

        job = server.writer.submit("delete", run)
        if not await asyncio.to_thread(job.wait, 60):
            return JSONResponse(_plain(job.as_dict()), 202)
        if job.status == "failed":
            raise HTTPException(job.error_status, job.error)
        return JSONResponse(job.result, 200)

    @app.get("/api/jobs/{job_id}", response_model=JobInfo, tags=["images"])
    async def job_status(job_id: str) -> dict:
        """An add or delete job: status, progress (`done` of `total`), result or error."""
        job = server.writer.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return _plain(job.as_dict())

    @app.get("/api/jobs", response_model=list[JobInfo], tags=["images"])
    async def jobs() -> list:
        """Recent jobs, newest first."""
        return [_plain(j.as_dict()) for j in server.writer.recent()]

    # -- duplicates, copy check --------------------------------------------------------------------

    @app.get("/api/duplicates", tags=["analysis"])
    async def duplicates(
        preset: Annotated[str, Query(pattern="^(exact|near|similar)$")] = "near",
        threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    ) -> dict:
        """Groups of duplicates, as `lookalike dups`: keeper first, largest groups first."""

        def work(col):
            from lookalike.dups import find_duplicates

            groups = find_duplicates(col, preset=preset, threshold=threshold)
            out = []
            for group in groups[:limit]:
                files = [
                    {
                        "id": f["id"],
                        "path": f["path"],
                        "width": f["width"],
                        "height": f["height"],
                        "size": f["size"],
                        "mtime": f["mtime"],
                        "keep": f is group.keeper,
                    }
                    for f in group.files
                ]
                out.append({"score": round(float(group.score), 6), "files": files})
            return {
                "preset": preset,
                "threshold": threshold,
                "total_groups": len(groups),
                "total_files": sum(len(g.files) for g in groups),
                "to_remove": sum(len(g.to_remove) for g in groups),
                "groups": out,
            }

        return _plain(await on_reader(work))

    @app.post("/api/check", tags=["analysis"])
    async def check(
        image: Annotated[UploadFile | None, File(description="the suspect image")] = None,
        url: Annotated[str | None, Form(description="an image URL (if enabled)")] = None,
    ) -> dict:
        """Copy check: is the picture a copy of an indexed one? Verdict, score and evidence
        (as `lookalike check --json`), plus the query region that matched (`region_box`)."""
        data = await query_bytes(image, url)

        def work(col):
            from lookalike.check import check_copy

            query = decode(data)
            result = check_copy(col, query)
            best = result.match
            found = None
            if best is not None:
                found = _hits(col, [best])[0]
                found["cosine"] = found.pop("score")
            evidence = _plain(result.evidence)
            return {
                "verdict": result.verdict,
                "score": round(float(result.score), 6),
                "match": found if result.verdict == "copy" else None,
                "nearest": found,
                "evidence": evidence,
                "region_box": _region_box(evidence.get("region")),
                "query": {"width": query.width, "height": query.height},
            }

        return await on_reader(work)

    # -- the page ------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    app.add_middleware(_BodyLimit, limit=config.max_upload_bytes)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(_HostCheck, config=config)
    if "*" in [h.strip() for h in config.allow_hosts]:
        log.warning("the Host header check is off (--allow-host '*'): DNS rebinding is possible")
    app.add_middleware(_Headers)
    return app


# -- helpers off the event loop ------------------------------------------------------------------


def _drop_upload(folder: Path, col=None) -> None:
    """Remove the files of a failed upload that the catalog of ``col`` does not hold, then
    the folder if it is empty (best effort: a failure here leaves files, never raises)."""
    known: set[str] = set()
    if col is not None:
        with contextlib.suppress(Exception):
            for name in {str(folder), os.path.realpath(folder)}:
                known |= {row.path for row in col.catalog.files_under(name)}
    try:
        files = list(folder.iterdir())
    except OSError:
        return
    for file in files:
        if str(file) not in known and os.path.realpath(file) not in known:
            with contextlib.suppress(OSError):
                file.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _metadata_inside(file: str, roots: list[str]) -> tuple[list[dict], int]:
    """The records of metadata ``file`` whose path is one of ``roots`` or lies under one (as
    written and once links are resolved), and how many were left out."""
    from lookalike.catalog import normal_path, path_inside
    from lookalike.metadata import MetadataError, read_metadata

    try:
        records = read_metadata(file)
    except MetadataError as exc:
        raise HTTPException(400, f"metadata: {exc}") from None
    tops = [normal_path(root) for root in roots]
    kept = [
        r for r in records if any(r["path"] == top or path_inside(r["path"], top) for top in tops)
    ]
    return kept, len(records) - len(kept)


def _save_uploads(blobs: list[tuple[str, bytes]], folder: Path, max_pixels: int) -> list[Path]:
    """Check every upload is a usable image (400 naming the first that is not), then save them
    into ``folder`` under their own (cleaned) names and the suffix of their real format."""
    from lookalike.images import IMAGE_EXTENSIONS, ImageError, load_image

    kinds = []
    for name, data in blobs:
        try:
            if not data:
                raise ImageError("empty file")
            kinds.append(load_image(data, min_side=64, max_pixels=max_pixels).format)
        except ImageError as exc:
            err = _image_error(exc)
            raise HTTPException(err.status_code, f"{name}: {err.detail}") from None
    saved = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for (name, data), kind in zip(blobs, kinds, strict=True):
            stem = re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._")[:80] or "upload"
            suffix = FORMAT_SUFFIX.get(kind.upper())
            if suffix is None:
                own = Path(name).suffix.lower()
                suffix = own if own in IMAGE_EXTENSIONS else ".jpg"
            target = unique_name(folder, stem, suffix)
            target.write_bytes(data)
            saved.append(target)
    except BaseException:
        _drop_upload(folder)  # half an upload is no upload
        raise
    return saved


def _fetch(url: str, limit: int) -> bytes:
    """GET a public http(s) URL, at most ``limit`` bytes (only with --allow-url-fetch); one
    400 message for every failure (see :mod:`lookalike.server.fetch`)."""
    from lookalike.server.fetch import FetchFailed, fetch_url

    if not re.match(r"^https?://", url, re.IGNORECASE):
        raise HTTPException(400, "url: only http and https addresses can be fetched")
    try:
        return fetch_url(url, limit)
    except FetchFailed as exc:
        log.info("url fetch refused or failed: %s", exc.reason)
        raise HTTPException(400, str(exc)) from None
