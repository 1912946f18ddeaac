"""Attacks on transparency-log entries, trusted-root validity windows and certificate claims.

Each test is named after the attack (python-tuf style) and runs against the
in-process Sigstore (tests/unit/_sigstore_pki.py: Fulcio-like CA, CT log with
real SCTs, Rekor-like log with SETs, Merkle proofs and signed checkpoints, an
RFC 3161 TSA). Issue #12, items 7 (two gaps), 9, 10, 11 and 12.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from policysupply import TrustPolicy, Verifier
from policysupply._internal import keyless
from policysupply._internal import sigstore_bundle as sb
from policysupply.errors import (
    CertificateError,
    TransparencyLogError,
    VerificationError,
)
from policysupply.identity import GITHUB_ACTIONS_ISSUER, Identity
from tests.unit._sigstore_pki import FULCIO, FakeSigstore, _utf8, blob_bundle

SUBJECT = "https://github.com/acme/policies/.github/workflows/release.yml@refs/heads/main"
TRUSTED = Identity(issuer=GITHUB_ACTIONS_ISSUER, subject=SUBJECT)
DATA = b"policy bundle bytes\n" * 20
UTC = dt.timezone.utc


def now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def fake() -> FakeSigstore:
    return FakeSigstore()


def root_file(fake: FakeSigstore, tmp_path: Path, **kw: Any) -> Path:
    return fake.write_trusted_root(tmp_path / "trusted_root.json", **kw)


def keyless_verifier(root: Path, **policy: Any) -> Verifier:
    return Verifier(TrustPolicy(identities=[TRUSTED], **policy), trusted_root=root)


def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def with_entries(bundle: sb.ParsedBundle, *entries: sb.TlogEntry) -> bytes:
    return attrs.evolve(bundle, tlog_entries=entries).to_json()


def made_up(entry: sb.TlogEntry, **changes: Any) -> sb.TlogEntry:
    """The attacker's entry: the real body, no time, a SET no log made, no proof."""
    fields: dict[str, Any] = {
        "integrated_time": None,
        "signed_entry_timestamp": b"\x30\x06\x02\x01\x01\x02\x01\x01",
        "inclusion_proof": None,
        "log_index": 999_999,
    }
    fields.update(changes)
    return attrs.evolve(entry, **fields)


# -- item 9: a log entry counts only if a log signed it ------------------------


@pytest.mark.parametrize("time", [None, "0"], ids=["absent", "zero"])
def test_keyless_signature_with_timestamp_but_no_log_record_is_refused(
    fake: FakeSigstore, tmp_path: Path, time: str | None
) -> None:
    # Signed in secret: a TSA timestamp and a fabricated entry (integratedTime
    # absent or "0", a SET no log made, no inclusion proof). Old code skipped
    # every proof check for such an entry and took it as verified.
    real = blob_bundle(fake, DATA, stamp=True, subject=SUBJECT)
    doc = json.loads(with_entries(real, made_up(real.tlog_entries[0])))
    if time is not None:
        doc["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = time
    with pytest.raises(TransparencyLogError):
        keyless_verifier(root_file(fake, tmp_path)).verify_blob(
            DATA, bundle=json.dumps(doc).encode()
        )


def test_key_signature_with_made_up_log_entry_bypasses_require_tlog(
    fake: FakeSigstore, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    real = blob_bundle(fake, DATA, key=key)
    forged = with_entries(real, made_up(real.tlog_entries[0]))
    v = Verifier(
        TrustPolicy(keys=[pem(key)], require_tlog=True), trusted_root=root_file(fake, tmp_path)
    )
    with pytest.raises(TransparencyLogError):
        v.verify_blob(DATA, bundle=forged)
    (s,) = v.verify_blob(DATA, bundle=real.to_json()).signatures
    assert s.log_index == real.tlog_entries[0].log_index


@pytest.mark.parametrize("kind", ["keyless", "key"])
def test_unverifiable_entry_listed_first_does_not_block_or_replace_the_valid_one(
    fake: FakeSigstore, tmp_path: Path, kind: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "key" else None
    real = blob_bundle(fake, DATA, key=key, subject=SUBJECT)
    good = real.tlog_entries[0]
    bundle = with_entries(real, made_up(good), good)
    policy: dict[str, Any] = (
        {"keys": [pem(key)], "require_tlog": True} if key else {"identities": [TRUSTED]}
    )
    v = Verifier(TrustPolicy(**policy), trusted_root=root_file(fake, tmp_path))
    (s,) = v.verify_blob(DATA, bundle=bundle).signatures
    # the attacker's log index is never reported
    assert s.log_index == good.log_index


def test_log_entry_with_integrated_time_in_the_future_is_refused(
    fake: FakeSigstore, tmp_path: Path
) -> None:
    # a log (clock or key) that stamps entries a day ahead: the certificate is
    # valid then, the SET verifies, but the time is not one that has happened
    later = now() + dt.timedelta(days=1)
    bundle = blob_bundle(
        fake,
        DATA,
        subject=SUBJECT,
        not_before=later - dt.timedelta(minutes=1),
        log={"integrated_time": int(later.timestamp())},
    )
    with pytest.raises(TransparencyLogError, match="future"):
        keyless_verifier(root_file(fake, tmp_path)).verify_blob(DATA, bundle=bundle.to_json())


def test_set_without_integrated_time_is_not_a_proof(fake: FakeSigstore, tmp_path: Path) -> None:
    # a real SET, but the time it signs stripped: the SET cannot be checked,
    # and there is no inclusion proof
    real = blob_bundle(fake, DATA, stamp=True, subject=SUBJECT)
    entry = attrs.evolve(real.tlog_entries[0], integrated_time=None, inclusion_proof=None)
    with pytest.raises(TransparencyLogError):
        keyless_verifier(root_file(fake, tmp_path)).verify_blob(
            DATA, bundle=with_entries(real, entry)
        )


# -- item 10: trust material only inside its validity window -------------------


def ended(days: float) -> tuple[dt.datetime, dt.datetime]:
    return (dt.datetime(2020, 1, 1, tzinfo=UTC), now() - dt.timedelta(days=days))


def test_retired_fulcio_ca_is_not_trusted_after_its_end(fake: FakeSigstore, tmp_path: Path) -> None:
    root = root_file(fake, tmp_path, ca_window=ended(1))
    with pytest.raises(CertificateError, match="Fulcio"):
        keyless_verifier(root).verify_blob(
            DATA, bundle=blob_bundle(fake, DATA, subject=SUBJECT).to_json()
        )
    # a signature the log integrated while the CA was trusted still verifies
    before = now() - dt.timedelta(days=3)
    old = blob_bundle(
        fake,
        DATA,
        subject=SUBJECT,
        not_before=before - dt.timedelta(minutes=1),
        log={"integrated_time": int(before.timestamp())},
    )
    keyless_verifier(root).verify_blob(DATA, bundle=old.to_json())


@pytest.mark.parametrize("rekor", ["v1", "v2"])
def test_retired_rekor_key_is_not_trusted_after_its_end(
    fake: FakeSigstore, tmp_path: Path, rekor: str
) -> None:
    root = root_file(fake, tmp_path, tlog_window=ended(1))
    with pytest.raises(TransparencyLogError, match="validity"):
        keyless_verifier(root).verify_blob(
            DATA, bundle=blob_bundle(fake, DATA, rekor=rekor, subject=SUBJECT).to_json()
        )
    before = now() - dt.timedelta(days=3)
    old = blob_bundle(
        fake,
        DATA,
        rekor=rekor,
        subject=SUBJECT,
        not_before=before - dt.timedelta(minutes=1),
        log={"integrated_time": int(before.timestamp())},
        stamp=before if rekor == "v2" else False,
    )
    keyless_verifier(root).verify_blob(DATA, bundle=old.to_json())


def test_retired_rekor_key_does_not_count_for_key_signatures(
    fake: FakeSigstore, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    root = root_file(fake, tmp_path, tlog_window=ended(1))
    v = Verifier(TrustPolicy(keys=[pem(key)], require_tlog=True), trusted_root=root)
    with pytest.raises(TransparencyLogError, match="validity"):
        v.verify_blob(DATA, bundle=blob_bundle(fake, DATA, key=key).to_json())


def test_retired_ct_log_key_is_not_trusted_after_its_end(
    fake: FakeSigstore, tmp_path: Path
) -> None:
    root = root_file(fake, tmp_path, ct_window=ended(1))
    with pytest.raises(CertificateError, match="SCT"):
        keyless_verifier(root).verify_blob(
            DATA, bundle=blob_bundle(fake, DATA, subject=SUBJECT).to_json()
        )
    keyless_verifier(root, require_sct=False).verify_blob(
        DATA, bundle=blob_bundle(fake, DATA, subject=SUBJECT).to_json()
    )


def test_trust_material_not_yet_valid_is_not_trusted(fake: FakeSigstore, tmp_path: Path) -> None:
    later = (now() + dt.timedelta(days=1), None)
    bundle = blob_bundle(fake, DATA, subject=SUBJECT).to_json()
    for window, error in [("ca_window", CertificateError), ("tlog_window", TransparencyLogError)]:
        with pytest.raises(error):
            keyless_verifier(root_file(fake, tmp_path, **{window: later})).verify_blob(
                DATA, bundle=bundle
            )


# -- item 11: incomplete trust roots are typed errors --------------------------


def test_trusted_root_without_transparency_logs_verifies_timestamped_signature(
    fake: FakeSigstore, tmp_path: Path
) -> None:
    # a private, timestamp-only deployment: no Rekor at all
    root = root_file(fake, tmp_path, tlog=False)
    bundle = blob_bundle(fake, DATA, rekor=None, stamp=True, subject=SUBJECT).to_json()
    (s,) = keyless_verifier(root, require_tlog=False).verify_blob(DATA, bundle=bundle).signatures
    assert s.signed_at is not None
    assert s.log_index is None
    # asking for a log entry is a typed refusal, not sigstore's MetadataError
    with pytest.raises(TransparencyLogError):
        keyless_verifier(root).verify_blob(
            DATA, bundle=blob_bundle(fake, DATA, subject=SUBJECT).to_json()
        )
    key = ec.generate_private_key(ec.SECP256R1())
    v = Verifier(TrustPolicy(keys=[pem(key)], require_tlog=True), trusted_root=root)
    with pytest.raises(TransparencyLogError):
        v.verify_blob(DATA, bundle=blob_bundle(fake, DATA, key=key).to_json())


@pytest.mark.parametrize(
    "change",
    [
        {"certificateAuthorities": []},
        {
            "timestampAuthorities": [
                {
                    "subject": {},
                    "certChain": {"certificates": []},
                    "validFor": {"start": "2020-01-01T00:00:00Z"},
                }
            ]
        },
        {"tlogs": [], "ctlogs": [], "timestampAuthorities": []},
        {"tlogs": [{"publicKey": {"rawBytes": "AAAA", "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}]},
        {"ctlogs": "none"},
    ],
    ids=["no-ca", "empty-tsa-chain", "only-a-ca", "bad-tlog-key", "ctlogs-not-a-list"],
)
def test_incomplete_trusted_root_is_a_verification_error(
    fake: FakeSigstore, tmp_path: Path, change: dict[str, Any]
) -> None:
    doc = fake.trusted_root()
    doc.update(change)
    root = tmp_path / "trusted_root.json"
    root.write_text(json.dumps(doc))
    bundle = blob_bundle(fake, DATA, stamp=True, subject=SUBJECT).to_json()
    # verifies, or refuses with a VerificationError: never sigstore's or pydantic's errors
    with contextlib.suppress(VerificationError):
        keyless_verifier(root).verify_blob(DATA, bundle=bundle)


# -- item 12: the v2 issuer extension is authoritative -------------------------


@pytest.mark.parametrize(
    "raw",
    [
        _utf8(""),  # an empty UTF8String
        b"\x04\x03abc",  # an OCTET STRING, not a UTF8String
        GITHUB_ACTIONS_ISSUER.encode(),  # a raw string: the deprecated .1.1 form
        b"\x0c\x05ab",  # a truncated UTF8String
        b"\x0c\x02\xff\xfe",  # not UTF-8
    ],
    ids=["empty", "octet-string", "raw-string", "truncated", "not-utf8"],
)
def test_malformed_v2_issuer_does_not_fall_back_to_deprecated_issuer(
    fake: FakeSigstore, tmp_path: Path, raw: bytes
) -> None:
    # the deprecated .1.1 says the trusted issuer; the authoritative .1.8 is broken
    bundle = blob_bundle(
        fake, DATA, subject=SUBJECT, issuer_v2=False, raw_extensions={f"{FULCIO}.8": raw}
    )
    with pytest.raises(CertificateError, match=r"1\.3\.6\.1\.4\.1\.57264\.1\.8"):
        keyless_verifier(root_file(fake, tmp_path)).verify_blob(DATA, bundle=bundle.to_json())


def test_v2_issuer_wins_over_deprecated_issuer(fake: FakeSigstore) -> None:
    _, der = fake.issue(
        issuer="https://accounts.example",
        issuer_v2=False,
        raw_extensions={f"{FULCIO}.8": _utf8(GITHUB_ACTIONS_ISSUER)},
    )
    ident = keyless.certificate_identity(keyless.load_certificate(der))
    assert ident.issuer == GITHUB_ACTIONS_ISSUER
    _, der = fake.issue(issuer=GITHUB_ACTIONS_ISSUER, issuer_v2=False)
    assert (
        keyless.certificate_identity(keyless.load_certificate(der)).issuer == GITHUB_ACTIONS_ISSUER
    )


# -- item 7: the two conformance gaps sigstore-python shares -------------------


@pytest.mark.parametrize("rekor", ["v1", "v1-intoto"])
@pytest.mark.parametrize("media_type", [sb.MEDIA_TYPES[2], sb.BUNDLE_V03])
def test_dsse_log_entry_without_inclusion_proof_is_refused(
    fake: FakeSigstore, tmp_path: Path, rekor: str, media_type: str
) -> None:
    # intoto-missing-inclusion-proof_fail: bundles v0.2+ must prove inclusion;
    # a SET alone is the log's promise, not its proof
    bundle = blob_bundle(
        fake,
        DATA,
        dsse=True,
        rekor=rekor,
        media_type=media_type,
        subject=SUBJECT,
        log={"proof": False},
    )
    with pytest.raises(TransparencyLogError, match="inclusion proof"):
        keyless_verifier(root_file(fake, tmp_path)).verify_blob(DATA, bundle=bundle.to_json())


def test_timestamp_exactly_at_tsa_validity_end_is_valid(fake: FakeSigstore, tmp_path: Path) -> None:
    # trust-root-tsa-validity-end-inclusive: validFor is a closed interval
    at = now() - dt.timedelta(seconds=30)
    root = root_file(fake, tmp_path, tsa_window=(dt.datetime(2020, 1, 1, tzinfo=UTC), at))
    bundle = blob_bundle(fake, DATA, rekor="v2", stamp=at, subject=SUBJECT)
    (s,) = keyless_verifier(root).verify_blob(DATA, bundle=bundle.to_json()).signatures
    assert s.witnessed_at == at  # the TSA's time; signed_at is the signer's lower bound
    late = blob_bundle(fake, DATA, rekor="v2", stamp=at + dt.timedelta(seconds=1), subject=SUBJECT)
    with pytest.raises(VerificationError, match="signing time"):
        keyless_verifier(root).verify_blob(DATA, bundle=late.to_json())


def _with_checkpoint(real: sb.ParsedBundle, change: Any) -> bytes:
    doc = json.loads(real.to_json())
    cp = doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]
    cp["envelope"] = change(cp["envelope"])
    return json.dumps(doc).encode()


def _rename_signer(envelope: str) -> str:
    body, sigs = envelope.split("\n\n")
    name = sigs.split(" ")[1]
    return body + "\n\n" + sigs.replace(f" {name} ", f" x{name} ", 1)


def _noncanonical_base64(envelope: str) -> str:
    # A signature whose last base64 character carries unused bits: loose
    # decoders read the same bytes, so the text could change unnoticed.
    body, sigs = envelope.split("\n\n")
    line = sigs.rstrip("\n")
    head, sig = line.rsplit(" ", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    stripped = sig.rstrip("=")
    if len(stripped) % 4 in (2, 3):
        last = alphabet.index(stripped[-1])
        stripped = stripped[:-1] + alphabet[last ^ 1]
    else:
        stripped += "="  # no slack bits: malform the padding instead
    return body + "\n\n" + head + " " + stripped + sig[len(sig.rstrip("=")) :] + "\n"


@pytest.mark.parametrize(
    "change",
    [
        _rename_signer,
        _noncanonical_base64,
        lambda e: e + "garbage line\n",
        lambda e: e.replace("\n\n", "\n\nnot a signature\n", 1),
    ],
    ids=["signer-renamed", "noncanonical-base64", "trailing-garbage", "garbage-before-signature"],
)
def test_checkpoint_text_changed_outside_the_signed_body_is_not_a_proof(
    fake: FakeSigstore, tmp_path: Path, change: Any
) -> None:
    # sigstore-python checks only the signed body's signature: it skips lines it
    # cannot parse, decodes base64 loosely and ignores the signer's name, so a
    # changed checkpoint still verified (found by the mutation property).
    real = blob_bundle(fake, DATA, rekor="v2", stamp=True, subject=SUBJECT)
    v = keyless_verifier(root_file(fake, tmp_path))
    v.verify_blob(DATA, bundle=real.to_json())
    with pytest.raises(TransparencyLogError, match="checkpoint"):
        v.verify_blob(DATA, bundle=_with_checkpoint(real, change))
