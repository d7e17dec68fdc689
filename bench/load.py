"""Load test of `lookalike serve` on loopback: many concurrent clients for a fixed time.

    python -m bench load                      # through the benchmark table (bench/__main__.py)
    python -m bench.load --clients 32 --seconds 20 --readers 2

The demo collection (scikit-image's sample photos, a catalogue, near-duplicates) is indexed
into a temporary folder and served by ``lookalike serve`` in its own process, so that server
and clients do not share an interpreter. ``clients`` asyncio tasks (httpx, one connection pool)
then send requests back to back for ``seconds``, after a warm-up that is not counted:

* 70 % ``POST /api/search?k=10`` uploading one of the demo's altered query photos (JPEG,
  512 px, 20-90 KB), 10 % the same with a metadata filter,
* 5 % ``POST /api/search/by-id/{id}`` (more like this), 10 % thumbnails, 5 % health.

Reported: requests/s, p50/p99 latency (all requests and searches alone), every status seen
(no 5xx allowed; a request that fails to connect counts as an error), beside the baseline of
``Collection.search`` on the same queries in this process, one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOKEN = "bench-load-token"

MIX = (  # (kind, weight)
    ("search", 70),
    ("search_filtered", 10),
    ("by_id", 5),
    ("thumbnail", 10),
    ("health", 5),
)


def demo_index(root: Path, workers: int | None = None) -> tuple[Path, list[bytes]]:
    """Index the demo collection under ``root``; the index and the query photos' bytes."""
    import lookalike
    from lookalike.demo import write_demo_catalogue, write_demo_photos

    photos, queries = write_demo_photos(root)
    catalogue = write_demo_catalogue(root, photos)
    with lookalike.open(root / "index") as col:
        col.add([photos], workers=workers, metadata=catalogue)
    return root / "index", [p.read_bytes() for p in sorted(queries.glob("*.jpg"))]


def in_process_baseline(index: Path, queries: list[bytes], seconds: float) -> dict:
    """``Collection.search`` of the same uploads, one at a time in this process."""
    import lookalike

    with lookalike.open(index, create=False) as col:
        col.search(queries[0], k=10)  # model loaded, index read
        times = []
        end = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < end:
            start = time.perf_counter()
            col.search(queries[n % len(queries)], k=10)
            times.append(time.perf_counter() - start)
            n += 1
    ms = np.array(times) * 1000
    return {
        "searches": n,
        "searches_per_s": n / float(np.sum(times)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def start_server(index: Path, readers: int) -> tuple[subprocess.Popen, str]:
    """``lookalike serve`` on 127.0.0.1 and a free port; the process and its address."""
    command = [sys.executable, "-m", "lookalike.cli", "serve", "--db", str(index), "--port", "0",
               "--token", TOKEN, "--readers", str(readers), "-q"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"lookalike serve did not start: {line}{proc.stdout.read()}")
    return proc, line


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _client_loop(client, url: str, queries: list[bytes], ids: list[int], until: float,
                       record: list, rng: random.Random) -> None:  # fmt: skip
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    while time.perf_counter() < until:
        kind = rng.choices(kinds, weights)[0]
        query = queries[rng.randrange(len(queries))]
        start = time.perf_counter()
        try:
            if kind == "search":
                r = await client.post(url + "api/search", params={"k": 10},
                                      files={"image": ("q.jpg", query, "image/jpeg")})  # fmt: skip
            elif kind == "search_filtered":
                r = await client.post(
                    url + "api/search",
                    params={"k": 10, "where": json.dumps({"price": {"lt": 100}})},
                    files={"image": ("q.jpg", query, "image/jpeg")},
                )
            elif kind == "by_id":
                r = await client.post(url + f"api/search/by-id/{rng.choice(ids)}", params={"k": 10})
            elif kind == "thumbnail":
                r = await client.get(url + f"api/images/{rng.choice(ids)}/thumbnail")
            else:
                r = await client.get(url + "api/health")
            status = r.status_code
        except Exception as exc:  # noqa: BLE001 - a failed connection is an error, counted
            status = f"error: {type(exc).__name__}"
        record.append((kind, status, time.perf_counter() - start, start))


async def _drive(url: str, clients: int, seconds: float, warmup: float,
                 queries: list[bytes], ids: list[int]) -> tuple[list, float]:  # fmt: skip
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        record: list = []
        rngs = [random.Random(i) for i in range(clients)]
        warm_end = time.perf_counter() + warmup
        await asyncio.gather(*(_client_loop(client, url, queries, ids, warm_end, [], rng)
                               for rng in rngs))  # fmt: skip
        started = time.perf_counter()
        await asyncio.gather(*(_client_loop(client, url, queries, ids, started + seconds, record,
                                            rng) for rng in rngs))  # fmt: skip
        wall = time.perf_counter() - started
    return record, wall


def wait_until_ready(url: str, seconds: float = 60.0) -> None:
    """Block until the server at ``url`` answers ``/api/health`` with ``ready``."""
    import httpx

    deadline = time.time() + seconds
    while True:
        try:
            if httpx.get(url + "api/health", timeout=5).json()["ready"]:
                return
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            raise RuntimeError(f"the server did not get ready in {seconds:.0f} s")
        time.sleep(0.2)


def latency(rows: list) -> dict:
    """Count, p50, p99 and max in ms of ``(kind, status, seconds, ...)`` rows."""
    if not rows:
        return {"requests": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ms = np.array([r[2] for r in rows]) * 1000
    return {
        "requests": len(rows),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def measure_load(clients: int = 16, seconds: float = 10.0, warmup: float = 2.0,
                 readers: int = 2, baseline_seconds: float = 4.0) -> dict:  # fmt: skip
    """Serve the demo collection and load it; the figures as a dict (see module doc)."""
    with tempfile.TemporaryDirectory(prefix="lookalike-load-") as tmp:
        index, queries = demo_index(Path(tmp))
        baseline = in_process_baseline(index, queries, baseline_seconds)
        proc, url = start_server(index, readers)
        try:
            import httpx

            wait_until_ready(url)
            first = httpx.post(url + "api/search", params={"k": 50},
                               files={"image": ("q.jpg", queries[0])}, timeout=30)  # fmt: skip
            ids = [hit["id"] for hit in first.json()["results"]]
            record, wall = asyncio.run(_drive(url, clients, seconds, warmup, queries, ids))
        finally:
            stop_server(proc)
    statuses: dict[str, int] = {}
    for _, status, _, _ in record:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = [r for r in record if r[1] == 200 or r[1] == 304]
    searches = [r for r in ok if r[0] in ("search", "search_filtered", "by_id")]
    uploads = [r for r in ok if r[0] in ("search", "search_filtered")]
    server_errors = sum(n for s, n in statuses.items() if s.startswith(("5", "error")))
    return {
        "clients": clients,
        "seconds": wall,
        "readers": readers,
        "cores": os.cpu_count(),
        "requests": len(record),
        "requests_per_s": len(record) / wall,
        "searches_per_s": len(searches) / wall,
        "upload_searches_per_s": len(uploads) / wall,
        "all": latency(record),
        "upload_search": latency(uploads),
        "by_kind": {kind: latency([r for r in record if r[0] == kind]) for kind, _ in MIX},
        "statuses": statuses,
        "server_errors": server_errors,
        "non_2xx": sum(n for s, n in statuses.items() if s not in ("200", "304")),
        "baseline": baseline,
    }


def load_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """Rows for the benchmark table (bench/__main__.py)."""
    b = r["baseline"]
    upload = r["upload_search"]
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(r["statuses"].items()))
    return [
        (
            f"(h) server, {r['clients']} clients x {r['seconds']:.0f} s on loopback, "
            f"{r['readers']} readers",
            f"{r['requests_per_s']:.1f} req/s",
            f"statuses {statuses}",
            "ok" if r["server_errors"] == 0 else "5xx / ERRORS",
        ),
        (
            "    upload searches (POST /api/search, k=10)",
            f"{r['upload_searches_per_s']:.1f} /s",
            f"in-process col.search, 1 at a time: {b['searches_per_s']:.1f} /s",
            f"{r['upload_searches_per_s'] / b['searches_per_s']:.2f}x",
        ),
        (
            "    upload search latency under load",
            f"p50 {upload['p50_ms']:.0f} / p99 {upload['p99_ms']:.0f} ms",
            f"in-process alone: p50 {b['p50_ms']:.0f} / p99 {b['p99_ms']:.0f} ms",
            "",
        ),
        (
            "    all requests latency (mix: search, filter, by id, thumbnail, health)",
            f"p50 {r['all']['p50_ms']:.0f} / p99 {r['all']['p99_ms']:.0f} ms",
            f"thumbnails p50 {r['by_kind']['thumbnail']['p50_ms']:.0f} ms, "
            f"health p50 {r['by_kind']['health']['p50_ms']:.0f} ms",
            "",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = ap.parse_args(argv)
    os.environ.setdefault("LOOKALIKE_CACHE", str(Path.home() / ".cache" / "lookalike"))
    r = measure_load(args.clients, args.seconds, readers=args.readers)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        from bench.report import render

        print(render(load_rows(r)))
    return 0 if r["server_errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
