"""The README's demo with a real OPA: the verified bundle is loaded over REST and answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop


def test_demo_loads_into_real_opa(opa_bin: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "policysupply",
            "demo",
            "--opa",
            str(opa_bin),
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "loaded into OPA at http://127.0.0.1:" in proc.stdout
    assert "the privileged pod is denied" in proc.stdout
    assert "OPA still serves the verified 1.0.0 policies" in proc.stdout
    assert (tmp_path / "opa.log").exists()
