"""Import budget of the CLI's hot commands, from ``python -X importtime`` of real runs.

``policysupply verify`` and ``gate`` run as fresh processes against a real
registry, as a CI job runs them. The budget is what they may import, not how
long it takes (timings are benchmarks/bench_cli_start.py's job): no module of
another command, none of the heavy optional parts a verification does not
need, and a bounded number of modules in all. On the old CLI every command
module (and with them rich, the gate, the loaders and the bundle builder) was
imported for every command.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from policysupply import Bundle, Registry, Signer
from tests.interop.conftest import RegistryServer

pytestmark = pytest.mark.interop

# Modules no verification needs: other commands, terminals, YAML, Sigstore's
# client, the retry machinery (loaded only once a request is retried), OPA's.
NEVER = (
    "rich",
    "yaml",
    "sigstore",
    "tenacity",
    "requests",
    "opa_client",
    "policysupply.loaders",
    "policysupply.cli._registry_cmds",
    "policysupply.cli._run_cmds",
    "policysupply.cli._gate_cmds",
    "policysupply.cli._attest_cmds",
    "policysupply.cli._bundle_cmds",
    "policysupply.cli._demo",
    "policysupply.cli._misc_cmds",
    "policysupply.cli._reports",
)
VERIFY_NEVER = (*NEVER, "regopy", "policysupply.gate", "policysupply.bundle")
GATE_NEVER = tuple(
    m for m in NEVER if m not in ("policysupply.cli._gate_cmds", "policysupply.cli._reports")
)

# Whole-process module counts measured when the budget was set (verify 354,
# gate 380 with Python 3.11), plus headroom for dependency updates.
VERIFY_BUDGET = 400
GATE_BUDGET = 430


def imported(*args: str, cwd: Path) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "policysupply", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    names = [
        line.split("|")[2].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    ]
    return proc.returncode, names[1:]  # the first line is the header


@pytest.fixture
def signed(distribution: RegistryServer, example_dir: Path, tmp_path: Path) -> str:
    signer = Signer.generate()
    (tmp_path / "cosign.pub").write_bytes(signer.public_key_pem)
    ref = f"{distribution.host}/acme/policy:1"
    with Registry.remote(distribution.host, insecure=True) as reg:
        reg.push(Bundle.from_directory(example_dir), "acme/policy:1")
        signer.sign(reg, "acme/policy:1")
    return ref


def _offenders(names: list[str], never: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == m or n.startswith(m + ".") for m in never))


def test_verify_imports_only_what_verification_needs(signed: str, tmp_path: Path) -> None:
    code, names = imported("verify", signed, "-k", "cosign.pub", "-q", cwd=tmp_path)
    assert code == 0
    assert _offenders(names, VERIFY_NEVER) == []
    assert "httpx" in names  # it did talk to the registry
    assert "click" not in names  # the lean dispatch ran the command body
    assert len(names) <= VERIFY_BUDGET, len(names)


def test_gate_imports_only_what_a_decision_needs(signed: str, tmp_path: Path) -> None:
    code, names = imported("gate", signed, "-k", "cosign.pub", "-q", cwd=tmp_path)
    assert code == 0
    assert _offenders(names, GATE_NEVER) == []
    assert "policysupply._internal.engines" in names  # a Rego engine decided...
    assert "regopy" not in names  # ...out of process: rego-cpp runs in a worker, OPA in its own
    assert len(names) <= GATE_BUDGET, len(names)


def test_help_imports_no_command(tmp_path: Path) -> None:
    code, names = imported("--help", cwd=tmp_path)
    assert code == 0
    plumbing = {"_common", "_commands", "_output", "_lean", "_group"}  # no command module
    assert [
        n
        for n in names
        if n.startswith("policysupply.cli._")
        and n.removeprefix("policysupply.cli.") not in plumbing
    ] == []
    assert _offenders(names, (*NEVER, "httpx", "cryptography", "regopy")) == []


def test_check_and_build_import_no_click(example_dir: Path, tmp_path: Path) -> None:
    code, names = imported("check", str(example_dir), "--engine", "embedded", "-q", cwd=tmp_path)
    assert code == 0
    assert "click" not in names
    code, names = imported("build", str(example_dir), "--no-check", "-q", cwd=tmp_path)
    assert code == 0
    assert "click" not in names
    assert (tmp_path / "bundle.tar.gz").exists()
