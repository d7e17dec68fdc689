"""Routes about the collection as a whole: health, stats and what can be filtered on."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from lookalike import Collection, __version__
from lookalike.server.replies import plain
from lookalike.server.schemas import Health
from lookalike.server.state import ServerDep

router = APIRouter()


@router.get("/api/health", response_model=Health, tags=["core"])
async def health(server: ServerDep) -> dict:
    """Whether the server is up (cheap: touches no index)."""
    return {
        "status": "ok",
        "version": __version__,
        "ready": server.readers.wait_ready(0),
        "jobs_active": len(server.writer.active),
    }


@router.get("/api/stats", tags=["collection"])
async def stats(server: ServerDep) -> dict:
    """What the collection holds (as `lookalike info --json`), and the running jobs."""

    def work(col: Collection) -> dict[str, Any]:
        return col.info() | {"metadata_keys": len(col.metadata_keys())}

    info = await server.read(work)
    config = server.config
    info["jobs"] = [j.as_dict() for j in server.writer.active]
    info["limits"] = {
        "max_upload_bytes": config.max_upload_bytes,
        "max_pixels": config.max_pixels,
        "server_paths": bool(config.allow_roots),
        "url_fetch": config.allow_url_fetch,
    }
    return plain(info)


@router.get("/api/filters", tags=["collection"])
async def filters(server: ServerDep) -> dict:
    """What can be filtered on: folders, and metadata keys (type, count, range or values)."""

    def work(col: Collection) -> dict[str, Any]:
        return {"folders": folders_of(col), "metadata": col.metadata_keys()}

    return plain(await server.read(work))


def folders_of(col: Collection, limit: int = 2000) -> list[dict]:
    """Folders to filter by: those holding indexed files, their common root and the folders
    where branches meet; ``images`` counts the files inside, subfolders included."""
    direct: dict[str, int] = {}
    for path in col.catalog.image_paths():
        folder = os.path.dirname(path)
        direct[folder] = direct.get(folder, 0) + 1
    if not direct:
        return []
    common = os.path.commonpath(list(direct))
    totals: dict[str, int] = {}
    children: dict[str, set[str]] = {}
    for folder, n in direct.items():
        here = folder
        while True:
            totals[here] = totals.get(here, 0) + n
            if here == common:
                break
            parent = os.path.dirname(here)
            if parent == here:
                break
            children.setdefault(parent, set()).add(here)
            here = parent
    keep = [f for f in totals if f == common or f in direct or len(children.get(f, ())) > 1]
    keep.sort()
    return [{"path": f, "images": totals[f]} for f in keep[:limit]]
