"""policysupply: a supply chain for policy-as-code.

Build OPA bundles, push them to OCI registries, sign them the way cosign does,
and verify them before anything loads them.
"""

from __future__ import annotations

from policysupply.bundle import Bundle, Limits, Manifest
from policysupply.errors import (
    AuthenticationError,
    BundleError,
    DigestMismatchError,
    LoadError,
    NoSignatureError,
    NotFoundError,
    PolicySupplyError,
    RegistryError,
    RollbackError,
    SigningError,
    StaleSignatureError,
    ThresholdNotMetError,
    TransientRegistryError,
    UntrustedSignatureError,
    VerificationError,
)
from policysupply.gate import Decision, Gate
from policysupply.loaders import (
    OPA,
    BundleServer,
    BundleWatch,
    LoadResult,
    ServedBundle,
    fetch_verified,
    publish,
)
from policysupply.registry import (
    Credentials,
    Descriptor,
    Reference,
    Registry,
    RetryPolicy,
    Timeout,
)
from policysupply.signer import Signature, Signer
from policysupply.trust_state import AcceptedRecord, TrustState
from policysupply.verifier import (
    TrustPolicy,
    VerifiedArtifact,
    VerifiedBundle,
    VerifiedSignature,
    Verifier,
)

__version__ = "0.1.0"

__all__ = [
    "OPA",
    "BundleServer",
    "BundleWatch",
    "LoadResult",
    "ServedBundle",
    "fetch_verified",
    "publish",
    "Gate",
    "Decision",
    "Verifier",
    "VerifiedSignature",
    "VerifiedBundle",
    "VerifiedArtifact",
    "TrustPolicy",
    "TrustState",
    "AcceptedRecord",
    "StaleSignatureError",
    "Signer",
    "Signature",
    "AuthenticationError",
    "Bundle",
    "BundleError",
    "Credentials",
    "Descriptor",
    "DigestMismatchError",
    "Limits",
    "LoadError",
    "Manifest",
    "NoSignatureError",
    "NotFoundError",
    "PolicySupplyError",
    "Reference",
    "Registry",
    "RegistryError",
    "RetryPolicy",
    "RollbackError",
    "SigningError",
    "ThresholdNotMetError",
    "Timeout",
    "TransientRegistryError",
    "UntrustedSignatureError",
    "VerificationError",
    "__version__",
]
