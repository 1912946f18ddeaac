"""Every distribution policysupply imports is declared in pyproject.toml, with a range."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # the standard library has it from Python 3.11

ROOT = Path(__file__).resolve().parents[2]


def _imported_top_levels() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "policysupply").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "policysupply"}


def _declared() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    extras = project["optional-dependencies"]
    # the runtime extras are the ones "all" installs: policysupply[keyless,opa,...]
    (everything,) = extras["all"]
    for extra in everything[everything.index("[") + 1 : everything.index("]")].split(","):
        specs += extras[extra]
    out = {}
    for spec in specs:
        m = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)", spec)
        assert m, spec
        out[m[1].lower().replace("_", "-")] = m[3]
    return out


def test_every_imported_distribution_is_declared_with_a_range() -> None:
    by_module = importlib.metadata.packages_distributions()
    declared = _declared()
    missing, unbounded = [], []
    for module in sorted(_imported_top_levels()):
        dists = {d.lower().replace("_", "-") for d in by_module.get(module, [])}
        assert dists, f"{module} is imported but not installed"
        named = dists & declared.keys()
        if not named:
            missing.append(f"{module} ({', '.join(sorted(dists))})")
        elif not any(">=" in declared[d] or "~=" in declared[d] for d in named):
            unbounded.append(module)
    assert missing == []
    assert unbounded == []
