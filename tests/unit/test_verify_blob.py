"""Plain files against Sigstore bundles: Signer.sign_blob and Verifier.verify_blob.

Keyless bundles come from an in-process Sigstore (real crypto) and are also
checked with sigstore-python's own verifier, so what ``sign_blob`` writes is
what ``sigstore verify`` accepts; key-signed bundles are ours alone
(sigstore-python has no public-key path). Interop with cosign and a real
Fulcio/Rekor is in tests/interop/test_keyless_cosign.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from policysupply import Signer, TrustPolicy, Verifier
from policysupply._internal import cosign
from policysupply._internal import sigstore_bundle as sb
from policysupply.errors import (
    CertificateExpiredError,
    DigestMismatchError,
    IdentityMismatchError,
    ThresholdNotMetError,
    TransparencyLogError,
    UntrustedSignatureError,
    VerificationError,
)
from policysupply.identity import GITHUB_ACTIONS_ISSUER, Identity
from policysupply.signer import SigstoreBundle
from tests.unit._sigstore_pki import FakeBackend, FakeSigstore

SUBJECT = "https://github.com/acme/policies/.github/workflows/release.yml@refs/heads/main"
TRUSTED = Identity(issuer=GITHUB_ACTIONS_ISSUER, subject=SUBJECT)
DATA = b"policy tarball bytes\n" * 50


@pytest.fixture(scope="module")
def fake() -> FakeSigstore:
    return FakeSigstore()


@pytest.fixture
def root(fake: FakeSigstore, tmp_path: Path) -> Path:
    return fake.write_trusted_root(tmp_path / "trusted_root.json")


def keyless(fake: FakeSigstore, **issue: Any) -> Signer:
    issue.setdefault("subject", SUBJECT)
    return Signer._with_keyless(FakeBackend(fake, **issue))


def test_key_signed_blob_verifies_in_every_input_form(tmp_path: Path) -> None:
    signer = Signer.generate()
    bundle = signer.sign_blob(DATA)
    doc = json.loads(bundle.to_json())
    # the shape of `cosign sign-blob --key --bundle --tlog-upload=false` (v3)
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert "hint" in doc["verificationMaterial"]["publicKey"]
    assert doc["verificationMaterial"]["tlogEntries"] == []
    assert doc["messageSignature"]["messageDigest"]["algorithm"] == "SHA2_256"
    assert not bundle.keyless
    path = tmp_path / "policy.tar.gz"
    path.write_bytes(DATA)
    written = bundle.write(tmp_path / "policy.tar.gz.sigstore.json")
    v = Verifier(TrustPolicy(keys=[signer.public_key_pem]))
    for data, b in [
        (DATA, bundle),
        (path, written),
        (str(path), str(written)),
        (DATA, bundle.to_json()),
        (DATA, bundle.to_json().decode()),
        (DATA, SigstoreBundle.from_file(written)),
    ]:
        artifact = v.verify_blob(data, bundle=b)  # type: ignore[arg-type]
        assert artifact.digest == "sha256:" + hashlib.sha256(DATA).hexdigest()
        assert artifact.key_ids == (signer.key_id,)
    assert v.verify_blob(path, bundle=written).reference.repository == "policy.tar.gz"


def test_sign_blob_reads_a_path(tmp_path: Path) -> None:
    signer = Signer.generate()
    (tmp_path / "f").write_bytes(DATA)
    bundle = signer.sign_blob(tmp_path / "f")
    Verifier(TrustPolicy(keys=[signer.public_key_pem])).verify_blob(DATA, bundle=bundle)


def test_altered_file_is_refused() -> None:
    signer = Signer.generate()
    bundle = signer.sign_blob(DATA)
    v = Verifier(TrustPolicy(keys=[signer.public_key_pem]))
    with pytest.raises(DigestMismatchError, match="not this file"):
        v.verify_blob(DATA + b"x", bundle=bundle)
    # without the recorded digest the signature itself fails
    doc = json.loads(bundle.to_json())
    del doc["messageSignature"]["messageDigest"]
    with pytest.raises(UntrustedSignatureError):
        v.verify_blob(DATA + b"x", bundle=json.dumps(doc).encode())


def test_untrusted_key_and_threshold() -> None:
    signer = Signer.generate()
    bundle = signer.sign_blob(DATA)
    with pytest.raises(UntrustedSignatureError, match="none by a trusted key"):
        Verifier(TrustPolicy(keys=[Signer.generate().public_key_pem])).verify_blob(
            DATA, bundle=bundle
        )
    two = TrustPolicy(keys=[signer.public_key_pem, Signer.generate().public_key_pem], threshold=2)
    with pytest.raises(ThresholdNotMetError):
        Verifier(two).verify_blob(DATA, bundle=bundle)


def test_keyless_blob_verifies_and_sigstore_python_agrees(fake: FakeSigstore, root: Path) -> None:
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier as SigstoreVerifier
    from sigstore.verify.policy import Identity as SigstoreIdentity

    bundle = keyless(fake).sign_blob(DATA)
    assert bundle.keyless
    artifact = Verifier(TrustPolicy(identities=[TRUSTED]), trusted_root=root).verify_blob(
        DATA, bundle=bundle
    )
    (s,) = artifact.signatures
    assert (s.subject, s.issuer, s.identity) == (SUBJECT, GITHUB_ACTIONS_ISSUER, TRUSTED)
    # what `sigstore verify identity` would do with the same bundle
    SigstoreVerifier(trusted_root=TrustedRoot.from_file(str(root))).verify_artifact(
        DATA,
        Bundle.from_json(bundle.to_json()),
        SigstoreIdentity(identity=SUBJECT, issuer=GITHUB_ACTIONS_ISSUER),
    )


def test_keyless_blob_attacks(fake: FakeSigstore, root: Path) -> None:
    v = Verifier(TrustPolicy(identities=[TRUSTED]), trusted_root=root)
    with pytest.raises(IdentityMismatchError):
        v.verify_blob(DATA, bundle=keyless(fake, subject="mallory@evil.example").sign_blob(DATA))
    import datetime as dt

    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    with pytest.raises(CertificateExpiredError):
        v.verify_blob(DATA, bundle=keyless(fake, not_before=old).sign_blob(DATA))
    # the log entry of another file's signature
    mine = json.loads(keyless(fake).sign_blob(DATA).to_json())
    other = json.loads(keyless(fake).sign_blob(b"other").to_json())
    mine["verificationMaterial"]["tlogEntries"] = other["verificationMaterial"]["tlogEntries"]
    with pytest.raises(TransparencyLogError):
        v.verify_blob(DATA, bundle=json.dumps(mine).encode())
    mine["verificationMaterial"]["tlogEntries"] = []
    with pytest.raises(TransparencyLogError, match="no transparency log entry"):
        v.verify_blob(DATA, bundle=json.dumps(mine).encode())


def test_dsse_blob_bundles(fake: FakeSigstore, root: Path) -> None:
    sha = hashlib.sha256(DATA).hexdigest()
    statement = sb.statement(
        "https://slsa.dev/provenance/v1", {}, [{"name": "policy.tar.gz", "digest": {"sha256": sha}}]
    )
    made = FakeBackend(fake, subject=SUBJECT).sign_dsse(statement)
    v = Verifier(TrustPolicy(identities=[TRUSTED]), trusted_root=root)
    v.verify_blob(DATA, bundle=made.to_json())
    with pytest.raises(DigestMismatchError, match="does not name"):
        v.verify_blob(b"other", bundle=made.to_json())
    # a key-signed DSSE bundle, as `cosign attest-blob --key --bundle` makes
    signer = Signer.generate()
    sig = signer.sign_bytes(cosign.pae(cosign.INTOTO, statement))
    key_bundle = cosign.key_bundle(statement, sig, b"\0" * 32)
    Verifier(TrustPolicy(keys=[signer.public_key_pem])).verify_blob(DATA, bundle=key_bundle)


def test_unreadable_inputs(tmp_path: Path) -> None:
    v = Verifier(TrustPolicy(keys=[Signer.generate().public_key_pem]))
    with pytest.raises(VerificationError, match="cannot read"):
        v.verify_blob(tmp_path / "nope", bundle=b"{}")
    with pytest.raises(VerificationError, match="cannot read bundle"):
        v.verify_blob(DATA, bundle=tmp_path / "nope.sigstore.json")
    with pytest.raises(VerificationError):
        v.verify_blob(DATA, bundle=b"{}")
    with pytest.raises(VerificationError):
        SigstoreBundle.from_json(b"[]")


# -- real public Sigstore material, offline (tests/fixtures/sigstore/README.md) --------

GH_RELEASE = (
    "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
)


@pytest.fixture(scope="module")
def public(fixtures_dir: Path) -> Path:
    return fixtures_dir / "sigstore"


def test_real_production_bundle_verifies_offline(public: Path) -> None:
    # bundle v0.2 (certificate chain), Rekor v1 with SET and inclusion proof;
    # the certificate expired long ago: validity is judged at the log's time
    wheel = public / "rfc8785-0.1.2-py3-none-any.whl"
    bundle = public / "rfc8785-0.1.2-py3-none-any.whl.sigstore.json"
    ident = Identity(
        issuer=GITHUB_ACTIONS_ISSUER,
        subject_regex=r"https://github\.com/trailofbits/rfc8785\.py/\.github/workflows/.*",
        extensions={"github_workflow_repository": "trailofbits/rfc8785.py"},
    )
    v = Verifier(
        TrustPolicy(identities=[ident]), trusted_root=public / "production-trusted_root.json"
    )
    (s,) = v.verify_blob(wheel, bundle=bundle).signatures
    assert s.subject == GH_RELEASE
    assert s.log_index == 79605083
    assert s.signed_at is not None
    assert s.signed_at.year == 2024


@pytest.mark.parametrize(
    ("ident", "error"),
    [
        (
            Identity(issuer=GITHUB_ACTIONS_ISSUER, subject=GH_RELEASE.replace("v0.1.2", "v9")),
            IdentityMismatchError,
        ),
        # unanchored and partial: full-match refuses it
        (
            Identity(issuer=GITHUB_ACTIONS_ISSUER, subject_regex=r"github\.com/trailofbits/.*"),
            IdentityMismatchError,
        ),
        (Identity(issuer="https://accounts.google.com", subject=GH_RELEASE), IdentityMismatchError),
        (
            Identity(
                issuer=GITHUB_ACTIONS_ISSUER,
                subject=GH_RELEASE,
                extensions={"github_workflow_ref": "refs/heads/main"},
            ),
            IdentityMismatchError,
        ),
    ],
)
def test_real_production_bundle_refuses_other_identities(
    public: Path, ident: Identity, error: type[Exception]
) -> None:
    v = Verifier(
        TrustPolicy(identities=[ident]), trusted_root=public / "production-trusted_root.json"
    )
    with pytest.raises(error):
        v.verify_blob(
            public / "rfc8785-0.1.2-py3-none-any.whl",
            bundle=public / "rfc8785-0.1.2-py3-none-any.whl.sigstore.json",
        )


def test_real_production_bundle_against_the_wrong_root_or_file(public: Path) -> None:
    ident = Identity(issuer=GITHUB_ACTIONS_ISSUER, subject=GH_RELEASE)
    bundle = public / "rfc8785-0.1.2-py3-none-any.whl.sigstore.json"
    wheel = (public / "rfc8785-0.1.2-py3-none-any.whl").read_bytes()
    staging = Verifier(
        TrustPolicy(identities=[ident]), trusted_root=public / "staging-trusted_root.json"
    )
    with pytest.raises(TransparencyLogError):
        staging.verify_blob(wheel, bundle=bundle)
    prod = Verifier(
        TrustPolicy(identities=[ident]), trusted_root=public / "production-trusted_root.json"
    )
    with pytest.raises(DigestMismatchError):
        prod.verify_blob(wheel + b"\0", bundle=bundle)


def test_real_staging_rekor_v2_bundle_verifies_offline(public: Path) -> None:
    # bundle v0.3, Rekor v2 hashedrekord 0.0.2 (no SET), time from the staging TSA
    ident = Identity(issuer="https://github.com/login/oauth", subject="jku@goto.fi")
    v = Verifier(TrustPolicy(identities=[ident]), trusted_root=public / "staging-trusted_root.json")
    (s,) = v.verify_blob(
        public / "staging-rekor-v2.txt", bundle=public / "staging-rekor-v2.txt.sigstore.json"
    ).signatures
    assert s.subject == "jku@goto.fi"
    assert s.signed_at is not None
