"""Our own equivalent of every sigstore-conformance ``bundle-verify`` case, generated at test time.

The public suite's assets cannot be vendored or fetched in CI (see ADR 0016),
so each case is rebuilt here with the in-process Sigstore (Fulcio-like CA, CT
log with real SCTs, Rekor-like log with SETs, Merkle proofs and signed
checkpoints, an RFC 3161 TSA): same intent, our own keys and bytes. ``CASES``
is keyed by the conformance case name it mirrors; tests/conformance/run.py
checks that every public case has one, and runs the public data through
``Verifier.verify_blob`` when a checkout of the suite is at hand.

A ``_fail`` case must be refused with exactly the error type given (so it is
refused for the reason the case is about, not by accident); any other case
must verify.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from policysupply import TrustPolicy, Verifier
from policysupply._internal import sigstore_bundle as sb
from policysupply.errors import (
    CertificateError,
    CertificateExpiredError,
    DigestMismatchError,
    PolicySupplyError,
    TransparencyLogError,
    UntrustedSignatureError,
    VerificationError,
)
from policysupply.identity import GITHUB_ACTIONS_ISSUER, Identity
from tests._x509 import spki_der
from tests.unit._sigstore_pki import ORIGIN, FakeSigstore, blob_bundle
from tests.unit._tsa import TimestampAuthority

UTC = dt.timezone.utc
BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
IDENTITY = Identity(issuer=GITHUB_ACTIONS_ISSUER, subject=BEACON)
A_TXT = b"a.txt: the default artifact of the bundle-verify cases (our own bytes)\n"
OTHER = b"some other artifact\n"
V01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"
V02 = "application/vnd.dev.sigstore.bundle+json;version=0.2"
V03_OLD = "application/vnd.dev.sigstore.bundle+json;version=0.3"


def now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


class Kit:
    """The Sigstore instance the cases are made with, and a second, foreign one."""

    def __init__(self) -> None:
        self.fake = FakeSigstore()
        self.other = FakeSigstore()  # another instance ("staging" to our "production")
        self.rogue_tsa = TimestampAuthority("rogue-tsa")  # in no trusted root
        self.witness = ec.generate_private_key(ec.SECP256R1())
        # a few leaves first, so inclusion proofs have hashes to corrupt
        for i in range(3):
            self.fake.log({"kind": "filler", "apiVersion": "0.0.1", "n": i})

    def bundle(self, data: bytes = A_TXT, **kw: Any) -> sb.ParsedBundle:
        kw.setdefault("subject", BEACON)
        return blob_bundle(self.fake, data, **kw)


@attrs.frozen(kw_only=True)
class Material:
    """What one case verifies: bundle, artifact, trusted root and policy."""

    bundle: bytes
    artifact: bytes = A_TXT
    root: dict[str, Any] | None = None  # None: the kit's own trusted root
    key: ec.EllipticCurvePrivateKey | None = None  # key-signed: the key the policy trusts
    identities: tuple[Identity, ...] = (IDENTITY,)


@attrs.frozen
class Case:
    build: Callable[[Kit], Material]
    refuse: type[PolicySupplyError] | None = None


# -- helpers --------------------------------------------------------------------


def doc(bundle: sb.ParsedBundle) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(bundle.to_json())
    return parsed


def dump(d: dict[str, Any]) -> bytes:
    return json.dumps(d).encode()


def entry0(d: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = d["verificationMaterial"]["tlogEntries"][0]
    return entry


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def flip(data: bytes, at: int = -1) -> bytes:
    raw = bytearray(data)
    raw[at] ^= 0x01
    return bytes(raw)


def versioned(
    bundle: sb.ParsedBundle, media_type: str, chain: tuple[bytes, ...] = ()
) -> dict[str, Any]:
    """The bundle as v0.1/v0.2 clients wrote it: ``x509CertificateChain``, not ``certificate``."""
    d = doc(bundle)
    d["mediaType"] = media_type
    material = d["verificationMaterial"]
    cert = material.pop("certificate")["rawBytes"]
    material["x509CertificateChain"] = {
        "certificates": [{"rawBytes": cert}, *({"rawBytes": b64(c)} for c in chain)]
    }
    return d


def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cert_pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def ago(**delta: float) -> dt.datetime:
    return now() - dt.timedelta(**delta)


def window(end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    return (dt.datetime(2020, 1, 1, tzinfo=UTC), end)


def expired_cert(kit: Kit) -> dict[str, Any]:
    """Issue arguments for a certificate whose 10 minutes ended an hour ago."""
    return {"not_before": ago(hours=2)}


def with_checkpoint(kit: Kit, bundle: sb.ParsedBundle, text: str | None) -> bytes:
    d = doc(bundle)
    proof = entry0(d)["inclusionProof"]
    if text is None:
        del proof["checkpoint"]
    else:
        proof["checkpoint"] = {"envelope": text}
    return dump(d)


def note_of(
    bundle: sb.ParsedBundle, *, origin: str | None = ORIGIN, size: bool = True, root: bool = True
) -> str:
    proof = bundle.tlog_entries[0].inclusion_proof
    assert proof is not None
    lines = [origin] if origin is not None else []
    lines += [str(proof.tree_size)] if size else []
    lines += [b64(proof.root_hash)] if root else []
    return "\n".join(lines) + "\n"


def log_signer(kit: Kit) -> tuple[str, Any, bytes]:
    return (ORIGIN, kit.fake.log_key, kit.fake.log_id[:4])


def hint(key: ec.EllipticCurvePrivateKey) -> bytes:
    import hashlib

    return hashlib.sha256(spki_der(key)).digest()[:4]


def witness(kit: Kit, name: str = "witness.example") -> tuple[str, Any, bytes]:
    return (name, kit.witness, hint(kit.witness))


def rekor2_checkpoint(
    kit: Kit, signers: Callable[[Kit], list[tuple[str, Any, bytes]]], **note: Any
) -> Material:
    bundle = kit.bundle(rekor="v2")
    return Material(
        bundle=with_checkpoint(
            kit, bundle, kit.fake.signed_note(note_of(bundle, **note), signers(kit))
        )
    )


def retimestamped(kit: Kit, bundle: sb.ParsedBundle, stamp: bytes) -> bytes:
    return attrs.evolve(bundle, timestamps=(stamp,)).to_json()


def signature_of(bundle: sb.ParsedBundle) -> bytes:
    content = bundle.content
    return content.signature if isinstance(content, sb.MessageSignature) else content.signatures[0]


# -- the cases --------------------------------------------------------------------


def _empty_chain(kit: Kit) -> Material:
    d = versioned(kit.bundle(), V02)
    d["verificationMaterial"]["x509CertificateChain"]["certificates"] = []
    return Material(bundle=dump(d))


def _wrong_instance(kit: Kit) -> Material:
    return Material(bundle=blob_bundle(kit.other, A_TXT, subject=BEACON).to_json())


def _invalid_base64_signature(kit: Kit) -> Material:
    d = doc(kit.bundle())
    d["messageSignature"]["signature"] = d["messageSignature"]["signature"][:-3] + "*=="
    return Material(bundle=dump(d))


def _malformed_json(kit: Kit) -> Material:
    return Material(bundle=kit.bundle().to_json()[:-40])


def _negative_log_index(kit: Kit) -> Material:
    d = doc(kit.bundle())
    entry0(d)["logIndex"] = "-1"
    return Material(bundle=dump(d))


def _unknown_version(kit: Kit) -> Material:
    d = doc(kit.bundle())
    d["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=99.9"
    return Material(bundle=dump(d))


def _root_in_chain(kit: Kit) -> Material:
    # as the public case: a v0.1 chain holding the root (then the intermediate),
    # and an inclusion proof without its checkpoint
    root, inter = (
        c.public_bytes(serialization.Encoding.DER) for c in (kit.fake.ca.root, kit.fake.ca.cert)
    )
    d = versioned(kit.bundle(), V01, (root, inter))
    del entry0(d)["inclusionProof"]["checkpoint"]
    return Material(bundle=dump(d))


def _sct_with_extensions(kit: Kit) -> Material:
    # a Static CT API leaf_index extension (type 0, 5 bytes)
    return Material(bundle=kit.bundle(sct_extensions=b"\x00\x00\x05\x00\x00\x00\x01\x2a").to_json())


def _checkpoint_bad_keyhint(kit: Kit) -> Material:
    bundle = kit.bundle()
    name, key, _ = log_signer(kit)
    return Material(
        bundle=with_checkpoint(
            kit, bundle, kit.fake.signed_note(note_of(bundle), [(name, key, b"\xde\xad\xbe\xef")])
        )
    )


def _checkpoint_wrong_roothash(kit: Kit) -> Material:
    bundle = kit.bundle()
    proof = bundle.tlog_entries[0].inclusion_proof
    assert proof is not None
    note = f"{ORIGIN}\n{proof.tree_size}\n{b64(flip(proof.root_hash))}\n"
    return Material(
        bundle=with_checkpoint(kit, bundle, kit.fake.signed_note(note, [log_signer(kit)]))
    )


def _dsse(kit: Kit, *, rekor: str, change: str) -> Material:
    issued = kit.fake.issue(subject=BEACON)
    key = issued[0]
    bundle = kit.bundle(dsse=True, rekor=rekor, issued=issued)
    env = bundle.content
    assert isinstance(env, sb.Envelope)
    if change == "invalid-sig":
        # made with another key entirely; the timestamp (v2) is over this signature
        sig = ec.generate_private_key(ec.SECP256R1()).sign(env.pae(), ec.ECDSA(hashes.SHA256()))
        bundle = attrs.evolve(bundle, content=attrs.evolve(env, signatures=(sig,)))
        if rekor == "v2":
            bundle = attrs.evolve(bundle, timestamps=(kit.fake.tsa.timestamp(sig),))
    elif change == "mismatch-envelope":
        # another statement (naming the same artifact), validly signed, never logged
        other = blob_bundle(
            kit.fake, A_TXT, dsse=True, rekor=None, issued=issued, predicate={"other": True}
        )
        assert isinstance(other.content, sb.Envelope)
        bundle = attrs.evolve(bundle, content=other.content)
    elif change == "mismatch-sig":
        # the same payload signed again: ECDSA gives another valid signature
        sig = key.sign(env.pae(), ec.ECDSA(hashes.SHA256()))
        bundle = attrs.evolve(bundle, content=attrs.evolve(env, signatures=(sig,)))
        if rekor == "v2":
            bundle = attrs.evolve(bundle, timestamps=(kit.fake.tsa.timestamp(sig),))
    return Material(bundle=bundle.to_json())


def _corrupted_proof_hash(kit: Kit) -> Material:
    d = doc(kit.bundle())
    hashes_ = entry0(d)["inclusionProof"]["hashes"]
    assert hashes_, "the kit logs filler entries so that proofs have hashes"
    hashes_[0] = b64(flip(unb64(hashes_[0]), 0))
    return Material(bundle=dump(d))


def _incorrect_public_key(kit: Kit) -> Material:
    d = doc(kit.bundle())
    body = json.loads(unb64(entry0(d)["canonicalizedBody"]))
    _, other = kit.fake.issue(subject=BEACON)
    body["spec"]["signature"]["publicKey"]["content"] = b64(cert_pem(other))
    entry0(d)["canonicalizedBody"] = b64(json.dumps(body, separators=(",", ":")).encode())
    return Material(bundle=dump(d))


def _future_integrated_time(kit: Kit) -> Material:
    later = now() + dt.timedelta(days=1)
    return Material(bundle=kit.bundle(log={"integrated_time": int(later.timestamp())}).to_json())


def _intoto(kit: Kit, root: dict[str, Any] | None = None, **kw: Any) -> Material:
    kw.setdefault("stamp", True)
    bundle = kit.bundle(dsse=True, rekor="v1-intoto", **kw)
    return Material(bundle=dump(versioned(bundle, V02)), root=root)


def _intoto_log_entry_mismatch(kit: Kit) -> Material:
    issued = kit.fake.issue(subject=BEACON)
    mine = kit.bundle(dsse=True, rekor="v1-intoto", issued=issued)
    other = kit.bundle(dsse=True, rekor="v1-intoto", issued=issued, predicate={"other": True})
    return Material(
        bundle=dump(versioned(attrs.evolve(mine, tlog_entries=other.tlog_entries), V02))
    )


def _intoto_tsa_outside_cert(kit: Kit) -> Material:
    start = ago(hours=2)
    return _intoto(
        kit,
        not_before=start,
        log={"integrated_time": int((start + dt.timedelta(minutes=1)).timestamp())},
        stamp=now() - dt.timedelta(minutes=1),
    )


def _custom_root(kit: Kit) -> dict[str, Any]:
    # the instance's root plus another instance's CA and log: the right ones are picked
    return kit.fake.trusted_root(extra_cas=[kit.other.ca], extra_logs=[kit.other.log_key])


def _invalid_checkpoint_signature(kit: Kit) -> Material:
    bundle = kit.bundle()
    text = bundle.tlog_entries[0].inclusion_proof.checkpoint  # type: ignore[union-attr]
    head, _, line = text.rstrip("\n").rpartition("\n")
    dash, name, sig = line.split(" ")
    bad = b64(flip(unb64(sig), 10))
    return Material(bundle=with_checkpoint(kit, bundle, f"{head}\n{dash} {name} {bad}\n"))


def _invalid_ct_key(kit: Kit) -> Material:
    root = kit.fake.trusted_root()
    rogue = ec.generate_private_key(ec.SECP256R1())
    root["ctlogs"][0]["publicKey"]["rawBytes"] = b64(spki_der(rogue))
    return Material(bundle=kit.bundle().to_json(), root=root)


def _old_inclusion_proof(kit: Kit) -> Material:
    old = kit.bundle()
    d = doc(kit.bundle())
    entry0(d)["inclusionProof"] = entry0(doc(old))["inclusionProof"]
    return Material(bundle=dump(d))


def _managed_key(kit: Kit, *, trusted: str = "key", root: bool = False) -> Material:
    key = ec.generate_private_key(ec.SECP256R1())
    bundle = kit.bundle(key=key, stamp=True).to_json()
    custom = _custom_root(kit) if root else None
    if trusted == "identity":
        return Material(bundle=bundle, root=custom)
    trusted_key = key if trusted == "key" else ec.generate_private_key(ec.SECP256R1())
    return Material(bundle=bundle, root=custom, key=trusted_key)


def _message_digest_mismatch(kit: Kit) -> Material:
    d = doc(kit.bundle())
    digest = unb64(d["messageSignature"]["messageDigest"]["digest"])
    d["messageSignature"]["messageDigest"]["digest"] = b64(flip(digest, 0))
    return Material(bundle=dump(d))


def _short_lived_tsa() -> TimestampAuthority:
    return TimestampAuthority("short-lived-tsa", not_before=ago(days=2), not_after=ago(days=1))


def _rekor2_tsa_cert_expired(kit: Kit, *, within: bool) -> Material:
    tsa = _short_lived_tsa()
    root = kit.fake.trusted_root(tsas=[tsa])
    if within:  # stamped while the TSA certificate was valid: verifies ever after
        at = ago(days=1, hours=12)
        bundle = kit.bundle(rekor="v2", tsa=tsa, stamp=at, not_before=at - dt.timedelta(minutes=1))
    else:  # stamped after it expired
        bundle = kit.bundle(rekor="v2", tsa=tsa)
    return Material(bundle=bundle.to_json(), root=root)


def _rekor2_stamp(kit: Kit, how: str) -> Material:
    bundle = kit.bundle(rekor="v2")
    sig = signature_of(bundle)
    if how == "payload-mismatch":
        stamp = kit.fake.tsa.timestamp(signature_of(kit.bundle(rekor="v2")))
    elif how.startswith("untrusted"):
        stamp = kit.rogue_tsa.timestamp(sig, embed_certs=how.endswith("with"))
    else:
        stamp = kit.fake.tsa.timestamp(sig, embed_certs=how == "embedded")
    return Material(bundle=retimestamped(kit, bundle, stamp))


def _rekor2_no_proof(kit: Kit) -> Material:
    d = doc(kit.bundle(rekor="v2"))
    del entry0(d)["inclusionProof"]
    return Material(bundle=dump(d))


def _set_invalid_signature(kit: Kit) -> Material:
    d = doc(kit.bundle())
    promise = entry0(d)["inclusionPromise"]
    promise["signedEntryTimestamp"] = b64(flip(unb64(promise["signedEntryTimestamp"])))
    return Material(bundle=dump(d))


def _signature_mismatch(kit: Kit) -> Material:
    issued = kit.fake.issue(subject=BEACON)
    bundle = kit.bundle(issued=issued)
    other = issued[0].sign(OTHER, ec.ECDSA(hashes.SHA256()))
    content = bundle.content
    assert isinstance(content, sb.MessageSignature)
    return Material(
        bundle=attrs.evolve(bundle, content=attrs.evolve(content, signature=other)).to_json()
    )


def _tlog_missing_validity_start(kit: Kit) -> Material:
    root = kit.fake.trusted_root()
    del root["tlogs"][0]["publicKey"]["validFor"]["start"]
    return Material(bundle=kit.bundle(rekor="v2").to_json(), root=root)


def _tlog_validity_end_inclusive(kit: Kit) -> Material:
    at = ago(minutes=1)
    bundle = kit.bundle(log={"integrated_time": int(at.timestamp())})
    return Material(
        bundle=dump(versioned(bundle, V01)), root=kit.fake.trusted_root(tlog_window=window(at))
    )


def _tsa_validity_end_inclusive(kit: Kit) -> Material:
    at = ago(seconds=30)
    bundle = kit.bundle(rekor="v2", stamp=at)
    return Material(bundle=bundle.to_json(), root=kit.fake.trusted_root(tsa_window=window(at)))


def _wrong_hashedrekord(kit: Kit, what: str) -> Material:
    issued = kit.fake.issue(subject=BEACON)
    bundle = kit.bundle(issued=issued)
    if what == "artifact":  # the same certificate's entry for another artifact
        other = kit.bundle(OTHER, issued=issued)
    elif what == "cert-and-sig":  # this artifact's entry, by another certificate
        other = kit.bundle()
    else:  # an unrelated entry
        other = blob_bundle(kit.fake, OTHER, key=ec.generate_private_key(ec.SECP256R1()))
    return Material(bundle=attrs.evolve(bundle, tlog_entries=other.tlog_entries).to_json())


def _chain_form(kit: Kit, media_type: str) -> Material:
    intermediate = kit.fake.ca.cert.public_bytes(serialization.Encoding.DER)
    return Material(bundle=dump(versioned(kit.bundle(), media_type, (intermediate,))))


def _checkpoint_other_origin(kit: Kit) -> Material:
    # the log's signed note with its origin and signer name changed: no signature matches
    bundle = kit.bundle(rekor="v2")
    text = kit.fake.signed_note(note_of(bundle), [log_signer(kit)])
    return Material(
        bundle=with_checkpoint(kit, bundle, text.replace(ORIGIN, "fake-github.example"))
    )


def _m(**kw: Any) -> Callable[[Kit], Material]:
    def build(kit: Kit) -> Material:
        return Material(bundle=kit.bundle(**kw).to_json())

    return build


CASES: dict[str, Case] = {
    "bundle-empty-certificate-chain_fail": Case(_empty_chain, VerificationError),
    "bundle-from-wrong-instance_fail": Case(_wrong_instance, TransparencyLogError),
    "bundle-invalid-base64-signature_fail": Case(_invalid_base64_signature, VerificationError),
    "bundle-malformed-json_fail": Case(_malformed_json, VerificationError),
    "bundle-negative-log-index_fail": Case(_negative_log_index, VerificationError),
    "bundle-unknown-version_fail": Case(_unknown_version, VerificationError),
    "bundle-with-root-cert_fail": Case(_root_in_chain, TransparencyLogError),
    "bundle-with-sct-with-extensions": Case(_sct_with_extensions),
    "checkpoint-bad-keyhint_fail": Case(_checkpoint_bad_keyhint, TransparencyLogError),
    "checkpoint-wrong-roothash_fail": Case(_checkpoint_wrong_roothash, TransparencyLogError),
    "dsse-invalid-sig_fail": Case(
        lambda k: _dsse(k, rekor="v1", change="invalid-sig"), UntrustedSignatureError
    ),
    "dsse-mismatch-envelope_fail": Case(
        lambda k: _dsse(k, rekor="v1", change="mismatch-envelope"), TransparencyLogError
    ),
    "dsse-mismatch-sig_fail": Case(
        lambda k: _dsse(k, rekor="v1", change="mismatch-sig"), TransparencyLogError
    ),
    "happy-path-intoto-in-dsse-v3": Case(_m(dsse=True)),
    "happy-path-v0.1": Case(lambda k: _chain_form(k, V01)),
    "happy-path-v0.2": Case(lambda k: _chain_form(k, V02)),
    "happy-path-v0.3-new-mediaType": Case(_m(media_type=sb.BUNDLE_V03)),
    "happy-path-v0.3": Case(_m(media_type=V03_OLD)),
    "inclusion-proof-corrupted-hash_fail": Case(_corrupted_proof_hash, TransparencyLogError),
    "incorrect-public-key_fail": Case(_incorrect_public_key, TransparencyLogError),
    "integrated-time-in-future_fail": Case(_future_integrated_time, TransparencyLogError),
    "intoto-expired-certificate_fail": Case(
        lambda k: _intoto(k, root=k.fake.trusted_root(ca_window=window(ago(days=1)))),
        CertificateError,
    ),
    "intoto-log-entry-mismatch_fail": Case(_intoto_log_entry_mismatch, TransparencyLogError),
    "intoto-missing-inclusion-proof_fail": Case(
        lambda k: _intoto(k, log={"proof": False}), TransparencyLogError
    ),
    "intoto-set-outside-signing-cert-validity_fail": Case(
        lambda k: _intoto(k, stamp=False, **expired_cert(k)), CertificateExpiredError
    ),
    "intoto-tsa-timestamp-outside-cert-validity_fail": Case(
        _intoto_tsa_outside_cert, CertificateExpiredError
    ),
    "intoto-with-custom-trust-root": Case(lambda k: _intoto(k, root=_custom_root(k))),
    "invalid-checkpoint-signature_fail": Case(_invalid_checkpoint_signature, TransparencyLogError),
    "invalid-ct-key_fail": Case(_invalid_ct_key, CertificateError),
    "invalid-inclusion-proof_fail": Case(_old_inclusion_proof, TransparencyLogError),
    "managed-key-and-trusted-root": Case(lambda k: _managed_key(k, root=True)),
    "managed-key-happy-path": Case(_managed_key),
    "managed-key-no-key_fail": Case(
        lambda k: _managed_key(k, trusted="identity"), UntrustedSignatureError
    ),
    "managed-key-wrong-key_fail": Case(
        lambda k: _managed_key(k, trusted="other"), UntrustedSignatureError
    ),
    "message-digest-mismatch_fail": Case(_message_digest_mismatch, DigestMismatchError),
    "rekor2-checkpoint-cosigned": Case(
        lambda k: rekor2_checkpoint(k, lambda k: [log_signer(k), witness(k)])
    ),
    "rekor2-checkpoint-missing-log-signature_fail": Case(
        lambda k: rekor2_checkpoint(k, lambda k: []), TransparencyLogError
    ),
    "rekor2-checkpoint-missing-origin_fail": Case(
        lambda k: rekor2_checkpoint(k, lambda k: [log_signer(k)], origin=None),
        TransparencyLogError,
    ),
    "rekor2-checkpoint-missing-root-hash_fail": Case(
        lambda k: rekor2_checkpoint(k, lambda k: [log_signer(k)], root=False),
        TransparencyLogError,
    ),
    "rekor2-checkpoint-missing-size_fail": Case(
        lambda k: rekor2_checkpoint(k, lambda k: [log_signer(k)], size=False),
        TransparencyLogError,
    ),
    "rekor2-checkpoint-multiple-cosigs": Case(
        lambda k: rekor2_checkpoint(
            k, lambda k: [log_signer(k), witness(k, "w1.example"), witness(k, "w2.example")]
        )
    ),
    "rekor2-checkpoint-no-matching-signature_fail": Case(
        _checkpoint_other_origin, TransparencyLogError
    ),
    "rekor2-checkpoint-origin-not-first": Case(
        lambda k: rekor2_checkpoint(k, lambda k: [witness(k), log_signer(k)])
    ),
    "rekor2-checkpoint-two-sigs-cosigned": Case(
        lambda k: rekor2_checkpoint(
            k,
            lambda k: [log_signer(k), (ORIGIN, k.other.log_key, k.other.log_id[:4]), witness(k)],
        )
    ),
    "rekor2-checkpoint-two-sigs-from-origin": Case(
        lambda k: rekor2_checkpoint(
            k, lambda k: [log_signer(k), (ORIGIN, k.other.log_key, k.other.log_id[:4])]
        )
    ),
    "rekor2-dsse-happy-path": Case(_m(dsse=True, rekor="v2")),
    "rekor2-dsse-invalid-sig_fail": Case(
        lambda k: _dsse(k, rekor="v2", change="invalid-sig"), UntrustedSignatureError
    ),
    "rekor2-dsse-mismatch-envelope_fail": Case(
        lambda k: _dsse(k, rekor="v2", change="mismatch-envelope"), TransparencyLogError
    ),
    "rekor2-dsse-mismatch-sig_fail": Case(
        lambda k: _dsse(k, rekor="v2", change="mismatch-sig"), TransparencyLogError
    ),
    "rekor2-happy-path": Case(_m(rekor="v2")),
    "rekor2-no-inclusion-proof_fail": Case(_rekor2_no_proof, TransparencyLogError),
    "rekor2-no-timestamp_fail": Case(_m(rekor="v2", stamp=False), VerificationError),
    "rekor2-timestamp-outside-trust-root-tsa-validity_fail": Case(
        lambda k: Material(
            bundle=k.bundle(rekor="v2").to_json(),
            root=k.fake.trusted_root(tsa_window=window(ago(hours=1))),
        ),
        VerificationError,
    ),
    "rekor2-timestamp-outside-tsa-cert-validity_fail": Case(
        lambda k: _rekor2_tsa_cert_expired(k, within=False), VerificationError
    ),
    "rekor2-timestamp-payload-mismatch_fail": Case(
        lambda k: _rekor2_stamp(k, "payload-mismatch"), VerificationError
    ),
    "rekor2-timestamp-untrusted-tsa-with-embedded-cert_fail": Case(
        lambda k: _rekor2_stamp(k, "untrusted-with"), VerificationError
    ),
    "rekor2-timestamp-untrusted-tsa-without-embedded-cert_fail": Case(
        lambda k: _rekor2_stamp(k, "untrusted-without"), VerificationError
    ),
    "rekor2-timestamp-with-embedded-cert": Case(lambda k: _rekor2_stamp(k, "embedded")),
    "rekor2-timestamp-with-expired-cert-chain": Case(
        lambda k: _rekor2_tsa_cert_expired(k, within=True)
    ),
    "rekor2-timestamp-with-incorrect-time_fail": Case(
        _m(rekor="v2", not_before=ago(hours=2)), CertificateExpiredError
    ),
    "rekor2-timestamp-without-embedded-cert": Case(lambda k: _rekor2_stamp(k, "bare")),
    "set-invalid-signature_fail": Case(_set_invalid_signature, TransparencyLogError),
    "signature-mismatch_fail": Case(_signature_mismatch, UntrustedSignatureError),
    "trust-root-tlog-missing-validity-start_fail": Case(
        _tlog_missing_validity_start, VerificationError
    ),
    "trust-root-tlog-validity-end-inclusive": Case(_tlog_validity_end_inclusive),
    "trust-root-tsa-validity-end-inclusive": Case(_tsa_validity_end_inclusive),
    "wrong-hashedrekord-artifact_fail": Case(
        lambda k: _wrong_hashedrekord(k, "artifact"), TransparencyLogError
    ),
    "wrong-hashedrekord-cert-and-sig_fail": Case(
        lambda k: _wrong_hashedrekord(k, "cert-and-sig"), TransparencyLogError
    ),
    "wrong-hashedrekord-entry_fail": Case(
        lambda k: _wrong_hashedrekord(k, "entry"), TransparencyLogError
    ),
    "wrong-material_fail": Case(
        lambda k: Material(bundle=k.bundle(OTHER).to_json()), DigestMismatchError
    ),
}


@pytest.fixture(scope="module")
def kit() -> Kit:
    return Kit()


@pytest.mark.parametrize("name", sorted(CASES))
def test_conformance_case(kit: Kit, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    assert name.endswith("_fail") == (case.refuse is not None)
    m = case.build(kit)
    root = tmp_path / "trusted_root.json"
    root.write_text(json.dumps(m.root if m.root is not None else kit.fake.trusted_root()))
    policy = (
        TrustPolicy(keys=[pem(m.key)], require_tlog=True)
        if m.key is not None
        else TrustPolicy(identities=m.identities)
    )
    verify = Verifier(policy, trusted_root=root).verify_blob
    if case.refuse is None:
        assert verify(m.artifact, bundle=m.bundle).signatures
        return
    with pytest.raises(PolicySupplyError) as refused:
        verify(m.artifact, bundle=m.bundle)
    assert type(refused.value) is case.refuse, f"{type(refused.value).__name__}: {refused.value}"
