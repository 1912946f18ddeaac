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
