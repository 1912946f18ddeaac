"""Keyless (Fulcio certificate + Rekor entry) verification, and signing through sigstore.

Verification of one signature goes, in this order (the first failure decides
the error type, so a single fault is reported precisely):

1. the signature verifies with the certificate's key (else
   ``UntrustedSignatureError``: altered signature or content);
2. a transparency log entry exists, is signed by a trusted log (signed entry
   timestamp and/or Merkle inclusion proof with its checkpoint), and its body
   names this signature, this certificate and this content (else
   ``TransparencyLogError``);
3. the signed integration time lies in the certificate's validity (else
   ``CertificateExpiredError``);
4. the certificate chains to a trusted Fulcio root at that time, has the
   code-signing usage and a valid embedded SCT (else ``CertificateError``);
5. the certificate's identity is one the policy trusts (done by the caller
   with :mod:`policysupply.identity`; ``IdentityMismatchError``).

Trust material (Fulcio roots, Rekor and CT log keys) comes from a Sigstore
``trusted_root.json`` through sigstore-python's ``TrustedRoot``; its keyrings,
SCT check and Merkle/checkpoint checks are reused. What sigstore-python does not
cover is ours: cosign's legacy annotations carry only a signed entry timestamp
(no inclusion proof), and key-signed bundles have no certificate.

This module runs the steps; each lives in its own module: certificates
(``fulcio``), trust material (``sigstore_trust``), log entries (``tlog``),
signing (``keyless_signing``), and sigstore-python's internals
(``sigstore_adapter``). Their public names stay importable from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from policysupply._internal import keys
from policysupply._internal.fulcio import EXTENSIONS as EXTENSIONS
from policysupply._internal.fulcio import CertificateIdentity as CertificateIdentity
from policysupply._internal.fulcio import certificate_identity as certificate_identity
from policysupply._internal.fulcio import certificate_pem as certificate_pem
from policysupply._internal.fulcio import load_certificate as load_certificate
from policysupply._internal.fulcio import pem_chain as pem_chain
from policysupply._internal.fulcio import verify_chain, verify_sct
from policysupply._internal.keyless_signing import KeylessSession as KeylessSession
from policysupply._internal.keyless_signing import client_trust_config as client_trust_config
from policysupply._internal.keyless_signing import issuing_chain_pem as issuing_chain_pem
from policysupply._internal.sigstore_adapter import apply_timeouts as apply_timeouts
from policysupply._internal.sigstore_bundle import Envelope, TlogEntry
from policysupply._internal.sigstore_trust import TrustMaterial as TrustMaterial
from policysupply._internal.sigstore_trust import Window as Window
from policysupply._internal.tlog import check_entry_body
from policysupply._internal.tlog import verify_tlog_entry as verify_tlog_entry
from policysupply.errors import (
    CertificateExpiredError,
    TransparencyLogError,
    UntrustedSignatureError,
    VerificationError,
)

if TYPE_CHECKING:
    from cryptography import x509


# -- one signature ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Evidence:
    """A signature and what is stored beside it to show when it was made.

    Attributes:
        signature: The signature.
        tlog_entries: Candidate transparency-log entries.
        timestamps: RFC 3161 timestamps (DER) over the signature.
        artifact_sha256: ``hashedrekord`` content hash (message signatures).
        envelope: The DSSE envelope (DSSE content).
        envelope_blob: The stored envelope bytes (cosign legacy ``.att``).
    """

    signature: bytes
    tlog_entries: Sequence[TlogEntry] = ()
    timestamps: Sequence[bytes] = ()
    artifact_sha256: bytes | None = None
    envelope: Envelope | None = None
    envelope_blob: bytes | None = None


def _timestamp_times(trust: TrustMaterial, ev: Evidence) -> list[datetime]:
    """The verified RFC 3161 times over the signature (or, failing that, the stored envelope).

    Raises:
        VerificationError: A timestamp is malformed, or the trusted root has
            no timestamp authority.
    """
    stamped = trust.timestamp_times(ev.timestamps, ev.signature)
    if not stamped and ev.timestamps and ev.envelope_blob is not None:
        # cosign's legacy attestations timestamp the stored envelope, not the signature
        stamped = trust.timestamp_times(ev.timestamps, ev.envelope_blob)
    return stamped


def _first_log_entry(
    trust: TrustMaterial, ev: Evidence, verifier_der: bytes, stamped: list[datetime]
) -> tuple[TlogEntry | None, datetime | None, list[str]]:
    """The first log entry that names this signature, key and content and verifies.

    Returns:
        ``(entry, its signed time or None, [])``, or ``(None, None, why each failed)``.
    """
    problems: list[str] = []
    for entry in ev.tlog_entries:
        try:
            check_entry_body(
                entry,
                signature=ev.signature,
                verifier_der=verifier_der,
                artifact_sha256=ev.artifact_sha256,
                envelope=ev.envelope,
                envelope_blob=ev.envelope_blob,
            )
            when = verify_tlog_entry(entry, trust, times=stamped)
        except TransparencyLogError as exc:
            problems.append(str(exc))
            continue
        return entry, when, []
    return None, None, problems


@attrs.frozen(kw_only=True)
class KeylessCheck:
    """A keyless signature whose certificate, log entry and signature verified.

    Attributes:
        identity: The certificate's identity claims (matched by the caller).
        signed_time: The log's (or TSA's) signed time of signing.
        log_index: The log entry's index (None when no log entry was required).
        certificate_der: The signing certificate.
    """

    identity: CertificateIdentity
    signed_time: datetime
    log_index: int | None
    certificate_der: bytes = attrs.field(repr=False)


def verify_keyless(
    *,
    trust: TrustMaterial,
    certificate: bytes,
    chain_hints: Sequence[bytes],
    message: bytes,
    evidence: Evidence,
    require_tlog: bool = True,
    require_sct: bool = True,
) -> KeylessCheck:
    """Verifies one keyless signature up to (not including) identity matching.

    Args:
        trust: The trusted root.
        certificate: DER of the signing certificate.
        chain_hints: Untrusted intermediates offered with it.
        message: The exact bytes signed (payload, artifact, or DSSE PAE).
        evidence: The signature, its log entries (one must verify and match
            when there are any or ``require_tlog``) and timestamps.
        require_tlog: Whether a matching, verified log entry is mandatory.
        require_sct: Whether the certificate's SCT must verify.

    Raises:
        UntrustedSignatureError: The signature does not verify with the
            certificate's key.
        TransparencyLogError: No matching, verified log entry.
        CertificateExpiredError: Signed outside the certificate's validity.
        CertificateError: Untrusted CA, wrong usage, bad SCT.
        VerificationError: No signed time at all (neither SET nor timestamp).
    """
    from cryptography.hazmat.primitives import serialization

    cert = load_certificate(certificate, what="signing certificate")
    if not keys.verify(cert.public_key(), evidence.signature, message):
        raise UntrustedSignatureError("signature does not verify with its certificate's key")
    der = cert.public_bytes(serialization.Encoding.DER)
    stamped = _timestamp_times(trust, evidence)
    times: list[tuple[str, datetime]] = []
    entry: TlogEntry | None = None
    if evidence.tlog_entries or require_tlog:
        if not evidence.tlog_entries:
            raise TransparencyLogError("keyless signature has no transparency log entry")
        entry, when, problems = _first_log_entry(trust, evidence, der, stamped)
        if entry is None:
            raise TransparencyLogError("; ".join(problems))
        if when is not None:
            times.append(("transparency log", when))
    times += [("timestamp authority", t) for t in stamped]
    if not times:
        raise VerificationError(
            "no verified signing time (neither a signed entry timestamp nor an RFC 3161 "
            "timestamp from a trusted authority): cannot check the certificate's validity"
        )
    identity = certificate_identity(cert)
    for source, when in times:
        if not identity.not_before <= when <= identity.not_after:
            raise CertificateExpiredError(
                f"signed at {when.isoformat()} ({source}), outside the certificate's "
                f"validity {identity.not_before.isoformat()} .. {identity.not_after.isoformat()}"
            )
    chain: list[x509.Certificate] = []
    for _, when in times:
        chain = verify_chain(cert, when, trust, chain_hints)
    if require_sct:
        verify_sct(cert, chain, trust, [t for _, t in times])
    return KeylessCheck(
        identity=identity,
        signed_time=min(t for _, t in times),
        log_index=entry.log_index if entry is not None else None,
        certificate_der=der,
    )


@attrs.frozen(kw_only=True)
class KeyTimeCheck:
    """What a key-signed signature's log entries and timestamps proved.

    Attributes:
        signed_time: The earliest verified signing time (a log's signed entry
            timestamp or a trusted TSA's RFC 3161 time), or None.
        log_index: The index of the verified, matching log entry, or None.
    """

    signed_time: datetime | None
    log_index: int | None


def verify_key_times(
    *,
    trust: TrustMaterial,
    key: Any,
    evidence: Evidence,
    require_tlog: bool = False,
) -> KeyTimeCheck:
    """Checks the log entries and RFC 3161 timestamps of a key-signed signature.

    The key signature itself must already have verified. Only verified
    material yields a time: a log entry must name this signature, key and
    content and carry a valid SET or inclusion proof; a timestamp must be
    signed by a timestamp authority of the trusted root over this signature
    (or, for cosign's legacy ``.att`` layers, over the stored envelope).

    Args:
        trust: The trusted root.
        key: The public key the signature verified with.
        evidence: The signature, its candidate log entries and timestamps.
        require_tlog: Whether a matching, verified log entry is mandatory.
            Without it, entries and timestamps that do not verify are
            ignored: they just give no time.

    Raises:
        TransparencyLogError: ``require_tlog`` and no matching, verified entry.
    """
    stamped: list[datetime] = []
    if evidence.timestamps:
        try:
            stamped = _timestamp_times(trust, evidence)
        except VerificationError:
            stamped = []  # malformed, or no TSA in the trusted root: no time from it
    entry, when, problems = _first_log_entry(trust, evidence, keys.spki_der(key), stamped)
    if require_tlog and entry is None:
        raise TransparencyLogError("; ".join(problems) or "signature has no transparency log entry")
    times = [when] if when is not None else []
    times += stamped
    return KeyTimeCheck(
        signed_time=min(times) if times else None,
        log_index=entry.log_index if entry is not None else None,
    )
