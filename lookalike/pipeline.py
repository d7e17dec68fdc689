"""Indexing: scan -> read, hash and decode in a pool of workers -> batched encode -> write.

Each stage has one job. The scanner (:mod:`lookalike.scanning`) lists candidate files and
compares them with the catalog (size and mtime); workers read each file once, hash it, and
decode and preprocess it only when its content is new; the main process batches pixels through
the model and commits every batch in one catalog transaction, so an interrupted run keeps all
committed batches and a later run carries on from there.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.catalog import Catalog, FileRow, NewContent
from lookalike.images import ImageError, load_image, read_bytes
from lookalike.scanning import scan

Preparer = Callable[..., np.ndarray]  # RGB image -> array, run in the workers

#: Seconds one file may take in a decode worker (read, hash, decode, prepare) before it counts
#: as hung: its worker is killed and the file recorded as an error.
FILE_TIME_LIMIT = 120.0
#: stacked prepared arrays -> stored vectors (``{feature: vectors}`` for a job with ``also``)
Encode = Callable[[np.ndarray], np.ndarray | dict[str, np.ndarray]]


@dataclass(frozen=True)
class FeatureJob:
    """One descriptor the run computes: its preparation in the workers, its batched encoding.

    ``also`` names more features that the same ``encode`` call yields (other outputs of one
    model run, such as the class probabilities beside the deep vectors); ``encode`` then returns
    ``{feature: vectors}`` for ``name`` and each of them, and a content lacking any of them is
    encoded once and given only what it lacks.
    """

    name: str
    prepare: Preparer
    encode: Encode
    also: tuple[str, ...] = ()

    @property
    def features(self) -> tuple[str, ...]:
        return (self.name, *self.also)


@dataclass(frozen=True)
class Candidate:
    """A file found by the scanner that must be (re)read, and which features it needs."""

    path: str
    size: int
    mtime_ns: int
    features: tuple[str, ...] | None = None  # None: every feature of the run
    sha256: str | None = None  # the content expected; if the file changed, all features


@dataclass
class FileResult:
    """What a worker learned about one file."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None = None
    error: str | None = None
    width: int = 0
    height: int = 0
    format: str = ""
    prepared: dict[str, np.ndarray] | None = None


@dataclass
class IndexReport:
    """Summary of one indexing run."""

    scanned: int = 0
    unchanged: int = 0
    embedded: int = 0
    backfilled: int = 0
    linked: int = 0
    failed: int = 0
    pruned: int = 0
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)  # e.g. learned codes not fitted yet
    decode_cpu_s: float = 0.0  # CPU time the workers spent reading, hashing and decoding
    encode_cpu_s: float = 0.0  # CPU time of inference (all its threads)
    metadata: dict | None = None  # counts from attaching a metadata file (Collection.add)

    def as_dict(self) -> dict:
        out = {
            "scanned": self.scanned,
            "unchanged": self.unchanged,
            "embedded": self.embedded,
            "backfilled": self.backfilled,
            "linked": self.linked,
            "failed": self.failed,
            "pruned": self.pruned,
            "seconds": round(self.seconds, 3),
            "errors": [{"path": p, "error": e} for p, e in self.errors],
            "interrupted": self.interrupted,
            "notes": self.notes,
            "decode_cpu_s": round(self.decode_cpu_s, 3),
            "encode_cpu_s": round(self.encode_cpu_s, 3),
        }
        if self.metadata is not None:
            out["metadata"] = self.metadata
        return out


# -- workers -----------------------------------------------------------------------------------

_known_hashes: frozenset[str] = frozenset()
_preparers: dict[str, Preparer] = {}
_min_side = 448
_max_pixels: int | None = None


def _init_worker(
    known: frozenset[str],
    preparers: dict[str, Preparer],
    min_side: int,
    max_pixels: int | None,
    parent_pid: int | None = None,
) -> None:
    global _known_hashes, _preparers, _min_side, _max_pixels
    _known_hashes, _preparers, _min_side, _max_pixels = known, preparers, min_side, max_pixels
    # Ctrl+C reaches the whole process group: the main process handles it and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        exit_with(parent_pid)


def exit_with(pid: int, poll: float = 1.0) -> None:
    """End this process (``os._exit``) as soon as process ``pid`` ends, however it ends.

    A decode worker is a child of multiprocessing's fork server, not of the indexing process, and
    it holds its own end of the task queue: when the indexing process is killed (``kill -9``),
    nothing else would ever stop it. Once the workers are gone, the fork server and the resource
    tracker see the end of their pipes and exit by themselves. Watches a pidfd where Linux has
    one (no polling, no pid reuse), else checks every ``poll`` seconds.
    """
    try:
        fd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # not Linux >= 5.3: poll instead
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                time.sleep(poll)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                except OSError:  # alive, owned by someone else (cannot happen: our parent)
                    continue
        os._exit(1)

    threading.Thread(target=watch, name="lookalike-exit-with-parent", daemon=True).start()


def process_file(candidate: Candidate) -> FileResult:
    """Read, hash and (unless the content has every feature) decode and prepare one file."""
    result = FileResult(candidate.path, candidate.size, candidate.mtime_ns)
    try:
        data = read_bytes(candidate.path)
        result.sha256 = hashlib.sha256(data).hexdigest()
        if result.sha256 in _known_hashes:
            return result
        decoded = load_image(data, min_side=_min_side, max_pixels=_max_pixels)
        same = candidate.sha256 is None or candidate.sha256 == result.sha256
        wanted = candidate.features if candidate.features and same else tuple(_preparers)
        result.prepared = {name: _preparers[name](decoded.image) for name in wanted}
        result.width, result.height, result.format = decoded.width, decoded.height, decoded.format
    except ImageError as exc:
        result.error = exc.reason
    except Exception as exc:  # a decoder bug must not stop the run
        result.error = f"failed: {type(exc).__name__}: {exc}"
    return result


def _process_chunk(chunk: list[Candidate]) -> tuple[list[FileResult], float]:
    started = time.process_time()
    results = [process_file(c) for c in chunk]
    return results, time.process_time() - started


# -- the run -----------------------------------------------------------------------------------


def _worker_context() -> multiprocessing.context.BaseContext:
    """Workers start from a clean server process that has imported the decoders once.

    "forkserver" where the platform has it (cheap workers, and no fork of a process that may
    already run inference threads), "spawn" elsewhere.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["lookalike.pipeline", "lookalike.features.efficientnet"])
        return context
    return multiprocessing.get_context("spawn")


def default_workers() -> int:
    """Decode workers: one per core."""
    return max(1, os.cpu_count() or 1)


class _Writer:
    """Buffers results and commits them, one transaction per batch."""

    def __init__(
        self,
        catalog: Catalog,
        jobs: list[FeatureJob],
        batch_size: int,
        report: IndexReport,
    ) -> None:
        self.catalog = catalog
        self.jobs = jobs
        self.batch_size = batch_size
        self.report = report
        self.content_ids = catalog.content_ids_by_hash()
        self.have = catalog.features_by_content()
        self.batch: dict[str, FileResult] = {}
        self.waiting: list[FileResult] = []  # links and errors, written with the next commit

    def missing(self, sha256: str) -> set[str]:
        """Features the content with this hash still lacks (all of them if it is new)."""
        content_id = self.content_ids.get(sha256)
        wanted = {name for job in self.jobs for name in job.features}
        return wanted if content_id is None else wanted - self.have.get(content_id, set())

    def complete_hashes(self) -> frozenset[str]:
        """Hashes of the contents that already have every feature of this run."""
        return frozenset(sha for sha in self.content_ids if not self.missing(sha))

    def take(self, result: FileResult) -> None:
        sha = result.sha256  # set whenever prepared is
        if (
            result.prepared is not None
            and sha is not None
            and sha not in self.batch
            and self.missing(sha)
        ):
            self.batch[sha] = result
        else:  # an error, or a content that is (or will be by this batch) complete: link only
            result.prepared = None
            self.waiting.append(result)
        if len(self.batch) >= self.batch_size or len(self.waiting) >= 4 * self.batch_size:
            self.commit()

    def _encode(self) -> dict[str, dict[str, np.ndarray]]:
        """Vectors per feature, keyed by content hash, for what each content lacks."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for job in self.jobs:
            needing = [
                (sha, r.prepared)
                for sha, r in self.batch.items()
                if r.prepared is not None
                and self.missing(sha) & set(job.features)
                and job.name in r.prepared
            ]
            if not needing:
                continue
            started = time.process_time()
            vectors = job.encode(np.stack([prepared[job.name] for _, prepared in needing]))
            self.report.encode_cpu_s += time.process_time() - started
            outputs = vectors if isinstance(vectors, dict) else {job.name: vectors}
            for name, rows in outputs.items():
                lacking = {
                    sha: v
                    for (sha, _), v in zip(needing, rows, strict=True)
                    if name in self.missing(sha)
                }
                if lacking:
                    out[name] = lacking
        return out

    def commit(self) -> None:
        if not self.batch and not self.waiting:
            return
        encoded = self._encode()
        new = backfilled = 0
        ids: dict[str, int] = {}  # content ids of this batch, new ones included
        with self.catalog.transaction():
            for sha, result in self.batch.items():
                content_id = self.content_ids.get(sha)
                if content_id is None:
                    content = NewContent(sha, result.width, result.height, result.format)
                    content_id = self.catalog.insert_content(content)
                    new += 1
                else:
                    backfilled += 1
                ids[sha] = content_id
                for name, vectors in encoded.items():
                    if sha in vectors:
                        self.catalog.put_vector(content_id, name, vectors[sha])
                self.catalog.upsert_file(
                    result.path, result.size, result.mtime_ns, content_id=content_id
                )
            for result in self.waiting:
                if result.error is not None:
                    self.catalog.upsert_file(
                        result.path, result.size, result.mtime_ns, error=result.error
                    )
                else:
                    linked = result.sha256
                    assert linked is not None  # a file read without error has its hash
                    self.catalog.upsert_file(
                        result.path,
                        result.size,
                        result.mtime_ns,
                        content_id=ids.get(linked) or self.content_ids[linked],
                    )
            if encoded:
                self.catalog.bump_generation(encoded)
        # the transaction is committed: now the in-memory view may follow it
        self.content_ids.update(ids)
        for sha, content_id in ids.items():
            self.have.setdefault(content_id, set()).update(
                name for name, vectors in encoded.items() if sha in vectors
            )
        self.report.embedded += new
        self.report.backfilled += backfilled
        for result in self.waiting:
            if result.error is not None:
                self.report.failed += 1
                self.report.errors.append((result.path, result.error))
            else:
                self.report.linked += 1
        self.batch.clear()
        self.waiting.clear()


def run_index(
    catalog: Catalog,
    roots: Iterable[Path],
    *,
    jobs: list[FeatureJob],
    min_side: int,
    workers: int | None = None,
    batch_size: int = 32,
    max_pixels: int | None = None,
    prune: bool = False,
    progress: bool = False,
    time_limit: float = FILE_TIME_LIMIT,
) -> IndexReport:
    """Bring the catalog up to date with the image files under ``roots``.

    New and changed files get every feature in ``jobs``; unchanged files whose content lacks
    some of them are decoded once more to add what is missing.
    """
    started = time.perf_counter()
    roots = [Path(r) for r in roots]
    report = IndexReport()
    known_files = catalog.files_by_path()
    writer = _Writer(catalog, jobs, batch_size, report)
    candidates: list[Candidate] = []
    unchanged: list[FileRow] = []
    seen: set[str] = set()
    skipped: list[str] = []
    for path, st, error in scan(roots, skipped):
        report.scanned += 1
        seen.add(path)
        row = known_files.get(path)
        if error is not None:
            if row is None or row.error != error:
                writer.take(FileResult(path, 0, 0, error=error))
            else:
                report.unchanged += 1
            continue
        assert st is not None  # scan gives a stat with every path it gives no error for
        if row is not None and row.size == st.st_size and row.mtime_ns == st.st_mtime_ns:
            report.unchanged += 1
            unchanged.append(row)
            continue
        candidates.append(Candidate(path, st.st_size, st.st_mtime_ns))
    candidates += _incomplete(unchanged, writer)

    try:
        if candidates:
            _run_workers(
                candidates,
                writer,
                workers=workers or default_workers(),
                known=writer.complete_hashes(),
                preparers={job.name: job.prepare for job in jobs},
                min_side=min_side,
                max_pixels=max_pixels,
                progress=progress,
                time_limit=time_limit,
            )
        writer.commit()
    except KeyboardInterrupt:
        report.interrupted = True
        report.seconds = time.perf_counter() - started
        raise
    if prune:
        report.pruned = _prune(catalog, roots, seen, skipped)
    _drop_orphans(catalog)
    report.seconds = time.perf_counter() - started
    return report


def _incomplete(unchanged: list[FileRow], writer: _Writer) -> list[Candidate]:
    """One unchanged file for each content that lacks a feature of this run."""
    job_of = {name: job.name for job in writer.jobs for name in job.features}
    wanted = set(job_of)
    hashes = {content_id: sha for sha, content_id in writer.content_ids.items()}
    out: dict[int, Candidate] = {}
    for row in unchanged:
        if row.content_id is None or row.content_id in out:
            continue
        missing = wanted - writer.have.get(row.content_id, set())
        if missing:
            features = tuple(sorted({job_of[name] for name in missing}))  # what to prepare
            out[row.content_id] = Candidate(
                row.path, row.size, row.mtime_ns, features, hashes[row.content_id]
            )
    return list(out.values())


def _run_workers(
    candidates: list[Candidate],
    writer: _Writer,
    *,
    workers: int,
    known: frozenset[str],
    preparers: dict[str, Preparer],
    min_side: int,
    max_pixels: int | None,
    progress: bool,
    time_limit: float = FILE_TIME_LIMIT,
) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(candidates), unit="img", disable=not progress, dynamic_ncols=True)
    decoder = DecodePool(workers, (known, preparers, min_side, max_pixels), time_limit)
    full_batch = writer.batch_size
    try:
        for results, cpu_seconds in decoder.run(candidates):
            writer.report.decode_cpu_s += cpu_seconds
            if decoder.draining:
                # Nothing left to hand out: encode in small batches, so that the workers'
                # last files and the final inference overlap instead of following each other.
                writer.batch_size = min(full_batch, 8)
            for result in results:
                writer.take(result)
            bar.update(len(results))
    finally:
        writer.batch_size = full_batch
        bar.close()
        decoder.close()


class DecodePool:
    """Worker processes that read, hash and decode candidates, a few files per task.

    A worker that dies (a decoder crashing on a hostile file) takes the pool down with it; the
    files that were in flight are then retried one at a time in a fresh pool, and the one that
    kills its worker again is reported as an error instead of stopping the run. A worker that
    finishes nothing for ``time_limit`` seconds per file is killed the same way, and a file that
    takes longer than that alone is reported as hung.
    """

    CHUNK = 4

    def __init__(self, workers: int, initargs: tuple, time_limit: float = FILE_TIME_LIMIT) -> None:
        self.workers = workers
        self.initargs = initargs
        self.time_limit = time_limit
        self.max_in_flight = max(2, workers * 4)
        self.draining = False
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_worker_context(),
                initializer=_init_worker,
                initargs=(*self.initargs, os.getpid()),
            )
        return self._pool

    def _restart(self, kill: bool = False) -> None:
        if self._pool is not None:
            if kill:  # a worker is stuck in a decoder: nothing else stops it
                for process in list((getattr(self._pool, "_processes", None) or {}).values()):
                    process.kill()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        self._restart()

    def run(self, candidates: list[Candidate]) -> Iterator[tuple[list[FileResult], float]]:
        """Yield ``(results, worker CPU seconds)`` per finished task, in completion order."""
        queue = deque(candidates[i : i + self.CHUNK] for i in range(0, len(candidates), self.CHUNK))
        suspects: deque[Candidate] = deque()  # in flight when a worker died: retried alone
        pending: dict[Future, list[Candidate]] = {}
        while queue or suspects or pending:
            isolated = bool(suspects)
            if isolated:
                candidate = suspects.popleft()
                pending[self._executor().submit(_process_chunk, [candidate])] = [candidate]
            else:
                while queue and len(pending) < self.max_in_flight:
                    chunk = queue.popleft()
                    pending[self._executor().submit(_process_chunk, chunk)] = chunk
                self.draining = not queue
            limit = self.time_limit * (1 if isolated else self.CHUNK)
            done, _ = wait(pending, timeout=limit, return_when=FIRST_COMPLETED)
            if not done:  # no task finished in time: a worker hangs on a file
                lost = [c for chunk in pending.values() for c in chunk]
                pending.clear()
                self._restart(kill=True)
                if isolated:
                    (culprit,) = lost
                    error = f"decoding took longer than {self.time_limit:g} s (time limit)"
                    hung = FileResult(culprit.path, culprit.size, culprit.mtime_ns, error=error)
                    yield [hung], 0.0
                else:
                    suspects.extend(lost)
                continue
            lost = []
            for future in done:
                chunk = pending.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    lost += chunk
            if not lost:
                continue
            self._restart()
            if isolated:  # it ran alone: this file kills the decoder
                (culprit,) = lost
                error = "decoder crashed (its worker process died)"
                yield [FileResult(culprit.path, culprit.size, culprit.mtime_ns, error=error)], 0.0
            else:  # the pool took every task in flight down with it
                for chunk in pending.values():
                    lost += chunk
                pending.clear()
                suspects.extend(lost)


def _prune(catalog: Catalog, roots: list[Path], seen: set[str], skipped: Iterable[str] = ()) -> int:
    """Forget files under ``roots`` that the scan no longer found (index folders it skipped,
    such as a server's uploads, keep theirs)."""
    kept = tuple(os.path.join(folder, "") for folder in skipped)
    gone: list[int] = []
    for root in roots:
        for row in catalog.files_under(str(root)):
            if row.path not in seen and not (kept and row.path.startswith(kept)):
                gone.append(row.id)
    if not gone:
        return 0
    with catalog.transaction():
        catalog.delete_files(gone)
        catalog.bump_generation()
    return len(gone)


def _drop_orphans(catalog: Catalog) -> None:
    """Drop contents that no file points at any more (a file changed or failed)."""
    with catalog.transaction():
        if catalog.delete_orphan_contents():
            catalog.bump_generation()
