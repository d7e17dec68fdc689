"""How the server answers: errors as ``{"detail": message}`` with the status that
:func:`lookalike.errors.http_status` gives, and results as JSON-safe values."""

from __future__ import annotations

import logging
import re
from typing import Any, NoReturn

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookalike import Match
from lookalike.catalog import IndexedFile
from lookalike.errors import LookalikeError, http_status
from lookalike.images import ImageError

log = logging.getLogger("lookalike.server")


def image_error(exc: ImageError) -> HTTPException:
    """400 (413 when too big) for an unusable image."""
    return HTTPException(exc.http_status, f"not a usable image: {exc.reason}")


def raise_for(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as an HTTP error by the one mapping of :func:`lookalike.errors.http_status`
    (re-raise it when it is unexpected: a server error)."""
    if isinstance(exc, HTTPException):
        raise exc
    if isinstance(exc, ImageError):
        raise image_error(exc) from None
    status = http_status(exc)
    if status is None:
        raise exc
    raise HTTPException(status, str(exc)) from None


def parse_id(text: str) -> int:
    """An image id from a path parameter: 1 to 18 ASCII digits (404 for anything else, such
    as ``²``, Arabic-Indic or fullwidth digits, which ``int()`` would read as numbers)."""
    if not re.fullmatch(r"[0-9]{1,18}", text):
        raise HTTPException(404, f"no image with id {text!r}: an id is a number (digits 0-9)")
    return int(text)


def hit(match: Match) -> dict[str, Any]:
    """One result as the API shows it: the match without its content id, scores to 6 places."""
    found = match.as_dict()
    return {
        "id": found["id"],
        "path": found["path"],
        "score": round(float(found["score"]), 6),
        "distance": round(float(found["distance"]), 6),
        "width": found["width"],
        "height": found["height"],
        "metadata": dict(found["metadata"]),
    }


def image_json(found: IndexedFile) -> dict[str, Any]:
    """One indexed file as the API shows it: no hash, its mtime in seconds."""
    return {
        "id": found.id,
        "path": found.path,
        "size": found.size,
        "mtime": found.mtime_ns / 1e9,
        "content_id": found.content_id,
        "width": found.width,
        "height": found.height,
    }


def plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, dataclasses to dicts."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if hasattr(value, "as_dict"):
        return plain(value.as_dict())
    return value


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error as ``{"detail": message}`` with its status."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

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

    @app.exception_handler(LookalikeError)  # raised outside a route's own handling
    async def expected(request: Request, exc: LookalikeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, http_status(exc) or 500)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, 500)
