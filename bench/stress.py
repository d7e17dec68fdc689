"""Stress test of `lookalike serve`: searches beside adds and deletes, in rounds, with memory.

    python -m bench.stress                              # 8 clients, 6 rounds of 20 s
    python -m bench.stress --clients 16 --rounds 10 --seconds 30 --json

The demo collection is served by ``lookalike serve`` in its own process on 127.0.0.1 (as in
``bench/load.py``). ``clients`` asyncio tasks send requests back to back:

* 80 % ``POST /api/search?k=10`` uploading one of the demo's query photos,
* 5 % more-like-this by id, 5 % thumbnails (of the demo's own images, never deleted),
* 5 % ``POST /api/images?wait=true`` uploading a NEW generated JPEG (indexed by the server's
  writer, answered when the job is done),
* 5 % ``DELETE /api/images/{id}`` of an image added earlier in the run (the collection stays
  about the same size).

Every answer must be 2xx: anything else, and any failed connection, is an error. After a
warm-up, the server's resident memory (RSS of the server process, from /proc) is read after
each round: a server that leaks grows round after round; a bounded one levels off. Reported:
requests/s, p50/p99 latency (all requests, and per kind), statuses, RSS per round and the
growth over the second half of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from bench.load import TOKEN, demo_index, latency, start_server, stop_server, wait_until_ready

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MIX = (("search", 80), ("by_id", 5), ("thumbnail", 5), ("add", 5), ("delete", 5))


def new_jpeg(rng: random.Random, size: int = 160) -> bytes:
    """A distinct generated JPEG (random rectangles)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(size - 20), rng.randrange(size - 20)
        w, h = rng.randrange(10, size // 2), rng.randrange(10, size // 2)
        draw.rectangle((x, y, x + w, y + h), fill=tuple(rng.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def server_rss(pid: int) -> int:
    """Resident bytes of the server process."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _client(client, url: str, queries: list[bytes], ids: list[int], added: list[int],
                  until: float, record: list, rng: random.Random) -> None:  # fmt: skip
    kinds, weights = [k for k, _ in MIX], [w for _, w in MIX]
    while time.perf_counter() < until:
        kind = rng.choices(kinds, weights)[0]
        if kind == "delete" and not added:
            kind = "add"
        start = time.perf_counter()
        try:
            if kind == "search":
                query = queries[rng.randrange(len(queries))]
                r = await client.post(url + "api/search", params={"k": 10},
                                      files={"image": ("q.jpg", query, "image/jpeg")})  # fmt: skip
            elif kind == "by_id":
                r = await client.post(url + f"api/search/by-id/{rng.choice(ids)}", params={"k": 10})
            elif kind == "thumbnail":
                r = await client.get(url + f"api/images/{rng.choice(ids)}/thumbnail")
            elif kind == "add":
                data = new_jpeg(rng)
                r = await client.post(url + "api/images", params={"wait": "true"}, headers=AUTH,
                                      files={"files": ("new.jpg", data, "image/jpeg")})  # fmt: skip
                if r.status_code == 200:
                    added += [f["id"] for f in r.json()["result"]["files"]]
            else:
                victim = added.pop(rng.randrange(len(added)))
                r = await client.delete(url + f"api/images/{victim}", headers=AUTH)
            status = r.status_code
        except Exception as exc:  # noqa: BLE001 - a failed connection is an error, counted
            status = f"error: {type(exc).__name__}"
        record.append((kind, status, time.perf_counter() - start))


async def _round(url, clients, seconds, queries, ids, added, seed) -> tuple[list, float]:
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        record: list = []
        started = time.perf_counter()
        await asyncio.gather(*(
            _client(client, url, queries, ids, added, started + seconds, record,
                    random.Random(seed * 1000 + i))
            for i in range(clients)
        ))  # fmt: skip
        return record, time.perf_counter() - started


def measure_stress(clients: int = 8, rounds: int = 6, seconds: float = 20.0,
                   warmup: float = 5.0, readers: int = 2) -> dict:  # fmt: skip
    """Serve the demo collection and stress it; the figures as a dict (see module doc)."""
    import httpx

    with tempfile.TemporaryDirectory(prefix="lookalike-stress-") as tmp:
        index, queries = demo_index(Path(tmp))
        proc, url = start_server(index, readers)
        try:
            wait_until_ready(url)
            first = httpx.post(url + "api/search", params={"k": 50},
                               files={"image": ("q.jpg", queries[0])}, timeout=60)  # fmt: skip
            ids = [hit["id"] for hit in first.json()["results"]]
            added: list[int] = []
            asyncio.run(_round(url, clients, warmup, queries, ids, added, seed=0))
            rss = [server_rss(proc.pid)]
            record: list = []
            wall = 0.0
            for n in range(rounds):
                rows, took = asyncio.run(_round(url, clients, seconds, queries, ids, added, n + 1))
                record += rows
                wall += took
                rss.append(server_rss(proc.pid))
                print(f"round {n + 1}/{rounds}: {len(rows) / took:.1f} req/s, "
                      f"server RSS {rss[-1] / 2**20:.0f} MiB", file=sys.stderr)  # fmt: skip
            images = httpx.get(url + "api/stats", timeout=30).json()["images"]
        finally:
            stop_server(proc)
    statuses: dict[str, int] = {}
    for _, status, _ in record:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    errors = sum(n for s, n in statuses.items() if not s.startswith("2"))
    half = rss[len(rss) // 2]
    return {
        "clients": clients,
        "rounds": rounds,
        "seconds": wall,
        "cores": os.cpu_count(),
        "requests": len(record),
        "requests_per_s": len(record) / wall if wall else 0.0,
        "all": latency(record),
        "by_kind": {k: latency([r for r in record if r[0] == k]) for k, _ in MIX},
        "statuses": statuses,
        "errors": errors,
        "rss_bytes": rss,
        "rss_growth_second_half": rss[-1] - half,
        "images_at_end": images,
    }


def stress_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """Rows for the benchmark table."""
    mib = 2**20
    kinds = r["by_kind"]
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(r["statuses"].items()))
    growth = r["rss_growth_second_half"] / mib
    return [
        (
            f"server stress, {r['clients']} clients x {r['rounds']} rounds "
            f"({r['seconds']:.0f} s), loopback",
            f"{r['requests_per_s']:.1f} req/s",
            f"statuses {statuses}",
            "ok" if r["errors"] == 0 else "ERRORS",
        ),
        (
            "    latency, all requests",
            f"p50 {r['all']['p50_ms']:.0f} / p99 {r['all']['p99_ms']:.0f} ms",
            f"max {r['all']['max_ms']:.0f} ms",
            "",
        ),
        (
            "    searches / adds / deletes",
            f"p99 {kinds['search']['p99_ms']:.0f} / {kinds['add']['p99_ms']:.0f} / "
            f"{kinds['delete']['p99_ms']:.0f} ms",
            f"{kinds['search']['requests']} / {kinds['add']['requests']} / "
            f"{kinds['delete']['requests']} requests",
            "",
        ),
        (
            "    server RSS after warm-up, then each round (MiB)",
            " ".join(f"{b / mib:.0f}" for b in r["rss_bytes"]),
            f"growth over the second half: {growth:+.1f} MiB",
            "bounded" if growth < 0.05 * r["rss_bytes"][0] / mib + 16 else "GROWING",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=20.0, help="per round")
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = ap.parse_args(argv)
    os.environ.setdefault("LOOKALIKE_CACHE", str(Path.home() / ".cache" / "lookalike"))
    r = measure_stress(args.clients, args.rounds, args.seconds, readers=args.readers)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        from bench.report import render

        print(render(stress_rows(r)))
    return 0 if r["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
