"""Metadata filters (:mod:`lookalike.filters`' tree) compiled into SQL conditions on the
catalog's ``files`` table; user values only ever travel as SQL parameters."""

from __future__ import annotations

from lookalike.filter_tree import (
    MAX_PARAMETERS,
    PATH_FIELD,
    And,
    Condition,
    FilterError,
    Node,
    Not,
    Or,
    Value,
    typed_values,
)

_SQL_OPS = {"eq": "=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}

_IS_NUMBER = "typeof(m.value) IN ('integer', 'real')"
_IS_TEXT = "typeof(m.value) = 'text'"


def _compare(op: str, value: Value, params: list) -> str:
    numbers, texts = typed_values(value)
    parts = []
    for number in numbers:
        parts.append(f"({_IS_NUMBER} AND m.value {op} ?)")
        params.append(number)
    for text in texts:
        parts.append(f"({_IS_TEXT} AND m.value {op} ?)")
        params.append(text)
    return "(" + " OR ".join(parts) + ")"


def _member(values: tuple[Value, ...], params: list) -> str:
    numbers: list[int | float] = []
    texts: list[str] = []
    for value in values:
        n, t = typed_values(value)
        numbers += n
        texts += t
    parts = []
    if numbers:
        parts.append(f"({_IS_NUMBER} AND m.value IN ({','.join('?' * len(numbers))}))")
        params.extend(numbers)
    if texts:
        parts.append(f"({_IS_TEXT} AND m.value IN ({','.join('?' * len(texts))}))")
        params.extend(texts)
    return "(" + " OR ".join(parts) + ")" if parts else "0"


def _path_condition(cond: Condition, params: list) -> str:
    values = [str(v) for v in cond.values]
    if cond.op in ("null", "notnull"):
        return "0" if cond.op == "null" else "1"
    if cond.op in ("in", "nin"):
        if not values:
            return "0" if cond.op == "in" else "1"
        params.extend(values)
        return f"f.path {'NOT ' if cond.op == 'nin' else ''}IN ({','.join('?' * len(values))})"
    params.append(values[0])
    if cond.op in ("like", "nlike"):
        return f"f.path {'NOT ' if cond.op == 'nlike' else ''}LIKE ? ESCAPE '\\'"
    return f"f.path {'!=' if cond.op == 'ne' else _SQL_OPS[cond.op]} ?"


def _condition(cond: Condition, params: list) -> str:
    if cond.field == PATH_FIELD:
        return _path_condition(cond, params)
    params.append(cond.field)
    head = "f.path IN (SELECT m.path FROM metadata m WHERE m.key = ?"
    if cond.op == "null":
        return "f.path NOT IN (SELECT m.path FROM metadata m WHERE m.key = ?)"
    if cond.op == "notnull":
        return head + ")"
    if cond.op in ("eq", "lt", "le", "gt", "ge"):
        return f"{head} AND {_compare(_SQL_OPS[cond.op], cond.values[0], params)})"
    if cond.op == "ne":
        return f"{head} AND NOT {_compare('=', cond.values[0], params)})"
    if cond.op in ("in", "nin"):
        member = _member(cond.values, params)
        return f"{head} AND {'NOT ' if cond.op == 'nin' else ''}{member})"
    if cond.op in ("like", "nlike"):
        params.append(str(cond.values[0]))
        negate = "NOT " if cond.op == "nlike" else ""
        return f"{head} AND {negate}CAST(m.value AS TEXT) LIKE ? ESCAPE '\\')"
    raise FilterError(f"unknown operator {cond.op!r}")


def _balanced(parts: list[str], joiner: str) -> str:
    """``parts`` joined by ``joiner`` as a balanced tree of parentheses.

    SQLite nests ``a AND b AND c ...`` one level per term and refuses expressions deeper than
    1000 levels; halving keeps a chain of ``n`` terms ``log2(n)`` deep.
    """
    if len(parts) <= 4:
        return "(" + joiner.join(parts) + ")"
    half = len(parts) // 2
    return f"({_balanced(parts[:half], joiner)}{joiner}{_balanced(parts[half:], joiner)})"


def _sql(node: Node, params: list) -> str:
    if isinstance(node, Condition):
        return _condition(node, params)
    if isinstance(node, And):
        return _balanced([_sql(item, params) for item in node.items], " AND ")
    if isinstance(node, Or):
        return _balanced([_sql(item, params) for item in node.items], " OR ")
    if isinstance(node, Not):
        return f"(NOT {_sql(node.item, params)})"
    raise FilterError(f"not a filter node: {node!r:.200}")


def compile_filter(node: Node | None) -> tuple[str, list]:
    """``(sql, params)``: the filter tree ``node`` as a condition on the catalog's ``files``
    table aliased ``f``; ``"1"`` (everything) when there is no filter."""
    if node is None:
        return "1", []
    params: list = []
    sql = _sql(node, params)
    if len(params) > MAX_PARAMETERS:
        raise FilterError(f"filter is too large ({len(params)} values, at most {MAX_PARAMETERS})")
    for param in params:
        if isinstance(param, str):
            try:
                param.encode("utf-8")
            except UnicodeEncodeError:  # e.g. bytes of another encoding in a command line
                raise FilterError(f"filter text {param!r} is not valid UTF-8") from None
    return sql, params
