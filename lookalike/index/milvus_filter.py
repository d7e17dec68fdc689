"""Metadata filters (:mod:`lookalike.filters`' tree) as Milvus boolean expressions.

Each Milvus row holds its file's metadata in the JSON field ``meta`` and its path in ``path``
(:mod:`lookalike.index.milvus`). Comparisons, ``in`` lists, ``and``/``or`` and a folder map
to Milvus expressions that admit at least every matching row; the catalog's own check of each
file then decides exactly, as for the faiss backend. Conditions whose Milvus form could drop a
matching row (``not``, ``!=``, ``like`` with its ASCII case folding, ``is null``) give None:
the caller then sends the allowed ids instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from lookalike.filters import PATH_FIELD, And, Condition, Node, Not, Or, as_filter, typed_values

_OPS = {"eq": "==", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _literal(value: int | float | str) -> str:
    """A Milvus literal: numbers as they are, strings double-quoted (JSON escaping)."""
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _field(name: str) -> str:
    return "path" if name == PATH_FIELD else f"meta[{json.dumps(name)}]"


def _values(values) -> list[str]:
    out: list[str] = []
    for value in values:
        numbers, texts = typed_values(value)
        out += [_literal(v) for v in numbers] + [_literal(t) for t in texts]
    return out


def _condition(cond: Condition) -> str | None:
    field = _field(cond.field)
    if cond.op in _OPS:
        parts = [f"{field} {_OPS[cond.op]} {v}" for v in _values(cond.values[:1])]
        if cond.field == PATH_FIELD:
            parts = [f"path {_OPS[cond.op]} {_literal(str(cond.values[0]))}"]
        return "(" + " or ".join(parts) + ")" if parts else None
    if cond.op == "in":
        values = (
            [_literal(str(v)) for v in cond.values]
            if cond.field == PATH_FIELD
            else _values(cond.values)
        )
        return f"{field} in [{', '.join(values)}]" if values else None
    return None


def _node(node: Node) -> str | None:
    if isinstance(node, Condition):
        return _condition(node)
    if isinstance(node, (And, Or)):
        parts = [_node(item) for item in node.items]
        if any(p is None for p in parts):
            return None
        joiner = " and " if isinstance(node, And) else " or "
        return "(" + joiner.join(parts) + ")"  # type: ignore[arg-type]
    if isinstance(node, Not):
        return None
    return None


def _folder(folder: str | os.PathLike) -> str | None:
    inside = os.path.abspath(os.path.expanduser(os.fspath(folder))).rstrip(os.sep)
    if any(ch in inside for ch in '%_\\"'):
        return None  # Milvus LIKE has no escape for these
    return f"(path == {_literal(inside)} or path like {_literal(inside + os.sep + '%')})"


def to_milvus(
    where: str | Mapping | Node | None, folder: str | os.PathLike | None = None
) -> str | None:
    """A Milvus expression admitting every row that passes ``where`` inside ``folder``, or
    None when one part has no such form. ``""`` when there is nothing to filter."""
    parts = []
    node = as_filter(where)
    if node is not None:
        text = _node(node)
        if text is None:
            return None
        parts.append(text)
    if folder is not None:
        text = _folder(folder)
        if text is None:
            return None
        parts.append(text)
    return " and ".join(parts)
