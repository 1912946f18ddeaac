"""Pure OCI formats: references, descriptors, the policy image manifest.

The policy image follows the shape both OPA's OCI downloader and every opcr
``policy`` CLI accept (shared spec oci-policy-image.md): one image manifest,
``{}`` config as ``application/vnd.oci.image.config.v1+json``, one
``tar+gzip`` layer holding the bundle, opcr-style annotations.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from policysupply.errors import DigestMismatchError, RegistryError

MANIFEST_V1 = "application/vnd.oci.image.manifest.v1+json"
INDEX_V1 = "application/vnd.oci.image.index.v1+json"
CONFIG_V1 = "application/vnd.oci.image.config.v1+json"
EMPTY_V1 = "application/vnd.oci.empty.v1+json"
LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"

EMPTY_JSON = b"{}"

ANN_TITLE = "org.opencontainers.image.title"
ANN_CREATED = "org.opencontainers.image.created"
ANN_REVISION = "org.opencontainers.image.revision"
ANN_VERSION = "org.opencontainers.image.version"
ANN_REF_NAME = "org.opencontainers.image.ref.name"
ANN_OPCR_TYPE = "org.openpolicyregistry.type"
ANN_REGO_VERSION = "rego.version"

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fallback_tag(digest: str) -> str:
    """The tag derived from ``digest``: ``sha256-<hex>``.

    It is the referrers tag-schema index tag, and the stem of cosign's
    ``.sig``/``.att``/``.sbom`` tags.
    """
    return digest.replace(":", "-", 1)


def check_digest(digest: str) -> str:
    """Returns ``digest`` if it is a well-formed sha256 digest, else raises ``RegistryError``."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise RegistryError(f"not a sha256 digest: {digest!r}")
    return digest


def verify_digest(data: bytes, expected: str, *, what: str) -> None:
    """Raises ``DigestMismatchError`` unless ``data`` hashes to ``expected``."""
    actual = sha256_digest(data)
    if actual != expected:
        raise DigestMismatchError(
            f"{what}: content hashes to {actual}, not the expected {expected}; "
            "refusing it (corrupted or tampered storage)"
        )


@attrs.frozen(kw_only=True)
class Reference:
    """A parsed artifact reference: ``[host/]repository[:tag][@digest]``.

    Attributes:
        host: Registry host (with port), or ``""`` for a local layout.
        repository: Repository path (``acme/policy``).
        tag: Tag, if given.
        digest: ``sha256:<hex>``, if given.
    """

    host: str = ""
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str, *, default_host: str = "") -> Reference:
        """Parses ``ref``; the first path component is a host if it has a ``.`` or ``:``.

        Raises:
            RegistryError: The reference is malformed.
        """
        rest = ref
        digest = None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            check_digest(digest)
        tag = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG.match(tag):
                raise RegistryError(f"invalid tag {tag!r} in reference {ref!r}")
        host = default_host
        parts = rest.split("/")
        if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
            host, parts = parts[0], parts[1:]
        if not parts or not all(_REPO_COMPONENT.match(p) for p in parts):
            raise RegistryError(
                f"invalid repository in reference {ref!r}: use lowercase "
                "letters, digits and separators"
            )
        return cls(host=host, repository="/".join(parts), tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """``host/repository`` (or just the repository for a local layout)."""
        return f"{self.host}/{self.repository}" if self.host else self.repository

    def with_digest(self, digest: str) -> Reference:
        """This reference pinned to ``digest`` (the tag is dropped)."""
        return Reference(host=self.host, repository=self.repository, digest=digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


@attrs.frozen(kw_only=True)
class Descriptor:
    """An OCI content descriptor.

    Attributes:
        media_type: Media type of the referenced content.
        digest: ``sha256:<hex>`` of the content.
        size: Size in bytes.
        annotations: Descriptor annotations.
        artifact_type: ``artifactType``, for referrers.
    """

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    artifact_type: str | None = None

    @classmethod
    def for_bytes(
        cls, data: bytes, media_type: str, annotations: Mapping[str, str] | None = None
    ) -> Descriptor:
        """The descriptor of ``data``."""
        return cls(
            media_type=media_type,
            digest=sha256_digest(data),
            size=len(data),
            annotations=dict(annotations or {}),
        )

    @classmethod
    def from_json(cls, obj: Any) -> Descriptor:
        """Parses a descriptor object, validating its fields.

        Raises:
            RegistryError: A field is missing or malformed.
        """
        if not isinstance(obj, dict):
            raise RegistryError("descriptor is not a JSON object")
        try:
            media_type, digest, size = obj["mediaType"], obj["digest"], obj["size"]
        except KeyError as exc:
            raise RegistryError(f"descriptor lacks {exc.args[0]!r}") from None
        if not isinstance(media_type, str) or not isinstance(size, int) or size < 0:
            raise RegistryError("descriptor has a malformed mediaType or size")
        check_digest(digest)
        ann = obj.get("annotations") or {}
        if not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values()):
            raise RegistryError("descriptor annotations must be strings")
        artifact_type = obj.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise RegistryError("descriptor artifactType must be a string")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations=ann,
            artifact_type=artifact_type,
        )

    def to_json(self) -> dict[str, Any]:
        """The descriptor as a JSON object (OCI field names)."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out


def canonical_json(obj: Any) -> bytes:
    """Compact JSON with sorted keys: the bytes we hash and push for our manifests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def policy_manifest(
    bundle_bytes: bytes,
    *,
    title: str,
    created: str,
    revision: str | None,
    version: str | None = None,
    rego_version: int = 1,
) -> tuple[bytes, bytes]:
    """Builds the policy image for a bundle tarball.

    Returns:
        ``(manifest bytes, config bytes)``; the layer is ``bundle_bytes`` itself.
    """
    annotations = {
        ANN_TITLE: title,
        ANN_CREATED: created,
        ANN_OPCR_TYPE: "policy",
        ANN_REGO_VERSION: "rego.v1" if rego_version == 1 else "rego.v0",
    }
    layer = Descriptor.for_bytes(bundle_bytes, LAYER_TAR_GZIP, annotations)
    manifest_ann = dict(annotations)
    if revision:
        manifest_ann[ANN_REVISION] = revision
    if version:
        manifest_ann[ANN_VERSION] = version
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V1,
        "config": Descriptor.for_bytes(EMPTY_JSON, CONFIG_V1).to_json(),
        "layers": [layer.to_json()],
        "annotations": manifest_ann,
    }
    return canonical_json(manifest), EMPTY_JSON


def parse_manifest(data: bytes, *, what: str) -> dict[str, Any]:
    """Parses an image manifest or index, checking the fields we rely on.

    Raises:
        RegistryError: Not JSON, or not a manifest/index we understand.
    """
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise RegistryError(f"{what}: manifest is not valid JSON") from None
    if not isinstance(obj, dict) or obj.get("schemaVersion") != 2:
        raise RegistryError(f"{what}: not an OCI manifest (schemaVersion 2)")
    if "manifests" in obj:
        if not isinstance(obj["manifests"], list):
            raise RegistryError(f"{what}: index 'manifests' must be a list")
        for d in obj["manifests"]:
            Descriptor.from_json(d)
    else:
        if "config" not in obj or not isinstance(obj.get("layers"), list):
            raise RegistryError(f"{what}: manifest lacks config or layers")
        Descriptor.from_json(obj["config"])
        for d in obj["layers"]:
            Descriptor.from_json(d)
    return obj


def bundle_layer(manifest: Mapping[str, Any], *, what: str) -> Descriptor:
    """The bundle layer of a policy image: the first ``tar+gzip`` layer (as OPA picks it).

    Raises:
        RegistryError: The manifest has no such layer (not a policy image).
    """
    for raw in manifest.get("layers", []):
        d = Descriptor.from_json(raw)
        if d.media_type == LAYER_TAR_GZIP:
            return d
    raise RegistryError(f"{what}: no {LAYER_TAR_GZIP} layer; not a policy image")
