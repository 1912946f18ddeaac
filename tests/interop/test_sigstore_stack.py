"""Smoke tests of the loopback Sigstore stack with sigstore-python and real cosign 2.x / 3.x.

These check the test infrastructure itself (tests/interop/_sigstore_fixtures.py):
that both clients sign keylessly against the stack and verify with its trusted
root, in both directions, and that the stack refuses what it should.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import peer
from tests.interop import _sigstore_fixtures
from tests.interop._cosign import (
    BAD_SIGNATURE,
    KEYLESS_VERIFY_FLAGS,
    WRONG_IDENTITY,
    assert_refused,
    bundle_signing_flags,
    keyless_cosign,
    legacy_signing_flags,
    legacy_trust_flags,
    push_policy,
)
from tests.interop._sigstore_fixtures import DEFAULT_EMAIL, OidcIssuer, SigstoreStack
from tests.interop.conftest import RegistryServer

pytestmark = pytest.mark.interop
sigstore_stack = _sigstore_fixtures.sigstore_stack

ARTIFACT = b"package policysupply.smoke\n\nallow := true\n"


def sign_blob_with_cosign(
    version: str, stack: SigstoreStack, artifact: Path, token: str, tmp_path: Path
) -> Path:
    bundle = tmp_path / f"cosign{version}.sigstore.json"
    keyless_cosign(
        version,
        stack,
        "sign-blob",
        "--identity-token",
        token,
        *bundle_signing_flags(stack),
        "--bundle",
        str(bundle),
        str(artifact),
        cwd=tmp_path,
    )
    return bundle


def verify_blob_with_cosign(
    version: str,
    stack: SigstoreStack,
    artifact: Path,
    bundle: Path,
    tmp_path: Path,
    *,
    identity: str = DEFAULT_EMAIL,
    issuer: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
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
        issuer or stack.oidc_issuer,
        *KEYLESS_VERIFY_FLAGS[version],
        str(artifact),
        cwd=tmp_path,
        check=check,
    )


# -- sigstore-python ---------------------------------------------------------------


def sign_with_sigstore_python(stack: SigstoreStack, token: str, data: bytes) -> str:
    from sigstore.oidc import IdentityToken
    from sigstore.sign import SigningContext

    context = SigningContext.from_trust_config(stack.trust_config())
    # cache=False is broken in sigstore 4.5: it signs with a key other than the
    # certificate's, which Rekor refuses.
    with context.signer(IdentityToken(token)) as signer:
        return signer.sign_artifact(data).to_json()


def verify_with_sigstore_python(
    stack: SigstoreStack, data: bytes, bundle_json: str, identity: str, issuer: str
) -> None:
    from sigstore.models import Bundle
    from sigstore.verify import Verifier
    from sigstore.verify.policy import Identity

    verifier = Verifier(trusted_root=stack.trust_config().trusted_root)
    verifier.verify_artifact(
        data, Bundle.from_json(bundle_json), Identity(identity=identity, issuer=issuer)
    )


def test_sigstore_python_signs_and_verifies_with_the_stack(sigstore_stack: SigstoreStack) -> None:
    from sigstore.errors import VerificationError

    stack = sigstore_stack
    bundle_json = sign_with_sigstore_python(stack, stack.mint_token(), ARTIFACT)
    bundle = json.loads(bundle_json)
    # A Rekor v2 entry, with its signing time from the TSA.
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    assert entry["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
    assert bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    verify_with_sigstore_python(stack, ARTIFACT, bundle_json, DEFAULT_EMAIL, stack.oidc_issuer)

    with pytest.raises(VerificationError):
        verify_with_sigstore_python(
            stack, ARTIFACT, bundle_json, "mallory@example.com", stack.oidc_issuer
        )
    with pytest.raises(VerificationError):
        verify_with_sigstore_python(
            stack, ARTIFACT + b"#", bundle_json, DEFAULT_EMAIL, stack.oidc_issuer
        )


def test_github_workflow_identity(sigstore_stack: SigstoreStack) -> None:
    token, identity = sigstore_stack.github_token(
        repository="acme/policies", workflow=".github/workflows/release.yml", ref="refs/tags/v1"
    )
    assert identity == (
        "https://github.com/acme/policies/.github/workflows/release.yml@refs/tags/v1"
    )
    bundle_json = sign_with_sigstore_python(sigstore_stack, token, ARTIFACT)
    verify_with_sigstore_python(
        sigstore_stack, ARTIFACT, bundle_json, identity, sigstore_stack.github_issuer
    )


@pytest.mark.parametrize(
    "kind", ["unknown-issuer", "wrong-audience", "unverified-email", "foreign-key"]
)
def test_fulcio_refuses_bad_tokens(sigstore_stack: SigstoreStack, kind: str) -> None:
    from sigstore._internal.fulcio.client import FulcioClientError
    from sigstore.oidc import IdentityToken
    from sigstore.sign import SigningContext

    stack = sigstore_stack
    client_id = "sigstore"
    if kind == "unknown-issuer":
        token = stack.mint_token(issuer=f"{stack.oidc_issuer}/elsewhere")
    elif kind == "wrong-audience":
        # Make sigstore-python expect that audience too, so Fulcio is the one to refuse.
        token, client_id = stack.mint_token(audience="not-sigstore"), "not-sigstore"
    elif kind == "unverified-email":
        token = stack.mint_token(claims={"email_verified": False})
    else:
        # Same issuer and key id, another key: the JWKS does not vouch for it.
        forger = OidcIssuer(url=stack.oidc_issuer, kid=stack.oidc.kid)
        token = forger.sign(_jwt_claims(stack.mint_token()))

    context = SigningContext.from_trust_config(stack.trust_config())
    with (
        pytest.raises(FulcioClientError) as refused,
        context.signer(IdentityToken(token, client_id)) as signer,
    ):
        signer.sign_artifact(ARTIFACT)
    # Refused by Fulcio for the token (HTTP 4xx), not failed for another reason.
    http_error = refused.value.__cause__
    assert 400 <= http_error.response.status_code < 500, http_error  # type: ignore[union-attr]


def _jwt_claims(token: str) -> dict[str, object]:
    import base64

    payload = token.split(".")[1]
    claims: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


# -- cosign --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2", "3"])
def test_cosign_sign_blob_and_verify_both_ways(
    version: str, sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    stack = sigstore_stack
    artifact = tmp_path / "policy.rego"
    artifact.write_bytes(ARTIFACT)

    # cosign signs; cosign and sigstore-python verify.
    bundle = sign_blob_with_cosign(version, stack, artifact, stack.mint_token(), tmp_path)
    verify_blob_with_cosign(version, stack, artifact, bundle, tmp_path)
    verify_with_sigstore_python(
        stack, ARTIFACT, bundle.read_text(), DEFAULT_EMAIL, stack.oidc_issuer
    )
    wrong = verify_blob_with_cosign(
        version, stack, artifact, bundle, tmp_path, identity="mallory@example.com", check=False
    )
    assert_refused(wrong, WRONG_IDENTITY)

    # sigstore-python signs; cosign verifies.
    ours = tmp_path / "sigstore-python.sigstore.json"
    ours.write_text(sign_with_sigstore_python(stack, stack.mint_token(), ARTIFACT))
    verify_blob_with_cosign(version, stack, artifact, ours, tmp_path)
    tampered = tmp_path / "tampered.rego"
    tampered.write_bytes(ARTIFACT + b"#")
    assert_refused(
        verify_blob_with_cosign(version, stack, tampered, ours, tmp_path, check=False),
        BAD_SIGNATURE,
    )


@pytest.fixture(params=["distribution", "referrers_registry"])
def image(request: pytest.FixtureRequest, example_dir: Path) -> tuple[str, str]:
    """A policy image pushed to each real registry: ``(reference by digest, digest)``."""
    server: RegistryServer = request.getfixturevalue(request.param)
    _, ref, digest = push_policy(server, example_dir)
    return ref, digest


def test_cosign3_signs_an_image_keylessly_and_both_cosigns_verify(
    image: tuple[str, str], sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    # cosign 3 stores a Sigstore bundle (Rekor v2 entry, TSA timestamp) as a
    # referrer. cosign 2.6 cannot sign images against Rekor v2 (it sends DSSE
    # entries, which rekor-tiles 2.3 dropped) but verifies these.
    ref, digest = image
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
    for version in ("3", "2"):
        verify = [
            "verify",
            "--trusted-root",
            str(stack.trusted_root_path),
            "--certificate-oidc-issuer",
            stack.github_issuer,
            "--allow-http-registry",
            *KEYLESS_VERIFY_FLAGS[version],
        ]
        out = keyless_cosign(
            version, stack, *verify, "--certificate-identity", identity, ref, cwd=tmp_path
        )
        assert digest in out.stdout
        other = identity.replace("release.yml", "other.yml")
        wrong = keyless_cosign(
            version, stack, *verify, "--certificate-identity", other, ref, cwd=tmp_path, check=False
        )
        assert_refused(wrong, WRONG_IDENTITY)


def test_cosign2_legacy_keyless_signature_and_both_cosigns_verify(
    image: tuple[str, str], sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    # cosign 2's classic format: a ``.sig`` tag whose layer carries the Fulcio
    # certificate and an RFC 3161 timestamp annotation; no transparency log.
    ref, digest = image
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
    common = [
        "verify",
        "--certificate-identity",
        DEFAULT_EMAIL,
        "--certificate-oidc-issuer",
        stack.oidc_issuer,
        "--insecure-ignore-tlog",
        "--use-signed-timestamps",
        "--allow-http-registry",
    ]
    for version in ("2", "3"):
        trust = legacy_trust_flags(stack, version)
        out = keyless_cosign(version, stack, *common, *trust, ref, cwd=tmp_path)
        assert digest in out.stdout
        wrong = keyless_cosign(
            version,
            stack,
            *common[:1],
            "--certificate-identity",
            "mallory@example.com",
            *common[3:],
            *trust,
            ref,
            cwd=tmp_path,
            check=False,
        )
        assert_refused(wrong, WRONG_IDENTITY)


# -- offline material (tests/fixtures/sigstore) --------------------------------------

OFFLINE = Path(__file__).resolve().parents[1] / "fixtures" / "sigstore"
OFFLINE_CASES = {
    "production-rekor-v1": (
        "rfc8785-0.1.2-py3-none-any.whl",
        "production-trusted_root.json",
        "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
        "https://token.actions.githubusercontent.com",
    ),
    "staging-rekor-v2": (
        "staging-rekor-v2.txt",
        "staging-trusted_root.json",
        "jku@goto.fi",
        "https://github.com/login/oauth",
    ),
}


@pytest.mark.parametrize("case", sorted(OFFLINE_CASES))
def test_offline_material_verifies(case: str, tmp_path: Path) -> None:
    from sigstore.errors import VerificationError
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier
    from sigstore.verify.policy import Identity

    artifact, root, identity, issuer = OFFLINE_CASES[case]
    data = (OFFLINE / artifact).read_bytes()
    bundle = OFFLINE / f"{artifact}.sigstore.json"
    verifier = Verifier(trusted_root=TrustedRoot.from_file(str(OFFLINE / root)))
    parsed = Bundle.from_json(bundle.read_bytes())
    verifier.verify_artifact(data, parsed, Identity(identity=identity, issuer=issuer))
    with pytest.raises(VerificationError):
        verifier.verify_artifact(data + b"\n", parsed, Identity(identity=identity, issuer=issuer))

    env = {
        "HOME": str(tmp_path),
        "TUF_ROOT": str(tmp_path / ".sigstore"),
        "PATH": "/usr/bin:/bin",
    }
    for version in ("2", "3"):
        proc = subprocess.run(
            [
                str(peer(f"cosign{version}")),
                "verify-blob",
                "--bundle",
                str(bundle),
                "--trusted-root",
                str(OFFLINE / root),
                "--certificate-identity",
                identity,
                "--certificate-oidc-issuer",
                issuer,
                # cosign 2 asks for TSA timestamps only when told to; the
                # Rekor v1 entry has its time from the log instead.
                *(
                    KEYLESS_VERIFY_FLAGS[version]
                    if case.endswith("v2")
                    else KEYLESS_VERIFY_FLAGS[version][:1]
                ),
                str(OFFLINE / artifact),
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
