"""docs/architecture.md names what exists: every loader module, every public module, every
path it points at."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def test_every_loader_and_public_module_is_on_the_map() -> None:
    package = ROOT / "policysupply"
    wanted = [f"loaders/{p.name}" for p in sorted((package / "loaders").glob("*.py"))]
    wanted += [p.name for p in sorted(package.glob("*.py")) if not p.name.startswith("__")]
    wanted = [w for w in wanted if w != "loaders/__init__.py"]
    missing = [w for w in wanted if f"`{w}" not in DOC]
    assert missing == []


def test_every_path_the_map_names_exists() -> None:
    named = set(re.findall(r"`((?:tests|policysupply)?/?[\w/]+\.py)", DOC))
    bases = [
        ROOT,
        ROOT / "policysupply",
        ROOT / "policysupply" / "_internal",
        ROOT / "tests" / "unit",
        ROOT / "tests" / "unit" / "_internal",
    ]
    missing = [n for n in sorted(named) if not any((b / n).exists() for b in bases)]
    assert missing == []


def test_every_internal_module_is_on_the_map() -> None:
    internal = ROOT / "policysupply" / "_internal"
    names = [p.name for p in sorted(internal.glob("*.py")) if p.name != "__init__.py"]
    missing = [n for n in names if f"`{n}`" not in DOC and f"`_internal/{n}`" not in DOC]
    assert missing == []


def _sources() -> list[tuple[str, str]]:
    package = ROOT / "policysupply"
    return [(p.relative_to(package).as_posix(), p.read_text()) for p in package.rglob("*.py")]


# A private of a third-party package, and the one adapter allowed to touch it.
_PRIVATES = {
    r"\bsigstore\._(internal|utils)\b": "_internal/sigstore_adapter.py",
    r"\._(fulcio|rekor|tsa_clients|thread_local|dsse_envelope)\b": "_internal/sigstore_adapter.py",
    r"\b(root|trusted_root)\._inner\b": "_internal/sigstore_adapter.py",
    r"\braw\._contents\b": "_internal/sigstore_adapter.py",
    r"\._session\b": "loaders/_opa_http.py",
}


def test_third_party_privates_only_in_their_adapter() -> None:
    offenders = [
        f"{name}: {pattern}"
        for name, text in _sources()
        for pattern, adapter in _PRIVATES.items()
        if name != adapter and re.search(pattern, text)
    ]
    assert offenders == []


def test_no_import_cycle_between_modules() -> None:
    """Module-level imports (TYPE_CHECKING ones included) form no cycle."""
    import ast

    package = ROOT / "policysupply"
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            # an `if TYPE_CHECKING:` block counts: a type-only cycle is a cycle too
            stmts = node.body if isinstance(node, ast.If) else [node]
            for stmt in stmts:
                if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0:
                    deps.add(stmt.module)
                    deps.update(f"{stmt.module}.{a.name}" for a in stmt.names)
                elif isinstance(stmt, ast.Import):
                    deps.update(a.name for a in stmt.names)
        graph[name] = {d for d in deps if d.startswith("policysupply.")}
    for name in graph:
        graph[name] = {d for d in graph[name] if d in graph and d != name}
    # the package __init__ re-exports lazily; its own imports are for type checkers
    graph["policysupply"] = set()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
