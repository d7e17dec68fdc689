"""The benchmark table: one row per figure, rendered as plain text."""

from __future__ import annotations

from collections.abc import Sequence

Row = tuple[str, str, str, str]


def render(rows: Sequence[Row]) -> str:
    """A plain-text table with a header."""
    header: Row = ("figure", "value", "baseline / limit (same run)", "verdict")
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = []
    for i, row in enumerate(table):
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
