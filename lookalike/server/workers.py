"""The server's workers on one collection: reader threads for queries, one writer for changes.

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
import logging
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

import lookalike
from lookalike import Collection
from lookalike.catalog import Catalog
from lookalike.errors import LookalikeError, http_status
from lookalike.pipeline import scan

log = logging.getLogger("lookalike.server")


# -- readers -----------------------------------------------------------------------------------


class ReaderPool:
    """Threads that each own a collection and run read-only work from one queue."""

    def __init__(self, folder: Path, readers: int = 2, threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.threads = threads
        self._queue: queue.Queue[tuple[Callable[[Collection], Any], Future] | None] = queue.Queue()
        self._ready = threading.Event()
        self._closed = False
        self._workers = [
            threading.Thread(target=self._run, name=f"lookalike-reader-{i}", daemon=True)
            for i in range(max(1, readers))
        ]
        for worker in self._workers:
            worker.start()

    def _run(self) -> None:
        col: Collection | None = None
        failure: BaseException = RuntimeError(f"a reader cannot open {self.folder}")
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
                if col is None:
                    future.set_exception(failure)
                    continue
                try:
                    future.set_result(fn(col))
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                    future.set_exception(exc)
        finally:
            if col is not None:
                col.close()

    def submit(self, fn: Callable[[Collection], Any]) -> Future:
        """Run ``fn(collection)`` on a reader thread; returns its future."""
        future: Future = Future()
        if self._closed:  # no thread will ever take it: fail now rather than hang the request
            future.set_exception(RuntimeError("the server is shutting down"))
            return future
        self._queue.put((fn, future))
        return future

    async def run(self, fn: Callable[[Collection], Any]) -> Any:
        """``await`` the result of ``fn(collection)`` run on a reader thread."""
        return await asyncio.wrap_future(self.submit(fn))

    def call(self, fn: Callable[[Collection], Any], timeout: float | None = None) -> Any:
        """The result of ``fn(collection)``, from a thread that may block."""
        return self.submit(fn).result(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Whether a reader has opened the collection (or failed to); waits up to ``timeout`` s."""
        return self._ready.wait(timeout)

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
        self._queue: queue.Queue[tuple[Job, Callable[[Collection, Job], dict]] | None] = (
            queue.Queue()
        )
        self._thread = threading.Thread(target=self._run, name="lookalike-writer", daemon=True)
        self._thread.start()

    def submit(self, kind: str, fn: Callable[[Collection, Job], dict]) -> Job:
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
        col: Collection | None = None
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
                    job.error_status = http_status(exc) or 500
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


# -- progress of an add, watched from the catalog ------------------------------------------------


class AddProgress:
    """Counts the files of an add that are done, from a read-only connection to the catalog.

    Before the add: files that are unchanged count as done at once. While it runs: every file
    under the add's roots whose catalog row was written after the start is done.
    """

    def __init__(
        self, catalog_path: Path, roots: list[str], job: Job, interval: float = 0.25
    ) -> None:
        self.catalog_path = catalog_path
        self.roots = roots
        self.job = job
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_time = time.time()
        self.unchanged = 0

    def count_work(self, catalog: Catalog, paths: list[str] | None = None) -> int:
        """Scan the roots (or ``paths``, what the add will index of them): total files, and
        how many are unchanged (done already)."""
        known = catalog.files_by_path()
        total = 0
        for path, st, _error in scan([Path(r) for r in (self.roots if paths is None else paths)]):
            total += 1
            row = known.get(path)
            if row is None or st is None:
                continue
            if row.size == st.st_size and row.mtime_ns == st.st_mtime_ns:
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
            catalog = Catalog(self.catalog_path, create=False)
        except (sqlite3.Error, LookalikeError):
            return
        try:
            while not self._stop.wait(self.interval):
                with contextlib.suppress(sqlite3.Error, LookalikeError):
                    written = catalog.count_written_since(self.roots, self.start_time)
                    total = self.job.total or 0
                    self.job.done = min(total, self.unchanged + written) if total else written
        finally:
            catalog.close()
