"""The CLI as a separate process against a real registry (Debian's distribution) and cosign."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from policysupply import Registry, Signer
from tests.interop import _sigstore_fixtures
from tests.interop._cosign import COSIGN_SIGN_FLAGS, COSIGN_VERIFY_FLAGS, run_cosign
from tests.interop._sigstore_fixtures import DEFAULT_EMAIL, SigstoreStack
from tests.interop.conftest import REGISTRY_PASSWORD, REGISTRY_USER, RegistryServer, free_port

pytestmark = pytest.mark.interop
sigstore_stack = _sigstore_fixtures.sigstore_stack

PASSWORD = "interop-Key-pass"


def run(
    *args: str, home: Path, password: str | None = PASSWORD, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COSIGN_PASSWORD", "DOCKER_CONFIG")}
    env.update(HOME=str(home), DOCKER_CONFIG=str(home / ".docker"), **(extra_env or {}))
    if password is not None:
        env["COSIGN_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "policysupply", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=180,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def keypair(home: Path) -> tuple[Path, Path]:
    ok(run("keygen", "--json", home=home))
    return home / "cosign.key", home / "cosign.pub"


def test_push_sign_verify_pull_copy_round_trip(
    distribution: RegistryServer, example_dir: Path, home: Path, keypair: tuple[Path, Path]
) -> None:
    key, pub = keypair
    ref = f"{distribution.host}/acme/policy:1.0"
    pushed = ok(run("push", str(example_dir), ref, "--revision", "r1", "--json", home=home))
    assert pushed["reference"] == f"{distribution.host}/acme/policy@{pushed['digest']}"

    unsigned = run("verify", ref, "--key", str(pub), "--json", home=home)
    assert unsigned.returncode == 1
    assert json.loads(unsigned.stdout)["error"]["type"] == "NoSignatureError"

    signed = ok(run("sign", ref, "--key", str(key), "-a", "env=prod", "--json", home=home))
    assert signed["digest"] == pushed["digest"]
    verified = ok(run("verify", ref, "--key", str(pub), "-a", "env=prod", "--json", home=home))
    assert verified["key_ids"] == [Signer.from_key_file(key, password=PASSWORD).key_id]

    pulled = ok(run("pull", ref, "--key", str(pub), "-o", "p.tar.gz", "--json", home=home))
    assert (pulled["verified"], pulled["revision"]) == (True, "r1")
    assert (home / "p.tar.gz").exists()

    # registry -> layout -> registry (another repository), signatures travel along
    layout = f"oci:{home / 'layout'}:acme/policy:1.0"
    ok(run("copy", ref, layout, "--json", home=home))
    ok(run("verify", layout, "--key", str(pub), "--json", home=home))
    mirror = f"{distribution.host}/mirror/policy:1.0"
    copied = ok(run("copy", layout, mirror, "--json", home=home))
    assert copied["digest"] == pushed["digest"]
    # The signed docker-reference names acme/policy: the default repository check
    # refuses it under another name; cosign's behaviour (no check) accepts it.
    renamed = run("verify", mirror, "-k", str(pub), "--json", home=home)
    assert renamed.returncode == 1
    assert "acme/policy" in json.loads(renamed.stdout)["error"]["message"]
    ok(run("verify", mirror, "-k", str(pub), "--docker-reference", "any", "--json", home=home))

    bare = f"{distribution.host}/bare/policy:1.0"
    ok(run("copy", ref, bare, "--without-signatures", "--json", home=home))
    assert run("verify", bare, "--key", str(pub), home=home).returncode == 1


def test_cosign_verifies_what_the_cli_signed_and_vice_versa(
    distribution: RegistryServer, example_dir: Path, home: Path, keypair: tuple[Path, Path]
) -> None:
    key, pub = keypair
    reg = Registry.remote(distribution.host, insecure=True)

    ours = ok(run("push", str(example_dir), f"{distribution.host}/acme/a:1", "--json", home=home))
    ok(run("sign", ours["reference"], "--key", str(key), "--json", home=home))
    run_cosign(
        "2",
        "verify",
        "--key",
        str(pub),
        *COSIGN_VERIFY_FLAGS,
        ours["reference"],
        cwd=home,
        password=PASSWORD,
    )

    theirs = ok(run("push", str(example_dir), f"{distribution.host}/acme/b:1", "--json", home=home))
    run_cosign(
        "2",
        "sign",
        "--key",
        str(key),
        *COSIGN_SIGN_FLAGS["2"],
        theirs["reference"],
        cwd=home,
        password=PASSWORD,
    )
    verified = ok(run("verify", theirs["reference"], "--key", str(pub), "--json", home=home))
    assert verified["digest"] == reg.resolve("acme/b:1")


def test_docker_credentials_and_auth_errors(
    distribution_auth: RegistryServer, example_dir: Path, home: Path
) -> None:
    ref = f"{distribution_auth.host}/acme/policy:1"
    refused = run("push", str(example_dir), ref, "--json", home=home, password=None)
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["error"]["type"] == "AuthenticationError"

    config = home / ".docker" / "config.json"
    config.parent.mkdir()
    token = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {distribution_auth.host: {"auth": token}}}))
    pushed = run("push", str(example_dir), ref, "--json", home=home, password=None)
    assert pushed.returncode == 0, pushed.stderr
    # An explicit --docker-config wins over $DOCKER_CONFIG.
    elsewhere = home / "other.json"
    elsewhere.write_text(json.dumps({"auths": {}}))
    denied = run("pull", ref, "--docker-config", str(elsewhere), "-o", "x", home=home)
    assert denied.returncode == 2
    for proc in (refused, pushed, denied):
        assert REGISTRY_PASSWORD not in proc.stdout + proc.stderr
        assert token not in proc.stdout + proc.stderr


def test_unreachable_registry_exits_3_service_unavailable(home: Path, example_dir: Path) -> None:
    # 3, not 2 (as before ADR 0014): nothing was decided, retrying may help.
    ref = f"127.0.0.1:{free_port()}/acme/policy:1"
    started = time.monotonic()
    proc = run("push", str(example_dir), ref, "--timeout", "2", "--json", home=home)
    assert proc.returncode == 3
    assert json.loads(proc.stdout)["ok"] is False
    assert time.monotonic() - started < 30


# -- load and serve with a real OPA ---------------------------------------------

GOOD_POD = {
    "request": {
        "kind": {"kind": "Pod"},
        "object": {
            "metadata": {
                "name": "web",
                "labels": {"app.kubernetes.io/name": "web", "owner": "team-web"},
            },
            "spec": {"containers": []},
        },
    }
}


def test_load_refuses_unsigned_and_loads_verified(
    distribution: RegistryServer,
    example_dir: Path,
    home: Path,
    keypair: tuple[Path, Path],
    start_opa: Any,
) -> None:
    key, pub = keypair
    opa = start_opa()
    ref = f"{distribution.host}/acme/policy:1.0"
    ok(run("push", str(example_dir), ref, "--json", home=home))

    refused = run("load", ref, "-k", str(pub), "--opa", opa.url, "--json", home=home)
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["type"] == "NoSignatureError"
    assert opa.get("/v1/policies")["result"] == []  # OPA never saw it

    ok(run("sign", ref, "--key", str(key), "--json", home=home))
    state = home / "trust.json"
    loaded = ok(
        run(
            "load",
            ref,
            "-k",
            str(pub),
            "--opa",
            opa.url,
            "--state",
            str(state),
            "--json",
            home=home,
        )
    )
    assert loaded["roots"] == ["k8s"]
    assert loaded["modules"]
    labels = opa.post("/v1/data/k8s/labels/deny", {"input": GOOD_POD})["result"]
    assert labels == []
    assert state.exists()

    bad_opa = run("load", ref, "-k", str(pub), "--opa", "ftp://x", home=home)
    assert bad_opa.returncode == 2


def test_serve_feeds_opa_and_keeps_the_last_good_bundle(
    distribution: RegistryServer,
    example_dir: Path,
    home: Path,
    keypair: tuple[Path, Path],
    start_opa: Any,
    tmp_path: Path,
) -> None:
    key, pub = keypair
    ref = f"{distribution.host}/acme/policy:prod"
    ok(run("push", str(example_dir), ref, "--revision", "good", "--json", home=home))
    ok(run("sign", ref, "--key", str(key), "--json", home=home))

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "COSIGN_PASSWORD"}
    env.update(HOME=str(home), DOCKER_CONFIG=str(home / ".docker"))
    err = (tmp_path / "serve.err").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "policysupply",
            "serve",
            ref,
            "-k",
            str(pub),
            "--addr",
            f"127.0.0.1:{port}",
            "--interval",
            "0.3",
            "-d",
            str(tmp_path / "store"),
        ],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env=env,
        cwd=home,
    )
    try:
        assert proc.stdout is not None
        config = ""
        deadline = time.monotonic() + 60
        while "resource:" not in config and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            config += line
        assert f"http://127.0.0.1:{port}" in config, (tmp_path / "serve.err").read_text()
        (tmp_path / "opa.yaml").write_text(config)
        opa = start_opa("-c", str(tmp_path / "opa.yaml"))

        def revisions() -> list[Any]:
            bundles = opa.get("/v1/data/system/bundles").get("result") or {}
            return [b.get("manifest", {}).get("revision") for b in bundles.values()]

        def wait_for(predicate: Any) -> None:
            end = time.monotonic() + 60
            while time.monotonic() < end:
                if predicate():
                    return
                time.sleep(0.2)
            raise AssertionError((tmp_path / "serve.err").read_text())

        wait_for(lambda: revisions() == ["good"])
        assert opa.post("/v1/data/k8s/labels/deny", {"input": GOOD_POD})["result"] == []

        # An unsigned new revision under the tag is refused; OPA keeps the old one.
        ok(run("push", str(example_dir), ref, "--revision", "evil", "--json", home=home))
        wait_for(lambda: "not serving" in (tmp_path / "serve.err").read_text())
        time.sleep(1)  # a few OPA polls later, still the signed revision
        assert revisions() == ["good"]
        assert "NoSignatureError" in (tmp_path / "serve.err").read_text()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        err.close()


# -- keyless, against the loopback Sigstore stack --------------------------------


def test_keyless_sign_and_verify_by_identity(
    distribution: RegistryServer,
    example_dir: Path,
    home: Path,
    sigstore_stack: SigstoreStack,
) -> None:
    stack = sigstore_stack
    token = stack.mint_token(DEFAULT_EMAIL)
    ref = f"{distribution.host}/acme/policy:keyless"
    ok(run("push", str(example_dir), ref, "--json", home=home))

    signed = run(
        "sign", ref, "--sigstore-trust", str(stack.trust_config_path), "--scheme", "bundle",
        "--json", home=home, password=None, extra_env={"SIGSTORE_ID_TOKEN": token},
    )  # fmt: skip
    doc = ok(signed)
    assert doc["keyless"] is True
    assert token not in signed.stdout + signed.stderr

    identity = [
        "--certificate-oidc-issuer", stack.oidc_issuer,
        "--trusted-root", str(stack.trusted_root_path),
    ]  # fmt: skip
    verified = ok(
        run("verify", ref, "--certificate-identity", DEFAULT_EMAIL, *identity, "--json",
            home=home)
    )  # fmt: skip
    (sig,) = verified["signatures"]
    assert (sig["subject"], sig["issuer"]) == (DEFAULT_EMAIL, stack.oidc_issuer)
    by_regex = run(
        "verify", ref, "--certificate-identity-regexp", r".*@example\.(com|org)", *identity,
        home=home,
    )  # fmt: skip
    assert by_regex.returncode == 0, by_regex.stdout + by_regex.stderr
    assert f"signature by {DEFAULT_EMAIL}" in by_regex.stdout

    wrong = run(
        "verify", ref, "--certificate-identity", "mallory@example.com", *identity, "--json",
        home=home,
    )  # fmt: skip
    assert wrong.returncode == 1
    assert json.loads(wrong.stdout)["error"]["type"] == "IdentityMismatchError"
    partial = run("verify", ref, "--certificate-identity-regexp", "example", *identity, home=home)
    assert partial.returncode == 1  # regexes match whole values only

    incomplete = run("verify", ref, "--certificate-identity", DEFAULT_EMAIL, home=home)
    assert incomplete.returncode == 2  # no issuer: a configuration error
    both = run("sign", ref, "--key", "x", "--identity-token", token, home=home)
    assert both.returncode == 2

    expired = stack.mint_token(DEFAULT_EMAIL, lifetime=-120)
    refused = run(
        "sign", ref, "--sigstore-trust", str(stack.trust_config_path), "--json", home=home,
        password=None, extra_env={"SIGSTORE_ID_TOKEN": expired},
    )  # fmt: skip
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["error"]["type"] == "SigningError"
    assert expired not in refused.stdout + refused.stderr
    missing = run("sign", ref, "--identity-token", str(home / "no-token"), home=home)
    assert missing.returncode == 2
