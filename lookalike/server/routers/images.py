"""Routes of images by id (info, thumbnail, large view), adding and removing images, and jobs."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lookalike import Collection
from lookalike.catalog import normal_path, path_inside
from lookalike.metadata import normalize_records
from lookalike.server.adding import add_work, drop_upload, metadata_inside, save_uploads
from lookalike.server.replies import image_json, parse_id, plain
from lookalike.server.schemas import MAX_PATHS, Deleted, ImageInfo, JobInfo, PathsRequest, Wait
from lookalike.server.state import (
    AUTH,
    OUTSIDE_ROOTS,
    Server,
    ServerDep,
    file_record,
    json_object,
)
from lookalike.server.thumbnails import THUMB_SIZES, VIEW_MAX
from lookalike.server.workers import Job

router = APIRouter()

IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "a JPEG"}
}
#: the request body of an upload, for the OpenAPI docs (the route reads the form itself)
UPLOAD_BODY = {
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
}


# -- images by id ------------------------------------------------------------------------------


@router.get("/api/images/{image_id}", response_model=ImageInfo, tags=["images"])
async def image_info(server: ServerDep, image_id: str) -> dict:
    """One image: path, size, dimensions, metadata, and the addresses of its renditions."""
    file_id = parse_id(image_id)

    def work(col: Collection) -> dict[str, Any]:
        rec = file_record(col, file_id)
        return image_json(rec) | {"metadata": col.metadata([file_id]).get(file_id, {})}

    out = await server.read(work)
    out["thumbnail"] = f"/api/images/{file_id}/thumbnail"
    out["view"] = f"/api/images/{file_id}/view"
    return plain(out)


async def rendition(server: Server, request: Request, file_id: int, size: int) -> Response:
    """The JPEG of ``file_id`` at ``size`` px, or 304 when the client has it."""
    rec = await server.record(file_id)
    etag = f'"{rec.sha256[:24]}-{size}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if not await run_in_threadpool(server.may_serve, rec.path):
        raise HTTPException(403, OUTSIDE_ROOTS)
    data = await run_in_threadpool(server.thumbs.get, rec.sha256, rec.path, size)  # NotFound: 404
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get("/api/images/{image_id}/thumbnail", tags=["images"], responses=IMAGE_RESPONSES)
async def thumbnail(
    server: ServerDep,
    request: Request,
    image_id: str,
    size: Annotated[int, Query(ge=16, le=1024, description="long side in px")] = 256,
) -> Response:
    """A small JPEG of the image (cached; sizes are rounded up to 128, 256, 384 or 512)."""
    file_id = parse_id(image_id)
    snapped = next((s for s in THUMB_SIZES if s >= size), THUMB_SIZES[-1])
    return await rendition(server, request, file_id, snapped)


@router.get("/api/images/{image_id}/view", tags=["images"], responses=IMAGE_RESPONSES)
async def view(server: ServerDep, request: Request, image_id: str) -> Response:
    """The image large (JPEG, long side at most 1600 px), for the big view."""
    return await rendition(server, request, parse_id(image_id), VIEW_MAX)


# -- changing: add, delete, jobs ---------------------------------------------------------------


async def job_response(job: Job, wait: bool) -> JSONResponse:
    """The job (202 while it runs); with ``wait``, once it has finished (its error if it failed)."""
    if wait:
        await asyncio.to_thread(job.wait, 600)
    if job.status == "failed" and wait:
        return JSONResponse({"detail": job.error, "job": job.as_dict()}, job.error_status)
    status = 200 if job.status in ("done", "failed") else 202
    return JSONResponse(plain(job.as_dict()), status)


def shared_metadata(text: object) -> dict:
    """The metadata of an upload's every file: a JSON object (400 if it is not one)."""
    if not isinstance(text, str):
        raise HTTPException(400, "metadata: expected a JSON object as text, not a file")
    shared = json_object(text, "metadata")
    try:
        normalize_records([{**shared, "path": "/check"}])
    except ValueError as exc:
        raise HTTPException(400, f"metadata: {exc}") from None
    return shared


@router.post(
    "/api/images",
    tags=["images"],
    dependencies=AUTH,
    status_code=202,
    response_model=JobInfo,
    openapi_extra=UPLOAD_BODY,
)
async def add_upload(server: ServerDep, request: Request, wait: Wait = False) -> JSONResponse:
    """Upload images (multipart field `files`, repeated) and index them, as a job.

    Each file is checked to be a usable image first (400 if not). The files are kept in the
    server's upload folder. Answers 202 with the job; poll `GET /api/jobs/{id}`.
    """
    config = server.config
    try:
        form = await request.form(max_files=1000, max_fields=100)
    except HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed multipart body
        raise HTTPException(400, f"cannot read the upload: {exc}") from None
    uploads = [f for key in ("files", "file", "image") for f in form.getlist(key)]
    files = [f for f in uploads if not isinstance(f, str)]
    if not files:
        raise HTTPException(400, "send the images in the multipart field 'files'")
    shared = shared_metadata(form.get("metadata")) if form.get("metadata") else {}
    blobs = [(f.filename or "upload", await f.read()) for f in files]
    folder = config.upload_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    try:
        saved = await run_in_threadpool(save_uploads, blobs, folder, config.max_pixels)
    except OSError as exc:  # a read-only or full upload folder: the server's storage
        raise HTTPException(503, f"cannot save the upload: {exc.strerror}: {folder}") from None
    # each file's own path, never a "path" inside the metadata, says where it goes
    records = [{**shared, "path": str(p)} for p in saved] if shared else None
    job = server.writer.submit("add", add_work(server, [str(folder)], records, upload=folder))
    if job.status == "failed":  # never ran (the server is stopping): keep no files
        await run_in_threadpool(drop_upload, folder, None)
    job.total = len(saved)
    return await job_response(job, wait)


@router.post(
    "/api/images/paths",
    tags=["images"],
    dependencies=AUTH,
    status_code=202,
    response_model=JobInfo,
)
async def add_paths(server: ServerDep, body: PathsRequest, wait: Wait = False) -> JSONResponse:
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
        records, outside = await asyncio.to_thread(metadata_inside, meta, roots)
    job = server.writer.submit("add", add_work(server, roots, records, vet=True, outside=outside))
    return await job_response(job, wait)


@router.delete("/api/images/{image_id}", tags=["core"], dependencies=AUTH, response_model=Deleted)
async def delete_image(server: ServerDep, image_id: str) -> JSONResponse:
    """Remove the image from the collection (a file in the upload folder is deleted too;
    other files stay on disk). Waits up to 60 s for the writer, else answers 202 + job."""
    file_id = parse_id(image_id)
    uploads = server.config.upload_dir

    def run(col: Collection, job: Job) -> dict:
        try:
            rec = file_record(col, file_id)
            col.remove([rec.path])
            # the server's own copy (inside uploads/ as written and once links are
            # resolved): gone with its metadata; nothing outside is ever deleted
            if path_inside(rec.path, uploads):
                Path(normal_path(rec.path)).unlink(missing_ok=True)
                col.clear_metadata([rec.path])
            if not col.catalog.hits_for_contents([rec.content_id]):
                server.thumbs.forget(rec.sha256)
            return {"deleted": file_id, "path": rec.path}
        finally:
            server.forget_records()

    job = server.writer.submit("delete", run)
    if not await asyncio.to_thread(job.wait, 60):
        return JSONResponse(plain(job.as_dict()), 202)
    if job.status == "failed":
        raise HTTPException(job.error_status, job.error)
    return JSONResponse(job.result, 200)


@router.get("/api/jobs/{job_id}", response_model=JobInfo, tags=["images"])
async def job_status(server: ServerDep, job_id: str) -> dict:
    """An add or delete job: status, progress (`done` of `total`), result or error."""
    job = server.writer.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return plain(job.as_dict())


@router.get("/api/jobs", response_model=list[JobInfo], tags=["images"])
async def jobs(server: ServerDep) -> list:
    """Recent jobs, newest first."""
    return [plain(j.as_dict()) for j in server.writer.recent()]
