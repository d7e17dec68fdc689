"""The HTTP API against its own OpenAPI spec (schemathesis, in-process through ASGI): no 5xx.

Every operation gets requests generated from the spec -- valid ones and, in the negative mode,
ones that break it (wrong types, missing fields, odd strings, random bytes as images) -- with
the token and without. Whatever comes in, the answer is a JSON error or a success, never a
server error. Auth, size limits and path traversal have their own tests in test_server_api.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from test_server_api import AUTH, TOKEN, demo_collection

pytestmark = [pytest.mark.slow]

EXAMPLES = 30  # per operation and mode


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzzed-server")
    demo_collection(root)
    return root


@pytest.fixture()
def schema(served: Path):
    """A fresh app per test: schemathesis's pytest plugin ends the app's lifespan (and so the
    server's reader and writer threads) after each test."""
    from fastapi.testclient import TestClient

    from lookalike.server import ServerConfig, create_app

    config = ServerConfig(
        db=served / "index",
        token=TOKEN,
        allow_roots=[served],
        workers=1,
        readers=2,
        allow_hosts=["testserver"],  # the Host schemathesis sends
    )
    app = create_app(config)
    with TestClient(app) as client:
        # warm up: the first text query builds the text encoder and embeds its concepts
        assert client.post("/api/search", data={"text": "cat"}).status_code == 200
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def _operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation, mode: GenerationMode, failures: list[str], seen: dict) -> None:
    """Send ``EXAMPLES`` generated requests to one operation, with and without the token."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case) -> None:
        for headers in (AUTH, {}):
            response = case.call(headers=headers, timeout=60)
            seen.setdefault(operation.label, set()).add(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{operation.label}: {response.status_code} {response.text[:200]}\n"
                    + case.as_curl_command()
                )
            elif response.status_code >= 400:
                assert "detail" in response.json(), (operation.label, response.text)

    try:
        call()
    except Unsatisfiable:  # negative mode: nothing in this operation's spec can be broken
        assert mode == GenerationMode.NEGATIVE, operation.label
        seen.setdefault(operation.label, set())


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_makes_a_server_error(schema, mode: GenerationMode) -> None:
    failures: list[str] = []
    seen: dict[str, set[int]] = {}
    for operation in _operations(schema):
        _fuzz(operation, mode, failures, seen)
    print({label: sorted(codes) for label, codes in sorted(seen.items())})
    assert len(seen) >= 15  # every operation of the API was exercised
    assert not failures, "\n\n".join(failures[:5])


def test_the_spec_lists_every_route(schema) -> None:
    labels = {op.label for op in _operations(schema)}
    for expected in ("POST /api/search", "DELETE /api/images/{image_id}", "GET /api/health",
                     "POST /api/images", "POST /api/images/paths", "POST /api/check"):  # fmt: skip
        assert expected in labels, labels


def test_found_by_the_fuzzer_a_nul_in_a_server_path_is_400(served: Path) -> None:
    from fastapi.testclient import TestClient

    from lookalike.server import ServerConfig, create_app

    config = ServerConfig(db=served / "index", token=TOKEN, allow_roots=[served], readers=1)
    with TestClient(create_app(config), base_url="http://localhost") as client:
        for body in ({"paths": [f"{served}/a\x00b"]}, {"paths": [str(served)], "metadata": "\x00"}):
            r = client.post("/api/images/paths", headers=AUTH, json=body)
            assert r.status_code == 400 and "NUL" in r.json()["detail"], r.text


def test_found_by_the_fuzzer_work_after_shutdown_fails_at_once(served: Path) -> None:
    """Requests that reach a closed server (its lifespan ended) fail instead of waiting forever."""
    from lookalike.server.workers import ReaderPool, Writer

    readers = ReaderPool(served / "index", readers=1, threads=1)
    readers.close()
    with pytest.raises(RuntimeError, match="shutting down"):
        readers.call(lambda col: col.info(), timeout=5)
    writer = Writer(served / "index")
    writer.close()
    job = writer.submit("delete", lambda col, job: {})
    assert job.wait(5) and job.status == "failed" and job.error_status == 503
