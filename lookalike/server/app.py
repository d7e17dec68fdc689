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

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from lookalike import __version__
from lookalike.server.config import DEFAULT_MAX_PIXELS, ServerConfig
from lookalike.server.middleware import BodyLimit, HostCheck, SecurityHeaders, split_host
from lookalike.server.replies import add_error_handlers
from lookalike.server.routers import ROUTERS
from lookalike.server.routers.pages import STATIC
from lookalike.server.state import Server
from lookalike.text.scoring import default_text_model

__all__ = ["DEFAULT_MAX_PIXELS", "ServerConfig", "create_app", "split_host"]

log = logging.getLogger("lookalike.server")


def create_app(config: ServerConfig) -> FastAPI:
    """The FastAPI application serving the collection at ``config.db``."""
    server = Server(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
    add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    app.add_middleware(BodyLimit, limit=config.max_upload_bytes)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(HostCheck, config=config)
    if "*" in [h.strip() for h in config.allow_hosts]:
        log.warning("the Host header check is off (--allow-host '*'): DNS rebinding is possible")
    app.add_middleware(SecurityHeaders)
    return app


def _warm_text_model() -> None:
    """Load the sentence encoder and embed the concept names (seconds, once per cache)."""
    try:
        default_text_model().prepare()
    except Exception as exc:  # noqa: BLE001 - text search then reports it on first use
        log.warning("text search not prepared: %s", exc)
