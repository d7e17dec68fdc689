"""The server's access to one collection: reader threads for queries, one writer for changes.

A :class:`~lookalike.collection.Collection` holds a SQLite connection, which belongs to the
thread that opened it, and its caches are not thread-safe. So the server never shares one:

* :class:`ReaderPool`: a few threads, each with its own read-only use of the collection, take
  queries (search, thumbnails' paths, duplicates, copy check, stats) from one queue. Each
  reader's search index is a cache refreshed from the catalog by generation
  (``lookalike.index.store``), and the catalog is read in one snapshot, so a reader sees the
  collection before a write's commit or after it, never half of it.
* :class:`Writer`: one thread with its own collection runs the changing jobs (add, delete) one
  after the other, holding the index's writer lock while it writes; a job's progress is polled
  from the catalog by a separate read-only connection while the add runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("lookalike.server")

#: image format (Pillow's name) -> file suffix the indexer accepts
FORMAT_SUFFIX = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "HEIF": ".heic",
    "AVIF": ".avif",
    "MPO": ".jpg",
}


class NotFound(Exception):
    """No image with this id (or its file is gone)."""


class Forbidden(Exception):
    """A server-side path outside every allowed root."""


# -- readers -----------------------------------------------------------------------------------


class ReaderPool:
    """Threads that each own a collection and run read-only work from one queue."""

    def __init__(self, folder: Path, readers: int = 2, threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.threads = threads
        self._queue: queue.Queue = queue.Queue()
        self._ready = threading.Event()
        self._closed = False
        self._workers = [
            threading.Thread(target=self._run, name=f"lookalike-reader-{i}", daemon=True)
            for i in range(max(1, readers))
        ]
        for worker in self._workers:
            worker.start()

    def _run(self) -> None:
        import lookalike

        col, failure = None, None
        try:
            col = lookalike.open(self.folder, create=False, threads=self.threads)
            with contextlib.suppress(Exception):  # warm up: load the model before the first query
                col.feature  # noqa: B018
        except Exception as exc:  # noqa: BLE001 - every query gets the reason, none hangs
            log.exception("a reader cannot open %s", self.folder)
            failure = exc
        self._ready.set()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                fn, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                if failure is not None:
                    future.set_exception(failure)
                    continue
                try:
                    future.set_result(fn(col))
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                    future.set_exception(exc)
        finally:
            if col is not None:
                col.close()

    def submit(self, fn: Callable[[Any], Any]) -> Future:
        """Run ``fn(collection)`` on a reader thread; returns its future."""
        future: Future = Future()
        if self._closed:  # no thread will ever take it: fail now rather than hang the request
            future.set_exception(RuntimeError("the server is shutting down"))
            return future
        self._queue.put((fn, future))
        return future

    async def run(self, fn: Callable[[Any], Any]) -> Any:
        """``await`` the result of ``fn(collection)`` run on a reader thread."""
        return await asyncio.wrap_future(self.submit(fn))

    def call(self, fn: Callable[[Any], Any], timeout: float | None = None) -> Any:
        """The result of ``fn(collection)``, from a thread that may block."""
        return self.submit(fn).result(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def busy(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._closed = True
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=10)


# -- jobs and the writer ----------------------------------------------------------------------


@dataclass
class Job:
    """A changing operation run by the writer; what ``GET /api/jobs/{id}`` returns."""

    kind: str  # "add" | "delete"
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    status: str = "queued"  # queued | running | done | failed
    done: int = 0
    total: int | None = None
    message: str = ""
    result: dict | None = None
    error: str | None = None
    error_status: int = 500
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "progress": None if not self.total else min(1.0, self.done / self.total),
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)


class Writer:
    """One thread that owns a writing collection and runs jobs in order."""

    KEEP_JOBS = 200

    def __init__(self, folder: Path, *, workers: int | None = None) -> None:
        self.folder = Path(folder)
        self.workers = workers
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="lookalike-writer", daemon=True)
        self._thread.start()

    def submit(self, kind: str, fn: Callable[[Any, Job], dict]) -> Job:
        """Queue ``fn(collection, job)``; its return value becomes ``job.result``."""
        job = Job(kind)
        with self._lock:
            self.jobs[job.id] = job
            for old in list(self.jobs)[: max(0, len(self.jobs) - self.KEEP_JOBS)]:
                if self.jobs[old].status in ("done", "failed"):
                    del self.jobs[old]
        if not self._thread.is_alive():  # closed: nothing would ever run it
            job.status, job.error, job.error_status = "failed", "the server is shutting down", 503
            job.finished = time.time()
            job._finished.set()
            return job
        self._queue.put((job, fn))
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def recent(self) -> list[Job]:
        """Every job kept, newest first."""
        with self._lock:
            return list(reversed(self.jobs.values()))

    @property
    def active(self) -> list[Job]:
        with self._lock:
            return [j for j in self.jobs.values() if j.status in ("queued", "running")]

    def _run(self) -> None:
        import lookalike

        col = None
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                job, fn = item
                job.status, job.started = "running", time.time()
                try:
                    if col is None:
                        col = lookalike.open(self.folder, create=False)
                    job.result = fn(col, job)
                    job.status = "done"
                except BaseException as exc:  # noqa: BLE001 - reported through the job
                    job.status, job.error = "failed", _message(exc)
                    job.error_status = _status_of(exc)
                    if job.error_status >= 500:
                        log.exception("job %s (%s) failed", job.id, job.kind)
                finally:
                    job.finished = time.time()
                    job._finished.set()
        finally:
            if col is not None:
                col.close()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


def _message(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__


def _status_of(exc: BaseException) -> int:
    from lookalike.images import ImageError
    from lookalike.lock import LockedError

    if isinstance(exc, NotFound | FileNotFoundError):
        return 404
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, LockedError):
        return 409
    from lookalike.catalog import READ_ONLY_ERRNOS, StorageUnavailable

    if isinstance(exc, StorageUnavailable) or (
        isinstance(exc, OSError) and exc.errno in READ_ONLY_ERRNOS
    ):
        return 503  # a read-only, damaged or full index folder
    if isinstance(exc, ImageError | ValueError):
        return 400
    return 500


# -- progress of an add, watched from the catalog ------------------------------------------------


class AddProgress:
    """Counts the files of an add that are done, from a read-only connection to the catalog.

    Before the add: files that are unchanged count as done at once. While it runs: every file
    under the add's roots whose catalog row was written after the start is done.
    """

    def __init__(self, catalog_path: Path, roots: list[str], job: Job, interval: float = 0.25):
        self.catalog_path = catalog_path
        self.roots = roots
        self.job = job
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_time = time.time()
        self.unchanged = 0

    def count_work(self, catalog, paths: list[str] | None = None) -> int:
        """Scan the roots (or ``paths``, what the add will index of them): total files, and
        how many are unchanged (done already)."""
        from lookalike.pipeline import scan

        known = catalog.files_by_path()
        total = 0
        for path, st, _error in scan([Path(r) for r in (self.roots if paths is None else paths)]):
            total += 1
            row = known.get(path)
            same = row is not None and st is not None and row.size == st.st_size
            if same and row.mtime_ns == st.st_mtime_ns:
                self.unchanged += 1
        self.job.total = total
        self.job.done = self.unchanged
        return total

    def __enter__(self) -> AddProgress:
        self.start_time = time.time() - 1e-3
        self._thread = threading.Thread(target=self._watch, name="lookalike-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        try:
            conn = sqlite3.connect(f"file:{self.catalog_path}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return
        try:
            while not self._stop.wait(self.interval):
                with contextlib.suppress(sqlite3.Error):
                    written = 0
                    for root in self.roots:
                        prefix = root.rstrip("/") + "/"
                        written += conn.execute(
                            "SELECT count(*) FROM files WHERE updated_at >= ? "
                            "AND (path = ? OR substr(path, 1, ?) = ?)",
                            (self.start_time, root, len(prefix), prefix),
                        ).fetchone()[0]
                    total = self.job.total or 0
                    self.job.done = min(total, self.unchanged + written) if total else written
        finally:
            conn.close()


# -- small helpers shared by the routes ---------------------------------------------------------


@dataclass(frozen=True)
class FileRecord:
    """One indexed file as the server shows it."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_id: int
    width: int
    height: int
    sha256: str

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "path": self.path,
            "size": self.size,
            "mtime": self.mtime_ns / 1e9,
            "content_id": self.content_id,
            "width": self.width,
            "height": self.height,
        }


def file_record(col, file_id: int) -> FileRecord:
    """The indexed file ``file_id`` of ``col``; raises NotFound."""
    row = col.catalog.conn.execute(
        "SELECT f.id, f.path, f.size, f.mtime_ns, f.content_id, c.width, c.height, c.sha256 "
        "FROM files f JOIN contents c ON c.id = f.content_id WHERE f.id = ?",
        (int(file_id),),
    ).fetchone()
    if row is None:
        raise NotFound(f"no image with id {file_id}")
    return FileRecord(*row)


def metadata_of(col, file_ids: list[int]) -> dict[int, dict]:
    """Metadata of each file (empty dicts when the collection keeps none)."""
    getter = getattr(col, "metadata", None)
    if not callable(getter) or not file_ids:
        return {i: {} for i in file_ids}
    found = getter(list(file_ids)) or {}
    return {i: dict(found.get(i) or {}) for i in file_ids}


def folders_of(col, limit: int = 2000) -> list[dict]:
    """Folders to filter by: those holding indexed files, their common root and the folders
    where branches meet; ``images`` counts the files inside, subfolders included."""
    direct: dict[str, int] = {}
    for (path,) in col.catalog.conn.execute("SELECT path FROM files WHERE content_id IS NOT NULL"):
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


def unique_name(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem+suffix``, or ``stem_1``, ``stem_2``... the first that is free."""
    for n in itertools.count():
        candidate = folder / (f"{stem}{suffix}" if n == 0 else f"{stem}_{n}{suffix}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise AssertionError("unreachable")
