"""A new user's first session, typed into a real terminal (tmux).

install (a fresh virtualenv, `pip install` of this checkout, the base install
only) -> keygen (hidden prompts) -> build -> push -> sign -> verify -> gate in
every output mode -> each documented failure, checking the exit code the
shell sees against docs/cli.md's table.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._ports import free_port
from tests.conftest import ROOT
from tests.interop.conftest import RegistryServer
from tests.interop.test_cli_tmux import PASSWORD, Terminal

pytestmark = pytest.mark.interop


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Terminal]:
    home = tmp_path / "home"
    home.mkdir()
    socket_path = str(tmp_path / "tmux.sock")
    t = Terminal(socket_path, home)
    t.tmux(
        "-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "50", "-s", "cli",
        "-c", str(home),
        "env", "-u", "COSIGN_PASSWORD", "-u", "SIGSTORE_ID_TOKEN", "-u", "VIRTUAL_ENV",
        f"HOME={home}", f"DOCKER_CONFIG={home / '.docker'}", "TERM=xterm-256color", "PS1=$ ",
        "bash", "--norc", "--noprofile",
    )  # fmt: skip
    try:
        assert t.run("true")[0] == 0
        yield t
    finally:
        subprocess.run(
            ["tmux", "-S", socket_path, "kill-server"], capture_output=True, timeout=30,
            check=False,
        )  # fmt: skip


def closed_port() -> int:
    return free_port()  # nothing listens there


@pytest.mark.timeout(1800)
def test_a_new_user_from_install_to_gate_and_every_failure(
    fresh: Terminal, distribution: RegistryServer
) -> None:
    t = fresh
    home = t.workdir
    reg = distribution.host

    # install: a fresh virtualenv and the base install, as the install page says
    code, out = t.run("python3 -m venv venv && . venv/bin/activate", timeout=120)
    assert code == 0, out
    code, out = t.run(
        f"python3 -m pip install --quiet --disable-pip-version-check {shlex.quote(str(ROOT))}",
        timeout=1200,
    )
    assert code == 0, out
    code, out = t.run("policysupply version")
    assert code == 0, out
    assert "sigstore: not installed" in out  # the base install: keyless is an extra

    code, out = t.run("policysupply examples . -q")
    assert code == 0, out

    # keygen: the password twice, hidden
    code, out = t.answer_prompts(
        "policysupply keygen",
        [(r"Enter password for private key: *$", PASSWORD),
         (r"Enter password for private key again: *$", PASSWORD)],
    )  # fmt: skip
    assert code == 0, out
    assert PASSWORD not in t.screen()

    code, out = t.run("policysupply build policies/ -o bundle.tar.gz --revision 1.0.0")
    assert code == 0, out
    assert "digest sha256:" in out
    ref = f"{reg}/acme/policy:1.0"
    code, out = t.run(f"policysupply push bundle.tar.gz {ref}")
    assert code == 0, out
    assert f"{reg}/acme/policy@sha256:" in out

    code, out = t.answer_prompts(
        f"policysupply sign {ref} --key cosign.key",
        [(r"Enter password for private key: *$", PASSWORD)],
    )
    assert code == 0, out
    code, out = t.run(f"policysupply verify {ref} --key cosign.pub")
    assert (code, "verified" in out) == (0, True), out
    code, out = t.run(f"policysupply verify {ref} --policy trust-policy.yaml")
    assert code == 0, out

    # gate in every output mode (the reports go to files, the verdict to the screen)
    code, out = t.run(f"policysupply gate {ref} --key cosign.pub")
    assert code == 0, out
    assert f"ALLOW {reg}/acme/policy@sha256:" in out
    for fmt in ("json", "junit", "sarif", "markdown"):
        code, out = t.run(f"policysupply gate {ref} --key cosign.pub -o {fmt} > report.{fmt}")
        assert code == 0, (fmt, out)
    assert json.loads((home / "report.json").read_text())["allowed"] is True
    assert ET.parse(home / "report.junit").getroot().get("failures") == "0"  # noqa: S314
    assert json.loads((home / "report.sarif").read_text())["version"] == "2.1.0"
    assert "1 of 1 image allowed" in (home / "report.markdown").read_text()

    # each documented failure, with the code docs/cli.md gives it
    code, out = t.run(f"policysupply push policies/ {reg}/acme/unsigned:1 -q")
    assert code == 0, out
    failures = [
        # 1: decided no
        (f"policysupply verify {reg}/acme/unsigned:1 --key cosign.pub", 1, "no signatures found"),
        (f"policysupply gate {reg}/acme/unsigned:1 --key cosign.pub", 1, "unsigned: no signature"),
        (f"policysupply gate {ref} {reg}/acme/unsigned:1 --key cosign.pub -o junit > r.xml",
         1, ""),
        (f"policysupply gate {ref} --key cosign.pub --allow-registry ghcr.io/acme", 1,
         "allowed_registries:"),
        ("policysupply check policies/k8s/base/base.rego", 1, "error:"),  # not a bundle
        # 2: usage, configuration, input
        (f"policysupply verify {ref}", 2, "give a trusted --key"),
        (f"policysupply verify {ref} --key cosign.pub --max-signature-age 99999999999d", 2,
         "longer than 100 years"),
        (f"policysupply verify {reg}/acme/policy:nope --key cosign.pub", 2, "not found"),
        (f"policysupply sign {ref} --key cosign.pub", 2, "that is a public key"),
        (f"policysupply sign {ref} --oidc off", 2, "pip install 'policysupply[keyless]'"),
        ("policysupply pull oci:nowhere:acme/policy:1", 2, "no OCI layout at nowhere"),
        ("policysupply keygen -d /proc/nope", 2, "cannot create the key directory"),
        ("policysupply eval bundle.tar.gz 'data.k8s['", 2, "is not valid Rego"),
        # 3: a service unreachable
        (f"policysupply verify 127.0.0.1:{closed_port()}/acme/policy:1 --key cosign.pub "
         "--timeout 3", 3, "connection failed"),
    ]  # fmt: skip
    for command, want, says in failures:
        code, out = t.run(command)
        assert code == want, (command, out)
        assert says in out, (command, out)
        assert "Traceback" not in out

    # --json on a failure: exactly one JSON document with the same exit code
    code, out = t.run(f"policysupply verify {reg}/acme/unsigned:1 --key cosign.pub --json > v.json")
    assert code == 1
    assert json.loads((home / "v.json").read_text())["error"]["exit_code"] == 1
