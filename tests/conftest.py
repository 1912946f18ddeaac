"""Shared fixtures: paths to real peer tools, and the no-skip rule for CI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLES = ROOT / "policysupply" / "examples"


def peers_bin_dir() -> Path:
    base = os.environ.get("POLICYSUPPLY_PEERS_DIR") or str(
        Path.home() / ".cache" / "policysupply" / "peers"
    )
    return Path(base) / "bin"


def peer(name: str) -> Path:
    """Path of a peer tool built by scripts/install-peers.sh; fails (never skips) if absent."""
    candidate = peers_bin_dir() / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    pytest.fail(
        f"peer tool {name!r} is not installed; run scripts/install-peers.sh {name} "
        "(interop tests never skip)"
    )


def pytest_configure(config: pytest.Config) -> None:
    # Engine "auto" (the default) picks OPA when its binary is found: point it
    # at the pinned peer, so tests (and the CLI they start) judge as OPA does.
    # Tests of the embedded engine ask for it by name.
    opa = peers_bin_dir() / "opa"
    if opa.exists():
        os.environ.setdefault("POLICYSUPPLY_OPA", str(opa))


@pytest.fixture(scope="session")
def opa_bin() -> Path:
    return peer("opa")


@pytest.fixture(scope="session")
def oras_bin() -> Path:
    return peer("oras")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def example_dir() -> Path:
    return EXAMPLES / "kubernetes"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # In CI a skipped test is a test that did not run: make it a failure.
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped and os.environ.get("POLICYSUPPLY_NO_SKIP") == "1":
        terminalreporter.write_line(
            f"POLICYSUPPLY_NO_SKIP=1: {len(skipped)} test(s) skipped; failing the run",
            red=True,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or os.environ.get("POLICYSUPPLY_NO_SKIP") != "1":
        return
    if reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = 1
