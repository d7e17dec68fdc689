"""Routes that analyse the collection: groups of duplicates, and the copy check of a picture."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile

from lookalike import Collection
from lookalike.copies.check import check_copy
from lookalike.dups import find_duplicates
from lookalike.server.queries import query_bytes
from lookalike.server.replies import hit, plain
from lookalike.server.state import ServerDep

router = APIRouter()


@router.get("/api/duplicates", tags=["analysis"])
async def duplicates(
    server: ServerDep,
    preset: Annotated[str, Query(pattern="^(exact|near|similar)$")] = "near",
    threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> dict:
    """Groups of duplicates, as `lookalike dups`: keeper first, largest groups first."""

    def work(col: Collection) -> dict[str, Any]:
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

    return plain(await server.read(work))


@router.post("/api/check", tags=["analysis"])
async def check(
    server: ServerDep,
    image: Annotated[UploadFile | None, File(description="the suspect image")] = None,
    url: Annotated[str | None, Form(description="an image URL (if enabled)")] = None,
) -> dict:
    """Copy check: is the picture a copy of an indexed one? Verdict, score and evidence
    (as `lookalike check --json`), plus the query region that matched (`region_box`)."""
    data = await query_bytes(server.config, image, url)

    def work(col: Collection) -> dict[str, Any]:
        query = server.decode(data)
        result = check_copy(col, query)
        found = None
        if result.match is not None:
            found = hit(result.match)
            found["cosine"] = found.pop("score")
        evidence = plain(result.evidence)
        return {
            "verdict": result.verdict,
            "score": round(float(result.score), 6),
            "match": found if result.verdict == "copy" else None,
            "nearest": found,
            "evidence": evidence,
            "region_box": region_box(evidence.get("region")),
            "query": {"width": query.width, "height": query.height},
        }

    return await server.read(work)


def region_box(region: str | None) -> list[float] | None:
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
