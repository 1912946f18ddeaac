"""An in-process RFC 3161 timestamp authority for offline tests (real crypto, no network).

It answers with a DER ``TimeStampResp`` as a Sigstore TSA does: a CMS
``SignedData`` over a ``TSTInfo`` (message imprint = SHA-256 of the stamped
bytes), signed attributes with the content type, message digest and an ESS
signing-certificate-v2, an ECDSA P-256 signature, and (optionally) the TSA's
certificate chain embedded. The DER is written by hand here (a dozen
structures), because no ASN.1 library is a dependency and rfc3161-client only
reads responses.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests._x509 import ca_certificate

SHA256 = "2.16.840.1.101.3.4.2.1"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
SIGNED_DATA = "1.2.840.113549.1.7.2"
TST_INFO = "1.2.840.113549.1.9.16.1.4"
CONTENT_TYPE = "1.2.840.113549.1.9.3"
MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"
POLICY = "1.3.6.1.4.1.57264.2"  # Sigstore's TSA policy arc


# -- DER ----------------------------------------------------------------------


def tlv(tag: int, body: bytes) -> bytes:
    """One DER element: tag, definite length, body."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def set_of(*items: bytes) -> bytes:
    return tlv(0x31, b"".join(sorted(items)))  # DER sorts SET OF by encoding


def integer(n: int) -> bytes:
    raw = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True)
    return tlv(0x02, raw)


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def explicit(n: int, body: bytes) -> bytes:
    return tlv(0xA0 + n, body)


def generalized_time(when: datetime) -> bytes:
    return tlv(0x18, when.astimezone(timezone.utc).strftime("%Y%m%d%H%M%SZ").encode())


def algorithm(dotted: str, *, null: bool = False) -> bytes:
    return seq(oid(dotted), b"\x05\x00") if null else seq(oid(dotted))


# -- the authority --------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class TimestampAuthority:
    """A TSA root and its timestamping leaf, like sigstore's timestamp-authority."""

    def __init__(
        self,
        name: str = "tsa",
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> None:
        start = not_before or _now() - timedelta(days=365)
        end = not_after or _now() + timedelta(days=3650)
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        root_name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.dev"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{name}-root"),
            ]
        )
        self.root = ca_certificate(
            root_name,
            self.root_key,
            root_name,
            self.root_key,
            path_length=0,
            not_before=start,
            not_after=end,
            algorithm=hashes.SHA384(),
        )
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.dev"),
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                    ]
                )
            )
            .issuer_name(root_name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
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
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()),
                critical=False,
            )
            .sign(self.root_key, hashes.SHA384())
        )
        self._serial = 0

    def chain_der(self) -> list[bytes]:
        """The chain as a trusted root lists it: leaf first, root last."""
        return [c.public_bytes(serialization.Encoding.DER) for c in (self.cert, self.root)]

    def timestamp(
        self,
        data: bytes,
        *,
        at: datetime | None = None,
        embed_certs: bool = True,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> bytes:
        """A DER ``TimeStampResp`` over ``data`` (granted) with genTime ``at`` (default now).

        ``signing_key`` signs with another key (an impostor TSA naming this one).
        """
        when = at or _now() - timedelta(seconds=2)
        self._serial += 1
        tst_info = seq(
            integer(1),
            oid(POLICY),
            seq(algorithm(SHA256, null=True), octets(hashlib.sha256(data).digest())),
            integer(self._serial),
            generalized_time(when),
        )
        cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        ess = seq(seq(seq(octets(hashlib.sha256(cert_der).digest()))))
        attrs = [
            seq(oid(CONTENT_TYPE), set_of(oid(TST_INFO))),
            seq(oid(MESSAGE_DIGEST), set_of(octets(hashlib.sha256(tst_info).digest()))),
            seq(oid(SIGNING_CERTIFICATE_V2), set_of(ess)),
        ]
        signed_attrs = set_of(*attrs)  # signed as a SET (0x31) ...
        key = signing_key or self.key
        signature = key.sign(signed_attrs, ec.ECDSA(hashes.SHA256()))
        issuer_and_serial = seq(self.root.subject.public_bytes(), integer(self.cert.serial_number))
        signer_info = seq(
            integer(1),
            issuer_and_serial,
            algorithm(SHA256, null=True),
            tlv(0xA0, signed_attrs[_header_len(signed_attrs) :]),  # ... stored as [0] IMPLICIT
            algorithm(ECDSA_SHA256),
            octets(signature),
        )
        certificates = (
            tlv(0xA0, b"".join(c.public_bytes(serialization.Encoding.DER) for c in (self.cert,)))
            if embed_certs
            else b""
        )
        signed_data = seq(
            integer(3),
            set_of(algorithm(SHA256, null=True)),
            seq(oid(TST_INFO), explicit(0, octets(tst_info))),
            certificates,
            set_of(signer_info),
        )
        token = seq(oid(SIGNED_DATA), explicit(0, signed_data))
        return seq(seq(integer(0)), token)


def _header_len(element: bytes) -> int:
    return 2 + (element[1] & 0x7F if element[1] & 0x80 else 0)
