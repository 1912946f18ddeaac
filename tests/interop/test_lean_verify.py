"""``policysupply verify --key`` on the lean path against a real registry, byte for byte.

The same catalogue idea as ``tests/unit/cli/test_lean_dispatch.py``: each
invocation runs through ``main()`` (lean) and through the click group, and
stdout, stderr and the exit code must be identical.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policysupply import Bundle, Registry, Signer
from tests.interop.conftest import RegistryServer
from tests.unit.cli.test_lean_dispatch import run_both

pytestmark = pytest.mark.interop


@pytest.fixture
def signed(distribution: RegistryServer, example_dir: Path, tmp_path: Path) -> dict[str, str]:
    signer = Signer.generate()
    (tmp_path / "good.pub").write_bytes(signer.public_key_pem)
    (tmp_path / "other.pub").write_bytes(Signer.generate().public_key_pem)
    with Registry.remote(distribution.host, insecure=True) as reg:
        reg.push(Bundle.from_directory(example_dir), "acme/policy:1")
        signer.sign(reg, "acme/policy:1", annotations={"env": "prod"})
    return {
        "ref": f"{distribution.host}/acme/policy:1",
        "missing": f"{distribution.host}/acme/policy:nope",
        "good": str(tmp_path / "good.pub"),
        "other": str(tmp_path / "other.pub"),
        "root": str(tmp_path),
    }


CASES = [
    ["verify", "{ref}", "-k", "{good}"],
    ["verify", "{ref}", "--key", "{good}", "--json"],
    ["verify", "{ref}", "-k", "{good}", "-q"],
    ["verify", "{ref}", "-k", "{other}"],
    ["verify", "{ref}", "-k", "{other}", "--json"],
    ["verify", "{ref}", "-k", "{other}", "-k", "{good}"],
    ["verify", "{missing}", "-k", "{good}"],
    ["verify", "{missing}", "-k", "{good}", "--json"],
]


@pytest.mark.parametrize("args", CASES)
def test_lean_verify_prints_and_exits_as_click(signed: dict[str, str], args: list[str]) -> None:
    run_both([a.format(**signed) for a in args], signed["root"], None, lean=True)
