"""Where artifacts live: remote OCI registries and OCI image layouts on disk.

``Registry.remote(host)`` speaks the OCI distribution API with timeouts, one
retry policy and basic/bearer auth (credentials from arguments or the user's
docker config). ``Registry.local(path)`` keeps one OCI image layout per
repository under ``path`` (``path/acme/policy/{oci-layout,index.json,blobs/...}``),
the layout oras (``--oci-layout``) and skopeo read.

Both check every byte they read against its digest while it streams, and
both set a tag only after everything it points at is stored, so a failed push,
pull or copy never leaves a dangling tag or a partial blob.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from policysupply._internal import oci, stores, transfer
from policysupply._internal.closing import Closing
from policysupply._internal.credentials import Credentials
from policysupply._internal.netconfig import RetryPolicy, Timeout
from policysupply._internal.oci import Descriptor, Reference
from policysupply._internal.transfer import DownloadCancelled as DownloadCancelled
from policysupply._internal.transfer import now_rfc3339 as _now_rfc3339
from policysupply.errors import NotFoundError, RegistryError

if TYPE_CHECKING:
    import httpx

    from policysupply.bundle import Bundle, Limits

__all__ = [
    "Credentials",
    "Descriptor",
    "Progress",
    "Reference",
    "Registry",
    "RetryPolicy",
    "Timeout",
]

Progress = Callable[[int, int], None]
"""Progress callback: ``(bytes done, bytes total)``."""


class Registry(Closing):
    """A place artifacts are pushed to and pulled from.

    Create one with :meth:`remote` or :meth:`local`. Methods take references
    like ``acme/policy:1.0`` or ``acme/policy@sha256:...`` (for a remote
    registry, a leading host must be this registry's). Tags are resolved to a
    digest once; everything after that uses the digest.

    Example:
        >>> reg = Registry.local("/tmp/oci")            # doctest: +SKIP
        >>> ref = reg.push(bundle, "acme/policy:1.0")   # doctest: +SKIP
        >>> reg.pull(ref) == bundle                     # doctest: +SKIP
        True
    """

    def __init__(self, store: stores.Store, *, host: str = "") -> None:
        """Use :meth:`remote` or :meth:`local` instead."""
        self._store = store
        self._host = host

    @classmethod
    def local(cls, path: str | os.PathLike[str]) -> Registry:
        """An OCI image layout directory (one layout per repository under ``path``).

        No I/O happens until the first operation.
        """
        from policysupply._internal import layout_store

        return cls(layout_store.LayoutStore(root=Path(path)))

    @classmethod
    def remote(
        cls,
        host: str,
        *,
        insecure: bool = False,
        auth: Credentials | tuple[str, str] | None = None,
        docker_config: str | os.PathLike[str] | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        chunk_size: int | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        verify_tls: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> Registry:
        """A registry spoken to over the OCI distribution API.

        No I/O happens until the first operation (credentials are looked up
        then, too).

        Args:
            host: ``host[:port]``, spoken to over https; an ``https://`` prefix
                is allowed, and ``http://`` with ``insecure=True``.
            insecure: Use plain HTTP (for loopback or lab registries), as oras's
                ``--plain-http``. Credentials then cross the network in clear.
            auth: Credentials, or ``(username, password)``. Default: the
                user's docker config (``auths``, ``credsStore``, ``credHelpers``).
            docker_config: Path of a docker ``config.json`` to use instead of
                ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``.
            timeout: Per-request timeouts.
            retry: The retry policy (transient failures only, bounded by a deadline).
            chunk_size: Upload blobs larger than this in chunks of this size
                (default: one request per blob).
            ca_file: For https: trust exactly the CA certificates in this PEM
                file (a private registry's CA) instead of the system trust
                store, which is the default (``SSL_CERT_FILE`` and
                ``SSL_CERT_DIR`` are honoured).
            verify_tls: ``False`` accepts any TLS certificate (a lab registry
                with a self-signed certificate); the connection is still
                encrypted but anyone in the path can impersonate the registry.
            transport: An ``httpx`` transport every request goes through
                instead of policysupply's own connections: e.g. an
                ``httpx.MockTransport`` that injects faults in tests, or a
                transport with its own proxy or TLS settings. It owns TLS, so
                ``ca_file`` and ``verify_tls`` cannot be combined with it.

        Raises:
            ValueError: ``transport`` together with ``ca_file`` or
                ``verify_tls=False``.
            RegistryError: ``host`` is malformed.
            InsecureTransportError: ``host`` is an ``http://`` URL but
                ``insecure`` is not set (plain HTTP is never chosen silently).
        """
        from policysupply._internal import remote

        store, host = remote.open_store(
            host,
            insecure=insecure,
            auth=auth,
            docker_config=docker_config,
            timeout=timeout,
            retry=retry,
            chunk_size=chunk_size,
            ca_file=ca_file,
            verify_tls=verify_tls,
            transport=transport,
        )
        return cls(store, host=host)

    def close(self) -> None:
        """Closes network connections (a no-op for a local layout)."""
        self._store.close()

    def __repr__(self) -> str:
        if self._host:
            return f"Registry.remote({self._store.describe()!r})"
        return f"Registry.local({str(getattr(self._store, 'root', ''))!r})"

    @property
    def host(self) -> str:
        """The registry host (``""`` for a local layout)."""
        return self._host

    def _ref(self, ref: str | Reference) -> Reference:
        r = ref if isinstance(ref, Reference) else Reference.parse(ref)
        if self._host and r.host and r.host != self._host:
            raise RegistryError(f"{r} names host {r.host}, but this registry is {self._host}")
        return r

    def _repo(self, repository: str) -> str:
        return self._ref(repository).repository

    # -- high level -------------------------------------------------------------

    def push(
        self,
        bundle: Bundle,
        ref: str | Reference,
        *,
        created: str | None = None,
        version: str | None = None,
        progress: Progress | None = None,
    ) -> Reference:
        """Pushes ``bundle`` as a policy image (OPA- and opcr-compatible).

        The tag, if ``ref`` has one, is set only after every blob and the
        manifest are stored, so a failed push never leaves a dangling tag.

        Args:
            bundle: The bundle to push.
            ref: Target reference; its tag (if any) is moved to the new manifest.
            created: RFC 3339 creation time for the annotations (default: now,
                or ``SOURCE_DATE_EPOCH`` when set, for reproducible images).
            version: Optional ``org.opencontainers.image.version`` annotation.
            progress: Called with ``(bytes done, bytes total)`` as blobs are stored.

        Returns:
            The digest reference of the pushed manifest.

        Raises:
            RegistryError: The registry refused or failed (see its subclasses).
        """
        r = self._ref(ref)
        layer = bundle.to_bytes()
        title = f"{self._host}/{r.repository}" if self._host else r.name
        manifest, config = oci.policy_manifest(
            layer,
            title=title,
            created=created or _now_rfc3339(),
            revision=bundle.manifest.revision or None,
            version=version,
            rego_version=0 if bundle.manifest.rego_version == 0 else 1,
        )
        digest = transfer.push_image(
            self._store, r.repository, r.tag, config, layer, bundle.digest, manifest, progress
        )
        return r.with_digest(digest)

    def _layer_of(self, r: Reference) -> tuple[str, Descriptor]:
        # A digest needs no existence check first: fetching it raises NotFoundError.
        digest = r.digest or self.resolve(r)
        data, _ = self._store.get_manifest(r.repository, digest)
        manifest = oci.parse_manifest(data, what=str(r))
        return digest, oci.bundle_layer(manifest, what=str(r))

    def pull(
        self,
        ref: str | Reference,
        *,
        progress: Progress | None = None,
        limits: Limits | None = None,
    ) -> Bundle:
        """Pulls a policy image and returns its bundle.

        Every byte is checked against its digest while it streams; this does
        **not** check signatures (use a ``Verifier`` for that).

        Args:
            ref: Tag or digest reference.
            progress: Called with ``(bytes done, bytes total)``.
            limits: :class:`~policysupply.Limits` for reading the bundle.

        Raises:
            NotFoundError: No such reference.
            DigestMismatchError: Content does not match its digest.
            RegistryError: Not a policy image, or the registry failed.
            BundleError: The layer is not a valid bundle.
        """
        from policysupply.bundle import Bundle, Limits  # lazily: verify-only paths skip it

        lim = limits or Limits()
        r = self._ref(ref)
        _, layer = self._layer_of(r)
        if layer.size > lim.max_compressed:
            raise RegistryError(
                f"{r}: bundle layer is {layer.size} bytes, over the limit of {lim.max_compressed}"
            )
        tarball = self.layer_bytes(r.repository, layer, progress=progress)
        return Bundle.from_bytes(tarball, limits=lim)

    def layer_bytes(
        self,
        repository: str,
        layer: Descriptor,
        *,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> bytes:
        """A layer's bytes in memory, exactly as stored, checked against its digest and size.

        Args:
            repository: Repository holding the layer.
            layer: Its descriptor (the digest and size are enforced while it streams).
            progress: Called with ``(bytes done, bytes total)``.
            cancel: When set, the download stops at its next chunk and
                raises :class:`DownloadCancelled`.

        Raises:
            NotFoundError: No such blob.
            DigestMismatchError: The bytes do not match the descriptor.
            DownloadCancelled: ``cancel`` was set.
        """
        return transfer.read_layer(
            self._store, self._repo(repository), layer, progress=progress, cancel=cancel
        )

    def download(
        self,
        ref: str | Reference,
        path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        durable: bool = True,
    ) -> Descriptor:
        """Writes a policy image's bundle tarball to ``path`` without holding it in memory.

        The file appears only once every byte matched its digest; on any
        failure ``path`` is left as it was. ``durable`` as in :meth:`download_blob`.

        Returns:
            The descriptor of the bundle layer.

        Raises:
            RegistryError: The image cannot be read, or ``path`` cannot be
                written (full disk, permissions); ``path`` is then unchanged.
            DigestMismatchError: The bytes do not match their digest.
        """
        r = self._ref(ref)
        _, layer = self._layer_of(r)
        self.download_blob(r.repository, layer, path, progress=progress, durable=durable)
        return layer

    def resolve(self, ref: str | Reference) -> str:
        """Resolves ``ref`` to the manifest digest (checking a digest ref exists).

        Raises:
            NotFoundError: No such tag or manifest.
        """
        r = self._ref(ref)
        if r.digest:
            if not self._store.has_manifest(r.repository, r.digest):
                raise self._missing(r, f"manifest {r.digest}")
            return r.digest
        tag = r.tag or "latest"
        digest = self._store.resolve(r.repository, tag)
        if digest is None:
            raise self._missing(r, f"tag {tag!r}")
        return digest

    def _missing(self, r: Reference, what: str) -> NotFoundError:
        # A layout can say more: the whole directory or repository may be absent.
        # (Without layout_store loaded, no store of this registry is a layout.)
        layouts = sys.modules.get("policysupply._internal.layout_store")
        if layouts is not None and isinstance(self._store, layouts.LayoutStore):
            missing: NotFoundError = self._store._not_found(r.repository, what)
            return missing
        return NotFoundError(f"{what} not found in {r.name}")

    def tags(self, repository: str) -> list[str]:
        """The tags of ``repository``, sorted (all pages)."""
        return self._store.tags(self._repo(repository))

    def delete(self, ref: str | Reference) -> None:
        """Removes a tag, or (for a digest ref) the manifest and every tag on it.

        Blobs stay (they may be shared).

        Raises:
            NotFoundError: Nothing matched.
            RegistryError: The registry does not allow the delete.
        """
        r = self._ref(ref)
        self._store.delete(r.repository, r.digest or r.tag or "latest")

    def referrers(self, ref: str | Reference, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``ref``'s digest (signatures, attestations...).

        Uses the OCI 1.1 referrers API, or the ``sha256-<hex>`` tag-schema
        index on registries without it.

        Args:
            ref: The subject (a tag is resolved first).
            artifact_type: Only referrers of this artifact type.
        """
        r = self._ref(ref)
        # An unknown digest simply has no referrers; no existence check needed.
        digest = r.digest or self.resolve(r)
        return self._store.referrers(r.repository, digest, artifact_type)

    def copy(
        self,
        ref: str | Reference,
        *,
        to: Registry,
        to_ref: str | Reference | None = None,
        with_signatures: bool = True,
        progress: Progress | None = None,
    ) -> Reference:
        """Copies an artifact (its whole graph) to another registry or layout.

        Blobs already at the destination are skipped. The destination tag is
        set last. With ``with_signatures``, cosign's ``.sig``/``.att``/``.sbom``
        tags for the digest and every referrer come along, so a bundle signed
        offline in a local layout can be mirrored with its signatures.

        Args:
            ref: Source tag or digest.
            to: Destination registry.
            to_ref: Destination reference (default: same repository and tag).
            with_signatures: Also copy signatures, attestations and referrers.
            progress: Called with ``(bytes done, bytes total)`` over all blobs.

        Returns:
            The destination digest reference.
        """
        src = self._ref(ref)
        dst = (
            to._ref(to_ref)
            if to_ref is not None
            else Reference(repository=src.repository, tag=src.tag)
        )
        digest = self.resolve(src)
        transfer.copy(
            self._store,
            src.repository,
            digest,
            to._store,
            dst.repository,
            dst.tag,
            with_signatures=with_signatures,
            progress=progress,
        )
        return dst.with_digest(digest)

    # -- low level ----------------------------------------------------------------

    def get_manifest(self, ref: str | Reference) -> tuple[bytes, str]:
        """Returns ``(manifest bytes, media type)``, digest-checked."""
        r = self._ref(ref)
        return self._store.get_manifest(r.repository, r.digest or r.tag or "latest")

    def put_manifest(
        self, ref: str | Reference, data: bytes, *, media_type: str = oci.MANIFEST_V1
    ) -> str:
        """Stores a manifest; tags it when ``ref`` has a tag. Returns its digest.

        Every blob the manifest references must already be stored. A manifest
        with a ``subject`` is also listed in the subject's ``sha256-<hex>``
        index on registries without the referrers API.

        Raises:
            RegistryError: Malformed manifest, a referenced blob is missing, or
                ``ref``'s digest is not the manifest's.
        """
        r = self._ref(ref)
        oci.parse_manifest(data, what=str(r))
        digest = oci.sha256_digest(data)
        if r.digest and r.digest != digest:
            raise RegistryError(f"{r}: manifest hashes to {digest}, not {r.digest}")
        return self._store.put_manifest(r.repository, data, media_type, r.tag)

    def get_blob(self, repository: str, digest: str, *, limit: int = 64 << 20) -> bytes:
        """Returns a (small) blob, digest-checked. Use :meth:`download_blob` for big ones.

        Raises:
            NotFoundError: No such blob.
            DigestMismatchError: The bytes do not match ``digest``.
            RegistryError: The blob is larger than ``limit``.
        """
        oci.check_digest(digest)
        return transfer.read_small(self._store, self._repo(repository), digest, limit)

    def download_blob(
        self,
        repository: str,
        blob: Descriptor | str,
        path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        durable: bool = True,
    ) -> None:
        """Streams a blob into ``path`` (atomically: the file appears only if it verified).

        Memory use stays flat whatever the blob size.

        Args:
            repository: Repository holding the blob.
            blob: Its descriptor (size-checked too) or digest.
            path: Destination file; replaced only after verification.
            progress: Called with ``(bytes done, bytes total)``.
            durable: fsync before the rename, so a crash never leaves a
                partial file under ``path`` (``False`` trades that for speed,
                as ``oras pull`` does).

        Raises:
            RegistryError: The blob cannot be read, or ``path`` cannot be
                written (full disk, permissions); ``path`` is then unchanged.
            DigestMismatchError: The bytes do not match the digest or size.
        """
        desc = blob if isinstance(blob, Descriptor) else None
        digest = desc.digest if desc else oci.check_digest(str(blob))
        transfer.download_to_file(
            self._store,
            self._repo(repository),
            digest,
            desc.size if desc else None,
            Path(path),
            progress=progress,
            durable=durable,
        )

    def put_blob(
        self, repository: str, data: bytes, *, media_type: str = "application/octet-stream"
    ) -> Descriptor:
        """Stores a blob (idempotently); returns its descriptor."""
        desc = Descriptor.for_bytes(data, media_type)
        self._store.write_blob(
            self._repo(repository), desc.digest, desc.size, lambda: transfer.chunks(data), None
        )
        return desc
