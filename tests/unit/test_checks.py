"""The verifier's checks and verdict over hand-made candidates: no registry, no I/O.

``_checks`` and ``_verdict`` judge bytes already fetched; these tests give them
``Candidate`` values built in memory (the registry-backed paths are covered by
``test_verifier*.py``).
"""

from __future__ import annotations

import hashlib

import pytest

from policysupply import Signer, TrustPolicy
from policysupply._checks import Checks, reference_mismatch, subjects_naming
from policysupply._internal import cosign
from policysupply._internal.cosign_storage import Candidate
from policysupply._internal.oci import Reference
from policysupply._verdict import trusted_signatures
from policysupply.errors import (
    ClaimMismatchError,
    ThresholdNotMetError,
    UntrustedSignatureError,
    VerificationError,
)

DIGEST = "sha256:" + "ab" * 32
REF = Reference(host="reg.example", repository="acme/policy", digest=DIGEST)


def no_trust_material() -> object:
    raise AssertionError("key signatures without log entries need no trust material")


def checks(*signers: Signer, **policy: object) -> Checks:
    trusted = TrustPolicy(keys=[s.public_key_pem for s in signers], **policy)  # type: ignore[arg-type]
    return Checks(trusted, trusted_root=None, trust_material=no_trust_material)  # type: ignore[arg-type]


def legacy(
    signer: Signer, *, digest: str = DIGEST, name: str = "reg.example/acme/policy", **ann: str
) -> Candidate:
    payload = cosign.simple_signing_payload(name, digest, ann or None)
    return Candidate(
        "legacy",
        payload,
        signer.sign_bytes(payload),
        payload,
        artifact_sha256=hashlib.sha256(payload).digest(),
    )


def test_a_key_signature_names_its_key() -> None:
    signer = Signer.generate()
    (found,) = checks(signer).signers(legacy(signer))
    assert found.key_id == signer.key_id
    assert found.scheme == "legacy"
    assert found.public_key is not None


def test_a_signature_by_another_key_is_untrusted() -> None:
    with pytest.raises(UntrustedSignatureError, match="trusted key"):
        checks(Signer.generate()).signers(legacy(Signer.generate()))


def test_altered_payload_is_untrusted() -> None:
    signer = Signer.generate()
    c = legacy(signer)
    forged = Candidate("legacy", c.message + b" ", c.signature, c.claims)
    with pytest.raises(UntrustedSignatureError):
        checks(signer).signers(forged)


def test_a_signature_copied_from_another_image_fails_its_claims() -> None:
    signer = Signer.generate()
    ok, why, _ = checks(signer).claims(legacy(signer, digest="sha256:" + "cd" * 32), REF, DIGEST)
    assert not ok
    assert "not " + DIGEST in why


def test_a_signature_for_another_repository_fails_its_claims() -> None:
    signer = Signer.generate()
    ok, why, _ = checks(signer).claims(legacy(signer, name="reg.example/evil/policy"), REF, DIGEST)
    assert not ok
    assert "acme/policy" in why


def test_required_annotation_missing_is_a_claim_mismatch() -> None:
    signer = Signer.generate()
    with pytest.raises(ClaimMismatchError, match="env"):
        checks(signer, annotations={"env": "prod"}).claims(legacy(signer), REF, DIGEST)
    ok, _, signed = checks(signer, annotations={"env": "prod"}).claims(
        legacy(signer, env="prod"), REF, DIGEST
    )
    assert ok
    assert signed == {"env": "prod"}


def test_reference_rules() -> None:
    assert reference_mismatch("repository", ["other.host/acme/policy"], REF) is None
    assert reference_mismatch("exact", ["other.host/acme/policy"], REF) is not None
    assert reference_mismatch("any", [], REF) is None
    assert "names no repository" in str(reference_mismatch("repository", [], REF))


def test_subjects_naming_ignores_malformed_subjects() -> None:
    hexd = DIGEST.split(":", 1)[1]
    statement = {"subject": [1, {"digest": "x"}, {"digest": {"sha256": hexd}}]}
    assert subjects_naming(statement, DIGEST) == [{"digest": {"sha256": hexd}}]
    assert subjects_naming([], DIGEST) == []


def test_threshold_counts_distinct_signers_not_copies() -> None:
    a, b = Signer.generate(), Signer.generate()
    both = checks(a, b, threshold=2)
    same_twice = [legacy(a), legacy(a)]
    with pytest.raises(ThresholdNotMetError, match="1 distinct trusted signer"):
        trusted_signatures(both, REF, same_twice, claims=True, label=REF)
    found = trusted_signatures(both, REF, [legacy(a), legacy(b)], claims=True, label=REF)
    assert {s.key_id for s in found} == {a.key_id, b.key_id}


def test_no_trusted_signature_reports_the_clearest_reason() -> None:
    signer = Signer.generate()
    copied = legacy(signer, digest="sha256:" + "cd" * 32)
    stranger = legacy(Signer.generate())
    with pytest.raises(VerificationError) as caught:
        trusted_signatures(checks(signer), REF, [stranger, copied], claims=True, label=REF)
    assert isinstance(caught.value, ClaimMismatchError)
    assert "not " + DIGEST in str(caught.value)
