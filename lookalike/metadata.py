"""Metadata attached to images by path (SKU, title, category, price, URL...), read from files.

``read_metadata`` reads a CSV file (a header row with a ``path`` column) or JSON lines (one
object with a ``path`` per line) into records; ``Collection.set_metadata`` attaches them;
searches filter on them (``lookalike.filters``).

Values are typed: numbers compare as numbers and strings as strings. In CSV a cell that spells
a number (``12``, ``-3.5``, ``1e3``; not ``007``, which stays a code) becomes a number and an
empty cell means "no value" (attaching it removes the key). Relative paths are resolved against
the folder of the metadata file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from lookalike.catalog import normal_path
from lookalike.errors import BadInput
from lookalike.filters import FilterError, as_number, load_json

__all__ = ["FilterError", "MetadataError", "normalize_records", "parse_cell", "read_metadata"]

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
#: Column (or JSON member) naming the image a record belongs to.
PATH_KEY = "path"
#: Longest key accepted, in characters.
MAX_KEY_LENGTH = 200


class MetadataError(BadInput):
    """A metadata file or record that cannot be used; the message names the file and line."""


def parse_cell(text: str | None) -> str | int | float | None:
    """A CSV cell as a value: None when empty, a number when it spells one, else the text."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    number = as_number(text)
    return text if number is None else number


def read_metadata(path: str | os.PathLike) -> list[dict]:
    """Records ``{"path": absolute path, key: value, ...}`` read from a metadata file.

    CSV (``.csv``, ``.tsv``; comma, semicolon or tab separated, detected from the header) needs
    a header row with a ``path`` column; JSON lines (``.jsonl``, ``.ndjson``) need a ``path``
    member in every object; ``.json`` may hold one list of such objects. Relative paths are
    resolved against the file's folder.

    Raises:
        MetadataError: the file is unreadable or malformed (the message names file and line).

    Example:
        >>> read_metadata("products.csv")[0]
        {'path': '/shop/img/123.jpg', 'sku': 'A-123', 'price': 49.9, 'category': 'shoes'}
    """
    file = Path(os.fspath(path)).expanduser()
    try:
        if not stat.S_ISREG(file.stat().st_mode):  # a FIFO or a device would never end
            raise MetadataError(f"metadata file {file} is not a regular file")
        raw = file.read_bytes()
    except OSError as exc:
        raise MetadataError(f"cannot read metadata file {file}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MetadataError(f"{file}: line {line}: not UTF-8 text") from None
    base = file.absolute().parent
    suffix = file.suffix.lower()
    if suffix in JSON_LINES_SUFFIXES:
        return _json_lines(text, file, base)
    if suffix == ".json":
        return _json_array(text, file, base)
    if suffix not in (".csv", ".tsv", ".txt") and text.lstrip().startswith("{"):
        return _json_lines(text, file, base)
    return _csv(text, file, base, "\t" if suffix == ".tsv" else None)


def _resolve(value: object, file: Path, line: int, base: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MetadataError(f"{file}: line {line}: the path is empty or not text")
    return normal_path(os.path.join(base, os.path.expanduser(value.strip())))


def _delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _csv(text: str, file: Path, base: Path, delimiter: str | None) -> list[dict]:
    first = text.split("\n", 1)[0]
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=delimiter or _delimiter(first), strict=True
    )
    try:
        header = next(reader, None)
        if header is None:
            raise MetadataError(f"{file}: empty file (expected a header row with a 'path' column)")
        columns = [name.strip() for name in header]
        lowered = [name.lower() for name in columns]
        if PATH_KEY not in lowered:
            shown = ", ".join(repr(c) for c in columns[:10])
            raise MetadataError(f"{file}: line 1: no 'path' column in the header ({shown})")
        for number, name in enumerate(columns, 1):
            if not name:
                raise MetadataError(f"{file}: line 1: column {number} has no name")
            if len(name) > MAX_KEY_LENGTH:
                raise MetadataError(f"{file}: line 1: column {number}'s name is too long")
            if lowered.count(name.lower()) > 1 and name.lower() == PATH_KEY:
                raise MetadataError(f"{file}: line 1: more than one 'path' column")
            if columns.count(name) > 1:
                raise MetadataError(f"{file}: line 1: column {name!r} appears twice")
        where = lowered.index(PATH_KEY)
        records = []
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) > len(columns):
                raise MetadataError(
                    f"{file}: line {line}: {len(row)} cells, the header has {len(columns)}"
                )
            record: dict = {}
            for name, cell in zip(columns, row, strict=False):
                if name.lower() != PATH_KEY:
                    record[name] = parse_cell(cell)
            for name in columns[len(row) :]:
                record[name] = None
            if where >= len(row):
                raise MetadataError(f"{file}: line {line}: no path")
            records.append({PATH_KEY: _resolve(row[where], file, line, base), **record})
    except csv.Error as exc:
        raise MetadataError(f"{file}: line {reader.line_num}: {exc}") from None
    return records


def _json_record(obj: object, file: Path, line: int, base: Path) -> dict:
    if not isinstance(obj, dict):
        raise MetadataError(f"{file}: line {line}: expected a JSON object, got {_kind(obj)}")
    if PATH_KEY not in obj:
        raise MetadataError(f"{file}: line {line}: the object has no 'path'")
    record = {PATH_KEY: _resolve(obj[PATH_KEY], file, line, base)}
    for key, value in obj.items():
        if key != PATH_KEY:
            record[key] = value
    return record


def _json_lines(text: str, file: Path, base: Path) -> list[dict]:
    records = []
    for line, content in enumerate(text.splitlines(), 1):
        if not content.strip():
            continue
        try:
            obj = load_json(content)  # refuses deep nesting (json.loads: RecursionError)
        except json.JSONDecodeError as exc:
            raise MetadataError(
                f"{file}: line {line}: not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        records.append(_json_record(obj, file, line, base))
    return records


def _json_array(text: str, file: Path, base: Path) -> list[dict]:
    try:
        data = load_json(text)
    except json.JSONDecodeError as exc:
        raise MetadataError(f"{file}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise MetadataError(f"{file}: expected a JSON list of objects, got {_kind(data)}")
    return [_json_record(obj, file, 1, base) for obj in data]


def _kind(value: object) -> str:
    kinds: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
    return kinds.get(type(value), str(value))


def normalize_value(key: str, value: object) -> str | int | float | None:
    """A value as stored: numbers and strings as they are, booleans as 1/0, lists and objects
    as JSON text, None (and NaN) for "remove this key"."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return value
        try:
            return float(value)
        except OverflowError:
            raise MetadataError(f"metadata {key!r}: the number is out of range") from None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise MetadataError(
                    f"metadata {key!r}: not valid Unicode text (a lone surrogate)"
                ) from None
        return value
    if isinstance(value, list | tuple | dict):
        try:
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        except RecursionError:
            raise MetadataError(f"metadata {key!r}: nested too deeply to store") from None
    raise MetadataError(f"metadata {key!r}: cannot store a {type(value).__name__}")


def normalize_records(records: Iterable[Mapping]) -> list[tuple[str, dict]]:
    """``(absolute path, {key: stored value or None})`` for each record; MetadataError if a
    record has no path or an unusable key or value."""
    out = []
    for number, record in enumerate(records, 1):
        if not isinstance(record, Mapping):
            raise MetadataError(f"record {number}: expected a dict, got {type(record).__name__}")
        path = record.get(PATH_KEY)
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise MetadataError(f"record {number}: no 'path'")
        absolute = normal_path(os.path.expanduser(os.fspath(path)))
        values = {}
        for key, value in record.items():
            if key == PATH_KEY:
                continue
            if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
                raise MetadataError(f"record {number}: unusable key {key!r}")
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                raise MetadataError(f"record {number}: key {key!r} is not valid Unicode") from None
            values[key] = normalize_value(key, value)
        out.append((absolute, values))
    return out
