"""What cosign signs (payloads, statements, key bundles) as pure functions over bytes.

Spec: cosign-signatures.md. Where the results are stored is
:mod:`policysupply._internal.cosign_storage`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

# Where signatures are stored (tags, manifests, media types) is
# cosign_storage's; its names stay importable from here, as does DSSE's PAE.
from policysupply._internal.cosign_storage import (
    ANN_SIGNATURE,
    BUNDLE_PREFIX,
    BUNDLE_V03,
    INTOTO,
    MAX_LAYERS,
    SIGN_PREDICATE,
    SIMPLESIGNING,
    bundle_manifest,
    sig_tag,
    signature_config,
    signature_manifest,
)

SIGNATURE_TYPE = "cosign container image signature"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
# A signed claim of when the signature was made (RFC 3339, UTC). It travels in
# the signed annotations, so only a trusted key can set it; verifiers use it
# for rollback ordering and freeze limits when no transparency-log time exists.
ANN_SIGNED_AT = "dev.policysupply/signed-at"

__all__ = [
    "ANN_SIGNATURE",
    "ANN_SIGNED_AT",
    "BUNDLE_PREFIX",
    "BUNDLE_V03",
    "INTOTO",
    "MAX_LAYERS",
    "SIGNATURE_TYPE",
    "SIGN_PREDICATE",
    "SIMPLESIGNING",
    "STATEMENT_V1",
    "bundle_manifest",
    "key_bundle",
    "pae",
    "sig_tag",
    "sign_statement",
    "signature_config",
    "signature_manifest",
    "simple_signing_payload",
]


def simple_signing_payload(
    docker_reference: str, digest: str, annotations: Mapping[str, str] | None
) -> bytes:
    """The payload cosign signs (compact JSON, cosign's key order)."""
    optional = dict(sorted(annotations.items())) if annotations else None
    doc = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": optional,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def sign_statement(
    digest: str, annotations: Mapping[str, str] | None, *, name: str | None = None
) -> bytes:
    """Cosign v3's in-toto statement for signing an image digest.

    cosign 3 itself names only the digest (and ``-a`` annotations). ``name``
    adds the in-toto subject's ``name``: the repository the signature is for,
    the bundle scheme's counterpart of the legacy ``docker-reference``;
    cosign 3 verifies the statement and ignores the name.
    """
    subject: dict[str, Any] = {"name": name} if name else {}
    subject["digest"] = {"sha256": digest.split(":", 1)[1]}
    if annotations:
        subject["annotations"] = dict(sorted(annotations.items()))
    doc = {
        "_type": STATEMENT_V1,
        "subject": [subject],
        "predicateType": SIGN_PREDICATE,
        "predicate": {},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def key_bundle(statement: bytes, signature: bytes, spki_sha256: bytes) -> bytes:
    """A Sigstore bundle v0.3 (DSSE content, public-key material, no tlog)."""
    b64 = base64.b64encode
    doc = {
        "mediaType": BUNDLE_V03,
        "verificationMaterial": {"publicKey": {"hint": b64(spki_sha256).decode()}},
        "dsseEnvelope": {
            "payload": b64(statement).decode(),
            "payloadType": INTOTO,
            "signatures": [{"sig": b64(signature).decode()}],
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding (``sigstore_bundle.pae``; that module loads on demand)."""
    from policysupply._internal.sigstore_bundle import pae as encode

    return encode(payload_type, payload)
