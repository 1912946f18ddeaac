"""Sigstore bundles and cosign's Rekor bundle annotation as pure functions over bytes.

Reads Sigstore bundles v0.1 to v0.3 (protobuf JSON: lowerCamelCase keys,
base64 ``bytes``, ``int64`` as strings) into :class:`ParsedBundle`, and writes
v0.3 bundles. Also converts cosign's legacy ``dev.sigstore.cosign/bundle``
annotation (a Rekor "inclusion promise") to and from :class:`TlogEntry`.

Nothing here verifies a signature; ``keyless.py`` does that. Everything here
raises :class:`~policysupply.errors.VerificationError` on malformed input, with
the source named, and never lets a ``KeyError``/``ValueError`` escape.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from policysupply.errors import VerificationError

BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
V01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"
MEDIA_TYPES = (
    BUNDLE_V03,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    V01,
)
INTOTO = "application/vnd.in-toto+json"
MAX_BUNDLE_BYTES = 4 << 20  # generous: real bundles are a few KiB
_ALGORITHMS = {"SHA2_256": "sha256", "SHA2_384": "sha384", "SHA2_512": "sha512"}


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"{what}: expected a base64 string")
    try:
        # line breaks are allowed, as Go's protojson (cosign, sigstore-go) reads them
        return base64.b64decode(value.replace("\n", "").replace("\r", ""), validate=True)
    except ValueError:
        raise VerificationError(f"{what}: not valid base64") from None


def _int(value: Any, what: str) -> int:
    # protobuf JSON writes int64 as strings; cosign's annotation as numbers.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise VerificationError(f"{what}: expected an integer")
    try:
        return int(value)
    except ValueError:
        raise VerificationError(f"{what}: expected an integer") from None


def _uint(value: Any, what: str) -> int:
    n = _int(value, what)
    if n < 0:
        raise VerificationError(f"{what}: negative")
    return n


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise VerificationError(f"{what}: expected a JSON object")
    return value


def _e64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@attrs.frozen(kw_only=True)
class InclusionProof:
    """A Merkle inclusion proof with the log's signed checkpoint."""

    log_index: int
    root_hash: bytes
    tree_size: int
    hashes: tuple[bytes, ...]
    checkpoint: str | None


@attrs.frozen(kw_only=True)
class TlogEntry:
    """One transparency log entry, from a bundle or a cosign annotation.

    Attributes:
        log_index: Index in the log.
        log_id: SHA-256 of the log's public key (DER), raw bytes.
        kind: Entry kind (``hashedrekord``, ``dsse``, ``intoto``, ...).
        version: Entry kind version (``0.0.1``, ...).
        integrated_time: Unix seconds the log integrated the entry, if given.
        signed_entry_timestamp: The log's signature over the entry (SET), if given.
        inclusion_proof: Merkle proof and checkpoint, if given.
        body: The canonicalized entry body (JSON bytes).
        proof_required: Whether the entry counts only with an inclusion proof
            (entries of Sigstore bundles v0.2 and later).
    """

    log_index: int
    log_id: bytes
    kind: str
    version: str
    integrated_time: int | None
    signed_entry_timestamp: bytes | None
    inclusion_proof: InclusionProof | None
    body: bytes = attrs.field(repr=False)
    proof_required: bool = attrs.field(default=False, eq=False)  # from the container

    def body_json(self) -> Mapping[str, Any]:
        """The decoded entry body.

        Raises:
            VerificationError: The body is not a JSON object.
        """
        try:
            return _obj(json.loads(self.body), "tlog entry body")
        except (ValueError, RecursionError):
            raise VerificationError("tlog entry body is not JSON") from None

    def to_json(self) -> dict[str, Any]:
        """The entry as a bundle's ``tlogEntries`` item (protobuf JSON)."""
        doc: dict[str, Any] = {
            "logIndex": str(self.log_index),
            "logId": {"keyId": _e64(self.log_id)},
            "kindVersion": {"kind": self.kind, "version": self.version},
        }
        if self.integrated_time is not None:
            doc["integratedTime"] = str(self.integrated_time)
        if self.signed_entry_timestamp is not None:
            doc["inclusionPromise"] = {"signedEntryTimestamp": _e64(self.signed_entry_timestamp)}
        if self.inclusion_proof is not None:
            p = self.inclusion_proof
            proof: dict[str, Any] = {
                "logIndex": str(p.log_index),
                "rootHash": _e64(p.root_hash),
                "treeSize": str(p.tree_size),
                "hashes": [_e64(h) for h in p.hashes],
            }
            if p.checkpoint is not None:
                proof["checkpoint"] = {"envelope": p.checkpoint}
            doc["inclusionProof"] = proof
        doc["canonicalizedBody"] = _e64(self.body)
        return doc

    @classmethod
    def from_json(
        cls, doc: Any, what: str = "tlog entry", *, proof_required: bool = False
    ) -> TlogEntry:
        """Parses a bundle's ``tlogEntries`` item.

        Raises:
            VerificationError: Malformed entry.
        """
        d = _obj(doc, what)
        kv = _obj(d.get("kindVersion"), f"{what}.kindVersion")
        promise = d.get("inclusionPromise")
        raw_proof = d.get("inclusionProof")
        proof = None
        if raw_proof is not None:
            p = _obj(raw_proof, f"{what}.inclusionProof")
            hashes = p.get("hashes") or []
            if not isinstance(hashes, list):
                raise VerificationError(f"{what}.inclusionProof.hashes: expected a list")
            cp = p.get("checkpoint")
            envelope = _obj(cp, f"{what}.checkpoint").get("envelope") if cp else None
            proof = InclusionProof(
                log_index=_uint(p.get("logIndex"), f"{what}.inclusionProof.logIndex"),
                root_hash=_b64(p.get("rootHash"), f"{what}.inclusionProof.rootHash"),
                tree_size=_uint(p.get("treeSize"), f"{what}.inclusionProof.treeSize"),
                hashes=tuple(_b64(h, f"{what}.inclusionProof.hashes") for h in hashes),
                checkpoint=str(envelope) if envelope else None,
            )
        time = d.get("integratedTime")
        return cls(
            log_index=_uint(d.get("logIndex"), f"{what}.logIndex"),
            log_id=_b64(_obj(d.get("logId"), f"{what}.logId").get("keyId"), f"{what}.logId"),
            kind=str(kv.get("kind", "")),
            version=str(kv.get("version", "")),
            # 0 is protobuf's default: an entry without a promise of time (Rekor v2)
            integrated_time=_uint(time, f"{what}.integratedTime") or None if time else None,
            signed_entry_timestamp=(
                _b64(
                    _obj(promise, f"{what}.inclusionPromise").get("signedEntryTimestamp"),
                    f"{what}.inclusionPromise",
                )
                if promise
                else None
            ),
            inclusion_proof=proof,
            body=_b64(d.get("canonicalizedBody"), f"{what}.canonicalizedBody"),
            proof_required=proof_required,
        )

    # -- cosign's legacy "dev.sigstore.cosign/bundle" annotation --------------

    def to_cosign_annotation(self) -> str:
        """Cosign's ``dev.sigstore.cosign/bundle`` value (needs a SET and a time).

        Raises:
            VerificationError: The entry has no signed entry timestamp (a
                Rekor v2 entry): cosign's legacy form cannot carry it.
        """
        if self.signed_entry_timestamp is None or self.integrated_time is None:
            raise VerificationError(
                "the transparency log entry has no signed entry timestamp; cosign's legacy "
                "signature form needs one (use the bundle scheme)"
            )
        doc = {
            "SignedEntryTimestamp": _e64(self.signed_entry_timestamp),
            "Payload": {
                "body": _e64(self.body),
                "integratedTime": self.integrated_time,
                "logIndex": self.log_index,
                "logID": self.log_id.hex(),
            },
        }
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_cosign_annotation(cls, value: str) -> TlogEntry:
        """Parses cosign's ``dev.sigstore.cosign/bundle`` annotation.

        Raises:
            VerificationError: Malformed annotation.
        """
        what = "cosign bundle annotation"
        try:
            doc = _obj(json.loads(value), what)
        except (ValueError, RecursionError):
            raise VerificationError(f"{what} is not JSON") from None
        payload = _obj(doc.get("Payload"), f"{what}.Payload")
        body = _b64(payload.get("body"), f"{what}.Payload.body")
        try:
            log_id = bytes.fromhex(str(payload.get("logID", "")))
        except ValueError:
            raise VerificationError(f"{what}.Payload.logID: not hex") from None
        try:
            kind_doc = _obj(json.loads(body), "tlog entry body")
        except (ValueError, RecursionError):
            raise VerificationError(f"{what}: entry body is not JSON") from None
        return cls(
            log_index=_uint(payload.get("logIndex"), f"{what}.Payload.logIndex"),
            log_id=log_id,
            kind=str(kind_doc.get("kind", "")),
            version=str(kind_doc.get("apiVersion", "")),
            integrated_time=_uint(payload.get("integratedTime"), f"{what}.Payload.integratedTime"),
            signed_entry_timestamp=_b64(doc.get("SignedEntryTimestamp"), f"{what}.SET"),
            inclusion_proof=None,
            body=body,
        )


@attrs.frozen(kw_only=True)
class MessageSignature:
    """``messageSignature`` content: a signature over an artifact's bytes."""

    algorithm: str | None  # hashlib name of the documented digest, when given
    digest: bytes | None
    signature: bytes = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class Envelope:
    """``dsseEnvelope`` content."""

    payload_type: str
    payload: bytes = attrs.field(repr=False)
    signatures: tuple[bytes, ...] = attrs.field(repr=False)

    def pae(self) -> bytes:
        """The DSSE pre-authentication encoding: what each signature covers."""
        return pae(self.payload_type, self.payload)

    def to_json(self) -> dict[str, Any]:
        """The envelope as DSSE JSON (also a bundle's ``dsseEnvelope``)."""
        return {
            "payload": _e64(self.payload),
            "payloadType": self.payload_type,
            "signatures": [{"sig": _e64(s)} for s in self.signatures],
        }

    @classmethod
    def from_json(cls, doc: Any, what: str = "DSSE envelope") -> Envelope:
        """Parses a DSSE envelope (``keyid`` values are ignored: only keys decide).

        Raises:
            VerificationError: Malformed envelope.
        """
        d = _obj(doc, what)
        sigs = d.get("signatures")
        if not isinstance(sigs, list) or not sigs:
            raise VerificationError(f"{what}: no signatures")
        return cls(
            payload_type=str(d.get("payloadType", "")),
            payload=_b64(d.get("payload"), f"{what}.payload"),
            signatures=tuple(_b64(_obj(s, what).get("sig"), f"{what}.sig") for s in sigs),
        )


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@attrs.frozen(kw_only=True)
class ParsedBundle:
    """A Sigstore bundle, parsed but not verified.

    Attributes:
        media_type: The bundle's media type (version).
        certificate: DER of the signing (leaf) certificate, for keyless bundles.
        chain: DER of further certificates the bundle carries (v0.1/v0.2
            chains; cosign's legacy chain annotation). Untrusted hints only.
        key_hint: ``publicKey.hint`` for key-signed bundles (untrusted).
        tlog_entries: Transparency log entries.
        timestamps: RFC 3161 signed timestamps (DER), if any.
        content: The signed content.
    """

    media_type: str
    certificate: bytes | None = attrs.field(repr=False)
    chain: tuple[bytes, ...] = attrs.field(default=(), repr=False)
    key_hint: str | None = None
    tlog_entries: tuple[TlogEntry, ...] = ()
    timestamps: tuple[bytes, ...] = attrs.field(default=(), repr=False)
    content: MessageSignature | Envelope

    @property
    def is_dsse(self) -> bool:
        """Whether the content is a DSSE envelope."""
        return isinstance(self.content, Envelope)

    def to_json(self) -> bytes:
        """The bundle as compact v0.3 JSON (``certificate``, not a chain)."""
        material: dict[str, Any] = {}
        if self.certificate is not None:
            material["certificate"] = {"rawBytes": _e64(self.certificate)}
        else:
            material["publicKey"] = {"hint": self.key_hint or ""}
        material["tlogEntries"] = [e.to_json() for e in self.tlog_entries]
        if self.timestamps:
            material["timestampVerificationData"] = {
                "rfc3161Timestamps": [{"signedTimestamp": _e64(t)} for t in self.timestamps]
            }
        doc: dict[str, Any] = {"mediaType": BUNDLE_V03, "verificationMaterial": material}
        if isinstance(self.content, Envelope):
            doc["dsseEnvelope"] = self.content.to_json()
        else:
            sig: dict[str, Any] = {}
            if self.content.digest is not None:
                names = {v: k for k, v in _ALGORITHMS.items()}
                sig["messageDigest"] = {
                    "algorithm": names.get(self.content.algorithm or "sha256", "SHA2_256"),
                    "digest": _e64(self.content.digest),
                }
            sig["signature"] = _e64(self.content.signature)
            doc["messageSignature"] = sig
        return json.dumps(doc, separators=(",", ":")).encode()


def parse_bundle(data: bytes | str, *, what: str = "Sigstore bundle") -> ParsedBundle:
    """Parses a Sigstore bundle (v0.1 to v0.3) without verifying anything.

    Raises:
        VerificationError: Too large, not JSON, unknown media type, or malformed.
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_BUNDLE_BYTES:
        raise VerificationError(f"{what}: larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        doc = _obj(json.loads(raw), what)
    except (ValueError, RecursionError):
        raise VerificationError(f"{what}: not JSON") from None
    media_type = str(doc.get("mediaType", ""))
    if media_type not in MEDIA_TYPES:
        raise VerificationError(f"{what}: unsupported media type {media_type!r}")
    material = _obj(doc.get("verificationMaterial"), f"{what}.verificationMaterial")
    certificate: bytes | None = None
    chain: list[bytes] = []
    key_hint: str | None = None
    if material.get("certificate") is not None:
        cert = _obj(material["certificate"], f"{what}.certificate")
        certificate = _b64(cert.get("rawBytes"), f"{what}.certificate")
    elif material.get("x509CertificateChain") is not None:
        certs = _obj(material["x509CertificateChain"], f"{what}.x509CertificateChain").get(
            "certificates"
        )
        if not isinstance(certs, list) or not certs:
            raise VerificationError(f"{what}: empty certificate chain")
        ders = [_b64(_obj(c, what).get("rawBytes"), f"{what}.chain") for c in certs]
        certificate, chain = ders[0], ders[1:]
    elif material.get("publicKey") is not None:
        key_hint = str(_obj(material["publicKey"], f"{what}.publicKey").get("hint", ""))
    else:
        raise VerificationError(f"{what}: no certificate or public key in verificationMaterial")
    entries = material.get("tlogEntries") or []
    if not isinstance(entries, list):
        raise VerificationError(f"{what}.tlogEntries: expected a list")
    tsd = material.get("timestampVerificationData") or {}
    stamps = _obj(tsd, f"{what}.timestampVerificationData").get("rfc3161Timestamps") or []
    if not isinstance(stamps, list):
        raise VerificationError(f"{what}.rfc3161Timestamps: expected a list")
    content: MessageSignature | Envelope
    if doc.get("dsseEnvelope") is not None:
        content = Envelope.from_json(doc["dsseEnvelope"], f"{what}.dsseEnvelope")
    elif doc.get("messageSignature") is not None:
        ms = _obj(doc["messageSignature"], f"{what}.messageSignature")
        md = ms.get("messageDigest")
        algorithm = digest = None
        if md is not None:
            mdo = _obj(md, f"{what}.messageDigest")
            algorithm = _ALGORITHMS.get(str(mdo.get("algorithm", "")))
            if algorithm is None:
                raise VerificationError(
                    f"{what}: unsupported digest algorithm {mdo.get('algorithm')!r}"
                )
            digest = _b64(mdo.get("digest"), f"{what}.messageDigest.digest")
        content = MessageSignature(
            algorithm=algorithm,
            digest=digest,
            signature=_b64(ms.get("signature"), f"{what}.messageSignature.signature"),
        )
    else:
        raise VerificationError(f"{what}: neither messageSignature nor dsseEnvelope")
    return ParsedBundle(
        media_type=media_type,
        certificate=certificate,
        chain=tuple(chain),
        key_hint=key_hint,
        tlog_entries=tuple(
            # bundles v0.2+ must prove inclusion (protobuf-specs); v0.1 may only promise it
            TlogEntry.from_json(e, f"{what}.tlogEntries[{i}]", proof_required=media_type != V01)
            for i, e in enumerate(entries)
        ),
        timestamps=tuple(
            _b64(_obj(s, what).get("signedTimestamp"), f"{what}.rfc3161Timestamps") for s in stamps
        ),
        content=content,
    )


def key_hint(spki_der: bytes) -> str:
    """Cosign's ``publicKey.hint``: base64 of SHA-256 over the SubjectPublicKeyInfo DER."""
    import hashlib

    return _e64(hashlib.sha256(spki_der).digest())


def statement(
    predicate_type: str,
    predicate: Mapping[str, Any],
    subjects: Sequence[Mapping[str, Any]],
) -> bytes:
    """An in-toto v1 statement, compact JSON in cosign's key order."""
    doc = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [dict(s) for s in subjects],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }
    return json.dumps(doc, separators=(",", ":")).encode()
