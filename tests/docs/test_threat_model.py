"""The threat model (docs/concepts/trust.md) names real tests: a renamed or deleted
attack test must not leave a row that claims a defence nobody checks."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `tests/unit/x.py::test_a`, then `…::test_b` / `::test_c` in the same cell reuse that file.
_REF = re.compile(r"`(tests/[\w/]+\.py|…|\.\.\.)?::(test_\w+)(\*)?")


def test_every_test_the_threat_model_names_exists() -> None:
    text = (ROOT / "docs" / "concepts" / "trust.md").read_text(encoding="utf-8")
    missing = []
    checked = 0
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        current: str | None = None
        for m in _REF.finditer(line):
            path, name, prefix = m.group(1), m.group(2), m.group(3)
            if path and path.startswith("tests/"):
                current = path
            if current is None:
                continue
            source = (ROOT / current).read_text(encoding="utf-8")
            checked += 1
            end = r"\w*\(" if prefix else r"\("
            if not re.search(rf"^(async )?def {name}{end}", source, re.MULTILINE):
                missing.append(f"{current}::{name}")
    assert checked > 20
    assert not missing, f"docs/concepts/trust.md names tests that do not exist: {missing}"
