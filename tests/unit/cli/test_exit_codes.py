"""The exit-code contract, command by command, through each failure mode.

0 success / ALLOW; 1 only "decided no" (not verified, DENY, ``check`` found
the bundle invalid); 2 usage, configuration or input error; 3 a service
unreachable; 4 internal error. With ``--json`` stdout is exactly one JSON
document whose ``error.exit_code`` is the process's exit code.

Each case runs the real console entry point in a fresh process, as a CI job
would (several of these crashed or exited 1 on the old code: overflowing
durations, deep JSON, long layout names, uncreatable key directories,
unreachable OPA).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from policysupply import Registry, Signer
from tests._ports import free_port

PASSWORD = "pw-for-exit-codes"


def run(
    *args: str, cwd: Path, stdin: str | None = None, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COSIGN_PASSWORD": PASSWORD, **extra_env}
    env.pop("SIGSTORE_ID_TOKEN", None)
    env.pop("POLICYSUPPLY_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "policysupply", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=stdin if stdin is not None else "",
        timeout=120,
        check=False,
        env=env,
    )


def closed_port() -> int:
    return free_port()  # nothing listens there


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, example_dir: Path) -> Path:
    """A key pair, a signed and an unsigned policy image in a layout, deep JSON files."""
    d = tmp_path_factory.mktemp("exit-codes")
    signer = Signer.generate()
    signer.write_key_pair(d, password=PASSWORD)
    other = Signer.generate()
    other.write_key_pair(d, password=PASSWORD, name="other")
    from policysupply import Bundle

    reg = Registry.local(d / "layout")
    bundle = Bundle.from_directory(example_dir, revision="1")
    reg.push(bundle, "acme/policy:1")
    signer.sign(reg, "acme/policy:1")
    reg.push(bundle, "acme/unsigned:1")
    bundle.write(d / "bundle.tar.gz")
    (d / "broken").mkdir()
    (d / "broken" / "x.rego").write_text("package p\n\nallow {\n")
    (d / "deep-array.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "deep-object.json").write_text('{"a":' * 600 + "1" + "}" * 600)
    (d / "pod.json").write_text("{}")
    return d


L = "oci:layout:"
SIGNED = L + "acme/policy:1"
UNSIGNED = L + "acme/unsigned:1"

# (id, args, expected exit code, expected error.type or None)
CASES: list[tuple[str, list[str], int, str | None]] = [
    # -- verify
    ("verify-ok", ["verify", SIGNED, "-k", "cosign.pub"], 0, None),
    ("verify-unsigned", ["verify", UNSIGNED, "-k", "cosign.pub"], 1, "NoSignatureError"),
    ("verify-untrusted", ["verify", SIGNED, "-k", "other.pub"], 1, "UntrustedSignatureError"),
    ("verify-no-key", ["verify", SIGNED], 2, "UsageError"),
    (
        "verify-age-overflow",
        ["verify", SIGNED, "-k", "cosign.pub", "--max-signature-age", "99999999999d"],
        2,
        "BadParameter",
    ),
    (
        "verify-age-garbage",
        ["verify", SIGNED, "-k", "cosign.pub", "--max-signature-age", "soon"],
        2,
        "BadParameter",
    ),
    (
        "verify-missing-tag",
        ["verify", L + "acme/policy:nope", "-k", "cosign.pub"],
        2,
        "NotFoundError",
    ),
    (
        "verify-missing-layout",
        ["verify", "oci:nowhere:acme/policy:1", "-k", "cosign.pub"],
        2,
        "NotFoundError",
    ),
    ("verify-no-host", ["verify", "acme/policy:1", "-k", "cosign.pub"], 2, "BadParameter"),
    (
        "verify-unreachable",
        ["verify", "127.0.0.1:{port}/acme/policy:1", "-k", "cosign.pub", "--timeout", "3"],
        3,
        "TransientRegistryError",
    ),
    (
        "verify-policy-file-typo",
        ["verify", SIGNED, "--policy", "typo.yaml"],
        2,
        "VerificationError",
    ),
    ("verify-unknown-flag", ["verify", SIGNED, "--nope"], 2, "NoSuchOption"),
    # -- gate
    ("gate-allow", ["gate", SIGNED, "-k", "cosign.pub"], 0, None),
    ("gate-deny", ["gate", UNSIGNED, "-k", "cosign.pub"], 1, None),
    ("gate-worst-of-two", ["gate", SIGNED, UNSIGNED, "-k", "cosign.pub"], 1, None),
    ("gate-missing-image", ["gate", L + "acme/nope:1", "-k", "cosign.pub"], 2, None),
    (
        "gate-deep-context-array",
        ["gate", SIGNED, "-k", "cosign.pub", "--context", "deep-array.json"],
        2,
        "BadParameter",
    ),
    (
        "gate-deep-context-object",
        ["gate", SIGNED, "-k", "cosign.pub", "--context", "deep-object.json"],
        2,
        None,
    ),
    (
        "gate-context-not-object",
        ["gate", SIGNED, "-k", "cosign.pub", "--context", "[1]"],
        2,
        "BadParameter",
    ),
    ("gate-no-images", ["gate", "-k", "cosign.pub"], 2, "UsageError"),
    (
        "gate-broken-rules",
        ["gate", SIGNED, "-k", "cosign.pub", "--rules", "broken"],
        2,
        "BundleError",
    ),
    (
        "gate-unreachable",
        ["gate", "127.0.0.1:{port}/acme/app:1", "-k", "cosign.pub", "--timeout", "3"],
        3,
        None,
    ),
    # -- eval / check / build
    ("eval-ok", ["eval", "bundle.tar.gz", "data.k8s.labels.deny", "-i", "pod.json"], 0, None),
    (
        "eval-deep-input",
        ["eval", "bundle.tar.gz", "data.k8s", "-i", "deep-array.json"],
        2,
        "BadParameter",
    ),
    ("eval-query-syntax", ["eval", "bundle.tar.gz", "data.k8s["], 2, "UsageError"),
    ("eval-missing-source", ["eval", "nope.tar.gz", "data"], 2, "UsageError"),
    ("check-ok", ["check", "bundle.tar.gz"], 0, None),
    ("check-broken", ["check", "broken"], 1, "BundleError"),
    ("build-broken", ["build", "broken", "-o", "out.tar.gz"], 1, "BundleError"),
    ("build-unwritable", ["build", "{examples}", "-o", "/proc/nope/out.tar.gz"], 2, "BundleError"),
    # -- push / pull / copy / tree
    ("push-broken", ["push", "broken", L + "acme/broken:1"], 2, "BundleError"),
    (
        "push-long-repository",
        ["push", "bundle.tar.gz", L + "acme/" + "a" * 5000 + ":1"],
        2,
        "RegistryError",
    ),
    ("push-colon-dir", ["push", "bundle.tar.gz", "oci:./c:d:acme/p:1"], 2, "BadParameter"),
    (
        "push-unreachable",
        ["push", "bundle.tar.gz", "127.0.0.1:{port}/acme/p:1", "--timeout", "3"],
        3,
        "TransientRegistryError",
    ),
    ("pull-missing-layout", ["pull", "oci:nowhere:acme/policy:1"], 2, "NotFoundError"),
    ("pull-verify-unsigned", ["pull", UNSIGNED, "-k", "cosign.pub"], 1, "NoSignatureError"),
    ("copy-missing", ["copy", L + "acme/nope:1", "oci:mirror:acme/nope:1"], 2, "NotFoundError"),
    ("tree-ok", ["tree", SIGNED], 0, None),
    ("tree-missing", ["tree", L + "acme/nope:1"], 2, "NotFoundError"),
    # -- keys and signing
    ("keygen-uncreatable", ["keygen", "-d", "/proc/nope/keys"], 2, "UsageError"),
    ("keygen-exists", ["keygen"], 2, "UsageError"),
    ("sign-public-key", ["sign", SIGNED, "--key", "cosign.pub"], 2, "SigningError"),
    ("sign-nothing-to-sign-with", ["sign", SIGNED, "--oidc", "off"], 2, "UsageError"),
    (
        "attest-not-json",
        ["attest", SIGNED, "-k", "cosign.key", "--predicate", "bundle.tar.gz"],
        2,
        "BadParameter",
    ),
    (
        "verify-attestation-missing",
        ["verify-attestation", SIGNED, "-k", "cosign.pub", "--type", "slsaprovenance1"],
        1,
        "MissingAttestationError",
    ),
    (
        "verify-blob-no-bundle",
        ["verify-blob", "bundle.tar.gz", "-k", "cosign.pub"],
        2,
        "UsageError",
    ),
    # -- load
    (
        "load-unreachable-opa",
        ["load", SIGNED, "-k", "cosign.pub", "--opa", "http://127.0.0.1:{port}"],
        3,
        "LoadError",
    ),
    (
        "load-unsigned",
        ["load", UNSIGNED, "-k", "cosign.pub", "--opa", "http://127.0.0.1:{port}"],
        1,
        "NoSignatureError",
    ),
    ("load-bad-opa-url", ["load", SIGNED, "-k", "cosign.pub", "--opa", "ftp://x"], 2, "LoadError"),
    # -- the group
    ("no-such-command", ["nope"], 2, "NoSuchCommand"),
    ("completion-bad-shell", ["completion", "tcsh"], 2, "BadParameter"),
]


def _expand(args: list[str], world: Path, example_dir: Path) -> list[str]:
    port = str(closed_port())
    return [a.replace("{port}", port).replace("{examples}", str(example_dir)) for a in args]


@pytest.fixture(scope="module")
def typo_policy(world: Path) -> Path:
    p = world / "typo.yaml"
    p.write_text("keys: [cosign.pub]\nthreshhold: 2\n")  # the typo must not be ignored
    return p


@pytest.mark.parametrize(
    ("args", "code", "kind"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_exit_code_and_one_json_document(
    world: Path,
    example_dir: Path,
    typo_policy: Path,
    args: list[str],
    code: int,
    kind: str | None,
) -> None:
    argv = _expand(args, world, example_dir)
    if argv[0] == "completion":  # no --json there
        proc = run(*argv, cwd=world)
        assert proc.returncode == code, proc.stderr
        return
    proc = run(*argv, "--json", cwd=world)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout  # exactly one JSON document
    doc = json.loads(lines[0])
    if code in (0, 1) and argv[0] == "gate":
        assert doc["exit_code"] == code
        return
    if code == 0:
        assert doc["ok"] is True
        return
    assert doc["ok"] is False
    error = doc["error"]
    assert error["exit_code"] == code
    assert error["message"]
    if kind is not None:
        assert error["type"] == kind, error
    # The text mode gives the same exit code, a message on stderr and no JSON.
    text = run(*argv, cwd=world)
    assert text.returncode == code
    assert text.stderr.strip()
    assert "Traceback" not in text.stderr


def test_internal_errors_exit_4_never_1(world: Path) -> None:
    # Fault injection: an unexpected exception inside a command is a bug, not a verdict.
    code = (
        "import sys\n"
        "from policysupply import Registry\n"
        "def broken(self, ref): raise ZeroDivisionError('secret-in-message')\n"
        "Registry.resolve = broken\n"
        "from policysupply.cli import main\n"
        "sys.argv = ['policysupply', 'verify', 'oci:layout:acme/policy:1', '-k', 'cosign.pub',"
        " '--json']\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=world,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 4
    doc = json.loads(proc.stdout)
    assert doc["error"]["type"] == "InternalError"
    assert "secret-in-message" not in proc.stdout + proc.stderr


def test_keygen_password_mismatch_says_what_to_do_without_usage_text(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from policysupply.cli import _common, cli

    answers = iter(["one", "two"])
    monkeypatch.setattr(_common.click, "prompt", lambda *a, **k: next(answers))
    monkeypatch.setattr(_common, "stdin_is_terminal", lambda: True)
    result = CliRunner().invoke(
        cli, ["keygen", "-d", str(world / "mismatch")], env={"COSIGN_PASSWORD": None}
    )
    assert result.exit_code == 2
    assert "do not match" in result.output
    assert "Usage:" not in result.output
    assert not (world / "mismatch" / "cosign.key").exists()


def test_messages_say_what_is_wrong(world: Path) -> None:
    cases: list[tuple[list[str], Callable[[str], bool]]] = [
        (["pull", "oci:nowhere:acme/policy:1"], lambda m: "no OCI layout at nowhere" in m),
        (["sign", SIGNED, "--key", "cosign.pub"], lambda m: "that is a public key" in m),
        (["eval", "bundle.tar.gz", "data.k8s["], lambda m: "is not valid Rego" in m
         and "__" not in m),
        (["push", "bundle.tar.gz", "oci:./c:d:acme/p:1"], lambda m: "contains ':'" in m),
        (["load", SIGNED, "-k", "cosign.pub", "--opa", f"http://127.0.0.1:{closed_port()}"],
         lambda m: "cannot reach OPA" in m and "connection refused" in m and "pool" not in m),
    ]  # fmt: skip
    for args, ok in cases:
        proc = run(*args, "--json", cwd=world)
        message = json.loads(proc.stdout)["error"]["message"]
        assert ok(message), (args, message)


@pytest.mark.parametrize("command", ["check", "build"])
def test_an_unknown_engine_in_the_environment_is_a_configuration_error(
    command: str, example_dir: Path, tmp_path: Path
) -> None:
    # Was exit 4 ("internal error"): select_engine raised a bare ValueError.
    args = [command, str(example_dir)] + (
        ["-o", str(tmp_path / "b.tar.gz")] if command == "build" else []
    )
    p = run(*args, "--json", cwd=tmp_path, POLICYSUPPLY_ENGINE="wasm")
    assert p.returncode == 2, p.stdout + p.stderr
    err = json.loads(p.stdout)["error"]
    assert err["exit_code"] == 2
    assert "POLICYSUPPLY_ENGINE" in err["message"]
    assert not (tmp_path / "b.tar.gz").exists()


def test_an_unusable_opa_binary_is_a_configuration_error(example_dir: Path, tmp_path: Path) -> None:
    # Was exit 1, which says "the bundle does not check": nothing was checked.
    p = run(
        "check",
        str(example_dir),
        "--engine",
        "opa",
        cwd=tmp_path,
        POLICYSUPPLY_OPA=str(tmp_path / "no-opa"),
    )
    assert p.returncode == 2, p.stderr
    assert "POLICYSUPPLY_OPA" in p.stderr


def test_strict_with_the_embedded_engine_is_a_configuration_error(
    example_dir: Path, tmp_path: Path
) -> None:
    p = run("check", str(example_dir), "--strict", "--engine", "embedded", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert "OPA engine" in p.stderr


@pytest.mark.parametrize("status", [2, 3, 127])
def test_an_opa_that_fails_without_a_verdict_is_an_engine_error(
    status: int, example_dir: Path, tmp_path: Path
) -> None:
    # `opa check` answers 0 (fine) or 1 with diagnostics; any other status
    # (a broken or foreign binary) says nothing about the bundle: was exit 1.
    fake = tmp_path / "opa"
    fake.write_text(f"#!/bin/sh\necho 'something broke' >&2\nexit {status}\n")
    fake.chmod(0o755)
    p = run("check", str(example_dir), "--engine", "opa", cwd=tmp_path, POLICYSUPPLY_OPA=str(fake))
    assert p.returncode == 2, p.stderr
    assert "something broke" in p.stderr
