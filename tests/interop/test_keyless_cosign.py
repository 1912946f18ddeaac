"""Keyless signing and verification against a real Sigstore stack and real cosign, both ways.

The stack (tests/interop/_sigstore_fixtures.py) is real Fulcio, a CT log,
Rekor v2 and an RFC 3161 TSA on loopback, with its own trusted root. Each
direction is checked: what policysupply signs, cosign verifies with
``--certificate-identity``/``--certificate-oidc-issuer``/``--trusted-root``;
what cosign signs, policysupply verifies against the same trusted root; and
both refuse a wrong identity.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from policysupply import Registry, Signer, TrustPolicy, Verifier
from policysupply.errors import ClaimMismatchError, IdentityMismatchError, TransparencyLogError
from policysupply.identity import Identity
from tests.interop import _sigstore_fixtures
from tests.interop._cosign import (
    KEYLESS_VERIFY_FLAGS,
    WRONG_IDENTITY,
    assert_refused,
    bundle_signing_flags,
    keyless_cosign,
    legacy_signing_flags,
    legacy_trust_flags,
    push_policy,
)
from tests.interop._sigstore_fixtures import DEFAULT_EMAIL, SigstoreStack
from tests.interop.conftest import RegistryServer

pytestmark = pytest.mark.interop
sigstore_stack = _sigstore_fixtures.sigstore_stack

SLSA = "https://slsa.dev/provenance/v1"


@pytest.fixture(params=["distribution", "referrers_registry"])
def image(request: pytest.FixtureRequest, example_dir: Path) -> tuple[Registry, str, str]:
    """``(registry client, reference by digest, digest)`` of a policy image."""
    server: RegistryServer = request.getfixturevalue(request.param)
    return push_policy(server, example_dir)


def github_signer(stack: SigstoreStack) -> tuple[Signer, str]:
    token, identity = stack.github_token()
    return Signer.keyless(identity_token=token, trust=stack.trust_config_path), identity


def verifier(stack: SigstoreStack, *identities: Identity, **kw: object) -> Verifier:
    return Verifier(
        TrustPolicy(identities=identities, **kw),  # type: ignore[arg-type]
        trusted_root=stack.trusted_root_path,
    )


def cosign_verify(
    version: str,
    stack: SigstoreStack,
    ref: str,
    identity: str,
    issuer: str,
    cwd: Path,
    *extra: str,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    return keyless_cosign(
        version,
        stack,
        "verify",
        "--trusted-root",
        str(stack.trusted_root_path),
        "--certificate-identity",
        identity,
        "--certificate-oidc-issuer",
        issuer,
        "--allow-http-registry",
        *extra,
        ref,
        cwd=cwd,
        check=check,
    )


# -- policysupply signs, cosign verifies ---------------------------------------------


def test_our_keyless_bundle_signature_verifies_with_cosign(
    image: tuple[Registry, str, str], sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    reg, ref, digest = image
    stack = sigstore_stack
    signer, identity = github_signer(stack)
    sig = signer.sign(reg, ref, scheme="bundle")
    assert sig.certificate is not None

    ours = verifier(stack, Identity(issuer=stack.github_issuer, subject=identity))
    (s,) = ours.verify(reg, ref).signatures
    assert (s.subject, s.issuer) == (identity, stack.github_issuer)
    with pytest.raises(IdentityMismatchError):
        verifier(stack, Identity(issuer=stack.oidc_issuer, subject=identity)).verify(reg, ref)

    for version in ("3", "2"):
        out = cosign_verify(
            version,
            stack,
            ref,
            identity,
            stack.github_issuer,
            tmp_path,
            *KEYLESS_VERIFY_FLAGS[version],
        )
        assert digest in out.stdout
        wrong = cosign_verify(
            version,
            stack,
            ref,
            identity.replace("release.yml", "other.yml"),
            stack.github_issuer,
            tmp_path,
            *KEYLESS_VERIFY_FLAGS[version],
            check=False,
        )
        assert_refused(wrong, WRONG_IDENTITY)


def test_our_keyless_legacy_signature_verifies_with_cosign(
    image: tuple[Registry, str, str], sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    # Rekor v2 entries have no signed entry timestamp, so cosign's legacy
    # form carries the TSA timestamp instead of a Rekor bundle, as cosign 2
    # does with --tlog-upload=false --timestamp-server-url.
    reg, ref, digest = image
    stack = sigstore_stack
    signer = Signer.keyless(identity_token=stack.mint_token(), trust=stack.trust_config_path)
    signer.sign(reg, ref)
    ident = Identity(issuer=stack.oidc_issuer, subject=DEFAULT_EMAIL)
    with pytest.raises(TransparencyLogError):
        verifier(stack, ident).verify(reg, ref)
    verifier(stack, ident, require_tlog=False).verify(reg, ref)
    for version in ("2", "3"):
        out = keyless_cosign(
            version,
            stack,
            "verify",
            "--certificate-identity",
            DEFAULT_EMAIL,
            "--certificate-oidc-issuer",
            stack.oidc_issuer,
            "--insecure-ignore-tlog",
            "--use-signed-timestamps",
            "--allow-http-registry",
            *legacy_trust_flags(stack, version),
            ref,
            cwd=tmp_path,
        )
        assert digest in out.stdout


# -- cosign signs, policysupply verifies ---------------------------------------------


def test_cosign3_keyless_signature_verifies_with_us(
    image: tuple[Registry, str, str], sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    reg, ref, _ = image
    stack = sigstore_stack
    token, identity = stack.github_token()
    keyless_cosign(
        "3",
        stack,
        "sign",
        "--identity-token",
        token,
        *bundle_signing_flags(stack),
        "--allow-http-registry",
        ref,
        cwd=tmp_path,
    )
    gh = Identity(
        issuer=stack.github_issuer,
        subject_regex=r"https://github\.com/acme/policies/\.github/workflows/.*",
        extensions={
            "github_workflow_repository": "acme/policies",
            "source_repository_ref": "refs/heads/main",
        },
    )
    # cosign 3's statement names no repository: refused unless explicitly waived.
    with pytest.raises(ClaimMismatchError, match=r'names no repository.*docker_reference="any"'):
        verifier(stack, gh).verify(reg, ref)
    (s,) = verifier(stack, gh, docker_reference="any").verify(reg, ref).signatures
    assert s.subject == identity
    assert s.scheme == "bundle"
    evil = Identity(
        issuer=stack.github_issuer,
        subject_regex=r"https://github\.com/acme/policies/\.github/workflows/.*",
        extensions={"github_workflow_repository": "evil/policies"},
    )
    with pytest.raises(IdentityMismatchError, match="github_workflow_repository"):
        verifier(stack, evil).verify(reg, ref)
    partial = Identity(issuer=stack.github_issuer, subject_regex=r"github\.com/acme/.*")
    with pytest.raises(IdentityMismatchError, match="fully match"):
        verifier(stack, partial).verify(reg, ref)


def test_cosign2_legacy_keyless_signature_verifies_with_us(
    image: tuple[Registry, str, str], sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    reg, ref, _ = image
    stack = sigstore_stack
    keyless_cosign(
        "2",
        stack,
        "sign",
        "--identity-token",
        stack.mint_token(),
        *legacy_signing_flags(stack),
        ref,
        cwd=tmp_path,
    )
    ident = Identity(issuer=stack.oidc_issuer, subject=DEFAULT_EMAIL)
    (s,) = verifier(stack, ident, require_tlog=False).verify(reg, ref).signatures
    assert s.scheme == "legacy"
    assert s.subject == DEFAULT_EMAIL
    with pytest.raises(TransparencyLogError):
        verifier(stack, ident).verify(reg, ref)
    other = Identity(issuer=stack.oidc_issuer, subject="mallory@example.com")
    with pytest.raises(IdentityMismatchError):
        verifier(stack, other, require_tlog=False).verify(reg, ref)


# -- attestations ----------------------------------------------------------------------


def test_attestations_both_ways(
    image: tuple[Registry, str, str], sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    reg, ref, _ = image
    stack = sigstore_stack
    signer, identity = github_signer(stack)
    signer.sign(reg, ref, scheme="bundle")
    predicate = {"buildDefinition": {"buildType": "https://example.com/policy-build/v1"}}
    signer.attest(reg, ref, predicate_type=SLSA, predicate=predicate, scheme="bundle")
    gh = Identity(issuer=stack.github_issuer, subject=identity)
    artifact = verifier(stack, gh, attestations=[SLSA]).verify(reg, ref)
    assert artifact.predicates(SLSA) == (predicate,)
    out = keyless_cosign(
        "3",
        stack,
        "verify-attestation",
        "--type",
        SLSA,
        "--trusted-root",
        str(stack.trusted_root_path),
        "--certificate-identity",
        identity,
        "--certificate-oidc-issuer",
        stack.github_issuer,
        "--allow-http-registry",
        ref,
        cwd=tmp_path,
    )
    assert "buildDefinition" in out.stdout or "payload" in out.stdout

    # cosign attests; we verify and expose its predicate
    pred_file = tmp_path / "vuln.json"
    pred_file.write_text(json.dumps({"scanner": {"uri": "https://example.com/scanner"}}))
    token, _ = stack.github_token()
    keyless_cosign(
        "3",
        stack,
        "attest",
        "--type",
        "vuln",
        "--predicate",
        str(pred_file),
        "--identity-token",
        token,
        *bundle_signing_flags(stack),
        "--allow-http-registry",
        ref,
        cwd=tmp_path,
    )
    vuln = "https://cosign.sigstore.dev/attestation/vuln/v1"
    artifact = verifier(stack, gh, attestations=[vuln]).verify(reg, ref)
    (p,) = artifact.predicates(vuln)
    assert p["scanner"]["uri"] == "https://example.com/scanner"


def test_legacy_attestations_both_ways(
    image: tuple[Registry, str, str], sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    # cosign 2's classic .att layers with an RFC 3161 timestamp and no log entry
    reg, ref, _ = image
    stack = sigstore_stack
    ident = Identity(issuer=stack.oidc_issuer, subject=DEFAULT_EMAIL)
    pred_file = tmp_path / "pred.json"
    pred_file.write_text(json.dumps({"builder": {"id": "cosign2"}}))
    keyless_cosign(
        "2",
        stack,
        "attest",
        "--type",
        SLSA,
        "--predicate",
        str(pred_file),
        "--identity-token",
        stack.mint_token(),
        *legacy_signing_flags(stack),
        ref,
        cwd=tmp_path,
    )
    signer = Signer.keyless(identity_token=stack.mint_token(), trust=stack.trust_config_path)
    signer.sign(reg, ref)
    signer.attest(reg, ref, predicate_type=SLSA, predicate={"builder": {"id": "policysupply"}})
    artifact = verifier(stack, ident, require_tlog=False, attestations=[SLSA]).verify(reg, ref)
    builders = sorted(p["builder"]["id"] for p in artifact.predicates(SLSA))
    assert builders == ["cosign2", "policysupply"]
    out = keyless_cosign(
        "2",
        stack,
        "verify-attestation",
        "--type",
        SLSA,
        "--certificate-identity",
        DEFAULT_EMAIL,
        "--certificate-oidc-issuer",
        stack.oidc_issuer,
        "--insecure-ignore-tlog",
        "--use-signed-timestamps",
        "--timestamp-certificate-chain",
        str(stack.tsa_chain_path),
        "--allow-http-registry",
        ref,
        cwd=tmp_path,
    )
    # cosign prints one verified envelope per line: both attestations passed
    assert len([line for line in out.stdout.splitlines() if "payload" in line]) == 2


# -- blobs -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2", "3"])
def test_blobs_both_ways(version: str, sigstore_stack: SigstoreStack, tmp_path: Path) -> None:
    stack = sigstore_stack
    artifact = tmp_path / "policy.tar.gz"
    artifact.write_bytes(b"\x1f\x8b policy tarball" * 100)
    ident = Identity(issuer=stack.oidc_issuer, subject=DEFAULT_EMAIL)

    # we sign, cosign verifies
    signer = Signer.keyless(identity_token=stack.mint_token(), trust=stack.trust_config_path)
    ours = signer.sign_blob(artifact).write(tmp_path / "ours.sigstore.json")
    verifier(stack, ident).verify_blob(artifact, bundle=ours)

    def cosign_verify_blob(bundle: Path, identity: str) -> subprocess.CompletedProcess[str]:
        return keyless_cosign(
            version,
            stack,
            "verify-blob",
            "--bundle",
            str(bundle),
            "--trusted-root",
            str(stack.trusted_root_path),
            "--certificate-identity",
            identity,
            "--certificate-oidc-issuer",
            stack.oidc_issuer,
            *KEYLESS_VERIFY_FLAGS[version],
            str(artifact),
            cwd=tmp_path,
            check=False,
        )

    assert cosign_verify_blob(ours, DEFAULT_EMAIL).returncode == 0
    assert_refused(cosign_verify_blob(ours, "mallory@example.com"), WRONG_IDENTITY)

    # cosign signs, we verify
    theirs = tmp_path / "cosign.sigstore.json"
    keyless_cosign(
        version,
        stack,
        "sign-blob",
        "--identity-token",
        stack.mint_token(),
        *bundle_signing_flags(stack),
        "--bundle",
        str(theirs),
        str(artifact),
        cwd=tmp_path,
    )
    (s,) = verifier(stack, ident).verify_blob(artifact, bundle=theirs).signatures
    assert s.subject == DEFAULT_EMAIL
    other = Identity(issuer=stack.oidc_issuer, subject="mallory@example.com")
    with pytest.raises(IdentityMismatchError):
        verifier(stack, other).verify_blob(artifact, bundle=theirs)
