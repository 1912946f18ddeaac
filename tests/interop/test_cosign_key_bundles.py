"""Key-signed Sigstore bundles against real cosign 2.x / 3.x and the loopback Sigstore stack.

cosign 3 signs with ``--key`` by default through a signing config: the bundle
then holds a Rekor v2 entry and an RFC 3161 timestamp. Verified against the
stack's trusted root, that timestamp is the signature's ``witnessed_at``: it
proves the signature existed by then, not that it is recent (anyone can log
an old signature again), so it is never ``signed_at``. cosign 3's key
signatures carry no signer-produced time: a ``max_signature_age`` refuses
them unless the policy opts out with ``insecure_witnessed_age``. Without a
trusted root a key signature is checked against the key alone, offline.

Key-signed *blob* bundles (``sign-blob --key --bundle``, ``attest-blob
--key``) are checked both ways: sigstore-python has no public-key path, so
policysupply's is the only Python implementation tested here.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
from pathlib import Path

import attrs
import pytest

from policysupply import Bundle, Signer, TrustPolicy, Verifier
from policysupply.errors import (
    DigestMismatchError,
    StaleSignatureError,
    TransparencyLogError,
    UntrustedSignatureError,
)
from tests.interop import _sigstore_fixtures
from tests.interop._cosign import (
    BAD_SIGNATURE,
    COSIGN_BLOB_SIGN_FLAGS,
    COSIGN_BLOB_VERIFY_FLAGS,
    COSIGN_SIGN_FLAGS,
    assert_refused,
    bundle_signing_flags,
    push_policy,
    run_cosign,
)
from tests.interop._sigstore_fixtures import SigstoreStack
from tests.interop.conftest import RegistryServer

pytestmark = pytest.mark.interop
sigstore_stack = _sigstore_fixtures.sigstore_stack

FRESH = dt.timedelta(minutes=10)
DATA = b"\x1f\x8b policy tarball signed with a key\n" * 40


@pytest.fixture(params=["distribution", "referrers_registry"])
def server(request: pytest.FixtureRequest) -> RegistryServer:
    """Each real registry: Debian's distribution (fallback tag) and ggcr (referrers API)."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def stack_cosign(
    version: str, stack: SigstoreStack, *args: str, cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """cosign against the loopback stack, with the key password cosign.key needs."""
    env = {**stack.cosign_env(cwd), "COSIGN_PASSWORD": "pw"}
    return run_cosign(version, *args, cwd=cwd, env=env, check=check)


def near_now(when: dt.datetime | None) -> bool:
    now = dt.datetime.now(dt.timezone.utc)
    return when is not None and abs(now - when) < dt.timedelta(minutes=5)


def root_without_tsa(stack: SigstoreStack, tmp_path: Path) -> Path:
    """The stack's trusted root minus its timestamp authority."""
    doc = json.loads(stack.trusted_root_path.read_text())
    doc["timestampAuthorities"] = []
    path = tmp_path / "no-tsa-trusted_root.json"
    path.write_text(json.dumps(doc))
    return path


# -- images: cosign 3's default `sign --key` -------------------------------------------


def test_cosign3_default_key_signature_has_a_witnessed_time_only(
    server: RegistryServer, example_dir: Path, sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    stack = sigstore_stack
    reg, ref, _ = push_policy(server, example_dir)
    run_cosign("3", "generate-key-pair", cwd=tmp_path)
    pub = tmp_path / "cosign.pub"
    stack_cosign(
        "3",
        stack,
        "sign",
        "--key",
        "cosign.key",
        *bundle_signing_flags(stack),
        "--allow-http-registry",
        ref,
        cwd=tmp_path,
    )
    # cosign 3 names no repository: "any" is the explicit choice for its signatures.
    base = TrustPolicy(keys=[pub], docker_reference="any")
    root = stack.trusted_root_path
    (s,) = Verifier(base, trusted_root=root).verify(reg, ref).signatures
    assert s.scheme == "bundle"
    assert s.signed_at is None  # nothing its signer produced says when it was made
    assert near_now(s.witnessed_at), s.witnessed_at  # the TSA saw it just now
    assert s.log_index is not None  # the Rekor v2 entry's inclusion proof verified

    # Freeze protection fails closed for it, with or without require_tlog ...
    for require_tlog in (None, True):
        fresh = attrs.evolve(base, max_signature_age=FRESH, require_tlog=require_tlog)
        with pytest.raises(StaleSignatureError, match="insecure_witnessed_age"):
            Verifier(fresh, trusted_root=root).verify(reg, ref)
        # ... unless the policy explicitly accepts the witnessed time.
        opted = attrs.evolve(fresh, insecure_witnessed_age=True)
        assert Verifier(opted, trusted_root=root).verify(reg, ref).signatures[0].witnessed_at

    # Without a trusted root: the key alone, offline, as before: no time at all.
    (plain,) = Verifier(base).verify(reg, ref).signatures
    assert plain.signed_at is None
    assert plain.witnessed_at is None
    assert plain.log_index is None
    opted = attrs.evolve(base, max_signature_age=FRESH, insecure_witnessed_age=True)
    with pytest.raises(StaleSignatureError, match="no trusted signature carries"):
        Verifier(opted).verify(reg, ref)
    # A timestamp from an authority the root does not list gives no time.
    with pytest.raises(StaleSignatureError):
        Verifier(opted, trusted_root=root_without_tsa(stack, tmp_path)).verify(reg, ref)


def test_require_tlog_with_key_signatures(
    server: RegistryServer, example_dir: Path, sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    stack = sigstore_stack
    reg, logged_ref, _ = push_policy(server, example_dir)

    pinned = Path(__file__).parents[1] / "fixtures" / "pinned"
    bare = reg.push(Bundle.from_directory(pinned), "acme/bare:1")
    bare_ref = f"{server.host}/acme/bare@{bare.digest}"
    run_cosign("3", "generate-key-pair", cwd=tmp_path)
    sign = ["sign", "--key", "cosign.key", "--allow-http-registry"]
    stack_cosign("3", stack, *sign, *bundle_signing_flags(stack), logged_ref, cwd=tmp_path)
    run_cosign("3", *sign, *COSIGN_SIGN_FLAGS["3"], bare_ref, cwd=tmp_path)  # no log entry

    pub = tmp_path / "cosign.pub"
    verifier = Verifier(
        TrustPolicy(keys=[pub], require_tlog=True, docker_reference="any"),
        trusted_root=stack.trusted_root_path,
    )
    (s,) = verifier.verify(reg, logged_ref).signatures
    assert s.log_index is not None
    with pytest.raises(TransparencyLogError, match="no transparency log entry"):
        verifier.verify(reg, bare_ref)
    # require_tlog unset: the key signature without an entry is fine.
    Verifier(TrustPolicy(keys=[pub], docker_reference="any")).verify(reg, bare_ref)


# -- blobs: policysupply signs, cosign verifies -----------------------------------------


@pytest.mark.parametrize("version", ["2", "3"])
def test_cosign_verify_blob_accepts_our_key_bundle(
    version: str, sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    # cosign 2 reads Sigstore bundles only with a trusted root (any: nothing in
    # a key-only bundle is checked against it); cosign 3 needs none.
    trust = ["--trusted-root", str(sigstore_stack.trusted_root_path)] if version == "2" else []
    artifact = tmp_path / "policy.tar.gz"
    artifact.write_bytes(DATA)
    signer = Signer.generate()
    _, pub = signer.write_key_pair(tmp_path, password="pw")
    bundle = signer.sign_blob(artifact).write(tmp_path / "policy.tar.gz.sigstore.json")
    _, other_pub = Signer.generate().write_key_pair(tmp_path, password="pw", name="other")

    def verify(key: Path, data: Path) -> subprocess.CompletedProcess[str]:
        return run_cosign(
            version,
            "verify-blob",
            "--key",
            str(key),
            "--bundle",
            str(bundle),
            *COSIGN_BLOB_VERIFY_FLAGS[version],
            *trust,
            str(data),
            cwd=tmp_path,
            check=False,
        )

    ok = verify(pub, artifact)
    assert ok.returncode == 0, ok.stderr
    assert "Verified OK" in ok.stderr
    tampered = tmp_path / "tampered.tar.gz"
    tampered.write_bytes(DATA + b"#")
    assert_refused(verify(pub, tampered), BAD_SIGNATURE)
    assert_refused(verify(other_pub, artifact), BAD_SIGNATURE)


# -- blobs: cosign signs, policysupply verifies -----------------------------------------


@pytest.mark.parametrize("version", ["2", "3"])
def test_cosign_key_only_blob_bundle_verifies_with_us(version: str, tmp_path: Path) -> None:
    artifact = tmp_path / "policy.tar.gz"
    artifact.write_bytes(DATA)
    run_cosign(version, "generate-key-pair", cwd=tmp_path)
    bundle = tmp_path / "cosign.sigstore.json"
    run_cosign(
        version,
        "sign-blob",
        "--key",
        "cosign.key",
        *COSIGN_BLOB_SIGN_FLAGS[version],
        "--bundle",
        str(bundle),
        str(artifact),
        cwd=tmp_path,
    )
    doc = json.loads(bundle.read_text())
    assert "publicKey" in doc["verificationMaterial"]
    assert not doc["verificationMaterial"].get("tlogEntries")
    verifier = Verifier(TrustPolicy(keys=[tmp_path / "cosign.pub"]))
    (s,) = verifier.verify_blob(artifact, bundle=bundle).signatures
    assert s.signed_at is None
    with pytest.raises(DigestMismatchError):
        verifier.verify_blob(DATA + b"#", bundle=bundle)
    forged = tmp_path / "forged.sigstore.json"
    sig = bytearray(base64.b64decode(doc["messageSignature"]["signature"]))
    sig[-1] ^= 1
    doc["messageSignature"]["signature"] = base64.b64encode(bytes(sig)).decode()
    forged.write_text(json.dumps(doc))
    with pytest.raises(UntrustedSignatureError):
        verifier.verify_blob(artifact, bundle=forged)
    with pytest.raises(UntrustedSignatureError):
        Verifier(TrustPolicy(keys=[Signer.generate().public_key_pem])).verify_blob(
            artifact, bundle=bundle
        )


@pytest.mark.parametrize("version", ["2", "3"])
def test_cosign_default_key_blob_bundle_has_a_witnessed_time_only(
    version: str, sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    # cosign 3 by default, cosign 2 with --new-bundle-format: Rekor v2 + TSA
    stack = sigstore_stack
    artifact = tmp_path / "policy.tar.gz"
    artifact.write_bytes(DATA)
    run_cosign(version, "generate-key-pair", cwd=tmp_path)
    flags = ["--new-bundle-format"] if version == "2" else []

    def sign(bundle: Path) -> dict[str, object]:
        stack_cosign(
            version,
            stack,
            "sign-blob",
            "--key",
            "cosign.key",
            *flags,
            *bundle_signing_flags(stack),
            "--bundle",
            str(bundle),
            str(artifact),
            cwd=tmp_path,
        )
        return json.loads(bundle.read_text())  # type: ignore[no-any-return]

    bundle = tmp_path / "cosign.sigstore.json"
    doc = sign(bundle)
    material = doc["verificationMaterial"]
    assert isinstance(material, dict)
    assert material["tlogEntries"][0]["kindVersion"]["version"] == "0.0.2"
    assert material["timestampVerificationData"]["rfc3161Timestamps"]

    pub = tmp_path / "cosign.pub"
    fresh = TrustPolicy(keys=[pub], max_signature_age=FRESH, require_tlog=True)
    with pytest.raises(StaleSignatureError, match="insecure_witnessed_age"):
        Verifier(fresh, trusted_root=stack.trusted_root_path).verify_blob(artifact, bundle=bundle)
    opted = attrs.evolve(fresh, insecure_witnessed_age=True)
    verifier = Verifier(opted, trusted_root=stack.trusted_root_path)
    (s,) = verifier.verify_blob(artifact, bundle=bundle).signatures
    assert s.signed_at is None
    assert near_now(s.witnessed_at), s.witnessed_at
    assert s.log_index is not None
    with pytest.raises(DigestMismatchError):
        verifier.verify_blob(DATA + b"#", bundle=bundle)

    # A valid timestamp, but over another signature: no time, so too old to trust.
    other = sign(tmp_path / "other.sigstore.json")
    other_material = other["verificationMaterial"]
    assert isinstance(other_material, dict)
    material["timestampVerificationData"] = other_material["timestampVerificationData"]
    swapped = tmp_path / "swapped.sigstore.json"
    swapped.write_text(json.dumps(doc))
    loose = Verifier(TrustPolicy(keys=[pub]), trusted_root=stack.trusted_root_path)
    (s,) = loose.verify_blob(artifact, bundle=swapped).signatures
    assert s.witnessed_at is None
    with pytest.raises(StaleSignatureError):
        Verifier(
            TrustPolicy(keys=[pub], max_signature_age=FRESH, insecure_witnessed_age=True),
            trusted_root=stack.trusted_root_path,
        ).verify_blob(artifact, bundle=swapped)


@pytest.mark.parametrize("signing", ["key-only", "stack"])
def test_cosign3_attest_blob_with_a_key_verifies_with_us(
    signing: str, sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    stack = sigstore_stack
    artifact = tmp_path / "policy.tar.gz"
    artifact.write_bytes(DATA)
    predicate = tmp_path / "predicate.json"
    predicate.write_text(json.dumps({"scanner": {"uri": "https://example.com/scanner"}}))
    run_cosign("3", "generate-key-pair", cwd=tmp_path)
    bundle = tmp_path / "attestation.sigstore.json"
    flags = bundle_signing_flags(stack) if signing == "stack" else COSIGN_SIGN_FLAGS["3"][:2]
    stack_cosign(
        "3",
        stack,
        "attest-blob",
        "--key",
        "cosign.key",
        "--type",
        "vuln",
        "--predicate",
        str(predicate),
        *flags,
        "--bundle",
        str(bundle),
        str(artifact),
        cwd=tmp_path,
    )
    doc = json.loads(bundle.read_text())
    assert "dsseEnvelope" in doc
    pub = tmp_path / "cosign.pub"
    verifier = Verifier(TrustPolicy(keys=[pub]), trusted_root=stack.trusted_root_path)
    (s,) = verifier.verify_blob(artifact, bundle=bundle).signatures
    assert s.signed_at is None  # a key signature: no signer-produced time
    assert (s.witnessed_at is not None) == (signing == "stack")
    with pytest.raises(DigestMismatchError, match="statement does not name"):
        verifier.verify_blob(DATA + b"#", bundle=bundle)
    with pytest.raises(UntrustedSignatureError):
        Verifier(TrustPolicy(keys=[Signer.generate().public_key_pem])).verify_blob(
            artifact, bundle=bundle
        )
    # The signed statement altered: the envelope's signature no longer covers it.
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"] = {"scanner": {"uri": "https://evil.example/scanner"}}
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    forged = tmp_path / "forged.sigstore.json"
    forged.write_text(json.dumps(doc))
    with pytest.raises(UntrustedSignatureError):
        verifier.verify_blob(artifact, bundle=forged)
