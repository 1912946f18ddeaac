"""OPA's compliance suite through the embedded engine: agree or refuse, never differ.

Runs every case of the pinned OPA's v1 compliance suite through
EmbeddedEngine (scripts/probe_embedded.py does the work and reports the
agree rate). A different answer, a missed error or a crash fails the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.interop

OPA_CASES = (
    Path.home() / "go/pkg/mod/github.com/open-policy-agent/opa@v1.22.2/v1/test/cases/testdata/v1"
)


def test_embedded_engine_never_answers_differently_from_opa(tmp_path: Path) -> None:
    if not OPA_CASES.is_dir():
        pytest.fail(
            f"OPA's compliance suite is missing at {OPA_CASES}: run scripts/install-peers.sh"
        )
    report = tmp_path / "compliance.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "probe_embedded.py"), "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    summary = json.loads(report.read_text())["summary"]
    outcomes = summary["outcomes"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert outcomes.get("different", 0) == 0
    assert outcomes.get("missed_error", 0) == 0
    assert outcomes.get("crash", 0) == 0
    # Most cases are answered, not refused.
    assert summary["agree_rate"] > 0.6, summary
