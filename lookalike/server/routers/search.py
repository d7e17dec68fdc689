"""Search routes: by an uploaded image, by words (or both), and by an indexed image."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from PIL import Image

from lookalike import Collection
from lookalike.errors import NotFound
from lookalike.features.registry import info as feature_info
from lookalike.server.queries import query_bytes
from lookalike.server.replies import hit, parse_id, plain
from lookalike.server.schemas import MAX_TEXT, Folder, K, SearchResponse, Where
from lookalike.server.state import OUTSIDE_ROOTS, ServerDep, file_record, filters
from lookalike.text.encoder import TextModelMissing

router = APIRouter()


@router.post("/api/search", response_model=SearchResponse, tags=["core"])
async def search(
    server: ServerDep,
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
    data: bytes | None
    if text is not None and image is None and not url:
        data = None
    elif text is None and image is None and not url:
        raise HTTPException(
            400, "send the query image in the multipart field 'image', or words in 'text'"
        )
    else:
        data = await query_bytes(server.config, image, url)
    started = time.perf_counter()

    def work(col: Collection) -> tuple[list[dict], dict | None]:
        query = server.decode(data) if data is not None else None
        if text is not None:
            return text_hits(col, text, query, weight, k, where, folder)
        found = col.search(query, k, feature=feature, **filters(where, folder))
        return [hit(m) for m in found], None

    results, how = await server.read(work)
    took = round((time.perf_counter() - started) * 1e3, 2)
    return {"results": results, "took_ms": took, "text": how}


def text_hits(
    col: Collection,
    text: str,
    image: Image.Image | str | None,
    weight: float,
    k: int,
    where: str | None,
    folder: str | None,
) -> tuple[list[dict], dict[str, Any]]:
    """A text search (with an optional image) on a reader: hits and how the text was read."""
    chosen = filters(where, folder)
    try:
        found = col.search_text(text, k, image=image, weight=weight, **chosen)
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
    return [hit(m) for m in found], plain(how)


@router.post("/api/search/by-id/{image_id}", response_model=SearchResponse, tags=["search"])
async def search_by_id(
    server: ServerDep,
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
    file_id = parse_id(image_id)
    text = (text or "").strip() or None
    started = time.perf_counter()

    def work(col: Collection) -> tuple[list[dict], dict | None]:
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
        # the same ranking as a search with the image itself (col.search's default)
        found = col.search_vectors(vector, k, feature=name, expand=True, **filters(where, folder))
        return [hit(m) for m in found[0]], None

    results, how = await server.read(work)
    took = round((time.perf_counter() - started) * 1e3, 2)
    return {"results": results, "took_ms": took, "text": how}
