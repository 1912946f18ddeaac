"""Storage back ends behind ``Registry``: an OCI image layout, or a remote registry.

Both speak the same small interface (manifests by tag or digest, streamed and
digest-checked blobs, tags, referrers), so ``Registry`` implements push, pull
and copy once for both. The layout is ``layout_store.LayoutStore``; the remote
registry is :class:`RemoteStore`, here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import attrs

from policysupply._internal import oci
from policysupply._internal.oci import Descriptor
from policysupply.errors import NotFoundError, RegistryError

if TYPE_CHECKING:  # httpx is imported only when a remote registry is used
    from policysupply._internal.distribution import Client


Write = Callable[[bytes], None]
Source = Callable[[], Iterable[bytes]]
Count = Callable[[int], None]


@attrs.frozen
class Sink:
    """Where a blob being read goes.

    Attributes:
        reset: Called before each attempt, so that a retried read starts over.
        write: Receives the blob's bytes, in order.
        progress: Receives the number of bytes read so far (``None``: not reported).
    """

    reset: Callable[[], None]
    write: Write
    progress: Count | None = None


def media_type_of(data: bytes, declared: str = "") -> str:
    """The manifest's own ``mediaType``, else ``declared``, else by shape."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return declared or oci.MANIFEST_V1
    mt = obj.get("mediaType") if isinstance(obj, dict) else None
    if isinstance(mt, str) and mt:
        return mt
    if declared:
        return declared
    return oci.INDEX_V1 if isinstance(obj, dict) and "manifests" in obj else oci.MANIFEST_V1


def referrer_descriptor(data: bytes, digest: str) -> Descriptor | None:
    """The descriptor a referrers index lists for a manifest, or None if it has no subject.

    Raises:
        RegistryError: The manifest, its ``artifactType`` or its annotations are malformed.
    """
    obj = oci.parse_manifest(data, what=digest)
    if not isinstance(obj.get("subject"), dict):
        return None
    artifact_type = obj.get("artifactType") or (obj.get("config") or {}).get("mediaType")
    annotations = obj.get("annotations") or {}
    if not isinstance(artifact_type, str | None):
        raise RegistryError(f"{digest}: manifest artifactType must be a string")
    if not isinstance(annotations, dict) or not all(
        isinstance(v, str) for v in annotations.values()
    ):
        raise RegistryError(f"{digest}: manifest annotations must be strings")
    return Descriptor(
        media_type=media_type_of(data),
        digest=digest,
        size=len(data),
        annotations=dict(annotations),
        artifact_type=artifact_type,
    )


class Store(Protocol):
    """What ``Registry`` needs from a back end. Repositories are already validated."""

    def describe(self) -> str:
        """A human-readable location for messages and ``repr``."""
        ...

    def resolve(self, repository: str, tag: str) -> str | None:
        """The digest a tag points at, or None."""
        ...

    def has_manifest(self, repository: str, digest: str) -> bool:
        """Whether the manifest exists."""
        ...

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """``(bytes, media type)`` by tag or digest, digest-checked."""
        ...

    def put_manifest(self, repository: str, data: bytes, media_type: str, tag: str | None) -> str:
        """Stores a manifest (its blobs must exist), then tags it. Returns its digest."""
        ...

    def has_blob(self, repository: str, digest: str) -> bool:
        """Whether the blob exists."""
        ...

    def read_blob(self, repository: str, digest: str, size: int | None, sink: Sink) -> int:
        """Streams a blob into ``sink`` (reset before each attempt), digest-checked."""
        ...

    def write_blob(
        self, repository: str, digest: str, size: int, source: Source, progress: Count | None
    ) -> None:
        """Stores a blob from ``source`` (callable again on retry), digest-checked."""
        ...

    def tags(self, repository: str) -> list[str]:
        """The repository's tags."""
        ...

    def delete(self, repository: str, reference: str) -> None:
        """Deletes a tag, or a manifest by digest."""
        ...

    def referrers(
        self, repository: str, digest: str, artifact_type: str | None
    ) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest``."""
        ...

    def close(self) -> None:
        """Releases connections."""
        ...


# -- remote registry ----------------------------------------------------------


@attrs.frozen(kw_only=True)
class RemoteStore:
    """A registry spoken to over the distribution API."""

    client: Client
    chunk_size: int | None

    def describe(self) -> str:
        return self.client.base

    def close(self) -> None:
        self.client.close()

    def resolve(self, repository: str, tag: str) -> str | None:
        exists, desc = self.client.head_manifest(repository, tag)
        if not exists:
            return None
        if desc is not None:
            return desc.digest
        try:
            _, _, digest = self.client.get_manifest(repository, tag)
        except NotFoundError:
            return None
        return digest

    def has_manifest(self, repository: str, digest: str) -> bool:
        exists, desc = self.client.head_manifest(repository, digest)
        return exists and (desc is not None or self._get_ok(repository, digest))

    def _get_ok(self, repository: str, digest: str) -> bool:
        try:
            self.client.get_manifest(repository, digest)
        except NotFoundError:
            return False
        return True

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        data, media_type, _ = self.client.get_manifest(repository, reference)
        return data, media_type_of(data, media_type)

    def put_manifest(self, repository: str, data: bytes, media_type: str, tag: str | None) -> str:
        digest = oci.sha256_digest(data)
        _, indexed = self.client.put_manifest(repository, tag or digest, data, media_type)
        desc = referrer_descriptor(data, digest)
        if desc is not None and not indexed:
            subject = oci.check_digest(json.loads(data)["subject"].get("digest"))
            # No OCI-Subject header: either no referrers API, or a registry
            # (ggcr) that indexes without saying so. Ask the API before
            # writing a fallback tag, as oras-go does.
            if self.client.referrers(repository, subject, None) is None:
                self._add_to_fallback_index(repository, subject, desc)
        return digest

    def _add_to_fallback_index(self, repository: str, subject: str, desc: Descriptor) -> None:
        # Registries without the referrers API: the referrer is listed in an
        # image index tagged sha256-<hex> (OCI distribution-spec 1.1).
        # Read-modify-write; concurrent writers may race, as with every client.
        tag = oci.fallback_tag(subject)
        try:
            raw, _, _ = self.client.get_manifest(repository, tag)
            index = oci.parse_manifest(raw, what=f"{repository}:{tag}")
        except NotFoundError:
            index = {"schemaVersion": 2, "mediaType": oci.INDEX_V1, "manifests": []}
        manifests = [m for m in index.get("manifests") or [] if m.get("digest") != desc.digest]
        entry = desc.to_json()
        if desc.artifact_type:
            entry["artifactType"] = desc.artifact_type
        manifests.append(entry)
        index["manifests"] = manifests
        self.client.put_manifest(repository, tag, oci.canonical_json(index), oci.INDEX_V1)

    def has_blob(self, repository: str, digest: str) -> bool:
        return self.client.blob_exists(repository, digest)

    def read_blob(self, repository: str, digest: str, size: int | None, sink: Sink) -> int:
        return self.client.download_blob(
            repository,
            digest,
            size=size,
            reset=sink.reset,
            write=sink.write,
            progress=sink.progress,
        )

    def write_blob(
        self, repository: str, digest: str, size: int, source: Source, progress: Count | None
    ) -> None:
        if self.client.blob_exists(repository, digest):
            if progress:
                progress(size)
            return
        self.client.upload_blob(
            repository, digest, size, source, chunk_size=self.chunk_size, progress=progress
        )

    def tags(self, repository: str) -> list[str]:
        return sorted(self.client.tags(repository))

    def delete(self, repository: str, reference: str) -> None:
        self.client.delete_manifest(repository, reference)

    def referrers(
        self, repository: str, digest: str, artifact_type: str | None
    ) -> list[Descriptor]:
        found = self.client.referrers(repository, digest, artifact_type)
        if found is None:
            try:
                raw, _, _ = self.client.get_manifest(repository, oci.fallback_tag(digest))
            except NotFoundError:
                return []
            index = oci.parse_manifest(raw, what=f"{repository}:{oci.fallback_tag(digest)}")
            found = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
        out = []
        for m in found:
            # A malformed referrer is not listed (anyone who can push may add
            # one); the registry failing to answer still raises.
            try:
                desc = Descriptor.from_json(m)
            except RegistryError:
                continue
            if desc.artifact_type in (None, "", oci.EMPTY_V1):
                # Some registries (ggcr) report the config media type instead
                # of the manifest's artifactType: read the manifest itself.
                data, _, _ = self.client.get_manifest(repository, desc.digest)
                try:
                    desc = referrer_descriptor(data, desc.digest) or desc
                except RegistryError:
                    continue
            if artifact_type is None or desc.artifact_type == artifact_type:
                out.append(desc)
        return out
