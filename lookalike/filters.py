"""Filters on image metadata: a small expression language and a dict form, as one tree.

Both forms become one tree of :class:`Condition`, :class:`And`, :class:`Or` and :class:`Not`
nodes, which :func:`lookalike.catalog_filters.to_sql` compiles into a parameterised SQL
condition on the catalog's ``files`` table (alias ``f``). User values only ever travel as SQL
parameters.

Expression grammar (keywords in any case)::

    filter     := or
    or         := and ("or" and)*
    and        := unary ("and" unary)*
    unary      := "not" unary | "(" or ")" | condition
    condition  := FIELD op value
                | FIELD ["not"] "in" "(" value ("," value)* ")"
                | FIELD ["not"] "like" STRING
                | FIELD "is" ["not"] "null"
    op         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    value      := STRING | NUMBER | "true" | "false"

``FIELD`` is a name (letters, digits, ``_``, ``.``, ``-``; not starting with a digit) or any
text in backticks. ``STRING`` is quoted with ``'`` or ``"`` (double the quote to include it).
``like`` patterns use ``%`` and ``_`` (``\\%`` for a literal percent) and ignore ASCII case.
The field ``path`` is the file's own path.

Semantics: numbers compare as numbers, strings as strings; a quoted value that looks like a
number (``'50'``) compares with both. A condition on a field an image does not have is false
(``price != 5`` needs a price); ``not (...)`` is the complement (``not price = 5`` includes
images without a price). ``is null`` / ``is not null`` test whether the field is there.

Dict form (what a JSON API sends), every entry ANDed::

    {"category": "shoes", "price": {"lt": 50, "gte": 10}, "brand": {"in": ["a", "b"]}}

with operators ``eq ne lt lte gt gte in nin like exists`` (``exists``: true or false); a list
stands for ``in``, ``None`` for "is null".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from lookalike import catalog_filters
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
    as_number,
    typed_values,
)

__all__ = [
    "MAX_PARAMETERS",
    "PATH_FIELD",
    "And",
    "Condition",
    "FilterError",
    "Node",
    "Not",
    "Or",
    "Value",
    "as_filter",
    "as_number",
    "filter_from_dict",
    "load_json",
    "parse_filter",
    "to_sql",
    "typed_values",
]

#: Longest expression accepted, in characters, and deepest nesting of parentheses / ``not``.
MAX_LENGTH = 20_000
MAX_DEPTH = 64
#: Most conditions (``field op value``) in one filter.
MAX_CONDITIONS = 500
#: Deepest nesting of arrays and objects accepted by :func:`load_json`.
MAX_JSON_DEPTH = 64

_COMPARISONS = {"=": "eq", "==": "eq", "!=": "ne", "<>": "ne", "<": "lt", "<=": "le",
                ">": "gt", ">=": "ge"}  # fmt: skip
_KEYWORDS = {"and", "or", "not", "in", "like", "is", "null", "true", "false"}


# -- tokens ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "name", "string", "number", "op", "(", ")", ",", "kw", "end"
    text: str  # as written
    value: Value  # the string, number, keyword (lower case) or operator it stands for
    pos: int

    def text_value(self) -> str:
        """The value of a name or operator token (always text)."""
        assert isinstance(self.value, str)
        return self.value


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)(?![\w.])
  | (?P<name>[^\W\d][\w.\-]*)
  | (?P<op><=|>=|!=|<>|==|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char in "'\"`":
            end, value = _quoted(text, pos)
            kind = "name" if char == "`" else "string"
            tokens.append(_Token(kind, text[pos:end], value, pos))
            pos = end
            continue
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _error(text, pos, f"unexpected character {char!r}")
        group = match.lastgroup
        word = match.group()
        if group == "number":
            tokens.append(_Token("number", word, _number_literal(text, pos, word), pos))
        elif group == "name":
            lower = word.lower()
            if lower in _KEYWORDS:
                tokens.append(_Token("kw", word, lower, pos))
            else:
                tokens.append(_Token("name", word, word, pos))
        elif group == "op":
            tokens.append(_Token("op", word, _COMPARISONS[word], pos))
        elif group == "punct":
            tokens.append(_Token(word, word, word, pos))
        pos = match.end()
    tokens.append(_Token("end", "", "", len(text)))
    return tokens


def _quoted(text: str, start: int) -> tuple[int, str]:
    """End position and content of the quoted text starting at ``start`` (quote doubled)."""
    quote = text[start]
    parts = []
    pos = start + 1
    while True:
        end = text.find(quote, pos)
        if end < 0:
            what = "name" if quote == "`" else "string"
            raise _error(text, start, f"unterminated {what} (no closing {quote})")
        parts.append(text[pos:end])
        if text.startswith(quote * 2, end):
            parts.append(quote)
            pos = end + 2
            continue
        return end + 1, "".join(parts)


def _number_literal(text: str, pos: int, word: str) -> int | float:
    if re.fullmatch(r"[+-]?\d{1,19}", word):
        value = int(word)
        if -(2**63) <= value < 2**63:
            return value
    number = float(word)
    if not math.isfinite(number):
        raise _error(text, pos, f"number {word} is out of range")
    return number


def _error(text: str, pos: int, problem: str) -> FilterError:
    shown = text if len(text) <= 200 else text[:200] + "..."
    return FilterError(f"{problem} at character {pos + 1} of filter {shown!r}")


# -- parsing -----------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.at = 0
        self.depth = 0
        self.conditions = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def is_kw(self, *words: str) -> bool:
        return self.token.kind == "kw" and self.token.value in words

    def fail(self, expected: str, token: _Token | None = None) -> FilterError:
        token = token or self.token
        found = "the end of the filter" if token.kind == "end" else repr(token.text)
        return _error(self.text, token.pos, f"expected {expected}, found {found}")

    def parse(self) -> Node:
        node = self.or_()
        if self.token.kind != "end":
            raise self.fail("'and', 'or' or the end of the filter")
        return node

    def or_(self) -> Node:
        items = [self.and_()]
        while self.is_kw("or"):
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self) -> Node:
        items = [self.unary()]
        while self.is_kw("and"):
            self.take()
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _error(self.text, self.token.pos, f"nested more than {MAX_DEPTH} deep")
        try:
            if self.is_kw("not"):
                self.take()
                return Not(self.unary())
            if self.token.kind == "(":
                self.take()
                node = self.or_()
                if self.token.kind != ")":
                    raise self.fail("')'")
                self.take()
                return node
            return self.condition()
        finally:
            self.depth -= 1

    def condition(self) -> Condition:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise _error(self.text, self.token.pos, f"more than {MAX_CONDITIONS} conditions")
        if self.token.kind != "name":
            if self.token.kind == "kw" and self.token.value not in ("true", "false", "null"):
                raise self.fail("a field name (quote a field named like a keyword in backticks)")
            raise self.fail("a field name")
        field = self.take().text_value()
        if self.token.kind == "op":
            op = self.take().text_value()
            return Condition(field, op, (self.value(),))
        negate = False
        if self.is_kw("not"):
            self.take()
            negate = True
            if not self.is_kw("in", "like"):
                raise self.fail("'in' or 'like' after 'not'")
        if self.is_kw("in"):
            self.take()
            return Condition(field, "nin" if negate else "in", self.value_list())
        if self.is_kw("like"):
            self.take()
            if self.token.kind != "string":
                raise self.fail("a quoted pattern after 'like'")
            return Condition(field, "nlike" if negate else "like", (self.take().value,))
        if self.is_kw("is"):
            self.take()
            missing = True
            if self.is_kw("not"):
                self.take()
                missing = False
            if not self.is_kw("null"):
                raise self.fail("'null'")
            self.take()
            return Condition(field, "null" if missing else "notnull")
        raise self.fail(f"an operator after {field!r} (= != < <= > >= in like is)")

    def value(self) -> Value:
        token = self.token
        if token.kind in ("string", "number"):
            self.take()
            return token.value
        if token.kind == "kw" and token.value in ("true", "false"):
            self.take()
            return 1 if token.value == "true" else 0
        if token.kind == "name":
            raise self.fail("a value (quote strings: 'text')")
        raise self.fail("a value")

    def value_list(self) -> tuple[Value, ...]:
        if self.token.kind != "(":
            raise self.fail("'(' after 'in'")
        self.take()
        values = [self.value()]
        while self.token.kind == ",":
            self.take()
            if self.token.kind == ")":  # trailing comma
                break
            values.append(self.value())
        if self.token.kind != ")":
            raise self.fail("',' or ')'")
        self.take()
        return tuple(values)


def parse_filter(text: str) -> Node | None:
    """The tree of the expression ``text``; None for an empty one (no filter).

    Raises:
        FilterError: the expression is malformed; the message points at the problem.

    Example:
        >>> parse_filter("category = 'shoes' and price < 50")
    """
    if not isinstance(text, str):
        raise FilterError(f"a filter expression must be text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise FilterError(f"filter is too long ({len(text)} characters, at most {MAX_LENGTH})")
    if not text.strip():
        return None
    return _Parser(text).parse()


# -- dict form ---------------------------------------------------------------------------------

_DICT_OPS = {"eq": "eq", "ne": "ne", "lt": "lt", "lte": "le", "gt": "gt", "gte": "ge",
             "in": "in", "nin": "nin", "like": "like"}  # fmt: skip


def _dict_value(field: str, value: object) -> Value:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):  # beyond SQLite's 64-bit integers: compared as a float
        if -(2**63) <= value < 2**63:
            return value
        try:
            return float(value)
        except OverflowError:
            raise FilterError(f"filter on {field!r}: the number is out of range") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(f"filter on {field!r}: {value} is not a usable number")
        return value
    if isinstance(value, str):
        return value
    raise FilterError(
        f"filter on {field!r}: values must be strings or numbers, got {type(value).__name__}"
    )


def _dict_list(field: str, op: str, value: object) -> tuple[Value, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
        raise FilterError(f"filter on {field!r}: {op!r} needs a list of values")
    return tuple(_dict_value(field, v) for v in value)


def filter_from_dict(spec: Mapping) -> Node | None:
    """The tree of a dict filter (all entries ANDed); None for an empty dict.

    Example:
        >>> filter_from_dict({"category": "shoes", "price": {"lt": 50, "gte": 10}})
    """
    if not isinstance(spec, Mapping):
        raise FilterError(f"a filter must be an expression or a dict, got {type(spec).__name__}")
    items: list[Node] = []
    for field, rule in spec.items():
        if not isinstance(field, str) or not field:
            raise FilterError(f"filter field names must be non-empty strings, got {field!r}")
        if isinstance(rule, Mapping):
            if not rule:
                raise FilterError(f"filter on {field!r}: no operator given")
            for op, value in rule.items():
                if op == "exists":
                    if not isinstance(value, bool):
                        raise FilterError(f"filter on {field!r}: 'exists' needs true or false")
                    items.append(Condition(field, "notnull" if value else "null"))
                elif op in ("in", "nin"):
                    items.append(Condition(field, op, _dict_list(field, op, value)))
                elif op in _DICT_OPS:
                    if op == "like" and not isinstance(value, str):
                        raise FilterError(f"filter on {field!r}: 'like' needs a text pattern")
                    items.append(Condition(field, _DICT_OPS[op], (_dict_value(field, value),)))
                else:
                    known = ", ".join([*_DICT_OPS, "exists"])
                    raise FilterError(
                        f"filter on {field!r}: unknown operator {op!r}; use one of {known}"
                    )
        elif rule is None:
            items.append(Condition(field, "null"))
        elif isinstance(rule, list | tuple | set | frozenset):
            items.append(Condition(field, "in", _dict_list(field, "in", rule)))
        else:
            items.append(Condition(field, "eq", (_dict_value(field, rule),)))
        if len(items) > MAX_CONDITIONS:
            raise FilterError(f"filter has more than {MAX_CONDITIONS} conditions")
    if not items:
        return None
    return items[0] if len(items) == 1 else And(tuple(items))


def _check_tree(node: object) -> None:
    """FilterError unless ``node`` is a tree of filter nodes within the depth and size limits.

    Iterative, so that a tree built in code, however deep, cannot exhaust the stack.
    """
    stack: list[tuple[object, int]] = [(node, 1)]
    conditions = 0
    while stack:
        item, depth = stack.pop()
        if depth > 3 * MAX_DEPTH:
            raise FilterError(f"filter is nested more than {MAX_DEPTH} deep")
        if isinstance(item, Condition):
            conditions += 1
            if conditions > MAX_CONDITIONS:
                raise FilterError(f"filter has more than {MAX_CONDITIONS} conditions")
        elif isinstance(item, And | Or) and isinstance(item.items, tuple) and item.items:
            stack.extend((child, depth + 1) for child in item.items)
        elif isinstance(item, Not):
            stack.append((item.item, depth + 1))
        else:
            raise FilterError(f"not a filter node: {item!r:.200}")


def as_filter(where: str | Mapping | Node | None) -> Node | None:
    """A filter tree from an expression, a dict, a tree, or None (no filter)."""
    if where is None:
        return None
    if isinstance(where, Condition | And | Or | Not):
        _check_tree(where)
        return where
    if isinstance(where, str):
        return parse_filter(where)
    return filter_from_dict(where)


def to_sql(where: str | Mapping | Node | None) -> tuple[str, list]:
    """``(sql, params)``: the filter ``where`` as a condition on the catalog's ``files`` table
    aliased ``f`` (:func:`lookalike.catalog_filters.compile_filter`); ``"1"`` for no filter."""
    return catalog_filters.compile_filter(as_filter(where))


# -- JSON --------------------------------------------------------------------------------------

_JSON_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def load_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> object:
    """``json.loads(text)``, refusing arrays and objects nested more than ``max_depth`` deep.

    ``json.loads`` itself ends in ``RecursionError`` on input nested about 1000 deep; this
    counts the nesting first, without recursion.

    Raises:
        json.JSONDecodeError: malformed or too deeply nested JSON (a ``ValueError``).
    """
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    depth = 0
    for match in _JSON_STRUCTURE.finditer(text):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise json.JSONDecodeError(
                    f"nested more than {max_depth} deep", text, match.start()
                )
        elif char in "]}":
            depth -= 1
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError(f"nested more than {max_depth} deep", text, 0) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise json.JSONDecodeError(str(exc), text, 0) from None
