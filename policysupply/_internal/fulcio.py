"""Fulcio signing certificates: identity claims, PEM/DER, path validation and the embedded SCT."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import attrs

from policysupply._internal import keys, sigstore_adapter
from policysupply._internal.sigstore_adapter import apply_timeouts as apply_timeouts
from policysupply._internal.sigstore_trust import TrustMaterial
from policysupply.errors import (
    CertificateError,
)

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.x509.verification import Store

# Fulcio's certificate extensions (1.3.6.1.4.1.57264.1.*), by the names cosign and
# sigstore-go use. The first five are raw strings (deprecated); the rest DER UTF8String.
FULCIO_OID = "1.3.6.1.4.1.57264.1"
EXTENSIONS = {
    "issuer": f"{FULCIO_OID}.1",
    "github_workflow_trigger": f"{FULCIO_OID}.2",
    "github_workflow_sha": f"{FULCIO_OID}.3",
    "github_workflow_name": f"{FULCIO_OID}.4",
    "github_workflow_repository": f"{FULCIO_OID}.5",
    "github_workflow_ref": f"{FULCIO_OID}.6",
    "issuer_v2": f"{FULCIO_OID}.8",
    "build_signer_uri": f"{FULCIO_OID}.9",
    "build_signer_digest": f"{FULCIO_OID}.10",
    "runner_environment": f"{FULCIO_OID}.11",
    "source_repository_uri": f"{FULCIO_OID}.12",
    "source_repository_digest": f"{FULCIO_OID}.13",
    "source_repository_ref": f"{FULCIO_OID}.14",
    "source_repository_identifier": f"{FULCIO_OID}.15",
    "source_repository_owner_uri": f"{FULCIO_OID}.16",
    "source_repository_owner_identifier": f"{FULCIO_OID}.17",
    "build_config_uri": f"{FULCIO_OID}.18",
    "build_config_digest": f"{FULCIO_OID}.19",
    "build_trigger": f"{FULCIO_OID}.20",
    "run_invocation_uri": f"{FULCIO_OID}.21",
    "source_repository_visibility_at_signing": f"{FULCIO_OID}.22",
}
_RAW_STRING_OIDS = {f"{FULCIO_OID}.{i}" for i in range(1, 7)}
OTHERNAME_OID = f"{FULCIO_OID}.7"
SCT_OID = "1.3.6.1.4.1.11129.2.4.2"


# -- certificates -------------------------------------------------------------


def _der_utf8(value: bytes) -> str | None:
    """The string in a DER UTF8String (tag 0x0C), or None if it is not one."""
    if len(value) < 2 or value[0] != 0x0C:
        return None
    n, off = value[1], 2
    if n & 0x80:
        width = n & 0x7F
        if width == 0 or width > 4 or len(value) < 2 + width:
            return None
        n, off = int.from_bytes(value[2 : 2 + width], "big"), 2 + width
    if len(value) != off + n:
        return None
    try:
        return value[off:].decode()
    except UnicodeDecodeError:
        return None


@attrs.frozen(kw_only=True)
class CertificateIdentity:
    """What a Fulcio certificate says about its holder.

    Attributes:
        issuer: The OIDC issuer (extension ``.1.8``; ``.1.1`` only when ``.1.8`` is absent).
        sans: Every Subject Alternative Name value (email, URI, DNS, IP,
            Fulcio OtherName username), in certificate order.
        extensions: Fulcio extension values by dotted OID.
        not_before: Start of validity (UTC).
        not_after: End of validity (UTC).
    """

    issuer: str | None
    sans: tuple[str, ...]
    extensions: Mapping[str, str]
    not_before: datetime
    not_after: datetime

    @property
    def subject(self) -> str:
        """The first SAN: what cosign prints as the certificate identity."""
        return self.sans[0] if self.sans else ""


def certificate_identity(cert: x509.Certificate) -> CertificateIdentity:
    """Reads the identity claims of a ``cryptography`` certificate.

    The issuer is the v2 extension (``.1.8``) when the certificate has it;
    only a certificate without it falls back to the deprecated ``.1.1``.

    Raises:
        CertificateError: The certificate has no Subject Alternative Name,
            or its ``.1.8`` issuer is empty or not a DER UTF8String.
    """
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("signing certificate has no Subject Alternative Name") from None
    sans: list[str] = []
    for name in san:
        if isinstance(name, x509.OtherName):
            if name.type_id.dotted_string == OTHERNAME_OID:
                text = _der_utf8(name.value)
                if text is not None:
                    sans.append(text)
        elif isinstance(name, x509.IPAddress):
            sans.append(str(name.value))
        elif isinstance(name, (x509.RFC822Name, x509.UniformResourceIdentifier, x509.DNSName)):
            sans.append(name.value)
    extensions: dict[str, str] = {}
    for ext in cert.extensions:
        oid = ext.oid.dotted_string
        if not oid.startswith(FULCIO_OID + ".") or not isinstance(
            ext.value, x509.UnrecognizedExtension
        ):
            continue
        raw = ext.value.value
        if oid in _RAW_STRING_OIDS:
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                text = None
        else:
            # Fulcio writes these as DER UTF8String only; anything else is not a claim
            text = _der_utf8(raw)
        if oid == EXTENSIONS["issuer_v2"] and not text:
            # the v2 issuer is authoritative: when present it must be a non-empty
            # UTF8String, never a reason to fall back to the deprecated .1.1
            raise CertificateError(
                f"signing certificate's OIDC issuer extension {oid} is empty or not a "
                "DER UTF8String"
            )
        if text is not None:
            extensions[oid] = text
    issuer = extensions.get(EXTENSIONS["issuer_v2"]) or extensions.get(EXTENSIONS["issuer"])
    return CertificateIdentity(
        issuer=issuer,
        sans=tuple(sans),
        extensions=extensions,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def load_certificate(der_or_pem: bytes, *, what: str = "certificate") -> x509.Certificate:
    """A ``cryptography`` certificate from DER or PEM.

    Raises:
        CertificateError: Not a certificate.
    """
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        if der_or_pem.lstrip().startswith(b"-----"):
            cert = x509.load_pem_x509_certificate(der_or_pem)
        else:
            cert = x509.load_der_x509_certificate(der_or_pem)
        # cryptography parses extensions and the public key on first use: a
        # malformed one (a bad SAN, a duplicate extension, a point not on the
        # curve) must fail here, not as a ValueError deep inside verification.
        cert.extensions  # noqa: B018
        cert.public_key()
    except (
        ValueError,
        UnsupportedAlgorithm,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
        x509.InvalidVersion,
    ):
        raise CertificateError(f"{what}: not a valid X.509 certificate") from None
    return cert


def pem_chain(data: bytes | str) -> list[bytes]:
    """DER certificates of a PEM bundle (cosign's chain annotation); bad blocks are skipped."""
    raw = data.encode() if isinstance(data, str) else data
    return [der for kind, der in keys.pem_blocks(raw) if kind == "CERTIFICATE"]


def certificate_pem(der: bytes) -> bytes:
    """PEM of a DER certificate, as Go writes it."""
    return keys.pem_encode("CERTIFICATE", der)


# -- certificate chain --------------------------------------------------------


def verify_chain(
    cert: x509.Certificate, at: datetime, trust: TrustMaterial, hints: Sequence[bytes]
) -> list[x509.Certificate]:
    """Path-validates a Fulcio leaf at ``at`` to a CA trusted then; returns issuer..root.

    Only the Fulcio CAs whose ``validFor`` window contains ``at`` are trust
    anchors: a CA the trusted root has retired does not vouch for
    certificates used after its end.

    Raises:
        CertificateError: No path to a Fulcio CA valid at ``at``, or no
            code-signing usage.
    """
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder
    from cryptography.x509.verification import VerificationError as X509Error

    # Fulcio leaves carry code-signing, not client-auth: allow any EKU in the
    # path validator and check code-signing below (as sigstore-python does).
    ca = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    intermediates = []
    for der in hints:
        try:
            hint = x509.load_der_x509_certificate(der)
            hint.extensions  # noqa: B018 - parsed lazily; a malformed one raises here
        except (
            ValueError,
            x509.DuplicateExtension,
            x509.UnsupportedGeneralNameType,
            x509.InvalidVersion,
        ):
            continue  # hints are untrusted: a bad one just does not help
        intermediates.append(hint)

    def path(store: Store) -> list[x509.Certificate]:
        verifier = (
            PolicyBuilder()
            .store(store)
            .time(at)
            .extension_policies(ca_policy=ca, ee_policy=ee)
            .build_client_verifier()
        )
        return list(verifier.verify(cert, intermediates).chain[1:])

    try:
        chain = path(trust.fulcio_store(at))
    except (X509Error, x509.UnsupportedGeneralNameType) as exc:
        retired = False
        try:
            path(trust.fulcio_store(None))
            retired = True
        except (CertificateError, X509Error, x509.UnsupportedGeneralNameType):
            pass
        if retired:
            raise CertificateError(
                f"signing certificate chains to a Fulcio CA of trusted root {trust.source} "
                f"that is outside its validity at {at.isoformat()}"
            ) from None
        raise CertificateError(
            f"signing certificate does not chain to a trusted Fulcio root ({trust.source}): {exc}"
        ) from None
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateError("signing certificate lacks key usage extensions") from None
    if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise CertificateError("signing certificate is not for code signing")
    return chain


def verify_sct(
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    trust: TrustMaterial,
    times: Sequence[datetime] = (),
) -> None:
    """Checks the certificate's embedded SCT against the CT log keys valid at ``times``.

    ``times`` are the verified signing times (the SCT's own timestamp is
    signed by the very key being judged, so it cannot decide).

    Raises:
        CertificateError: No SCT, no CT keys, an invalid SCT, or a CT key
            outside its validity.
    """
    if not trust.has_keys("ct"):
        raise CertificateError(
            f"trusted root {trust.source} has no CT log keys to check the certificate's SCT "
            "(set require_sct=False for a deployment without CT)"
        )
    trust.check_log_signature(
        "signing certificate's SCT",
        lambda ring: sigstore_adapter.verify_sct(cert, chain, ring),
        list(times) or [datetime.now(timezone.utc)],
        kind="ct",
        error=CertificateError,
    )
