"""policysupply: a supply chain for policy-as-code.

Build OPA bundles, push them to OCI registries, sign them the way cosign does,
and verify them before anything loads them.

Public names are imported on first use (PEP 562), so ``import policysupply``
costs almost nothing and a command that only verifies never loads the gate,
the OPA loader or the Sigstore client. Static type checkers and IDEs see the
ordinary imports below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from policysupply.errors import (
    AuthenticationError,
    BundleError,
    CertificateError,
    CertificateExpiredError,
    ClaimMismatchError,
    DigestMismatchError,
    EngineUnavailableError,
    FileDigestMismatchError,
    FutureSigningTimeError,
    IdentityMismatchError,
    InsecureTransportError,
    LoadError,
    MalformedSignatureError,
    MissingAttestationError,
    MissingSignedFileError,
    NoSignatureError,
    NotFoundError,
    PolicySupplyError,
    RegistryError,
    RollbackError,
    ScopeMismatchError,
    SignedContentError,
    SigningError,
    StaleSignatureError,
    ThresholdNotMetError,
    TransientRegistryError,
    TransparencyLogError,
    UnsafeExclusionError,
    UnsignedFileError,
    UnsupportedByEngineError,
    UntrustedSignatureError,
    VerificationError,
)

if TYPE_CHECKING:
    from policysupply.bundle import Bundle, Limits, Manifest
    from policysupply.gate import Decision, Gate
    from policysupply.identity import Identity
    from policysupply.loaders import (
        OPA,
        BundleServer,
        BundleWatch,
        LoadResult,
        ServedBundle,
        extract_verified,
        fetch_verified,
        publish,
    )
    from policysupply.native import (
        NativeKey,
        NativeSignature,
        NativeTrust,
        NativeVerification,
        verify_native,
    )
    from policysupply.registry import (
        Credentials,
        Descriptor,
        Reference,
        Registry,
        RetryPolicy,
        Timeout,
    )
    from policysupply.signer import Signature, Signer, SigstoreBundle
    from policysupply.trust_state import AcceptedRecord, TrustState
    from policysupply.verifier import (
        TrustPolicy,
        VerifiedArtifact,
        VerifiedAttestation,
        VerifiedBundle,
        VerifiedSignature,
        Verifier,
    )

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "Bundle": "bundle",
    "Limits": "bundle",
    "Manifest": "bundle",
    "Decision": "gate",
    "Gate": "gate",
    "Identity": "identity",
    "OPA": "loaders",
    "BundleServer": "loaders",
    "BundleWatch": "loaders",
    "LoadResult": "loaders",
    "ServedBundle": "loaders",
    "extract_verified": "loaders",
    "fetch_verified": "loaders",
    "publish": "loaders",
    "NativeKey": "native",
    "NativeSignature": "native",
    "NativeTrust": "native",
    "NativeVerification": "native",
    "verify_native": "native",
    "Credentials": "registry",
    "Descriptor": "registry",
    "Reference": "registry",
    "Registry": "registry",
    "RetryPolicy": "registry",
    "Timeout": "registry",
    "Signature": "signer",
    "Signer": "signer",
    "SigstoreBundle": "signer",
    "AcceptedRecord": "trust_state",
    "TrustState": "trust_state",
    "TrustPolicy": "verifier",
    "VerifiedArtifact": "verifier",
    "VerifiedAttestation": "verifier",
    "VerifiedBundle": "verifier",
    "VerifiedSignature": "verifier",
    "Verifier": "verifier",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'policysupply' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"policysupply.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "OPA",
    "AcceptedRecord",
    "AuthenticationError",
    "Bundle",
    "BundleError",
    "BundleServer",
    "BundleWatch",
    "CertificateError",
    "CertificateExpiredError",
    "ClaimMismatchError",
    "Credentials",
    "Decision",
    "Descriptor",
    "DigestMismatchError",
    "EngineUnavailableError",
    "FileDigestMismatchError",
    "FutureSigningTimeError",
    "Gate",
    "Identity",
    "IdentityMismatchError",
    "InsecureTransportError",
    "Limits",
    "LoadError",
    "LoadResult",
    "MalformedSignatureError",
    "Manifest",
    "MissingAttestationError",
    "MissingSignedFileError",
    "NativeKey",
    "NativeSignature",
    "NativeTrust",
    "NativeVerification",
    "NoSignatureError",
    "NotFoundError",
    "PolicySupplyError",
    "Reference",
    "Registry",
    "RegistryError",
    "RetryPolicy",
    "RollbackError",
    "ScopeMismatchError",
    "ServedBundle",
    "Signature",
    "SignedContentError",
    "Signer",
    "SigningError",
    "SigstoreBundle",
    "StaleSignatureError",
    "ThresholdNotMetError",
    "Timeout",
    "TransientRegistryError",
    "TransparencyLogError",
    "TrustPolicy",
    "TrustState",
    "UnsafeExclusionError",
    "UnsignedFileError",
    "UnsupportedByEngineError",
    "UntrustedSignatureError",
    "VerificationError",
    "VerifiedArtifact",
    "VerifiedAttestation",
    "VerifiedBundle",
    "VerifiedSignature",
    "Verifier",
    "__version__",
    "extract_verified",
    "fetch_verified",
    "publish",
    "verify_native",
]
