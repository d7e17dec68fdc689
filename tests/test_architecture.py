"""The shape of the code: no import cycle in lookalike/ and bench/; search does not load tuning;
no module of lookalike/ over 600 lines; SQL only in the catalog modules."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("lookalike", "bench")


def module_name(path: Path) -> str:
    """``lookalike/index/store.py`` -> ``lookalike.index.store``; a package is its folder."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` imports anywhere in its file (functions and
    ``TYPE_CHECKING`` blocks included)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                name = f"{base}.{alias.name}"
                if name in known:
                    out.add(name)  # a submodule
                elif base in known:
                    out.add(base)  # a name defined in the module
    out.discard(module)
    return out


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    known = set(files)
    return {module: imported(module, path, known) for module, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "lookalike.collection" in graph and "bench.report" in graph
    assert cycles(graph) == []


def test_search_path_does_not_import_tuning() -> None:
    code = (
        "import sys, lookalike.collection, lookalike.search, lookalike.text.search\n"
        "assert 'lookalike.eval.tuning' not in sys.modules, 'lookalike.eval.tuning'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


MAX_MODULE_LINES = 600

#: The statements SQLite runs, as a string literal starting with one of them (what follows the
#: keyword says it is SQL, not a sentence beginning with "select" or "with").
SQL_STATEMENT = re.compile(
    r"""\s*(
        select\s.*\bfrom\b | select\s+(\d|exists\b|count\b|\*|\?)
        | insert\s+(or\s+\w+\s+)?into\b
        | update\s+\w+\s+set\b
        | delete\s+from\b
        | create\s+(unique\s+|temp\s+|temporary\s+|virtual\s+)*(table|index|view|trigger)\b
        | pragma\s+\w+
        | begin(\s+(deferred|immediate|exclusive))?(\s+transaction)?\s*;?\s*$
        | (commit|rollback|reindex|vacuum|analyze)\b\s*;?\s*$
        | alter\s+table\b
        | drop\s+(table|index|view|trigger)\b
        | with\s+(recursive\s+)?\w+(\s*\([^)]*\))?\s+as\s*\(
    )""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)


def test_sql_pattern_tells_statements_from_sentences() -> None:
    for sql in (
        "SELECT count(*) FROM files",
        "select 1",
        "INSERT OR IGNORE INTO files VALUES (?)",
        "UPDATE files SET path = ?",
        "DELETE FROM vectors",
        "CREATE UNIQUE INDEX x ON t(a)",
        "PRAGMA user_version",
        "BEGIN IMMEDIATE",
        "VACUUM",
        "ALTER TABLE files ADD COLUMN x",
        "DROP INDEX x",
        "WITH ids(id) AS (SELECT 1) SELECT id FROM ids",
    ):
        assert SQL_STATEMENT.match(sql), sql
    for text in ("select the images to show", "with --repair, mend it", "Update the index"):
        assert not SQL_STATEMENT.match(text), text


def string_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, text)`` of every string literal, f-strings with ``x`` for each placeholder."""
    out: list[tuple[int, str]] = []
    inside: set[int] = set()  # the parts of f-strings, seen with their f-string
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inside.add(id(value))
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                else:
                    parts.append("x")
            out.append((node.lineno, "".join(parts)))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in inside
        ):
            out.append((node.lineno, node.value))
    return out


def test_no_module_over_600_lines() -> None:
    long = {
        str(path.relative_to(REPO)): lines
        for path in (REPO / "lookalike").rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_sql_only_in_the_catalog_modules() -> None:
    found = []
    for path in sorted((REPO / "lookalike").rglob("*.py")):
        if path.parent == REPO / "lookalike" and path.name.startswith("catalog"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, text in string_literals(tree):
            if SQL_STATEMENT.match(text):
                found.append(f"{path.relative_to(REPO)}:{line}: {text.strip()[:60]}")
    assert found == []
