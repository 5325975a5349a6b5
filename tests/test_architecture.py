"""The shape of the house, read from the source: no import cycles, dependencies pointing down, SQL only in
the catalogue, one atomic writer and one file hash.

The import graph is built with ``ast`` over every module of ``tagstore`` (``cli/`` and ``indexes/`` are
installed as ``tagstore.cli`` and ``tagstore.indexes``), counting imports inside functions too: an import
hidden in a function body is still a dependency.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"tagstore": ROOT / "tagstore", "tagstore.cli": ROOT / "cli", "tagstore.indexes": ROOT / "indexes"}


def _modules() -> dict[str, Path]:
    """Module name → source file, for every module of the installed ``tagstore`` namespace."""
    out: dict[str, Path] = {}
    for prefix, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if prefix == "tagstore" and parts and parts[0] in ("cli", "indexes"):
                continue
            out[name] = path
    return out


MODULES = _modules()


def _package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]


def _target(name: str) -> str | None:
    """The module an imported name lands in: itself if a module, else its longest module prefix."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """The tagstore modules ``module`` imports, anywhere in its source (functions included)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package_of(module).split(".")
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]
            if not all(n in MODULES for n in names):  # `from pkg import name`: a name of pkg itself
                names.append(base)
        else:
            continue
        for name in names:
            target = _target(name) if name.startswith("tagstore") else None
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    return {m: imports_of(m) for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read_right() -> None:
    graph = import_graph()
    assert "tagstore.catalogue.tracks" in graph["tagstore.store"]
    assert "tagstore.ingest" in graph["tagstore.api"]
    assert "tagstore.embedders.host" in graph["tagstore.store"]  # imported inside a method: still counted
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


ABOVE = ("tagstore.api", "tagstore.ingest", "tagstore.search", "tagstore.tags", "tagstore.evaluation",
         "tagstore.derived", "tagstore.cli", "tagstore.server")  # fmt: skip


@pytest.mark.parametrize("module", ["tagstore.store"] + sorted(m for m in MODULES if m.startswith("tagstore.catalogue")))
def test_store_and_catalogue_import_nothing_above_them(module: str) -> None:
    above = sorted(m for m in imports_of(module) if m.startswith(ABOVE))
    assert not above, f"{module} imports {above}: the store handle and the catalogue sit below them"


def test_only_api_and_the_views_import_api() -> None:
    users = sorted(m for m, deps in import_graph().items() if "tagstore.api" in deps)
    allowed = ("tagstore.cli", "tagstore.server", "tagstore.evaluation")
    assert all(m.startswith(allowed) for m in users), users


def _source_files() -> list[Path]:
    return sorted(MODULES.values())


def test_sql_lives_in_the_catalogue() -> None:
    """``grep -rn "execute(" tagstore | grep -v catalogue/`` finds nothing (cli/ and indexes/ too)."""
    found = [f"{p.relative_to(ROOT)}:{i}" for p in _source_files() if "catalogue" not in p.parts
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "execute(" in line]  # fmt: skip
    assert not found, found


# Writes of a whole file that bypass tagstore.fileio.atomic_write, and hashes of files outside
# tagstore.fileio.file_hash. Allowed: the catalogue's own file (DuckDB writes it; init renames it into
# place) and the weights cache's folder swap (a folder, not a file: its files are fsynced first).
WRITE_PATTERNS = re.compile(r"os\.replace\(|os\.rename\(|\.write_text\(|\.write_bytes\(|\.savefig\([^s]|np\.save\(|open\([^)]*['\"][wa]b?['\"]")
HASH_PATTERNS = re.compile(r"hashlib\.(sha256|new)\(")
ALLOWED = {("tagstore/catalogue/__init__.py", "os.replace(")}


def _hits(pattern: re.Pattern[str]) -> list[str]:
    out = []
    for path in _source_files():
        rel = str(path.relative_to(ROOT))
        if rel == "tagstore/fileio.py":
            continue  # the single copies themselves
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if "atomic_write(" in code:
                continue  # the content function handed to atomic_write writes to its temp file
            for m in pattern.finditer(code):
                if (rel, m.group(0).split("(")[0] + "(") not in ALLOWED:
                    out.append(f"{rel}:{i}: {line.strip()}")
    return out


def test_files_are_written_only_through_atomic_write() -> None:
    assert not _hits(WRITE_PATTERNS), _hits(WRITE_PATTERNS)


def test_files_are_hashed_only_through_file_hash() -> None:
    """Content digests of strings (layout digests, seeds) are not files; they use hashlib.sha256(bytes)."""
    hits = [h for h in _hits(HASH_PATTERNS) if "encode()" not in h and ".encode(" not in h]
    assert not hits, hits
