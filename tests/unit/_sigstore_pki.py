"""An in-process Sigstore for offline unit tests: a Fulcio-like CA, a CT log, a Rekor-like log.

It issues certificates with Fulcio's extensions and a real embedded SCT, logs
entries with real signed entry timestamps, Merkle inclusion proofs and signed
checkpoints, and writes a ``trusted_root.json`` that sigstore-python loads.
Everything is real cryptography; the only shortcut is that there is no network
(the interop tests run the real services). Fault injection (expired
certificates, foreign CAs, bad SETs) is done by asking for it explicitly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from policysupply._internal import sigstore_bundle as sb
from tests._x509 import ca_certificate, spki_der
from tests.unit._tsa import TimestampAuthority, tlv

# A trusted-root validity window: (start, end); None leaves the end open.
Window = tuple[datetime, datetime | None]
OPEN: Window = (datetime(2020, 1, 1, tzinfo=timezone.utc), None)
ORIGIN = "fake-rekor.example"  # the log's checkpoint origin and signer name (no spaces: C2SP)

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
FULCIO = "1.3.6.1.4.1.57264.1"


def _utf8(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class CA:
    """A root and an intermediate, like Fulcio's chain."""

    def __init__(self, name: str = "sigstore") -> None:
        start = _now() - timedelta(days=365)
        end = _now() + timedelta(days=3650)
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        root_name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.dev"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        self.root = ca_certificate(
            root_name,
            self.root_key,
            root_name,
            self.root_key,
            path_length=1,
            not_before=start,
            not_after=end,
            algorithm=hashes.SHA384(),
        )
        self.key = ec.generate_private_key(ec.SECP384R1())
        inter_name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.dev"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{name}-intermediate"),
            ]
        )
        self.cert = ca_certificate(
            inter_name,
            self.key,
            root_name,
            self.root_key,
            path_length=0,
            not_before=start,
            not_after=end,
            algorithm=hashes.SHA384(),
            code_signing=True,
            authority_key_id=True,
        )

    def chain_der(self) -> list[bytes]:
        return [c.public_bytes(serialization.Encoding.DER) for c in (self.cert, self.root)]

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, self.root))


class FakeSigstore:
    """CA + CT log + transparency log, with a trusted root describing them."""

    def __init__(self) -> None:
        self.ca = CA()
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.log_key = ec.generate_private_key(ec.SECP256R1())
        self.log_id = hashlib.sha256(spki_der(self.log_key)).digest()
        self.tsa = TimestampAuthority()
        self.leaves: list[bytes] = []

    # -- trusted root --------------------------------------------------------

    def trusted_root(
        self,
        *,
        ct: bool = True,
        tlog: bool = True,
        tsa: bool = True,
        extra_cas: list[CA] | None = None,
        extra_logs: list[Any] | None = None,
        tsas: list[TimestampAuthority] | None = None,
        ca_window: Window = OPEN,
        tlog_window: Window = OPEN,
        ct_window: Window = OPEN,
        tsa_window: Window = OPEN,
    ) -> dict[str, Any]:
        """The trusted root; each ``*_window`` is that service's ``validFor``."""

        def valid_for(window: Window) -> dict[str, str]:
            out = {"start": _rfc3339(window[0])}
            if window[1] is not None:
                out["end"] = _rfc3339(window[1])
            return out

        def key(k: Any, details: str, window: Window) -> dict[str, Any]:
            return {
                "rawBytes": base64.b64encode(spki_der(k)).decode(),
                "keyDetails": details,
                "validFor": valid_for(window),
            }

        def log(k: Any, url: str, window: Window) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": key(k, "PKIX_ECDSA_P256_SHA_256", window),
                "logId": {"keyId": base64.b64encode(hashlib.sha256(spki_der(k)).digest()).decode()},
            }

        def chain(ders: list[bytes]) -> dict[str, Any]:
            return {"certificates": [{"rawBytes": base64.b64encode(d).decode()} for d in ders]}

        cas = [self.ca, *(extra_cas or [])]
        logs = [self.log_key, *(extra_logs or [])]
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(k, "http://127.0.0.1:1/rekor", tlog_window) for k in logs]
            if tlog
            else [],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "sigstore.dev", "commonName": "sigstore"},
                    "uri": "http://127.0.0.1:1/fulcio",
                    "certChain": chain(ca.chain_der()),
                    "validFor": valid_for(ca_window),
                }
                for ca in cas
            ],
            "ctlogs": [log(self.ct_key, "http://127.0.0.1:1/ct", ct_window)] if ct else [],
            "timestampAuthorities": [
                {
                    "subject": {"organization": "sigstore.dev", "commonName": "tsa"},
                    "uri": "http://127.0.0.1:1/tsa",
                    "certChain": chain(authority.chain_der()),
                    "validFor": valid_for(tsa_window),
                }
                for authority in (tsas if tsas is not None else [self.tsa])
            ]
            if tsa
            else [],
        }

    def write_trusted_root(self, path: Path, **kwargs: Any) -> Path:
        path.write_text(json.dumps(self.trusted_root(**kwargs)))
        return path

    # -- certificates --------------------------------------------------------

    def issue(
        self,
        *,
        subject: str = "https://github.com/acme/policies/.github/workflows/release.yml@refs/heads/main",
        issuer: str = GITHUB_ISSUER,
        extensions: Mapping[str, str] | None = None,
        not_before: datetime | None = None,
        lifetime: timedelta = timedelta(minutes=10),
        ca: CA | None = None,
        sct: bool = True,
        sct_extensions: bytes = b"",
        code_signing: bool = True,
        raw_extensions: Mapping[str, bytes] | None = None,
        issuer_v2: bool = True,
    ) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        """A Fulcio-like leaf: ``(private key, certificate DER)``.

        ``raw_extensions`` adds extensions with exactly the given DER value
        bytes; ``issuer_v2=False`` leaves out the v2 issuer (``.1.8``) that
        ``issuer`` would otherwise also be written to.
        """
        ca = ca or self.ca
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or _now() - timedelta(minutes=1)
        san: x509.GeneralName = (
            x509.RFC822Name(subject)
            if "@" in subject and "://" not in subject
            else x509.UniformResourceIdentifier(subject)
        )
        eku = ExtendedKeyUsageOID.CODE_SIGNING if code_signing else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{FULCIO}.1"), issuer.encode()),
                critical=False,
            )
        )
        if issuer_v2:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{FULCIO}.8"), _utf8(issuer)),
                critical=False,
            )
        for oid, raw_value in (raw_extensions or {}).items():
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), raw_value), critical=False
            )
        for oid, value in (extensions or {}).items():
            raw = value.encode() if int(oid.rsplit(".", 1)[1]) <= 6 else _utf8(value)
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), raw), critical=False
            )
        if sct:
            precert = builder.sign(ca.key, hashes.SHA384())
            builder = builder.add_extension(
                x509.UnrecognizedExtension(
                    x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2"),
                    self._sct_extension(precert, ca, start, sct_extensions),
                ),
                critical=False,
            )
        cert = builder.sign(ca.key, hashes.SHA384())
        return key, cert.public_bytes(serialization.Encoding.DER)

    def _sct_extension(
        self, precert: x509.Certificate, ca: CA, when: datetime, extensions: bytes = b""
    ) -> bytes:
        issuer_hash = hashlib.sha256(spki_der(ca.key)).digest()
        tbs = precert.tbs_certificate_bytes
        ms = int(when.timestamp() * 1000)
        signed = (
            struct.pack("!BBQH", 0, 0, ms, 1)
            + issuer_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + struct.pack("!H", len(extensions))
            + extensions
        )
        sig = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        log_id = hashlib.sha256(spki_der(self.ct_key)).digest()
        sct = (
            struct.pack("!B", 0)
            + log_id
            + struct.pack("!QH", ms, len(extensions))
            + extensions
            + struct.pack("!BBH", 4, 3, len(sig))
            + sig
        )
        lst = struct.pack("!H", len(sct)) + sct
        lst = struct.pack("!H", len(lst)) + lst
        return tlv(0x04, lst)  # DER OCTET STRING around the TLS list

    # -- transparency log ----------------------------------------------------

    @staticmethod
    def _leaf(data: bytes) -> bytes:
        return hashlib.sha256(b"\x00" + data).digest()

    @staticmethod
    def _node(a: bytes, b: bytes) -> bytes:
        return hashlib.sha256(b"\x01" + a + b).digest()

    def _root(self, leaves: list[bytes]) -> bytes:
        if len(leaves) == 1:
            return leaves[0]
        k = 1
        while k * 2 < len(leaves):
            k *= 2
        return self._node(self._root(leaves[:k]), self._root(leaves[k:]))

    def _path(self, index: int, leaves: list[bytes]) -> list[bytes]:
        if len(leaves) <= 1:
            return []
        k = 1
        while k * 2 < len(leaves):
            k *= 2
        if index < k:
            return [*self._path(index, leaves[:k]), self._root(leaves[k:])]
        return [*self._path(index - k, leaves[k:]), self._root(leaves[:k])]

    def log(
        self,
        body: Mapping[str, Any],
        *,
        integrated_time: int | None = None,
        proof: bool = True,
        promise: bool = True,
        log_key: Any = None,
        timed: bool = True,
        kind: tuple[str, str] | None = None,
    ) -> sb.TlogEntry:
        """Appends an entry; returns it with SET and/or inclusion proof + checkpoint.

        ``timed=False`` records no integration time (and so no SET): a Rekor
        v2 entry. ``log_key`` signs SET and checkpoint with another key.
        """
        log_key = log_key or self.log_key
        raw = json.dumps(body, separators=(",", ":")).encode()
        self.leaves.append(raw)
        index = len(self.leaves) - 1
        when = integrated_time if integrated_time is not None else int(_now().timestamp()) - 5
        promise = promise and timed
        set_ = None
        if promise:
            payload = {
                "body": base64.b64encode(raw).decode(),
                "integratedTime": when,
                "logID": self.log_id.hex(),
                "logIndex": index,
            }
            set_ = log_key.sign(rfc8785.dumps(payload), ec.ECDSA(hashes.SHA256()))
        inclusion = None
        if proof:
            hashed = [self._leaf(x) for x in self.leaves]
            root = self._root(hashed)
            note = f"{ORIGIN}\n{len(hashed)}\n{base64.b64encode(root).decode()}\n"
            inclusion = sb.InclusionProof(
                log_index=index,
                root_hash=root,
                tree_size=len(hashed),
                hashes=tuple(self._path(index, hashed)),
                checkpoint=self.signed_note(note, [(ORIGIN, log_key, self.log_id[:4])]),
            )
        kind = kind or (str(body["kind"]), str(body["apiVersion"]))
        return sb.TlogEntry(
            log_index=index,
            log_id=self.log_id,
            kind=kind[0],
            version=kind[1],
            integrated_time=when if timed else None,
            signed_entry_timestamp=set_,
            inclusion_proof=inclusion,
            body=raw,
        )

    @staticmethod
    def signed_note(note: str, signers: list[tuple[str, Any, bytes]]) -> str:
        """A C2SP signed note: ``note``, a blank line, one ``— name base64(hint+sig)`` per signer.

        Each signer is ``(name, private key, 4-byte key hint)``; ECDSA keys sign
        with SHA-256, as Rekor does.
        """
        lines = []
        for name, key, hint in signers:
            sig = key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
            lines.append(f"\u2014 {name} {base64.b64encode(hint + sig).decode()}\n")
        return f"{note}\n{''.join(lines)}"

    # -- signing -------------------------------------------------------------

    @staticmethod
    def hashedrekord(data_sha256: bytes, signature: bytes, verifier_pem: bytes) -> dict[str, Any]:
        return {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": data_sha256.hex()}},
                "signature": {
                    "content": base64.b64encode(signature).decode(),
                    "publicKey": {"content": base64.b64encode(verifier_pem).decode()},
                },
            },
        }

    @staticmethod
    def hashedrekord_v2(
        digest: bytes,
        signature: bytes,
        *,
        cert_der: bytes | None = None,
        key_der: bytes | None = None,
    ) -> dict[str, Any]:
        """A Rekor v2 ``hashedrekord`` 0.0.2 body (also what v2 logs for DSSE: the PAE hash)."""
        verifier: dict[str, Any] = {"keyDetails": "PKIX_ECDSA_P256_SHA_256"}
        if cert_der is not None:
            verifier["x509Certificate"] = {"rawBytes": base64.b64encode(cert_der).decode()}
        else:
            verifier["publicKey"] = {"rawBytes": base64.b64encode(key_der or b"").decode()}
        return {
            "apiVersion": "0.0.2",
            "kind": "hashedrekord",
            "spec": {
                "hashedRekordV002": {
                    "data": {"algorithm": "SHA2_256", "digest": base64.b64encode(digest).decode()},
                    "signature": {
                        "content": base64.b64encode(signature).decode(),
                        "verifier": verifier,
                    },
                }
            },
        }

    @staticmethod
    def intoto_entry(
        envelope: sb.Envelope, envelope_json: bytes, verifier_pem: bytes
    ) -> dict[str, Any]:
        """A Rekor v1 ``intoto`` 0.0.2 body (signatures double-base64, as Rekor stores them)."""
        return {
            "apiVersion": "0.0.2",
            "kind": "intoto",
            "spec": {
                "content": {
                    "envelope": {
                        "payloadType": envelope.payload_type,
                        "signatures": [
                            {
                                "sig": base64.b64encode(base64.b64encode(s)).decode(),
                                "publicKey": base64.b64encode(verifier_pem).decode(),
                            }
                            for s in envelope.signatures
                        ],
                    },
                    "hash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(envelope_json).hexdigest(),
                    },
                    "payloadHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(envelope.payload).hexdigest(),
                    },
                }
            },
        }

    @staticmethod
    def dsse_entry(
        envelope: sb.Envelope, envelope_json: bytes, verifier_pem: bytes
    ) -> dict[str, Any]:
        return {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(envelope_json).hexdigest(),
                },
                "payloadHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(envelope.payload).hexdigest(),
                },
                "signatures": [
                    {
                        "signature": base64.b64encode(s).decode(),
                        "verifier": base64.b64encode(verifier_pem).decode(),
                    }
                    for s in envelope.signatures
                ],
            },
        }


class FakeBackend:
    """Stands in for sigstore-python's signer in unit tests: same outputs, no network."""

    def __init__(self, sigstore: FakeSigstore, **issue: Any) -> None:
        self.sigstore = sigstore
        self.key, self.cert = sigstore.issue(**issue)
        self.cert_pem = x509.load_der_x509_certificate(self.cert).public_bytes(
            serialization.Encoding.PEM
        )

    def sign_artifact(self, data: bytes) -> sb.ParsedBundle:
        sig = self.key.sign(data, ec.ECDSA(hashes.SHA256()))
        digest = hashlib.sha256(data).digest()
        entry = self.sigstore.log(FakeSigstore.hashedrekord(digest, sig, self.cert_pem))
        return sb.ParsedBundle(
            media_type=sb.BUNDLE_V03,
            certificate=self.cert,
            tlog_entries=(entry,),
            content=sb.MessageSignature(algorithm="sha256", digest=digest, signature=sig),
        )

    def sign_dsse(self, statement: bytes) -> sb.ParsedBundle:
        return self.sign_dsse_envelope(statement)[0]

    def sign_dsse_envelope(self, statement: bytes) -> tuple[sb.ParsedBundle, bytes]:
        pae = sb.pae(sb.INTOTO, statement)
        sig = self.key.sign(pae, ec.ECDSA(hashes.SHA256()))
        env = sb.Envelope(payload_type=sb.INTOTO, payload=statement, signatures=(sig,))
        env_json = json.dumps(env.to_json(), separators=(",", ":")).encode()
        entry = self.sigstore.log(FakeSigstore.dsse_entry(env, env_json, self.cert_pem))
        bundle = sb.ParsedBundle(
            media_type=sb.BUNDLE_V03, certificate=self.cert, tlog_entries=(entry,), content=env
        )
        return bundle, env_json

    def chain_pem(self, leaf_der: bytes) -> bytes:
        return self.sigstore.ca.chain_pem()

    def timestamp(self, data: bytes) -> bytes | None:
        return None  # no timestamp authority in the fake

    @property
    def identity(self) -> str:
        return "fake"


SLSA = "https://slsa.dev/provenance/v1"


def blob_bundle(
    fake: FakeSigstore,
    data: bytes,
    *,
    dsse: bool = False,
    rekor: str | None = "v1",
    log: Mapping[str, Any] | None = None,
    stamp: bool | datetime | None = None,
    media_type: str = sb.BUNDLE_V03,
    key: ec.EllipticCurvePrivateKey | None = None,
    issued: tuple[ec.EllipticCurvePrivateKey, bytes] | None = None,
    tsa: TimestampAuthority | None = None,
    predicate: Mapping[str, Any] | None = None,
    **issue: Any,
) -> sb.ParsedBundle:
    """A Sigstore bundle over ``data`` as a Sigstore client would make it.

    Args:
        fake: The in-process Sigstore.
        data: The artifact.
        dsse: Sign an in-toto statement naming ``data`` (DSSE) instead of ``data``.
        rekor: ``"v1"`` (hashedrekord/dsse 0.0.1 with SET and proof), ``"v1-intoto"``
            (intoto 0.0.2 entry), ``"v2"`` (hashedrekord 0.0.2, proof only, no time),
            or None (no log entry).
        log: Extra arguments for :meth:`FakeSigstore.log`.
        stamp: Add an RFC 3161 timestamp over the signature (at this time, if a
            datetime); None: only for Rekor v2 entries, which carry no time.
        media_type: The bundle's media type.
        key: Sign with this key (a key-signed bundle) instead of a Fulcio certificate.
        issued: Sign with this ``(key, certificate DER)`` from :meth:`FakeSigstore.issue`.
        tsa: The timestamp authority (default: ``fake.tsa``).
        predicate: The in-toto predicate (DSSE).
        issue: Arguments for :meth:`FakeSigstore.issue`.
    """
    cert: bytes | None = None
    if issued is not None:
        key, cert = issued
    if key is None:
        key, cert = fake.issue(**issue)
    if cert is not None:
        pem = x509.load_der_x509_certificate(cert).public_bytes(serialization.Encoding.PEM)
    else:
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    digest = hashlib.sha256(data).digest()
    content: sb.MessageSignature | sb.Envelope
    if dsse:
        subject = [{"name": "blob", "digest": {"sha256": digest.hex()}}]
        statement = sb.statement(SLSA, predicate or {}, subject)
        sig = key.sign(sb.pae(sb.INTOTO, statement), ec.ECDSA(hashes.SHA256()))
        content = sb.Envelope(payload_type=sb.INTOTO, payload=statement, signatures=(sig,))
        env_json = json.dumps(content.to_json(), separators=(",", ":")).encode()
        signed_digest = hashlib.sha256(content.pae()).digest()
    else:
        sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
        content = sb.MessageSignature(algorithm="sha256", digest=digest, signature=sig)
        signed_digest = digest
    body: dict[str, Any] | None = None
    if rekor == "v2":
        body = FakeSigstore.hashedrekord_v2(
            signed_digest, sig, cert_der=cert, key_der=None if cert else spki_der(key)
        )
    elif rekor == "v1-intoto":
        assert isinstance(content, sb.Envelope)
        body = FakeSigstore.intoto_entry(content, env_json, pem)
    elif rekor == "v1":
        body = (
            FakeSigstore.dsse_entry(content, env_json, pem)
            if isinstance(content, sb.Envelope)
            else FakeSigstore.hashedrekord(digest, sig, pem)
        )
    entries = ()
    if body is not None:
        entries = (fake.log(body, **{"timed": rekor != "v2", **(log or {})}),)
    stamps: tuple[bytes, ...] = ()
    if stamp is None:
        stamp = rekor == "v2"
    if stamp:
        at = stamp if isinstance(stamp, datetime) else None
        stamps = ((tsa or fake.tsa).timestamp(sig, at=at),)
    return sb.ParsedBundle(
        media_type=media_type,
        certificate=cert,
        key_hint=None if cert else sb.key_hint(spki_der(key)),
        tlog_entries=entries,
        timestamps=stamps,
        content=content,
    )
