"""Signing time: only a time the signer produced may make a signature look recent.

A transparency-log entry or an RFC 3161 timestamp proves that a signature
existed *by* that time; it says nothing about how old it is. Anyone can log an
old signature again, and an ECDSA signature's malleated twin ``(r, n - s)``
verifies too and is a brand-new log entry. These tests are the attacks: an old
key signature made to look fresh for the freeze limit (``max_signature_age``)
and for TrustState's "signing time must not go back" rule, with and without
``require_tlog``; and a twin counted as a second signature.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from policysupply import Bundle, Registry, Signer, TrustPolicy, TrustState, Verifier
from policysupply._internal import cosign, oci
from policysupply._internal import sigstore_bundle as sb
from policysupply.errors import RollbackError, StaleSignatureError, ThresholdNotMetError
from policysupply.identity import GITHUB_ACTIONS_ISSUER, Identity
from tests.unit._sigstore_pki import FakeBackend, FakeSigstore

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
DAY = dt.timedelta(days=1)
WORKFLOW = "https://github.com/acme/policies/.github/workflows/release.yml@refs/heads/main"
TRUSTED = Identity(issuer=GITHUB_ACTIONS_ISSUER, subject=WORKFLOW)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def rfc3339(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def twin(signature: bytes) -> bytes:
    """The malleated twin of a P-256 ECDSA signature: ``(r, n - s)`` verifies as well."""
    r, s = decode_dss_signature(signature)
    return encode_dss_signature(r, P256_N - s)


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


def log_key_signature(
    fake: FakeSigstore, signer: Signer, payload: bytes, signature: bytes, when: dt.datetime
) -> str:
    """Anyone can do this: log a (valid) key signature in the transparency log at ``when``.

    Returns cosign's ``dev.sigstore.cosign/bundle`` layer annotation for the entry.
    """
    body = FakeSigstore.hashedrekord(
        hashlib.sha256(payload).digest(), signature, signer.public_key_pem
    )
    entry = fake.log(body, integrated_time=int(when.timestamp()))
    return entry.to_cosign_annotation()


def edit_sig_layers(reg: Registry, ref: str, change: Any) -> None:
    """Rewrites the layers of cosign's ``.sig`` manifest (registry push access is enough)."""
    repo = ref.split(":")[0]
    tag = cosign.sig_tag(reg.resolve(ref))
    manifest = json.loads(reg.get_manifest(f"{repo}:{tag}")[0])
    manifest["layers"] = change(manifest["layers"])
    reg.put_manifest(f"{repo}:{tag}", oci.canonical_json(manifest))


def verifier(root: Path, *signers: Signer, **policy: Any) -> Verifier:
    return Verifier(
        TrustPolicy(keys=[s.public_key_pem for s in signers], **policy), trusted_root=root
    )


# -- freeze: max_signature_age ---------------------------------------------------------


@pytest.mark.parametrize("require_tlog", [None, True])
def test_relogged_old_key_signature_does_not_pass_freeze(
    fake: FakeSigstore, root: Path, reg: Registry, require_tlog: bool | None
) -> None:
    signer = Signer.generate()
    signed = now() - 400 * DAY
    sig = signer.sign(reg, "acme/a:1", annotations={cosign.ANN_SIGNED_AT: rfc3339(signed)})
    # The attacker logs the 400-day-old signature today and attaches the entry.
    fresh = log_key_signature(fake, signer, sig.payload, sig.signature, now())

    def attach(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        layers[0]["annotations"][cosign_bundle_annotation()] = fresh
        return layers

    edit_sig_layers(reg, "acme/a:1", attach)
    policy = {"require_tlog": require_tlog}
    with pytest.raises(StaleSignatureError, match="past the"):
        verifier(root, signer, max_signature_age=30 * DAY, **policy).verify(reg, "acme/a:1")
    (s,) = verifier(root, signer, **policy).verify(reg, "acme/a:1").signatures
    assert s.log_index is not None  # the entry is genuine: it verifies
    assert s.signed_at == signed  # ... but only proves the signature existed by now
    assert s.witnessed_at is not None
    assert abs(s.witnessed_at - now()) < dt.timedelta(minutes=1)


def test_malleated_twin_with_fresh_log_entry_does_not_pass_freeze(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    signer = Signer.generate()
    signed = now() - 400 * DAY
    sig = signer.sign(reg, "acme/a:1", annotations={cosign.ANN_SIGNED_AT: rfc3339(signed)})
    original = log_key_signature(fake, signer, sig.payload, sig.signature, signed)
    # The original is logged already; its twin is a new entry that any log accepts.
    evil = twin(sig.signature)
    fresh = log_key_signature(fake, signer, sig.payload, evil, now())

    def add_twin(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        layers[0]["annotations"][cosign_bundle_annotation()] = original
        copy = json.loads(json.dumps(layers[0]))
        copy["annotations"][cosign.ANN_SIGNATURE] = base64.b64encode(evil).decode()
        copy["annotations"][cosign_bundle_annotation()] = fresh
        return [*layers, copy]

    edit_sig_layers(reg, "acme/a:1", add_twin)
    for require_tlog in (None, True):
        with pytest.raises(StaleSignatureError):
            verifier(root, signer, max_signature_age=30 * DAY, require_tlog=require_tlog).verify(
                reg, "acme/a:1"
            )


def test_key_signature_without_a_signed_time_fails_closed_unless_opted_out(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    # As cosign 3 signs with a key: no signer-produced time, only a log entry.
    signer = Signer.generate()
    sig = signer.sign(reg, "acme/a:1", timestamp=False)
    fresh = log_key_signature(fake, signer, sig.payload, sig.signature, now())

    def attach(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        layers[0]["annotations"][cosign_bundle_annotation()] = fresh
        return layers

    edit_sig_layers(reg, "acme/a:1", attach)
    (s,) = verifier(root, signer).verify(reg, "acme/a:1").signatures
    assert s.signed_at is None
    assert s.witnessed_at is not None
    with pytest.raises(StaleSignatureError, match="insecure_witnessed_age"):
        verifier(root, signer, max_signature_age=30 * DAY).verify(reg, "acme/a:1")
    # Explicitly opted out: the log's time judges the age (and its weakness is documented).
    loose = verifier(root, signer, max_signature_age=30 * DAY, insecure_witnessed_age=True)
    assert loose.verify(reg, "acme/a:1").signatures[0].witnessed_at == s.witnessed_at
    # ... and still refuses material whose only log entry is old.
    stale = log_key_signature(fake, signer, sig.payload, sig.signature, now() - 400 * DAY)

    def replace(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        layers[0]["annotations"][cosign_bundle_annotation()] = stale
        return layers

    edit_sig_layers(reg, "acme/a:1", replace)
    with pytest.raises(StaleSignatureError, match="past the"):
        loose.verify(reg, "acme/a:1")


def test_witnessed_time_never_outranks_a_signed_time_even_when_opted_out(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    signer = Signer.generate()
    sig = signer.sign(
        reg, "acme/a:1", annotations={cosign.ANN_SIGNED_AT: rfc3339(now() - 400 * DAY)}
    )
    fresh = log_key_signature(fake, signer, sig.payload, sig.signature, now())

    def attach(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        layers[0]["annotations"][cosign_bundle_annotation()] = fresh
        return layers

    edit_sig_layers(reg, "acme/a:1", attach)
    with pytest.raises(StaleSignatureError, match="past the"):
        verifier(root, signer, max_signature_age=30 * DAY, insecure_witnessed_age=True).verify(
            reg, "acme/a:1"
        )


# -- one signature, however it is encoded --------------------------------------------


def test_malleated_twin_does_not_count_twice_for_threshold(root: Path, reg: Registry) -> None:
    signer, other = Signer.generate(), Signer.generate()
    sig = signer.sign(reg, "acme/a:1")

    def add_twin(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        copy = json.loads(json.dumps(layers[0]))
        copy["annotations"][cosign.ANN_SIGNATURE] = base64.b64encode(twin(sig.signature)).decode()
        return [*layers, layers[0], copy]  # the same signature again, and its twin

    edit_sig_layers(reg, "acme/a:1", add_twin)
    artifact = verifier(root, signer).verify(reg, "acme/a:1")
    assert len(artifact.signatures) == 1  # one signature in the evidence, not three
    with pytest.raises(ThresholdNotMetError, match="1 distinct trusted signer"):
        verifier(root, signer, other, threshold=2).verify(reg, "acme/a:1")


def test_malleated_twin_in_a_dsse_envelope_is_one_signature(root: Path, reg: Registry) -> None:
    signer = Signer.generate()
    sig = signer.sign(reg, "acme/a:1", scheme="bundle")
    digest = reg.resolve("acme/a:1")
    (referrer,) = reg.referrers(f"acme/a@{digest}")
    manifest = json.loads(reg.get_manifest(f"acme/a@{referrer.digest}")[0])
    layer = manifest["layers"][0]
    doc = json.loads(reg.get_blob("acme/a", layer["digest"]))
    doc["dsseEnvelope"]["signatures"].append(
        {"sig": base64.b64encode(twin(sig.signature)).decode()}
    )
    blob = json.dumps(doc).encode()
    desc = reg.put_blob("acme/a", blob, media_type=cosign.BUNDLE_V03)
    layer.update(digest=desc.digest, size=desc.size)
    reg.put_manifest("acme/a", oci.canonical_json(manifest))
    artifact = verifier(root, signer, docker_reference="any").verify(reg, "acme/a:1")
    assert len(artifact.signatures) == 1


def test_keyless_malleated_twin_is_one_signature(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    backend = FakeBackend(fake, subject=WORKFLOW)
    sig = Signer._with_keyless(backend).sign(reg, "acme/a:1")
    evil = twin(sig.signature)
    entry = fake.log(
        FakeSigstore.hashedrekord(hashlib.sha256(sig.payload).digest(), evil, backend.cert_pem)
    )

    def add_twin(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        copy = json.loads(json.dumps(layers[0]))
        copy["annotations"][cosign.ANN_SIGNATURE] = base64.b64encode(evil).decode()
        copy["annotations"][cosign_bundle_annotation()] = entry.to_cosign_annotation()
        return [*layers, copy]

    edit_sig_layers(reg, "acme/a:1", add_twin)
    artifact = Verifier(TrustPolicy(identities=[TRUSTED]), trusted_root=root).verify(
        reg, "acme/a:1"
    )
    assert len(artifact.signatures) == 1


# -- rollback: TrustState's signing-time rule --------------------------------------------


def _release(reg: Registry, fixtures_dir: Path, revision: str, **data: object) -> str:
    base = Bundle.from_directory(fixtures_dir / "pinned")
    bundle = Bundle(
        manifest=attrs.evolve(base.manifest, revision=revision),
        modules=dict(base.modules),
        data={"acme": dict(data)},
    )
    return str(reg.push(bundle, "acme/a:stable").digest)


@pytest.mark.parametrize("require_tlog", [None, True])
def test_older_release_with_fresh_log_entry_is_rollback(
    fake: FakeSigstore,
    root: Path,
    reg: Registry,
    fixtures_dir: Path,
    tmp_path: Path,
    require_tlog: bool | None,
) -> None:
    signer = Signer.generate()
    v = verifier(root, signer, require_tlog=require_tlog)
    state = TrustState(tmp_path / "state.json")
    # An old release (git-SHA revisions have no order: the signing time decides) ...
    old_at = now() - 20 * DAY
    old_digest = _release(reg, fixtures_dir, "3f2a9c1", hole=True)
    old = signer.sign(reg, "acme/a:stable", annotations={cosign.ANN_SIGNED_AT: rfc3339(old_at)})
    # ... and the current one, accepted here; the old one never was on this machine.
    new_at = now() - DAY
    _release(reg, fixtures_dir, "9b8e7d6", hole=False)
    new = signer.sign(reg, "acme/a:stable", annotations={cosign.ANN_SIGNED_AT: rfc3339(new_at)})
    new_entry = log_key_signature(fake, signer, new.payload, new.signature, new_at)

    def attach(entry: str) -> Any:
        def change(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
            layers[0]["annotations"][cosign_bundle_annotation()] = entry
            return layers

        return change

    edit_sig_layers(reg, "acme/a:stable", attach(new_entry))
    accepted = v.verify_bundle(reg, "acme/a:stable", state=state)
    assert accepted.artifact.signed_at == new_at
    # The attacker moves the tag back and logs the old signature again, today.
    reg.put_manifest("acme/a:stable", reg.get_manifest(f"acme/a@{old_digest}")[0])
    fresh = log_key_signature(fake, signer, old.payload, old.signature, now())
    edit_sig_layers(reg, "acme/a:stable", attach(fresh))
    with pytest.raises(RollbackError, match="signed at"):
        v.verify_bundle(reg, "acme/a:stable", state=state)
    record = state.get("acme/a:stable")
    assert record is not None
    assert record.signed_at == new_at


# -- keyless: the certificate bounds the signing time --------------------------------------


def keyless_signer(fake: FakeSigstore, **issue: Any) -> Signer:
    issue.setdefault("subject", WORKFLOW)
    return Signer._with_keyless(FakeBackend(fake, **issue))


def test_keyless_signed_at_is_bounded_by_the_certificate(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    backend = FakeBackend(fake, subject=WORKFLOW)
    from cryptography import x509

    cert = x509.load_der_x509_certificate(backend.cert)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    signer = Signer._with_keyless(backend)
    signer.sign(reg, "acme/a:1", timestamp=False)
    v = Verifier(TrustPolicy(identities=[TRUSTED]), trusted_root=root)
    (s,) = v.verify(reg, "acme/a:1").signatures
    assert s.signed_at == start  # Fulcio's notBefore: a replay cannot move it
    assert s.witnessed_at is not None
    assert start <= s.witnessed_at <= end
    # A signed claim inside the certificate's window is more precise, and counts.
    inside = start + dt.timedelta(seconds=30)  # before the log saw it
    signer.sign(reg, "acme/a:1", annotations={cosign.ANN_SIGNED_AT: rfc3339(inside)})
    assert v.verify(reg, "acme/a:1").signed_at == inside


def test_keyless_claim_outside_the_certificate_window_is_ignored(
    fake: FakeSigstore, root: Path, reg: Registry
) -> None:
    backend = FakeBackend(fake, subject=WORKFLOW)
    from cryptography import x509

    start = x509.load_der_x509_certificate(backend.cert).not_valid_before_utc
    signer = Signer._with_keyless(backend)
    # The ephemeral key signed while its certificate was valid (the log proves it):
    # a claim of a much later time is false, and cannot make the signature look newer.
    later = now() + 365 * DAY
    signer.sign(reg, "acme/a:1", annotations={cosign.ANN_SIGNED_AT: rfc3339(later)})
    v = Verifier(TrustPolicy(identities=[TRUSTED]), trusted_root=root)
    assert v.verify(reg, "acme/a:1").signed_at == start


def cosign_bundle_annotation() -> str:
    return "dev.sigstore.cosign/bundle"


def test_blob_key_bundle_with_fresh_log_entry_has_no_signed_time(
    fake: FakeSigstore, root: Path
) -> None:
    data = b"policy tarball\n" * 10
    signer = Signer.generate()
    parsed = sb.parse_bundle(signer.sign_blob(data).data)
    assert isinstance(parsed.content, sb.MessageSignature)
    entry = fake.log(
        FakeSigstore.hashedrekord(
            hashlib.sha256(data).digest(), parsed.content.signature, signer.public_key_pem
        )
    )
    logged = attrs.evolve(parsed, tlog_entries=(entry,)).to_json()
    v = verifier(root, signer, require_tlog=True)
    (s,) = v.verify_blob(data, bundle=logged).signatures
    assert s.signed_at is None
    assert s.witnessed_at is not None
    with pytest.raises(StaleSignatureError, match="insecure_witnessed_age"):
        verifier(root, signer, require_tlog=True, max_signature_age=DAY).verify_blob(
            data, bundle=logged
        )
    assert verifier(
        root, signer, require_tlog=True, max_signature_age=DAY, insecure_witnessed_age=True
    ).verify_blob(data, bundle=logged)
