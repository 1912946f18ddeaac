"""Transparency log entries: signed entry timestamps, inclusion proofs, checkpoints, bodies."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from policysupply._internal import keys, sigstore_adapter
from policysupply._internal.sigstore_adapter import apply_timeouts as apply_timeouts
from policysupply._internal.sigstore_bundle import Envelope, TlogEntry
from policysupply._internal.sigstore_trust import MAX_CLOCK_SKEW, TrustMaterial
from policysupply.errors import (
    TransparencyLogError,
)

if TYPE_CHECKING:
    pass

# -- transparency log ---------------------------------------------------------


def _verify_set(entry: TlogEntry, trust: TrustMaterial, when: datetime) -> None:
    import rfc8785

    assert entry.signed_entry_timestamp is not None  # noqa: S101 - checked by caller
    payload = {
        "body": base64.b64encode(entry.body).decode(),
        "integratedTime": entry.integrated_time,
        "logID": entry.log_id.hex(),
        "logIndex": entry.log_index,
    }
    trust.verify_log_signature(
        entry.log_id, entry.signed_entry_timestamp, rfc8785.dumps(payload), [when]
    )


_NOTE_SIGNATURE = re.compile(r"\u2014 ([^\s+]+) ([A-Za-z0-9+/]+={0,2})")


def _check_checkpoint_note(envelope: str, log_id: bytes) -> None:
    """Reads a checkpoint as a signed note strictly, where sigstore-python is lenient.

    sigstore-python skips lines it cannot parse, decodes base64 loosely and
    never looks at the signer's name, so bytes of a checkpoint could change
    and it would still verify. Here every signature line must be well formed
    with canonical base64, and the line made by the log's key must carry the
    log's name: the origin line (Rekor v2), or its host part before " - "
    (Rekor v1, whose origin is "host - tree id").
    """
    if envelope.count("\n\n") != 1 or not envelope.endswith("\n"):
        raise TransparencyLogError("checkpoint is not a signed note (text, blank line, signatures)")
    body, signatures = envelope.split("\n\n")
    origin = body.split("\n", 1)[0]
    named = False
    for line in signatures[:-1].split("\n"):
        m = _NOTE_SIGNATURE.fullmatch(line)
        try:
            raw = base64.b64decode(m.group(2), validate=True) if m else b""
        except ValueError:  # binascii.Error: bad padding
            raw = b""
        if m is None or base64.b64encode(raw).decode() != m.group(2) or len(raw) < 5:
            raise TransparencyLogError(f"checkpoint has a malformed signature line {line!r}")
        if raw[:4] == log_id[:4]:
            name = m.group(1)
            if name != origin and not origin.startswith(name + " - "):
                raise TransparencyLogError(
                    f"checkpoint is signed by the log's key under the name {name!r}, "
                    f"not the log's own name ({origin!r})"
                )
            named = True
    if not named:
        raise TransparencyLogError("checkpoint carries no signature by the log's key")


def _verify_inclusion(entry: TlogEntry, trust: TrustMaterial, times: Sequence[datetime]) -> None:
    from sigstore.errors import VerificationError as SigstoreVerificationError

    assert entry.inclusion_proof is not None  # noqa: S101 - checked by caller
    assert entry.inclusion_proof.checkpoint is not None  # noqa: S101 - checked by caller
    _check_checkpoint_note(entry.inclusion_proof.checkpoint, entry.log_id)
    try:
        sig_entry = sigstore_adapter.verify_inclusion(entry.to_json())
    except SigstoreVerificationError as exc:
        raise TransparencyLogError(f"inclusion proof: {exc}") from None
    except Exception as exc:  # malformed proof (pydantic, ValueError)
        raise TransparencyLogError(f"inclusion proof is malformed ({exc})") from None
    trust.check_log_signature(
        "inclusion proof's checkpoint",
        lambda ring: sigstore_adapter.verify_checkpoint(ring, sig_entry),
        times,
    )


def verify_tlog_entry(
    entry: TlogEntry, trust: TrustMaterial, *, times: Sequence[datetime] = ()
) -> datetime | None:
    """Checks that a trusted log signed this entry: its SET and/or its inclusion proof.

    An entry counts only when at least one proof verifies against a log key
    of the trusted root, valid at the time that proof is about, and every
    proof it carries verifies: a signed entry timestamp (which needs the
    integration time it signs), or a Merkle inclusion proof with a signed
    checkpoint. Entries of bundles v0.2 and later must carry the inclusion
    proof (a SET is only a promise of inclusion). An integration time later
    than now is refused, signed or not.

    Args:
        entry: The log entry.
        trust: The trusted root.
        times: Independently verified signing times (RFC 3161), at which the
            checkpoint's log key must be valid when no signed integration
            time exists; with none either, the key must be valid now.

    Returns:
        The integration time, if a verified signed entry timestamp covers it
        (an inclusion proof alone does not sign the time).

    Raises:
        TransparencyLogError: No proof, a proof that fails, a SET without
            its time, a log key outside its validity, or a future time.
    """
    now = datetime.now(timezone.utc)
    integrated = (
        datetime.fromtimestamp(entry.integrated_time, tz=timezone.utc)
        if entry.integrated_time is not None
        else None
    )
    if integrated is not None and integrated > now + MAX_CLOCK_SKEW:
        raise TransparencyLogError(
            f"transparency log entry {entry.log_index} claims integration at "
            f"{integrated.isoformat()}, in the future"
        )
    proof = entry.inclusion_proof
    if entry.signed_entry_timestamp is None and proof is None:
        raise TransparencyLogError(
            "transparency log entry has neither a signed entry timestamp nor an inclusion proof"
        )
    if proof is None and entry.proof_required:
        raise TransparencyLogError(
            "transparency log entry has no inclusion proof (bundles v0.2 and later must "
            "prove inclusion; a signed entry timestamp alone is a promise)"
        )
    signed_time: datetime | None = None
    if entry.signed_entry_timestamp is not None:
        if integrated is None:
            raise TransparencyLogError(
                "transparency log entry has a signed entry timestamp but no integration "
                "time for it to sign"
            )
        _verify_set(entry, trust, integrated)
        signed_time = integrated
    if proof is not None:
        if proof.checkpoint is None:
            raise TransparencyLogError("inclusion proof has no signed checkpoint")
        at = [signed_time] if signed_time is not None else list(times) or [now]
        _verify_inclusion(entry, trust, at)
    return signed_time


def _b64_pem_der(value: Any) -> bytes | None:
    """DER inside a base64-encoded PEM (Rekor's publicKey/verifier fields)."""
    if not isinstance(value, str):
        return None
    try:
        blocks = keys.pem_blocks(base64.b64decode(value, validate=True))
    except ValueError:
        return None
    return blocks[0][1] if blocks else None


def _b64_raw(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def _spec(entry: TlogEntry) -> Mapping[str, Any]:
    spec = entry.body_json().get("spec")
    if not isinstance(spec, Mapping):
        raise TransparencyLogError("transparency log entry has no spec")
    return spec


def _get(doc: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(p)
    return doc


def check_entry_body(
    entry: TlogEntry,
    *,
    signature: bytes,
    verifier_der: bytes,
    artifact_sha256: bytes | None = None,
    envelope: Envelope | None = None,
    envelope_blob: bytes | None = None,
) -> None:
    """Checks that a log entry describes exactly this signature, key/certificate and content.

    Args:
        entry: The (already verified) log entry.
        signature: The signature being verified.
        verifier_der: DER of the certificate (keyless) or SubjectPublicKeyInfo (key).
        artifact_sha256: For ``hashedrekord``: SHA-256 of the signed bytes.
        envelope: For ``dsse``/``intoto``: the DSSE envelope.
        envelope_blob: For cosign's legacy ``.att`` layers: the exact envelope
            bytes, whose hash ``dsse``/``intoto`` entries record.

    Raises:
        TransparencyLogError: Another signature, key or content; or an entry
            kind this library does not check.
    """
    spec = _spec(entry)
    b64sig = base64.b64encode(signature).decode()
    kind = (entry.kind, entry.version)
    if kind == ("hashedrekord", "0.0.2"):
        # Rekor v2 logs DSSE as hashedrekord over the PAE (rekor-v2 spec)
        signed = envelope.pae() if envelope is not None else None
        digest = hashlib.sha256(signed).digest() if signed is not None else artifact_sha256
        v2 = spec.get("hashedRekordV002")
        verifier = _get(v2, "signature", "verifier")
        der = _b64_raw(_get(verifier, "x509Certificate", "rawBytes")) or _b64_raw(
            _get(verifier, "publicKey", "rawBytes")
        )
        if _get(v2, "signature", "content") != b64sig:
            raise TransparencyLogError("transparency log entry is for another signature")
        if der != verifier_der:
            raise TransparencyLogError("transparency log entry names another key or certificate")
        if (
            digest is None
            or _get(v2, "data", "algorithm") != "SHA2_256"
            or _b64_raw(_get(v2, "data", "digest")) != digest
        ):
            raise TransparencyLogError("transparency log entry is for other content")
        return
    if kind == ("hashedrekord", "0.0.1"):
        if artifact_sha256 is None:
            raise TransparencyLogError("hashedrekord entry for DSSE content")
        if _get(spec, "signature", "content") != b64sig:
            raise TransparencyLogError("transparency log entry is for another signature")
        if _b64_pem_der(_get(spec, "signature", "publicKey", "content")) != verifier_der:
            raise TransparencyLogError("transparency log entry names another key or certificate")
        if (
            _get(spec, "data", "hash", "algorithm") != "sha256"
            or _get(spec, "data", "hash", "value") != artifact_sha256.hex()
        ):
            raise TransparencyLogError("transparency log entry is for other content")
        return
    if kind == ("dsse", "0.0.1") or kind == ("intoto", "0.0.2"):
        if envelope is None:
            raise TransparencyLogError(f"{entry.kind} entry for a message signature")
        if kind == ("dsse", "0.0.1"):
            sigs = spec.get("signatures")
            pairs = [
                (s.get("signature"), _b64_pem_der(s.get("verifier")))
                for s in (sigs if isinstance(sigs, list) else [])
                if isinstance(s, Mapping)
            ]
            recorded = _get(spec, "payloadHash")
            wanted = hashlib.sha256(envelope.payload).hexdigest()
            env_hash = _get(spec, "envelopeHash")
        else:
            env_sigs = _get(spec, "content", "envelope", "signatures")
            pairs = [
                (s.get("sig"), _b64_pem_der(s.get("publicKey")))
                for s in (env_sigs if isinstance(env_sigs, list) else [])
                if isinstance(s, Mapping)
            ]
            recorded = _get(spec, "content", "payloadHash")
            wanted = hashlib.sha256(envelope.payload).hexdigest()
            env_hash = _get(spec, "content", "hash")
        # intoto v0.0.2 double-base64-encodes signatures; accept either form.
        accepted = {b64sig, base64.b64encode(b64sig.encode()).decode()}
        if not any(sig in accepted and der == verifier_der for sig, der in pairs):
            raise TransparencyLogError(
                "transparency log entry is for another signature or certificate"
            )
        payload_ok = isinstance(recorded, Mapping) and recorded.get("value") == wanted
        # cosign's legacy .att check: the entry hashes the stored envelope bytes
        envelope_ok = (
            envelope_blob is not None
            and isinstance(env_hash, Mapping)
            and env_hash.get("value") == hashlib.sha256(envelope_blob).hexdigest()
        )
        if not (payload_ok or envelope_ok):
            raise TransparencyLogError("transparency log entry is for another payload")
        return
    raise TransparencyLogError(
        f"unsupported transparency log entry kind {entry.kind}/{entry.version}"
    )
