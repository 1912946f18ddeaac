"""Where cosign keeps signatures and attestations in a registry: the one module that knows.

Three places, for a subject digest ``sha256:<hex>`` (spec: cosign-signatures.md):

- the legacy ``sha256-<hex>.sig`` tag: an image manifest with one
  simple-signing payload layer per signature, the signature (and, keyless, the
  certificate, chain, Rekor entry and timestamp) in layer annotations;
- the legacy ``sha256-<hex>.att`` tag: one DSSE envelope layer per attestation;
- Sigstore bundles attached as OCI referrers of the subject (cosign 3), found
  through the referrers API or, on registries without it, the ``sha256-<hex>``
  fallback tag (``Registry.referrers`` handles that fallback).

``Signer`` writes through this module and ``Verifier`` reads through it. Reading
returns :class:`Candidate` values (every byte already fetched); nothing here
checks a signature: that is ``policysupply._checks``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from policysupply._internal import oci
from policysupply.errors import (
    DigestMismatchError,
    NotFoundError,
    RegistryError,
    SigningError,
    TransientRegistryError,
    VerificationError,
)

if TYPE_CHECKING:
    from policysupply._internal import sigstore_bundle as sb
    from policysupply._internal.oci import Descriptor, Reference


class Registry(Protocol):
    """What this module needs of a ``policysupply.Registry``."""

    def get_manifest(self, ref: str | Reference) -> tuple[bytes, str]: ...

    def put_manifest(self, ref: str | Reference, data: bytes, *, media_type: str = ...) -> str: ...

    def get_blob(self, repository: str, digest: str, *, limit: int = ...) -> bytes: ...

    def put_blob(self, repository: str, data: bytes, *, media_type: str = ...) -> Descriptor: ...

    def referrers(
        self, ref: str | Reference, artifact_type: str | None = None
    ) -> list[Descriptor]: ...


SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ANN_SIGNATURE = "dev.cosignproject.cosign/signature"
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
INTOTO = "application/vnd.in-toto+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
MAX_LAYERS = 1000
# cosign's legacy keyless annotations on a .sig/.att layer
ANN_CERTIFICATE = "dev.sigstore.cosign/certificate"
ANN_CHAIN = "dev.sigstore.cosign/chain"
ANN_BUNDLE = "dev.sigstore.cosign/bundle"
ANN_TIMESTAMP = "dev.sigstore.cosign/rfc3161timestamp"
ANN_PREDICATE_TYPE = "predicateType"
# cosign's legacy tags for signatures, attestations and SBOMs of a digest
TAG_SUFFIXES = (".sig", ".att", ".sbom")
_MAX_BLOB = 1 << 20
# All signature material read for one artifact from one place (its .sig or
# .att manifest, its bundle referrers): real signatures are kilobytes, and
# MAX_LAYERS blobs of _MAX_BLOB each would be a gigabyte in memory.
MAX_MATERIAL = 16 << 20


class _Budget:
    """Bytes of signature material left to read from one place."""

    def __init__(self, what: str) -> None:
        self.left = MAX_MATERIAL
        self.what = what

    def take(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise RegistryError(
                f"{self.what}: signature material larger than {MAX_MATERIAL} bytes in all; "
                "refusing to read more (junk pushed to fill memory?)"
            )
        return data


def sig_tag(digest: str) -> str:
    """Cosign's legacy signature tag for ``digest``: ``sha256-<hex>.sig``."""
    return oci.fallback_tag(digest) + ".sig"


def att_tag(digest: str) -> str:
    """Cosign's legacy attestation tag for ``digest``: ``sha256-<hex>.att``."""
    return sig_tag(digest)[: -len(".sig")] + ".att"


def cosign_tags(digest: str) -> tuple[str, ...]:
    """Every legacy tag cosign may keep for ``digest`` (``.sig``, ``.att``, ``.sbom``)."""
    return tuple(oci.fallback_tag(digest) + suffix for suffix in TAG_SUFFIXES)


# -- formats of what is stored --------------------------------------------------


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


def keyless_layer_annotations(
    made: sb.ParsedBundle, certificate_pem: bytes, chain_pem: bytes
) -> tuple[dict[str, str], int | None]:
    """Cosign's keyless layer annotations for a signature made through Sigstore.

    Returns the annotations and the log index of the entry they carry.

    Raises:
        SigningError: Sigstore returned neither a signed entry timestamp nor
            an RFC 3161 timestamp, which a legacy layer cannot do without.
    """
    annotations = {
        ANN_CERTIFICATE: certificate_pem.decode(),
        ANN_CHAIN: chain_pem.decode(),
    }
    entry = made.tlog_entries[0] if made.tlog_entries else None
    if entry is not None and entry.signed_entry_timestamp is not None:
        annotations[ANN_BUNDLE] = entry.to_cosign_annotation()
    if made.timestamps:
        stamp = base64.b64encode(made.timestamps[0]).decode()
        annotations[ANN_TIMESTAMP] = json.dumps(
            {"SignedRFC3161Timestamp": stamp}, separators=(",", ":")
        )
    if ANN_BUNDLE not in annotations and ANN_TIMESTAMP not in annotations:
        raise SigningError(
            "Sigstore returned neither a signed entry timestamp nor an RFC 3161 timestamp; "
            "cosign's legacy signature form cannot carry this signature (use scheme='bundle')"
        )
    return annotations, entry.log_index if entry is not None else None


# -- writing ---------------------------------------------------------------------


def append_layer(
    registry: Registry,
    repository: str,
    tag: str,
    blob: bytes,
    media_type: str,
    annotations: Mapping[str, str],
) -> None:
    """Adds one layer to cosign's ``.sig``/``.att`` manifest, keeping the others."""
    layer = registry.put_blob(repository, blob, media_type=media_type)
    layers: list[dict[str, Any]] = []
    try:
        existing, _ = registry.get_manifest(f"{repository}:{tag}")
        layers = list(oci.parse_manifest(existing, what=tag).get("layers") or [])
    except NotFoundError:
        pass
    layers.append({**layer.to_json(), "annotations": dict(annotations)})
    config = signature_config([str(d["digest"]) for d in layers])
    registry.put_blob(repository, config, media_type=oci.CONFIG_V1)
    registry.put_manifest(f"{repository}:{tag}", signature_manifest(config, layers))


def attach_bundle(
    registry: Registry, pinned: Reference, bundle: bytes, predicate_type: str, created: str
) -> str:
    """Attaches a Sigstore bundle to ``pinned`` as an OCI referrer, as cosign v3 does."""
    assert pinned.digest  # noqa: S101 - resolved by the caller
    data, media_type = registry.get_manifest(pinned)
    subject = oci.Descriptor(media_type=media_type, digest=pinned.digest, size=len(data))
    manifest, config = bundle_manifest(bundle, subject, created, predicate_type)
    registry.put_blob(pinned.repository, config, media_type=oci.EMPTY_V1)
    registry.put_blob(pinned.repository, bundle, media_type=BUNDLE_V03)
    return registry.put_manifest(pinned.repository, manifest)


# -- reading ---------------------------------------------------------------------


@attrs.frozen
class Candidate:
    """One stored signature, as found: every byte a check needs, nothing checked yet."""

    scheme: str
    message: bytes  # the exact signed bytes
    signature: bytes
    claims: bytes  # payload (legacy) or in-toto statement (bundle)
    certificate: bytes | None = None  # DER, keyless only
    chain: tuple[bytes, ...] = ()
    tlog: tuple[sb.TlogEntry, ...] = ()
    timestamps: tuple[bytes, ...] = ()
    envelope: sb.Envelope | None = None
    envelope_blob: bytes | None = None  # cosign .att layer bytes
    artifact_sha256: bytes | None = None  # what a hashedrekord entry hashes
    attestation: bool = False


def envelope_candidates(
    scheme: str, parsed: sb.ParsedBundle, env: sb.Envelope, *, attestation: bool = False
) -> list[Candidate]:
    """One candidate per signature on a Sigstore bundle's DSSE envelope ``env``.

    Each carries ``parsed``'s certificate, chain, log entries and timestamps.
    """
    return [
        Candidate(
            scheme,
            env.pae(),
            sig,
            env.payload,
            certificate=parsed.certificate,
            chain=parsed.chain,
            tlog=parsed.tlog_entries,
            timestamps=parsed.timestamps,
            envelope=env,
            attestation=attestation,
        )
        for sig in env.signatures
    ]


def layer_material(annotations: Mapping[str, str]) -> dict[str, Any]:
    """Certificate, chain, Rekor entry and timestamp from cosign's legacy layer annotations.

    Key-signed layers carry no certificate, but may carry a Rekor entry and
    an RFC 3161 timestamp (cosign ``sign --key`` with a log or a TSA).
    Malformed parts are dropped (verification then fails for lack of them).
    """
    out: dict[str, Any] = {}
    rekor = annotations.get(ANN_BUNDLE)
    if rekor:
        from policysupply._internal import sigstore_bundle as sb

        with contextlib.suppress(VerificationError):
            out["tlog"] = (sb.TlogEntry.from_cosign_annotation(rekor),)
    stamp = annotations.get(ANN_TIMESTAMP)
    if stamp:
        try:
            raw = json.loads(stamp)["SignedRFC3161Timestamp"]
            out["timestamps"] = (base64.b64decode(raw, validate=True),)
        except (ValueError, RecursionError, KeyError, TypeError):
            pass
    cert = annotations.get(ANN_CERTIFICATE)
    if not cert:
        return out  # a key signature: no need to load the keyless machinery
    from policysupply._internal import keyless

    ders = keyless.pem_chain(cert)
    if not ders:
        return {}
    out["certificate"] = ders[0]
    out["chain"] = tuple(keyless.pem_chain(annotations.get(ANN_CHAIN) or ""))
    return out


def read_legacy_signatures(registry: Registry, repo: str, digest: str) -> list[Candidate]:
    """The signatures in ``digest``'s ``.sig`` manifest (none if it has none)."""
    try:
        data, _ = registry.get_manifest(f"{repo}:{sig_tag(digest)}")
    except NotFoundError:
        return []
    manifest = oci.parse_manifest(data, what=sig_tag(digest))
    out = []
    budget = _Budget(f"{repo}:{sig_tag(digest)}")
    for layer in (manifest.get("layers") or [])[:MAX_LAYERS]:
        desc = oci.Descriptor.from_json(layer)
        b64 = desc.annotations.get(ANN_SIGNATURE)
        if desc.media_type != SIMPLESIGNING or not b64:
            continue
        try:
            signature = base64.b64decode(b64, validate=True)
        except ValueError:
            continue
        payload = budget.take(registry.get_blob(repo, desc.digest, limit=_MAX_BLOB))
        out.append(
            Candidate(
                "legacy",
                payload,
                signature,
                payload,
                artifact_sha256=hashlib.sha256(payload).digest(),
                **layer_material(desc.annotations),
            )
        )
    return out


def read_legacy_attestations(registry: Registry, repo: str, digest: str) -> list[Candidate]:
    """The attestations in ``digest``'s ``.att`` manifest (none if it has none)."""
    tag = att_tag(digest)
    try:
        data, _ = registry.get_manifest(f"{repo}:{tag}")
    except NotFoundError:
        return []
    out: list[Candidate] = []
    budget = _Budget(f"{repo}:{tag}")
    for layer in (oci.parse_manifest(data, what=tag).get("layers") or [])[:MAX_LAYERS]:
        desc = oci.Descriptor.from_json(layer)
        if desc.media_type != DSSE_ENVELOPE:
            continue
        blob = budget.take(registry.get_blob(repo, desc.digest, limit=_MAX_BLOB))
        from policysupply._internal import sigstore_bundle as sb  # only with attestations

        try:
            env = sb.Envelope.from_json(json.loads(blob))
        except (ValueError, RecursionError, VerificationError):
            continue
        if env.payload_type != INTOTO:
            continue
        extra = layer_material(desc.annotations)
        out.extend(
            Candidate(
                "legacy",
                env.pae(),
                sig,
                env.payload,
                envelope=env,
                envelope_blob=blob,
                attestation=True,
                **extra,
            )
            for sig in env.signatures
        )
    return out


def read_bundles(registry: Registry, repo: str, digest: str) -> list[Candidate]:
    """Signatures and attestations in Sigstore bundles referring to ``digest``."""
    out: list[Candidate] = []
    budget = _Budget(f"{repo}@{digest} referrers")
    bundles = [
        d
        for d in registry.referrers(f"{repo}@{digest}")
        if (d.artifact_type or "").startswith(BUNDLE_PREFIX)
    ]
    # Each costs round trips: at most as many as cosign reads .sig layers.
    for desc in bundles[:MAX_LAYERS]:
        # Anyone who can push may add referrers: one that is gone or
        # malformed is skipped, as cosign does, and cannot fail the rest.
        try:
            data, _ = registry.get_manifest(f"{repo}@{desc.digest}")
        except NotFoundError:
            continue
        try:
            layers = oci.parse_manifest(data, what=desc.digest).get("layers") or []
        except RegistryError:
            continue
        if len(layers) != 1 or not str(layers[0].get("mediaType", "")).startswith(BUNDLE_PREFIX):
            continue
        try:
            layer = oci.Descriptor.from_json(layers[0])
            raw = registry.get_blob(repo, layer.digest, limit=_MAX_BLOB)
        except TransientRegistryError:
            raise  # the registry is unwell: say so rather than "no signature"
        except (RegistryError, DigestMismatchError):
            continue  # its bundle is gone, too large or other bytes: one junk referrer
        budget.take(raw)
        from policysupply._internal import sigstore_bundle as sb  # only with bundles

        try:
            parsed = sb.parse_bundle(raw, what=f"bundle {layer.digest}")
        except VerificationError:
            continue  # malformed: cosign skips these too
        env = parsed.content
        if not isinstance(env, sb.Envelope) or env.payload_type != INTOTO:
            continue  # cosign's OCI path only takes DSSE statements
        try:
            predicate_type = json.loads(env.payload).get("predicateType")
        except (ValueError, RecursionError, AttributeError):
            predicate_type = None
        out.extend(
            envelope_candidates("bundle", parsed, env, attestation=predicate_type != SIGN_PREDICATE)
        )
    return out
