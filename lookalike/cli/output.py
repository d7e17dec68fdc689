"""How the ``lookalike`` command prints: JSON lines or text, result tables, tolerant streams."""

from __future__ import annotations

import argparse
import codecs
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lookalike.collection import Match


def emit(args: argparse.Namespace, payload: object, text: str) -> None:
    """Print ``payload`` as one JSON line with ``--json``, else ``text`` (if any)."""
    if args.json:
        print(json.dumps(payload, ensure_ascii=False))
    elif text:
        print(text)


def match_json(match: Match) -> dict:
    """One search result as ``--json`` prints it (scores rounded to 6 places)."""
    return {
        "path": match.path,
        "score": round(match.score, 6),
        "distance": round(match.distance, 6),
        "id": match.id,
        "width": match.width,
        "height": match.height,
        "metadata": match.metadata,
    }


def jsonable(value: object) -> object:
    """A ``json.dumps`` default: numpy scalars as numbers, results by ``as_dict``, else text."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return str(value)


def table(query: str, matches: Sequence[Match], filtered: bool = False) -> str:
    """The results of one query as a text table (rank, score, size, path, metadata)."""
    lines = [f"{query}:"]
    if not matches:
        return lines[0] + (" (no image passes the filter)" if filtered else " (the index is empty)")
    lines.append(f"  {'rank':>4}  {'score':>6}  {'size':>11}  path")
    for rank, m in enumerate(matches, 1):
        size = f"{m.width}x{m.height}"
        lines.append(f"  {rank:>4}  {m.score:6.4f}  {size:>11}  {m.path}")
        if m.metadata:
            shown = "  ".join(f"{key}={value}" for key, value in m.metadata.items())
            lines.append(f"  {'':>4}  {'':>6}  {'':>11}  {shown[:200]}")
    return "\n".join(lines)


def size_text(n: float) -> str:
    """A byte count for people: ``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def os_error_text(exc: OSError) -> str:
    """``PATH: reason`` for an operating-system error, one line."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        name = os.fsdecode(exc.filename) if isinstance(exc.filename, bytes) else exc.filename
        return f"{name}: {reason}"
    return reason


def _encode_error(exc: UnicodeError) -> tuple[str | bytes, int]:
    """Error handler for output: bytes of undecodable file names as they were, else escapes."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    text = exc.object[exc.start : exc.end]
    if all("\udc80" <= char <= "\udcff" for char in text):
        return bytes(ord(char) - 0xDC00 for char in text), exc.end
    return codecs.backslashreplace_errors(exc)


def tolerant_output() -> None:
    """Printing never fails: a closed stdout or stderr writes nowhere; file names that are
    not valid UTF-8 (or not encodable in an ASCII locale) are written as their bytes or escaped
    instead of raising UnicodeEncodeError."""
    codecs.register_error("lookalike-output", _encode_error)
    # started with a closed stdout or stderr (`>&-`), Python sets it to None: write nowhere
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="lookalike-output")
