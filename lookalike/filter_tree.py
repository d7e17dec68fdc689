"""The tree a metadata filter reads into (:class:`Condition`, :class:`And`, :class:`Or`,
:class:`Not`), its error, and how its values compare (numbers and strings)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lookalike.errors import EXIT_USAGE, BadInput

Value = str | int | float

#: SQLite's limit on parameters is 32766; stay below it.
MAX_PARAMETERS = 30_000

#: The pseudo-field naming the file's own path.
PATH_FIELD = "path"

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_LEADING_ZERO = re.compile(r"[+-]?0\d")


class FilterError(BadInput):
    """A filter that cannot be read: the message says what and where."""

    exit_status = EXIT_USAGE  # a malformed filter is a usage error on the command line


@dataclass(frozen=True)
class Condition:
    """``field op values``; op is one of eq ne lt le gt ge in nin like nlike null notnull."""

    field: str
    op: str
    values: tuple[Value, ...] = ()


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Condition | And | Or | Not


def as_number(text: str) -> int | float | None:
    """The number ``text`` spells (``"12"``, ``"-3.5"``, ``"1e3"``), or None.

    Not a number: empty text, ``nan``/``inf``, and integers with leading zeros (``"007"``, a
    code rather than a quantity).
    """
    text = text.strip()
    if not _NUMBER.fullmatch(text) or _LEADING_ZERO.match(text):
        return None
    if re.fullmatch(r"[+-]?\d{1,19}", text):  # int() of thousands of digits is refused
        whole = int(text)
        if -(2**63) <= whole < 2**63:
            return whole
    value = float(text)
    return value if math.isfinite(value) else None


def typed_values(value: Value) -> tuple[list[int | float], list[str]]:
    """The numbers and the strings ``value`` compares with (a numeric string: both)."""
    if isinstance(value, str):
        number = as_number(value)
        return ([number] if number is not None else []), [value]
    return [value], []
