"""The CLI in a real terminal (tmux), typed and read as a person would.

Password prompts read from the terminal with echo off, progress bars draw on
the terminal, and exit codes are what the shell sees. Each test gets its own
tmux server (``-S`` socket under tmp_path), killed in teardown.
"""

from __future__ import annotations

import json
import random
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from policysupply import Bundle, Registry, Signer
from tests.interop.conftest import RegistryServer

pytestmark = pytest.mark.interop

PASSWORD = "tmux-Typed-pw-42"


class Terminal:
    """A bash shell in a detached 120x40 tmux session."""

    def __init__(self, socket: str, workdir: Path) -> None:
        self.socket = socket
        self.workdir = workdir
        self._marks = 0

    def tmux(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-S", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return proc.stdout

    def type(self, text: str, *, enter: bool = True) -> None:
        self.tmux("send-keys", "-t", "cli", "-l", text)
        if enter:
            self.tmux("send-keys", "-t", "cli", "Enter")

    def screen(self) -> str:
        # The visible pane plus scrollback, as the person would scroll through it.
        return self.tmux("capture-pane", "-p", "-J", "-t", "cli", "-S", "-2000")

    def mark(self) -> int:
        """A position in the output: later waits look only at what comes after it."""
        return len(self.screen().rstrip())

    def wait_for(self, pattern: str, since: int = 0, timeout: float = 90.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.screen()[since:], re.MULTILINE)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never appeared:\n{self.screen()}")
            time.sleep(0.1)

    def run(self, command: str, timeout: float = 120.0) -> tuple[int, str]:
        """Types ``command``; returns its exit code and what it printed."""
        self._marks += 1
        mark = f"EXIT{self._marks}"
        since = self.mark()
        self.type(f'{command}; echo "{mark}=$?"')
        code = int(self.wait_for(rf"^{mark}=(\d+)", since, timeout).group(1))
        return code, self.screen()[since:]

    def answer_prompts(self, command: str, answers: list[tuple[str, str]]) -> tuple[int, str]:
        """Types ``command``, waits for each prompt in turn and types its answer."""
        self._marks += 1
        mark = f"EXIT{self._marks}"
        since = self.mark()
        self.type(f'{command}; echo "{mark}=$?"')
        at = since
        for prompt, answer in answers:
            found = self.wait_for(prompt, at)
            at += found.end()
            self.type(answer)
        code = int(self.wait_for(rf"^{mark}=(\d+)", since).group(1))
        return code, self.screen()[since:]


@pytest.fixture
def term(tmp_path: Path) -> Iterator[Terminal]:
    home = tmp_path / "home"
    home.mkdir()
    socket = str(tmp_path / "tmux.sock")  # a private server; the socket goes with tmp_path
    t = Terminal(socket, home)
    # A clean, predictable shell: no rc files, no inherited key password.
    t.tmux(
        "-f", "/dev/null", "new-session", "-d", "-x", "120", "-y", "40", "-s", "cli",
        "-c", str(home),
        "env", "-u", "COSIGN_PASSWORD", f"HOME={home}", f"DOCKER_CONFIG={home / '.docker'}",
        "TERM=xterm-256color", "PS1=$ ", "bash", "--norc", "--noprofile",
    )  # fmt: skip
    try:
        t.type(f'policysupply() {{ {shlex.quote(sys.executable)} -m policysupply "$@"; }}')
        assert t.run("true")[0] == 0  # the shell is up and the function defined
        yield t
    finally:
        subprocess.run(
            ["tmux", "-S", socket, "kill-server"], capture_output=True, timeout=30, check=False
        )


@pytest.fixture
def big_policy(tmp_path: Path, example_dir: Path) -> Path:
    """The example policies plus a few MB of data, so the progress bar has work to show."""
    import shutil

    d = tmp_path / "policy"
    shutil.copytree(example_dir, d)
    rng = random.Random(7)  # hex of random bytes: compresses only ~2x, so megabytes remain
    rows = [{"id": i, "note": rng.randbytes(64).hex()} for i in range(40_000)]
    (d / "k8s" / "inventory").mkdir()
    (d / "k8s" / "inventory" / "data.json").write_text(json.dumps({"rows": rows}))
    return d


def test_keygen_push_sign_verify_gate_as_a_person(
    term: Terminal, distribution: RegistryServer, big_policy: Path
) -> None:
    home = term.workdir
    ref = f"{distribution.host}/acme/policy:1.0"

    # keygen asks for the password twice, hidden.
    code, out = term.answer_prompts(
        "policysupply keygen",
        [(r"Enter password for private key: *$", PASSWORD),
         (r"Enter password for private key again: *$", PASSWORD)],
    )  # fmt: skip
    assert code == 0, out
    assert "Public key written to cosign.pub" in out
    assert PASSWORD not in term.screen()
    signer = Signer.from_key_file(home / "cosign.key", password=PASSWORD)

    # push draws a progress bar on the terminal and ends with the digest reference.
    code, out = term.run(f"policysupply push {big_policy} {ref}")
    assert code == 0, out
    digest = Registry.remote(distribution.host, insecure=True).resolve("acme/policy:1.0")
    assert f"{distribution.host}/acme/policy@{digest}" in out
    bar = re.search(r"push .*━+.*\d+(\.\d+)?/\d+(\.\d+)? MB", out)
    assert bar, out
    assert Bundle.from_directory(big_policy).digest  # what was pushed is a real bundle

    # verify before signing: exit 1 and the reason
    code, out = term.run(f"policysupply verify {ref} --key cosign.pub")
    assert code == 1
    assert "no signatures found" in out

    # sign prompts once for the key password (hidden)
    code, out = term.answer_prompts(
        f"policysupply sign {ref} --key cosign.key -a env=prod",
        [(r"Enter password for private key: *$", PASSWORD)],
    )
    assert code == 0, out
    assert f"key id {signer.key_id}" in out
    assert PASSWORD not in term.screen()

    code, out = term.run(f"policysupply verify {ref} --key cosign.pub -a env=prod")
    assert code == 0, out
    assert f"verified {distribution.host}/acme/policy@{digest}" in out

    # A wrong password is a configuration error (2), and is not shown either.
    code, out = term.answer_prompts(
        f"policysupply sign {ref} --key cosign.key",
        [(r"Enter password for private key: *$", "not-the-password")],
    )
    assert code == 2
    assert "wrong password" in out
    assert "not-the-password" not in term.screen()

    # gate: the signed image is allowed; an unsigned one denied with the reason
    code, out = term.run(f"policysupply gate {ref} --key cosign.pub")
    assert code == 0, out
    assert f"ALLOW {distribution.host}/acme/policy@{digest}" in out
    unsigned = f"{distribution.host}/acme/unsigned:1"
    code, out = term.run(f"policysupply push {big_policy} {unsigned} --json")
    assert code == 0, out
    code, out = term.run(f"policysupply gate {unsigned} --key cosign.pub")
    assert code == 1
    assert "DENY" in out
    assert f"unsigned: no signature on {unsigned}" in out
    code, out = term.run(f"policysupply gate {ref} --key cosign.pub --allow-registry ghcr.io/acme")
    assert code == 1
    assert "allowed_registries:" in out


def test_pull_and_copy_draw_progress_and_json_stays_plain(
    term: Terminal, distribution: RegistryServer, big_policy: Path
) -> None:
    ref = f"{distribution.host}/acme/policy:2"
    code, out = term.run("COSIGN_PASSWORD= policysupply keygen --json > keygen.json")
    assert code == 0, out
    code, out = term.run(f"policysupply push {big_policy} {ref} --json")
    assert code == 0, out
    assert "━" not in out  # --json: no bar, one JSON document
    assert json.loads(next(line for line in out.splitlines() if line.startswith("{")))["ok"]

    code, out = term.run(f"policysupply pull {ref} -o pulled.tar.gz")
    assert code == 0, out
    assert re.search(r"pull .*━+.*MB", out), out
    assert "not signature-checked" in out

    code, out = term.run(f"policysupply copy {ref} oci:./mirror:acme/policy:2")
    assert code == 0, out
    assert re.search(r"copy .*━+.*MB", out), out
    assert (term.workdir / "pulled.tar.gz").exists()
