"""The policysupply error tree.

Everything policysupply raises on purpose derives from :class:`PolicySupplyError`,
so callers can catch one type at the boundary of their tool and still branch on
the precise failure below it::

    PolicySupplyError
    ├── BundleError
    │   ├── UnsupportedByEngineError
    │   └── EngineUnavailableError
    ├── RegistryError
    │   ├── NotFoundError
    │   ├── AuthenticationError
    │   ├── InsecureTransportError
    │   └── TransientRegistryError
    ├── SigningError
    ├── VerificationError
    │   ├── NoSignatureError
    │   │   └── MissingAttestationError
    │   ├── UntrustedSignatureError
    │   │   └── IdentityMismatchError
    │   ├── CertificateError
    │   │   └── CertificateExpiredError
    │   ├── TransparencyLogError
    │   ├── ClaimMismatchError
    │   │   ├── ScopeMismatchError
    │   │   └── FutureSigningTimeError
    │   ├── ThresholdNotMetError
    │   ├── DigestMismatchError
    │   │   └── FileDigestMismatchError (also a SignedContentError)
    │   ├── SignedContentError
    │   │   ├── UnsignedFileError
    │   │   ├── MissingSignedFileError
    │   │   └── FileDigestMismatchError
    │   ├── MalformedSignatureError
    │   ├── UnsafeExclusionError
    │   ├── RollbackError
    │   └── StaleSignatureError
    ├── LoadError
    └── AdmissionConfigError

Messages say what failed, on which file or reference, and what to do about it.
They never contain secrets.
"""

from __future__ import annotations

__all__ = [
    "AdmissionConfigError",
    "AuthenticationError",
    "BundleError",
    "CertificateError",
    "ClaimMismatchError",
    "CertificateExpiredError",
    "DigestMismatchError",
    "EngineUnavailableError",
    "FileDigestMismatchError",
    "FutureSigningTimeError",
    "MalformedSignatureError",
    "MissingSignedFileError",
    "IdentityMismatchError",
    "InsecureTransportError",
    "LoadError",
    "MissingAttestationError",
    "NoSignatureError",
    "NotFoundError",
    "PolicySupplyError",
    "RegistryError",
    "RollbackError",
    "ScopeMismatchError",
    "SignedContentError",
    "SigningError",
    "StaleSignatureError",
    "ThresholdNotMetError",
    "TransientRegistryError",
    "TransparencyLogError",
    "UnsafeExclusionError",
    "UnsignedFileError",
    "UntrustedSignatureError",
    "VerificationError",
    "UnsupportedByEngineError",
]


class PolicySupplyError(Exception):
    """Base class of every error policysupply raises on purpose."""


class BundleError(PolicySupplyError):
    """A bundle could not be read, built or checked.

    Attributes:
        entry: The bundle entry (tar member or file path relative to the bundle
            root) the problem is in, when there is one.
        line: 1-based line in ``entry``, for Rego and data parse errors.
        column: 1-based column in ``entry``, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        entry: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.entry = entry
        self.line = line
        self.column = column
        where = ""
        if entry is not None:
            where = entry
            if line is not None:
                where += f":{line}"
                if column is not None:
                    where += f":{column}"
            where += ": "
        super().__init__(f"{where}{message}")
        self.reason = message


class UnsupportedByEngineError(BundleError):
    """The selected Rego engine cannot answer exactly as OPA would.

    The embedded engine raises it for builtins, strings, numbers and
    constructs it would evaluate differently, and for Rego v0 (the OPA engine
    answers those). Both raise it for a bundle whose manifest maps
    entrypoints to Wasm modules, which OPA evaluates with its Wasm runtime.
    """


class EngineUnavailableError(BundleError):
    """The requested Rego engine cannot run here (e.g. no ``opa`` binary found)."""


class RegistryError(PolicySupplyError):
    """A registry or OCI layout operation failed."""


class NotFoundError(RegistryError):
    """The reference, manifest or blob does not exist."""


class AuthenticationError(RegistryError):
    """The registry refused the credentials (or needed some and got none)."""


class InsecureTransportError(RegistryError):
    """Plain HTTP where it was not allowed (a configuration problem, never retried).

    An ``http://`` registry without ``insecure=True``, or an https registry
    (or its token service) redirecting to plain HTTP.
    """


class TransientRegistryError(RegistryError):
    """The registry failed in a way that may succeed later (after retries ran out)."""


class SigningError(PolicySupplyError):
    """A signature could not be made, or a key could not be read or written."""


class VerificationError(PolicySupplyError):
    """An artifact failed verification. Nothing from it may be used."""


class NoSignatureError(VerificationError):
    """The artifact carries no signature at all."""


class MissingAttestationError(NoSignatureError):
    """The policy requires an attestation of a predicate type the artifact does not carry."""


class UntrustedSignatureError(VerificationError):
    """Signatures exist, but none is valid from a trusted key or identity."""


class IdentityMismatchError(UntrustedSignatureError):
    """A keyless signature is valid, but its certificate names no trusted identity.

    Wrong OIDC issuer, wrong subject (including a regex that matches only part
    of it), or a certificate extension claim (workflow repository, ref, ...)
    that differs from the policy.
    """


class CertificateError(VerificationError):
    """A signing certificate does not chain to the trusted root, or breaks its profile.

    Untrusted CA, missing code-signing usage, or an invalid embedded SCT.
    """


class CertificateExpiredError(CertificateError):
    """The signing time (transparency log or timestamp) is outside the certificate's validity."""


class TransparencyLogError(VerificationError):
    """The transparency log entry is missing, unverifiable, or describes other material.

    A missing entry, a bad signed entry timestamp or inclusion proof, or a
    body whose signature, key or digest differs from the signature checked.
    """


class ClaimMismatchError(VerificationError):
    """A trusted signature's signed claims do not fit the artifact being verified.

    The signed digest, ``docker-reference`` or a required annotation differs:
    for example a valid signature copied from another image (mix-and-match),
    or one made for another repository or environment.
    """


class ScopeMismatchError(ClaimMismatchError):
    """An OPA-native signature was made for another scope than the one required.

    OPA compares the token's ``scope`` claim with the configured scope (the
    bundle's ``signing.scope``, else the key's ``scope``); both unset also match.
    """


class FutureSigningTimeError(ClaimMismatchError):
    """A trusted signature claims a signing time further ahead of our clock than skew allows.

    Such a claim is false (or the signer's clock is wrong). Accepted, it would
    pass ``max_signature_age`` until long after the signature was made, and
    block every later release in a ``TrustState`` ("signing time must not go
    back"). The allowed skew is five minutes.
    """


class ThresholdNotMetError(VerificationError):
    """Fewer distinct trusted signers than the policy's threshold."""


class DigestMismatchError(VerificationError):
    """Content did not hash to the digest it was addressed by."""


class SignedContentError(VerificationError):
    """A bundle's files differ from the file list its OPA-native signature covers.

    Attributes:
        entry: The bundle file (relative to the bundle root) that differs.
    """

    def __init__(self, message: str, *, entry: str) -> None:
        self.entry = entry
        super().__init__(f"{entry}: {message}")


class UnsignedFileError(SignedContentError):
    """A file is in the bundle but not in its signature's file list (it was added)."""


class MissingSignedFileError(SignedContentError):
    """A file the signature lists is not in the bundle (it was removed)."""


class FileDigestMismatchError(SignedContentError, DigestMismatchError):
    """A file's hash differs from the one its signature lists (it was changed)."""


class MalformedSignatureError(VerificationError):
    """The bundle's ``.signatures.json`` or a token in it cannot be read as OPA writes it.

    Not JSON, not a compact JWS, a second signatures file, a signing plugin
    other than OPA's default, an unknown or (by default) weak file hash.
    """


class UnsafeExclusionError(VerificationError):
    """``exclude_files`` would leave a file OPA loads (Rego, data, manifest, wasm) unverified."""


class RollbackError(VerificationError):
    """An older revision, or different content under a known revision, was offered."""


class StaleSignatureError(VerificationError):
    """Trusted signatures are older than the policy's maximum age (a freeze attack).

    Also raised when the policy sets a maximum age and no trusted signature
    carries a signing time its signer produced to check it against (a log or
    timestamp time proves only that a signature existed by then).
    """


class LoadError(PolicySupplyError):
    """A verified bundle could not be loaded into its destination."""


class AdmissionConfigError(PolicySupplyError):
    """The admission service's configuration file is missing, malformed or inconsistent."""
