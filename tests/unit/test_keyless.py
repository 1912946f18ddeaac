"""Keyless signatures on a local layout, against an in-process Sigstore (real crypto).

Every attack raises its specific error type: wrong issuer/subject, a regex that
only partially matches, an expired or foreign certificate, a missing or
mismatching transparency log entry, a bad SET or inclusion proof, an altered
signature. The interop tests repeat the main flows against real Fulcio/Rekor
and cosign.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from policysupply import Bundle, Registry, Signer, TrustPolicy, Verifier
from policysupply._internal import cosign, keyless, oci
from policysupply._internal import sigstore_bundle as sb
from policysupply.errors import (
    CertificateError,
    CertificateExpiredError,
    IdentityMismatchError,
    MissingAttestationError,
    NoSignatureError,
    StaleSignatureError,
    ThresholdNotMetError,
    TransparencyLogError,
    UntrustedSignatureError,
    VerificationError,
)
from policysupply.identity import GITHUB_ACTIONS_ISSUER, Identity
from tests.unit._sigstore_pki import CA, FakeBackend, FakeSigstore

REPO = "acme/policies"
WORKFLOW = f"https://github.com/{REPO}/.github/workflows/release.yml@refs/heads/main"
CLAIMS = {
    "1.3.6.1.4.1.57264.1.5": REPO,  # github_workflow_repository
    "1.3.6.1.4.1.57264.1.6": "refs/heads/main",  # github_workflow_ref
    "1.3.6.1.4.1.57264.1.12": f"https://github.com/{REPO}",  # source_repository_uri
}
TRUSTED = Identity(issuer=GITHUB_ACTIONS_ISSUER, subject=WORKFLOW)


@pytest.fixture(scope="module")
def fake() -> FakeSigstore:
    return FakeSigstore()


@pytest.fixture
def root(fake: FakeSigstore, tmp_path: Path) -> Path:
    return fake.write_trusted_root(tmp_path / "trusted_root.json")


@pytest.fixture
def reg(tmp_path: Path, fixtures_dir: Path) -> Registry:
    registry = Registry.local(tmp_path / "oci")
    registry.push(Bundle.from_directory(fixtures_dir / "pinned"), "acme/a:1")
    return registry


def keyless_signer(fake: FakeSigstore, **issue: Any) -> Signer:
    issue.setdefault("subject", WORKFLOW)
    issue.setdefault("extensions", CLAIMS)
    return Signer._with_keyless(FakeBackend(fake, **issue))


def verifier(root: Path, *identities: Identity, **kw: Any) -> Verifier:
    return Verifier(TrustPolicy(identities=identities or (TRUSTED,), **kw), trusted_root=root)


def edit_sig_layer(reg: Registry, change: Any, *, index: int = 0, suffix: str = ".sig") -> None:
    """Rewrites one layer's annotations of the cosign signature manifest in place."""
    digest = reg.resolve("acme/a:1")
    tag = cosign.sig_tag(digest)[: -len(".sig")] + suffix
    data, _ = reg.get_manifest(f"acme/a:{tag}")
    manifest = json.loads(data)
    change(manifest["layers"][index]["annotations"])
    reg.put_manifest(f"acme/a:{tag}", oci.canonical_json(manifest))


# -- happy paths --------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["legacy", "bundle"])
def test_keyless_signature_verifies(
    fake: FakeSigstore, root: Path, reg: Registry, scheme: str
) -> None:
    signer = keyless_signer(fake)
    sig = signer.sign(reg, "acme/a:1", scheme=scheme)  # type: ignore[arg-type]
    assert sig.certificate is not None
    assert sig.log_index is not None
    artifact = verifier(root).verify(reg, "acme/a:1")
    (s,) = artifact.signatures
    assert s.keyless
    assert s.identity == TRUSTED
    assert s.subject == WORKFLOW
    assert s.issuer == GITHUB_ACTIONS_ISSUER
    assert s.log_index == sig.log_index
    assert s.signed_at is not None
    assert abs(dt.datetime.now(dt.timezone.utc) - s.signed_at) < dt.timedelta(minutes=2)
    assert artifact.signers == (f"identity:{TRUSTED.describe()}",)


def test_legacy_layer_carries_cosign_keyless_annotations(fake: FakeSigstore, reg: Registry) -> None:
    keyless_signer(fake).sign(reg, "acme/a:1")
    digest = reg.resolve("acme/a:1")
    data, _ = reg.get_manifest(f"acme/a:{cosign.sig_tag(digest)}")
    ann = json.loads(data)["layers"][0]["annotations"]
    assert ann["dev.sigstore.cosign/certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert ann["dev.sigstore.cosign/chain"].count("BEGIN CERTIFICATE") == 2
    rekor = json.loads(ann["dev.sigstore.cosign/bundle"])
    assert set(rekor) == {"SignedEntryTimestamp", "Payload"}
    assert set(rekor["Payload"]) == {"body", "integratedTime", "logIndex", "logID"}
    assert isinstance(rekor["Payload"]["integratedTime"], int)


def test_regex_identity_and_claims(fake: FakeSigstore, root: Path, reg: Registry) -> None:
    keyless_signer(fake).sign(reg, "acme/a:1")
    ident = Identity(
        issuer=GITHUB_ACTIONS_ISSUER,
        subject_regex=r"https://github\.com/acme/policies/\.github/workflows/.*",
        extensions={"github_workflow_repository": REPO, "github_workflow_ref": "refs/heads/main"},
    )
    assert verifier(root, ident).verify(reg, "acme/a:1").signatures[0].identity == ident
    gh = Identity.github(REPO, workflow=".github/workflows/release.yml", ref="refs/heads/main")
    verifier(root, gh).verify(reg, "acme/a:1")
    verifier(root, Identity.github(REPO)).verify(reg, "acme/a:1")


def test_email_identity_and_issuer_regex(fake: FakeSigstore, root: Path, reg: Registry) -> None:
    keyless_signer(
        fake, subject="dev@acme.example", issuer="https://accounts.acme.example", extensions={}
    ).sign(reg, "acme/a:1")
    ident = Identity(issuer_regex=r"https://accounts\.acme\.example", subject="dev@acme.example")
    verifier(root, ident).verify(reg, "acme/a:1")


# -- identity attacks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("ident", "why"),
    [
        (Identity(issuer="https://accounts.google.com", subject=WORKFLOW), "issuer"),
        (
            Identity(issuer=GITHUB_ACTIONS_ISSUER, subject=WORKFLOW.replace("main", "dev")),
            "subject",
        ),
        (
            Identity(
                issuer=GITHUB_ACTIONS_ISSUER,
                subject=WORKFLOW,
                extensions={"github_workflow_repository": "evil/policies"},
            ),
            "github_workflow_repository",
        ),
        (Identity(issuer_regex="https://token", subject=WORKFLOW), "fully match"),
    ],
)
def test_wrong_identity_is_refused(
    fake: FakeSigstore, root: Path, reg: Registry, ident: Identity, why: str
) -> None:
    keyless_signer(fake).sign(reg, "acme/a:1")
    with pytest.raises(IdentityMismatchError, match=why):
        verifier(root, ident).verify(reg, "acme/a:1")


def test_partial_regex_match_is_refused(fake: FakeSigstore, root: Path, reg: Registry) -> None:
    evil = f"https://evil.example/github.com/{REPO}/.github/workflows/release.yml@refs/heads/main"
    keyless_signer(fake, subject=evil).sign(reg, "acme/a:1")
    # re.search would accept this; the policy always full-matches
    ident = Identity(issuer=GITHUB_ACTIONS_ISSUER, subject_regex=r"github\.com/acme/policies/.*")
    with pytest.raises(IdentityMismatchError, match="does not fully match"):
        verifier(root, ident).verify(reg, "acme/a:1")
    anchored = Identity(
        issuer=GITHUB_ACTIONS_ISSUER, subject_regex=r"https://github\.com/acme/policies/.*"
    )
    with pytest.raises(IdentityMismatchError):
        verifier(root, anchored).verify(reg, "acme/a:1")


def test_identity_needs_issuer_and_subject() -> None:
    with pytest.raises(VerificationError, match="issuer"):
        Identity(subject="x")
    with pytest.raises(VerificationError, match="subject"):
        Identity(issuer="x", subject="a", subject_regex="b")
    with pytest.raises(VerificationError, match="not a valid regex"):
        Identity(issuer="x", subject_regex="(")
    with pytest.raises(VerificationError, match="unknown certificate extension"):
        Identity(issuer="x", subject="a", extensions={"repo": "y"})
    assert Identity(issuer="x", subject="a", extensions={"1.2.3": "y"}).extensions == {"1.2.3": "y"}


# -- certificate attacks ------------------------------------------------------


@pytest.mark.parametrize("scheme", ["legacy", "bundle"])
def test_expired_certificate_is_refused(
    fake: FakeSigstore, root: Path, reg: Registry, scheme: str
) -> None:
    # the certificate expired an hour before the log integrated the signature
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1, minutes=10)
    keyless_signer(fake, not_before=start).sign(reg, "acme/a:1", scheme=scheme)  # type: ignore[arg-type]
    with pytest.raises(CertificateExpiredError, match="outside the certificate's validity"):
        verifier(root).verify(reg, "acme/a:1")


def test_certificate_from_untrusted_ca_is_refused(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    keyless_signer(fake, ca=CA("attacker")).sign(reg, "acme/a:1")
    with pytest.raises(CertificateError, match="does not chain to a trusted Fulcio root"):
        verifier(root).verify(reg, "acme/a:1")


def test_attacker_chain_annotation_does_not_help(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    attacker = CA("attacker")
    keyless_signer(fake, ca=attacker).sign(reg, "acme/a:1")
    edit_sig_layer(
        reg, lambda a: a.update({"dev.sigstore.cosign/chain": attacker.chain_pem().decode()})
    )
    with pytest.raises(CertificateError):
        verifier(root).verify(reg, "acme/a:1")


def test_certificate_without_code_signing_is_refused(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    keyless_signer(fake, code_signing=False).sign(reg, "acme/a:1")
    with pytest.raises(CertificateError):
        verifier(root).verify(reg, "acme/a:1")


def test_sct_is_required_unless_disabled(fake: FakeSigstore, root: Path, reg: Registry) -> None:
    keyless_signer(fake, sct=False).sign(reg, "acme/a:1")
    with pytest.raises(CertificateError, match="SCT"):
        verifier(root).verify(reg, "acme/a:1")
    verifier(root, require_sct=False).verify(reg, "acme/a:1")


def test_trusted_root_without_ct_logs_needs_require_sct_false(
    fake: FakeSigstore, reg: Registry, tmp_path: Path
) -> None:
    root = fake.write_trusted_root(tmp_path / "noct.json", ct=False)
    keyless_signer(fake).sign(reg, "acme/a:1")
    with pytest.raises(CertificateError, match="no CT log keys"):
        verifier(root).verify(reg, "acme/a:1")
    verifier(root, require_sct=False).verify(reg, "acme/a:1")


# -- transparency log attacks -------------------------------------------------


def test_missing_tlog_entry_is_refused(fake: FakeSigstore, root: Path, reg: Registry) -> None:
    keyless_signer(fake).sign(reg, "acme/a:1")
    edit_sig_layer(reg, lambda a: a.pop("dev.sigstore.cosign/bundle"))
    with pytest.raises(TransparencyLogError, match="no transparency log entry"):
        verifier(root).verify(reg, "acme/a:1")
    # without a log entry and without a timestamp there is no trusted signing time
    with pytest.raises(VerificationError, match="no verified signing time"):
        verifier(root, require_tlog=False).verify(reg, "acme/a:1")


def test_tlog_entry_of_another_signature_is_refused(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    signer = keyless_signer(fake)
    signer.sign(reg, "acme/a:1")
    signer.sign(reg, "acme/a:1", annotations={"other": "one"})
    digest = reg.resolve("acme/a:1")
    data, _ = reg.get_manifest(f"acme/a:{cosign.sig_tag(digest)}")
    layers = json.loads(data)["layers"]
    other = layers[1]["annotations"]["dev.sigstore.cosign/bundle"]
    edit_sig_layer(reg, lambda a: a.update({"dev.sigstore.cosign/bundle": other}))
    edit_sig_layer(reg, lambda a: a.pop("dev.sigstore.cosign/bundle"), index=1)
    with pytest.raises(TransparencyLogError, match="another signature"):
        verifier(root).verify(reg, "acme/a:1")


def test_set_from_untrusted_log_is_refused(fake: FakeSigstore, root: Path, reg: Registry) -> None:
    rogue = ec.generate_private_key(ec.SECP256R1())
    backend = FakeBackend(fake, subject=WORKFLOW)
    original = fake.log
    try:
        fake.log = lambda body, **kw: original(body, log_key=rogue, proof=False)  # type: ignore[method-assign]
        Signer._with_keyless(backend).sign(reg, "acme/a:1")
    finally:
        fake.log = original  # type: ignore[method-assign]
    with pytest.raises(TransparencyLogError, match="signed entry timestamp does not verify"):
        verifier(root).verify(reg, "acme/a:1")


def test_tampered_inclusion_proof_is_refused(fake: FakeSigstore, root: Path, reg: Registry) -> None:
    keyless_signer(fake).sign(reg, "acme/a:1", scheme="bundle")
    (desc,) = reg.referrers(f"acme/a@{reg.resolve('acme/a:1')}")
    manifest = json.loads(reg.get_manifest(f"acme/a@{desc.digest}")[0])
    doc = json.loads(reg.get_blob("acme/a", manifest["layers"][0]["digest"]))
    proof = doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    proof["rootHash"] = base64.b64encode(b"\x00" * 32).decode()
    parsed = sb.parse_bundle(json.dumps(doc))
    entry = parsed.tlog_entries[0]
    with pytest.raises(TransparencyLogError, match="inclusion proof"):
        keyless.verify_tlog_entry(entry, keyless.TrustMaterial.load(root))


def test_altered_signature_is_refused(fake: FakeSigstore, root: Path, reg: Registry) -> None:
    keyless_signer(fake).sign(reg, "acme/a:1")
    forged = base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()
    edit_sig_layer(reg, lambda a: a.update({cosign.ANN_SIGNATURE: forged}))
    with pytest.raises(UntrustedSignatureError) as info:
        verifier(root).verify(reg, "acme/a:1")
    assert not isinstance(info.value, IdentityMismatchError)


def test_certificate_swapped_for_another_identity_is_refused(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    # an attacker's signature with the victim's certificate: the key does not match
    keyless_signer(fake, subject="attacker@evil.example", extensions={}).sign(reg, "acme/a:1")
    _, victim = fake.issue(subject=WORKFLOW)
    pem = keyless.certificate_pem(victim).decode()
    edit_sig_layer(reg, lambda a: a.update({"dev.sigstore.cosign/certificate": pem}))
    with pytest.raises(UntrustedSignatureError, match="certificate's key"):
        verifier(root).verify(reg, "acme/a:1")


# -- policies -----------------------------------------------------------------


def test_keys_and_identities_count_towards_one_threshold(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    key_signer = Signer.generate()
    policy: dict[str, Any] = {"keys": [key_signer.public_key_pem], "identities": [TRUSTED]}
    keyless_signer(fake).sign(reg, "acme/a:1")
    v = Verifier(TrustPolicy(threshold=2, **policy), trusted_root=root)
    with pytest.raises(ThresholdNotMetError, match="1 distinct trusted signer"):
        v.verify(reg, "acme/a:1")
    key_signer.sign(reg, "acme/a:1")
    artifact = v.verify(reg, "acme/a:1")
    assert len(artifact.signers) == 2
    assert artifact.key_ids[0] != key_signer.key_id or len(artifact.key_ids) == 2


def test_one_identity_signing_twice_counts_once(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    keyless_signer(fake).sign(reg, "acme/a:1")
    keyless_signer(fake).sign(reg, "acme/a:1", scheme="bundle")
    other = Identity(issuer=GITHUB_ACTIONS_ISSUER, subject="someone@else.example")
    with pytest.raises(ThresholdNotMetError):
        verifier(root, TRUSTED, other, threshold=2).verify(reg, "acme/a:1")


def test_keyless_signature_needs_identities_in_the_policy(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    keyless_signer(fake).sign(reg, "acme/a:1")
    v = Verifier(TrustPolicy(keys=[Signer.generate().public_key_pem]), trusted_root=root)
    with pytest.raises(UntrustedSignatureError, match="trusts no identity"):
        v.verify(reg, "acme/a:1")


def test_policy_needs_a_key_or_identity() -> None:
    with pytest.raises(VerificationError, match="at least one key or identity"):
        TrustPolicy()
    with pytest.raises(VerificationError, match="cannot be met"):
        TrustPolicy(identities=[TRUSTED], threshold=2)


def test_max_signature_age_uses_the_certificate_start(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    keyless_signer(fake).sign(reg, "acme/a:1", timestamp=False)
    verifier(root, max_signature_age=dt.timedelta(minutes=5)).verify(reg, "acme/a:1")
    with pytest.raises(StaleSignatureError):
        verifier(root, max_signature_age=dt.timedelta(seconds=1)).verify(reg, "acme/a:1")


def test_unsigned_artifact(root: Path, reg: Registry) -> None:
    with pytest.raises(NoSignatureError):
        verifier(root).verify(reg, "acme/a:1")


def test_bad_trusted_root_is_a_verification_error(
    fake: FakeSigstore, reg: Registry, tmp_path: Path
) -> None:
    keyless_signer(fake).sign(reg, "acme/a:1")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(VerificationError, match="not a Sigstore trusted root"):
        verifier(tmp_path / "bad.json").verify(reg, "acme/a:1")
    with pytest.raises(VerificationError, match="cannot read trusted root"):
        verifier(tmp_path / "missing.json").verify(reg, "acme/a:1")


# -- attestations -------------------------------------------------------------

SLSA = "https://slsa.dev/provenance/v1"


@pytest.mark.parametrize("scheme", ["legacy", "bundle"])
@pytest.mark.parametrize("kind", ["keyless", "key"])
def test_attestation_required_and_exposed(
    fake: FakeSigstore, root: Path, reg: Registry, scheme: str, kind: str
) -> None:
    key_signer = Signer.generate()
    signer = keyless_signer(fake) if kind == "keyless" else key_signer
    signer.sign(reg, "acme/a:1", scheme=scheme)  # type: ignore[arg-type]
    predicate = {"buildDefinition": {"buildType": "https://example/policy-build"}}
    att = signer.attest(reg, "acme/a:1", predicate_type=SLSA, predicate=predicate, scheme=scheme)  # type: ignore[arg-type]
    assert json.loads(att.payload)["predicateType"] == SLSA
    policy = TrustPolicy(keys=[key_signer.public_key_pem], identities=[TRUSTED], attestations=SLSA)
    artifact = Verifier(policy, trusted_root=root).verify(reg, "acme/a:1")
    (a,) = artifact.attestations
    assert a.predicate_type == SLSA
    assert a.predicate == predicate
    assert artifact.predicates(SLSA) == (predicate,)
    assert a.signature.keyless == (kind == "keyless")
    # a signature alone is not an attestation
    assert len(artifact.signatures) == 1


def test_missing_or_untrusted_attestation(fake: FakeSigstore, root: Path, reg: Registry) -> None:
    keyless_signer(fake).sign(reg, "acme/a:1")
    with pytest.raises(MissingAttestationError, match="no attestation of type"):
        verifier(root, attestations=[SLSA]).verify(reg, "acme/a:1")
    keyless_signer(fake, subject="mallory@evil.example", extensions={}).attest(
        reg, "acme/a:1", predicate_type=SLSA, predicate={}
    )
    with pytest.raises(IdentityMismatchError, match="attestation"):
        verifier(root, attestations=[SLSA]).verify(reg, "acme/a:1")
    # without the requirement, attestations are only read on request
    assert verifier(root).verify(reg, "acme/a:1").attestations == ()
    assert verifier(root).verify(reg, "acme/a:1", attestations=True).attestations == ()


def test_attestation_for_another_artifact_does_not_count(
    fake: FakeSigstore, root: Path, reg: Registry, fixtures_dir: Path
) -> None:
    signer = keyless_signer(fake)
    signer.sign(reg, "acme/a:1")
    signer.attest(reg, "acme/a:1", predicate_type=SLSA, predicate={})
    # copy the .att manifest onto another image (mix-and-match)
    other = Bundle.from_directory(fixtures_dir / "pinned", revision="2")
    reg.push(other, "acme/a:2")
    signer.sign(reg, "acme/a:2")
    att_tag = cosign.sig_tag(reg.resolve("acme/a:1"))[: -len(".sig")] + ".att"
    att, _ = reg.get_manifest(f"acme/a:{att_tag}")
    new_tag = cosign.sig_tag(reg.resolve("acme/a:2"))[: -len(".sig")] + ".att"
    reg.put_manifest(f"acme/a:{new_tag}", att)
    with pytest.raises(VerificationError, match="does not name"):
        verifier(root, attestations=[SLSA]).verify(reg, "acme/a:2")


# -- formats ------------------------------------------------------------------


def test_bundle_round_trip_and_cosign_annotation(fake: FakeSigstore) -> None:
    made = FakeBackend(fake).sign_artifact(b"data")
    again = sb.parse_bundle(made.to_json())
    assert again == made
    entry = made.tlog_entries[0]
    back = sb.TlogEntry.from_cosign_annotation(entry.to_cosign_annotation())
    assert back.body == entry.body
    assert back.signed_entry_timestamp == entry.signed_entry_timestamp
    assert (back.kind, back.version) == ("hashedrekord", "0.0.1")


@pytest.mark.parametrize(
    "doc",
    [
        b"not json",
        b"[]",
        b'{"mediaType": "application/x"}',
        b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}',
        b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",'
        b' "verificationMaterial": {"publicKey": {"hint": ""}}}',
        b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",'
        b' "verificationMaterial": {"certificate": {"rawBytes": "!!"}},'
        b' "messageSignature": {"signature": "AA=="}}',
        b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",'
        b' "verificationMaterial": {"publicKey": {}, "tlogEntries": [{"logIndex": "x"}]},'
        b' "messageSignature": {"signature": "AA=="}}',
        b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",'
        b' "verificationMaterial": {"publicKey": {}}, "dsseEnvelope": {"signatures": []}}',
    ],
)
def test_malformed_bundles_are_verification_errors(doc: bytes) -> None:
    with pytest.raises(VerificationError):
        sb.parse_bundle(doc)


def test_malformed_cosign_annotation() -> None:
    for value in ("x", "{}", '{"Payload": {"body": "e30=", "logID": "zz"}}'):
        with pytest.raises(VerificationError):
            sb.TlogEntry.from_cosign_annotation(value)


def test_certificate_identity_reads_fulcio_extensions(fake: FakeSigstore) -> None:
    _, der = fake.issue(subject=WORKFLOW, extensions=CLAIMS)
    ident = keyless.certificate_identity(keyless.load_certificate(der))
    assert ident.issuer == GITHUB_ACTIONS_ISSUER
    assert ident.sans == (WORKFLOW,)
    assert ident.extensions["1.3.6.1.4.1.57264.1.5"] == REPO
    assert ident.extensions["1.3.6.1.4.1.57264.1.12"] == f"https://github.com/{REPO}"


def test_keyless_signer_has_no_key(fake: FakeSigstore) -> None:
    from policysupply.errors import SigningError

    signer = keyless_signer(fake)
    assert signer.is_keyless
    assert repr(signer) == "Signer(keyless)"
    with pytest.raises(SigningError, match="keyless"):
        _ = signer.public_key_pem
