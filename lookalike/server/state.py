"""What the routes share: the :class:`Server` (configuration, readers, writer, thumbnails,
cached file records, the allowed folders), reached through the :data:`ServerDep` dependency."""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image

import lookalike
from lookalike import Collection
from lookalike.catalog import IndexedFile
from lookalike.collection import MIN_SIDE
from lookalike.errors import NotFound
from lookalike.filters import load_json
from lookalike.images import ImageError, load_image
from lookalike.pipeline import scan
from lookalike.server.config import ServerConfig
from lookalike.server.replies import image_error, raise_for
from lookalike.server.thumbnails import Thumbnails
from lookalike.server.workers import ReaderPool, Writer

#: how many file records the server keeps in memory
RECORDS_KEPT = 10_000
#: 403 for an image whose file :meth:`Server.may_serve` refuses
OUTSIDE_ROOTS = (
    "this image's file is a link that leads outside the allowed folders, so it is not read; "
    "index the real file instead"
)


def file_record(col: Collection, file_id: int) -> IndexedFile:
    """The indexed file ``file_id`` of ``col``; raises NotFound."""
    found = col.catalog.file_with_content(file_id)
    if found is None:
        raise NotFound(f"no image with id {file_id}")
    return found


class Server:
    """What the routes share: configuration, reader pool, writer, caches."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        with lookalike.open(config.db, create=True):  # a new, empty collection if none
            pass
        self.readers = ReaderPool(config.db, config.readers, config.threads)
        self.writer = Writer(config.db, workers=config.workers)
        self.thumbs = Thumbnails(config.thumb_dir, config.max_pixels)
        self._records: OrderedDict[int, IndexedFile] = OrderedDict()
        self._records_lock = threading.Lock()

    def close(self) -> None:
        self.writer.close()
        self.readers.close()

    async def read(self, fn: Callable[[Collection], Any]) -> Any:
        """The result of ``fn(collection)`` on a reader; lookalike's errors become HTTP errors."""
        try:
            return await self.readers.run(fn)
        except Exception as exc:  # noqa: BLE001 - mapped to a status, or re-raised (500)
            raise_for(exc)

    async def record(self, file_id: int) -> IndexedFile:
        """The record of the indexed file ``file_id`` (cached until the next write)."""
        with self._records_lock:
            rec = self._records.get(file_id)
            if rec is not None:
                self._records.move_to_end(file_id)
                return rec
        rec = await self.read(lambda col: file_record(col, file_id))
        with self._records_lock:
            self._records[file_id] = rec
            while len(self._records) > RECORDS_KEPT:
                self._records.popitem(last=False)
        return rec

    def forget_records(self) -> None:
        with self._records_lock:
            self._records.clear()

    def decode(self, data: bytes) -> Image.Image:
        """The uploaded query image (400 or 413 when it is not usable)."""
        try:
            return load_image(data, min_side=MIN_SIDE, max_pixels=self.config.max_pixels).image
        except ImageError as exc:
            raise image_error(exc) from None

    def check_allowed(self, path: str) -> Path:
        """The real path of ``path`` if it lies under an allowed root; 403 otherwise."""
        if not self.config.allow_roots:
            raise HTTPException(
                403, "adding server-side paths is disabled; start the server with --allow-root DIR"
            )
        if "\0" in path:
            raise HTTPException(400, "a path cannot contain a NUL character")
        real = Path(os.path.realpath(Path(path).expanduser()))
        if not self.inside_roots(str(real)):
            raise HTTPException(403, f"{path} is outside the allowed roots")
        if not real.exists():
            raise HTTPException(404, f"no such file or folder: {path}")
        return real

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
        keep: list[str] = []
        skipped: list[tuple[str, str]] = []
        for root in roots:
            if not os.path.isdir(root):
                keep.append(root)  # a file named directly: check_allowed resolved it
                continue
            files: list[str] = []
            unreadable: list[tuple[str, str]] = []
            outside: list[tuple[str, str]] = []
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


def filters(where: str | None, folder: str | None) -> dict[str, Any]:
    """The ``where`` and ``folder`` arguments of a search (400 for an unusable filter)."""
    return {
        "where": _parse_where(where) if where and where.strip() else None,
        "folder": folder or None,
    }


def _parse_where(where: str) -> str | dict:
    text = where.strip()
    return json_object(text, "where") if text.startswith("{") else text


def json_object(text: str, field: str) -> dict:
    """The JSON object in the request field ``field`` (400 naming the field when the text is
    not JSON, is nested too deep, or holds anything but an object)."""
    try:
        value = load_json(text)  # deep nesting: 400, not RecursionError
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"{field}: invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HTTPException(400, f"{field}: expected a JSON object")
    return value


def server_of(request: Request) -> Server:
    """The :class:`Server` of the app that received ``request``."""
    return request.app.state.server


#: a route parameter that receives the :class:`Server`
ServerDep = Annotated[Server, Depends(server_of)]

bearer = HTTPBearer(auto_error=False, description="the token printed by `lookalike serve`")


def require_token(
    server: ServerDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 unless the request carries ``Authorization: Bearer TOKEN``."""
    given = (creds.credentials if creds else "").encode()
    if not secrets.compare_digest(given, server.config.token.encode()):
        raise HTTPException(
            401,
            "this needs the server's token: Authorization: Bearer TOKEN "
            "(printed by `lookalike serve`)",
            headers={"WWW-Authenticate": "Bearer"},
        )


#: the dependencies of a changing route
AUTH = [Depends(require_token)]
