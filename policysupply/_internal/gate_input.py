"""The gate's Rego input document: what verification found, as JSON values.

``input.verification`` for a verified or a failed image, ``input.image``, and
the JSON conversions the gate and its :class:`~policysupply.gate.Decision`
share. Pure functions over the verifier's results; no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import attrs

from policysupply._internal.oci import Reference
from policysupply.errors import (
    CertificateError,
    DigestMismatchError,
    MissingAttestationError,
    NoSignatureError,
    RollbackError,
    StaleSignatureError,
    ThresholdNotMetError,
    TransparencyLogError,
    UntrustedSignatureError,
    VerificationError,
)
from policysupply.verifier import VerifiedArtifact, VerifiedAttestation, VerifiedSignature

# Most specific first: the first class an error is an instance of names it.
ERROR_CODES: tuple[tuple[type[VerificationError], str], ...] = (
    # Before NoSignatureError, its base: signed, but a required attestation is absent.
    (MissingAttestationError, "missing_attestation"),
    (NoSignatureError, "no_signature"),
    # Includes IdentityMismatchError: a valid signature by nobody trusted.
    (UntrustedSignatureError, "untrusted_signature"),
    (ThresholdNotMetError, "threshold_not_met"),
    (StaleSignatureError, "stale_signature"),
    (CertificateError, "certificate"),
    (TransparencyLogError, "transparency_log"),
    (DigestMismatchError, "digest_mismatch"),
    (RollbackError, "rollback"),
    (VerificationError, "verification_failed"),
)


def plain(value: Any) -> Any:
    """A deep copy with mappings as dicts and tuples as lists (JSON-ready)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """Converts attrs instances and mappings from other modules to JSON values."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if attrs.has(type(value)):
        return {
            k: jsonable(v)
            for k, v in attrs.asdict(value, recurse=False).items()
            if not k.startswith("_")
        }
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return str(value)


def _identity_doc(sig: VerifiedSignature | None) -> dict[str, Any] | None:
    """The certificate identity of a keyless signature; ``None`` for a key."""
    subject, issuer = getattr(sig, "subject", None), getattr(sig, "issuer", None)
    if subject is None and issuer is None:
        return None
    matched: Any = getattr(sig, "identity", None)
    return {
        "issuer": issuer,
        "subject": subject,
        # Which trusted Identity of the TrustPolicy it matched.
        "matched": matched.describe() if hasattr(matched, "describe") else None,
    }


def _time(value: dt.datetime | None) -> str | None:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    return None


def _signature_doc(sig: VerifiedSignature) -> dict[str, Any]:
    # Read by attribute so fields the verifier gains later do not break the gate.
    return {
        "key_id": getattr(sig, "key_id", None),
        "scheme": getattr(sig, "scheme", None),
        "annotations": jsonable(getattr(sig, "annotations", None) or {}),
        "identity": _identity_doc(sig),
        "signed_at": _time(getattr(sig, "signed_at", None)),
        "witnessed_at": _time(getattr(sig, "witnessed_at", None)),
        "log_index": getattr(sig, "log_index", None),
    }


def _attestation_doc(att: VerifiedAttestation) -> dict[str, Any]:
    signature = getattr(att, "signature", None)
    return {
        "predicate_type": getattr(att, "predicate_type", None),
        "predicate": jsonable(getattr(att, "predicate", None)),
        "key_id": getattr(signature, "key_id", None),
        "identity": _identity_doc(signature),
    }


def verified_doc(artifact: VerifiedArtifact) -> dict[str, Any]:
    return {
        "verified": True,
        "error": None,
        "message": "",
        "key_ids": list(artifact.key_ids),
        "signers": list(getattr(artifact, "signers", artifact.key_ids)),
        "signatures": [_signature_doc(s) for s in artifact.signatures],
        "attestations": [_attestation_doc(a) for a in getattr(artifact, "attestations", ())],
    }


def failed_doc(exc: VerificationError) -> dict[str, Any]:
    code = next(c for cls, c in ERROR_CODES if isinstance(exc, cls))
    return {
        "verified": False,
        "error": code,
        "error_type": type(exc).__name__,
        "message": str(exc),
        "key_ids": [],
        "signers": [],
        "signatures": [],
        "attestations": [],
    }


def image_doc(given: Reference, host: str, digest: str) -> dict[str, Any]:
    name = f"{host}/{given.repository}" if host else given.repository
    shown = Reference(host=host, repository=given.repository, tag=given.tag, digest=given.digest)
    return {
        "reference": str(shown),
        "registry": host,
        "repository": given.repository,
        "name": name,
        "tag": given.tag,
        "digest": digest,
    }
