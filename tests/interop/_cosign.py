"""Running real cosign 2.x / 3.x in the interop tests, and the flags they share."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import peer

if TYPE_CHECKING:
    from policysupply import Registry
    from tests.interop._sigstore_fixtures import SigstoreStack
    from tests.interop.conftest import RegistryServer

# Key-only signing against a loopback plain-HTTP registry, no transparency log.
COSIGN_SIGN_FLAGS = {
    "2": ["--tlog-upload=false", "--allow-http-registry"],
    "3": ["--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry"],
}
COSIGN_VERIFY_FLAGS = ["--insecure-ignore-tlog=true", "--allow-http-registry"]

# Verifying Sigstore bundles (Rekor v2 + TSA) against the loopback stack's
# trusted root: cosign 2 does that only in its new-bundle mode.
KEYLESS_VERIFY_FLAGS = {"2": ["--new-bundle-format", "--use-signed-timestamps"], "3": []}

# Key-only Sigstore bundles for blobs (``sign-blob --key --bundle``): no log, no TSA.
COSIGN_BLOB_SIGN_FLAGS = {
    "2": ["--new-bundle-format", "--tlog-upload=false"],
    "3": ["--tlog-upload=false", "--use-signing-config=false"],
}
COSIGN_BLOB_VERIFY_FLAGS = {
    "2": ["--new-bundle-format", "--insecure-ignore-tlog=true"],
    "3": ["--insecure-ignore-tlog=true"],
}

# What cosign prints when a verification (not a flag, not the network) fails.
BAD_SIGNATURE = r"invalid signature when validating ASN\.1 encoded signature"
BAD_DSSE_SIGNATURE = r"accepted signatures do not match threshold, Found: 0"
# sigstore-go's bundle path, then cosign's classic (.sig) path
WRONG_IDENTITY = (
    r"no matching CertificateIdentity found, last error: expected SAN value"
    r"|none of the expected identities matched what was in the certificate"
)


def run_cosign(
    version: str,
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    password: str = "pw",
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Runs real cosign ``version`` ("2" or "3") in ``cwd``.

    Without ``env``, cosign gets a private HOME under ``cwd`` and ``password``
    for its key files. With ``check``, a non-zero exit fails the test.
    """
    if env is None:
        env = {
            **os.environ,
            "COSIGN_PASSWORD": password,
            "COSIGN_YES": "true",
            "HOME": str(cwd),
            "DOCKER_CONFIG": str(cwd / ".docker"),
        }
    proc = subprocess.run(
        [str(peer(f"cosign{version}")), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def assert_refused(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    """Asserts cosign exited non-zero *because verification failed*: ``pattern``
    (a regex) must be in its stderr, so a bad flag or an unreachable registry
    cannot pass for a refusal."""
    assert proc.returncode != 0, f"cosign accepted:\n{proc.stderr}"
    assert re.search(pattern, proc.stderr), f"cosign failed otherwise:\n{proc.stderr}"


def keyless_cosign(
    version: str, stack: SigstoreStack, *args: str, cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs real cosign ``version`` against the loopback Sigstore ``stack``."""
    return run_cosign(version, *args, cwd=cwd, env=stack.cosign_env(cwd), check=check)


def legacy_signing_flags(stack: SigstoreStack) -> list[str]:
    """cosign 2's classic keyless signing: a Fulcio certificate and an RFC 3161
    timestamp from ``stack``, no transparency log (give ``--identity-token`` too)."""
    return [
        "--fulcio-url",
        stack.fulcio_url,
        "--tlog-upload=false",
        "--timestamp-server-url",
        stack.tsa_url,
        "--allow-http-registry",
    ]


def bundle_signing_flags(stack: SigstoreStack) -> list[str]:
    """Signing a Sigstore bundle with ``stack``'s signing config (Fulcio, Rekor v2, TSA)."""
    return [
        "--signing-config",
        str(stack.signing_config_path),
        "--trusted-root",
        str(stack.trusted_root_path),
    ]


def legacy_trust_flags(stack: SigstoreStack, version: str) -> list[str]:
    """How cosign ``version`` is told to trust ``stack``'s TSA when verifying a
    legacy keyless signature (cosign 2 takes the TSA chain, cosign 3 the trusted root)."""
    if version == "2":
        return ["--timestamp-certificate-chain", str(stack.tsa_chain_path)]
    return ["--trusted-root", str(stack.trusted_root_path)]


def push_policy(server: RegistryServer, example_dir: Path) -> tuple[Registry, str, str]:
    """Pushes the example policy bundle to ``server`` as ``acme/policy:1.0``.

    Returns ``(registry client, reference by digest, digest)``.
    """
    from policysupply import Bundle, Registry

    reg = Registry.remote(server.host, insecure=True)
    pushed = reg.push(Bundle.from_directory(example_dir), "acme/policy:1.0")
    return reg, f"{server.host}/acme/policy@{pushed.digest}", pushed.digest
