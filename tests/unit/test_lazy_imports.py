"""`import policysupply` must not pull in heavy dependencies (DESIGN principle 5)."""

from __future__ import annotations

import subprocess
import sys


def test_heavy_dependencies_are_imported_lazily() -> None:
    code = (
        "import sys, policysupply\n"
        "heavy = [m for m in ('httpx', 'tenacity', 'regopy', 'cryptography', 'yaml', 'rich',"
        " 'opa_client', 'requests', 'http.server', 'sigstore', 'attrs', 'click')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == ""
