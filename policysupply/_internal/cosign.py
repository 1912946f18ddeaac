"""cosign's signature formats as pure functions over bytes (spec: cosign-signatures.md)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from policysupply._internal import oci

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ANN_SIGNATURE = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
INTOTO = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
MAX_LAYERS = 1000
# A signed claim of when the signature was made (RFC 3339, UTC). It travels in
# the signed annotations, so only a trusted key can set it; verifiers use it
# for rollback ordering and freeze limits when no transparency-log time exists.
ANN_SIGNED_AT = "dev.policysupply/signed-at"


def sig_tag(digest: str) -> str:
    """Cosign's legacy signature tag for ``digest``: ``sha256-<hex>.sig``."""
    return oci.fallback_tag(digest) + ".sig"


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


def signature_config(layer_digests: list[str]) -> bytes:
    """The config blob cosign writes for a signature manifest (verifiers ignore it)."""
    epoch = "0001-01-01T00:00:00Z"
    doc = {
        "architecture": "",
        "created": epoch,
        "history": [{"created": epoch} for _ in layer_digests],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
        "config": {},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def signature_manifest(config: bytes, layers: list[dict[str, Any]]) -> bytes:
    """A legacy ``.sig`` manifest over ``layers`` (descriptor dicts)."""
    return oci.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST_V1,
            "config": oci.Descriptor.for_bytes(config, oci.CONFIG_V1).to_json(),
            "layers": layers,
        }
    )


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


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


def bundle_manifest(
    bundle: bytes, subject: oci.Descriptor, created: str, predicate_type: str
) -> tuple[bytes, bytes]:
    """``(manifest, config)`` attaching ``bundle`` to ``subject`` as cosign v3 does."""
    config = oci.EMPTY_JSON
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST_V1,
        "artifactType": BUNDLE_V03,
        "config": {**oci.Descriptor.for_bytes(config, oci.EMPTY_V1).to_json()},
        "layers": [oci.Descriptor.for_bytes(bundle, BUNDLE_V03).to_json()],
        "subject": subject.to_json(),
        "annotations": {
            oci.ANN_CREATED: created,
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": predicate_type,
        },
    }
    return oci.canonical_json(manifest), config
