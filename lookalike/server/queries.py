"""The query image of a search or copy check: an uploaded file, or a URL fetched when allowed."""

from __future__ import annotations

import logging
import re

from fastapi import HTTPException, UploadFile
from starlette.concurrency import run_in_threadpool

from lookalike.server.config import ServerConfig
from lookalike.server.fetch import FetchFailed, fetch_url

log = logging.getLogger("lookalike.server")


async def query_bytes(config: ServerConfig, image: UploadFile | None, url: str | None) -> bytes:
    """The bytes of the uploaded ``image``, else of the image at ``url`` (400 when neither)."""
    if image is not None:
        data = await image.read()
    elif url:
        if not config.allow_url_fetch:
            raise HTTPException(
                403, "fetching URLs is disabled; start the server with --allow-url-fetch"
            )
        data = await run_in_threadpool(fetch_image, url, config.max_upload_bytes)
    else:
        raise HTTPException(400, "send the query image in the multipart field 'image'")
    if not data:
        raise HTTPException(400, "not a usable image: empty file")
    return data


def fetch_image(url: str, limit: int) -> bytes:
    """GET a public http(s) URL, at most ``limit`` bytes (only with --allow-url-fetch); one
    400 message for every failure (see :mod:`lookalike.server.fetch`)."""
    if not re.match(r"^https?://", url, re.IGNORECASE):
        raise HTTPException(400, "url: only http and https addresses can be fetched")
    try:
        return fetch_url(url, limit)
    except FetchFailed as exc:
        log.info("url fetch refused or failed: %s", exc.reason)
        raise HTTPException(400, str(exc)) from None
