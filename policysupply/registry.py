"""Where artifacts live: OCI image layouts on disk (remote registries follow).

``Registry.local(path)`` keeps one OCI image layout per repository under
``path`` (``path/acme/policy/{oci-layout,index.json,blobs/sha256/...}``), the
layout oras (``--oci-layout``) and skopeo read. Every read is checked against
its digest; every write is atomic (temp file + rename) and tag updates are
serialised with a lock file, so concurrent writers and crashes never leave a
partial blob or a tag pointing at missing content.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from policysupply._internal import oci
from policysupply._internal.oci import Descriptor, Reference
from policysupply.bundle import Bundle
from policysupply.errors import NotFoundError, RegistryError

__all__ = ["Descriptor", "Progress", "Reference", "Registry"]

Progress = Callable[[int, int], None]
"""Progress callback: ``(bytes done, bytes total)``."""

_LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'


def _now_rfc3339() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc)
        if epoch and epoch.isdigit()
        else _dt.datetime.now(tz=_dt.timezone.utc)
    )
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+b") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: best effort, no lock
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@attrs.frozen(kw_only=True)
class _LocalLayout:
    """One OCI image layout per repository under ``root``."""

    root: Path

    def _repo_dir(self, repository: str) -> Path:
        # Reference.parse already restricted repository components to
        # [a-z0-9._-], so joining cannot escape the root.
        return self.root / repository

    def blob_path(self, repository: str, digest: str) -> Path:
        oci.check_digest(digest)
        return self._repo_dir(repository) / "blobs" / "sha256" / digest.split(":", 1)[1]

    # -- blobs ---------------------------------------------------------

    def put_blob(self, repository: str, data: bytes) -> str:
        digest = oci.sha256_digest(data)
        path = self.blob_path(repository, digest)
        if not path.exists():
            self._ensure_layout(repository)
            _atomic_write(path, data)
        return digest

    def get_blob(self, repository: str, digest: str) -> bytes:
        path = self.blob_path(repository, digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} not found in {repository}") from None
        except OSError as exc:
            raise RegistryError(f"cannot read blob {digest}: {exc.strerror}") from None
        oci.verify_digest(data, digest, what=f"blob {digest} in {repository}")
        return data

    def has_blob(self, repository: str, digest: str) -> bool:
        return self.blob_path(repository, digest).exists()

    # -- index ---------------------------------------------------------

    def _ensure_layout(self, repository: str) -> None:
        d = self._repo_dir(repository)
        if not (d / "oci-layout").exists():
            _atomic_write(d / "oci-layout", _LAYOUT_FILE)

    def read_index(self, repository: str) -> dict[str, Any]:
        path = self._repo_dir(repository) / "index.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": oci.INDEX_V1, "manifests": []}
        except OSError as exc:
            raise RegistryError(f"cannot read {path}: {exc.strerror}") from None
        return oci.parse_manifest(raw, what=f"{path}")

    @contextlib.contextmanager
    def editing_index(self, repository: str) -> Iterator[dict[str, Any]]:
        """Yields the index for editing under the repository lock; writes it back atomically."""
        self._ensure_layout(repository)
        with _locked(self._repo_dir(repository) / ".lock"):
            index = self.read_index(repository)
            yield index
            _atomic_write(
                self._repo_dir(repository) / "index.json",
                json.dumps(index, indent=2, sort_keys=True).encode(),
            )


class Registry:
    """A place artifacts are pushed to and pulled from.

    Create one with :meth:`local`. All methods take references like
    ``acme/policy:1.0`` or ``acme/policy@sha256:...``; tags are resolved to a
    digest once, and everything after that uses the digest.
    """

    def __init__(self, layout: _LocalLayout) -> None:
        self._layout = layout

    @classmethod
    def local(cls, path: str | os.PathLike[str]) -> Registry:
        """An OCI image layout directory (one layout per repository under ``path``).

        No I/O happens until the first operation.
        """
        return cls(_LocalLayout(root=Path(path)))

    def __repr__(self) -> str:
        return f"Registry.local({str(self._layout.root)!r})"

    @staticmethod
    def _ref(ref: str | Reference) -> Reference:
        return ref if isinstance(ref, Reference) else Reference.parse(ref)

    # -- high level ---------------------------------------------------------

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
        """
        r = self._ref(ref)
        layer = bundle.to_bytes()
        manifest, config = oci.policy_manifest(
            layer,
            title=r.name,
            created=created or _now_rfc3339(),
            revision=bundle.manifest.revision or None,
            version=version,
            rego_version=0 if bundle.manifest.rego_version == 0 else 1,
        )
        total = len(config) + len(layer) + len(manifest)
        done = 0
        for blob in (config, layer):
            self._layout.put_blob(r.repository, blob)
            done += len(blob)
            if progress:
                progress(done, total)
        digest = self.put_manifest(r, manifest, media_type=oci.MANIFEST_V1)
        if progress:
            progress(total, total)
        return r.with_digest(digest)

    def pull(self, ref: str | Reference, *, progress: Progress | None = None) -> Bundle:
        """Pulls a policy image and returns its bundle.

        Every byte is checked against its digest; this does **not** check
        signatures (use a ``Verifier`` for that).

        Raises:
            NotFoundError: No such reference.
            DigestMismatchError: Stored content does not match its digest.
            RegistryError: Not a policy image.
            BundleError: The layer is not a valid bundle.
        """
        r = self._ref(ref)
        digest = self.resolve(r)
        data, _ = self.get_manifest(r.with_digest(digest))
        manifest = oci.parse_manifest(data, what=str(r))
        layer = oci.bundle_layer(manifest, what=str(r))
        blob = self.get_blob(r.repository, layer.digest)
        if len(blob) != layer.size:
            raise RegistryError(f"{r}: layer is {len(blob)} bytes, manifest says {layer.size}")
        if progress:
            progress(len(blob), layer.size)
        return Bundle.from_bytes(blob)

    def resolve(self, ref: str | Reference) -> str:
        """Resolves ``ref`` to the manifest digest (checking a digest ref exists).

        Raises:
            NotFoundError: No such tag or manifest.
        """
        r = self._ref(ref)
        if r.digest:
            if not self._layout.has_blob(r.repository, r.digest):
                raise NotFoundError(f"manifest {r.digest} not found in {r.repository}")
            return r.digest
        tag = r.tag or "latest"
        for d in reversed(self._layout.read_index(r.repository)["manifests"]):
            if d.get("annotations", {}).get(oci.ANN_REF_NAME) == tag:
                return str(d["digest"])
        raise NotFoundError(f"tag {tag!r} not found in {r.repository}")

    def tags(self, repository: str) -> list[str]:
        """The tags of ``repository``, sorted."""
        index = self._layout.read_index(Reference.parse(repository).repository)
        names = {d.get("annotations", {}).get(oci.ANN_REF_NAME) for d in index["manifests"]}
        return sorted(n for n in names if n)

    def delete(self, ref: str | Reference) -> None:
        """Removes a tag, or (for a digest ref) the manifest and every tag on it.

        Blobs stay (they may be shared); nothing else is touched.

        Raises:
            NotFoundError: Nothing matched.
        """
        r = self._ref(ref)
        with self._layout.editing_index(r.repository) as index:
            before = len(index["manifests"])
            if r.digest:
                index["manifests"] = [d for d in index["manifests"] if d["digest"] != r.digest]
            else:
                tag = r.tag or "latest"
                index["manifests"] = [
                    d
                    for d in index["manifests"]
                    if d.get("annotations", {}).get(oci.ANN_REF_NAME) != tag
                ]
            if len(index["manifests"]) == before:
                raise NotFoundError(f"{r} not found")

    # -- low level ----------------------------------------------------------

    def get_manifest(self, ref: str | Reference) -> tuple[bytes, str]:
        """Returns ``(manifest bytes, media type)``, digest-checked."""
        r = self._ref(ref)
        digest = self.resolve(r)
        data = self._layout.get_blob(r.repository, digest)
        obj = oci.parse_manifest(data, what=str(r))
        media_type = obj.get("mediaType") or (
            oci.INDEX_V1 if "manifests" in obj else oci.MANIFEST_V1
        )
        return data, str(media_type)

    def put_manifest(
        self, ref: str | Reference, data: bytes, *, media_type: str = oci.MANIFEST_V1
    ) -> str:
        """Stores a manifest; tags it when ``ref`` has a tag. Returns its digest.

        Every blob the manifest references must already be stored.

        Raises:
            RegistryError: Malformed manifest, or a referenced blob is missing.
        """
        r = self._ref(ref)
        obj = oci.parse_manifest(data, what=str(r))
        refs = obj.get("manifests") or [obj["config"], *obj["layers"]]
        for d in refs:
            if not self._layout.has_blob(r.repository, d["digest"]):
                raise RegistryError(f"{r}: manifest references missing blob {d['digest']}")
        digest = self._layout.put_blob(r.repository, data)
        if r.digest and r.digest != digest:
            raise RegistryError(f"{r}: manifest hashes to {digest}, not {r.digest}")
        entry = Descriptor(media_type=media_type, digest=digest, size=len(data)).to_json()
        with self._layout.editing_index(r.repository) as index:
            if r.tag:
                index["manifests"] = [
                    d
                    for d in index["manifests"]
                    if d.get("annotations", {}).get(oci.ANN_REF_NAME) != r.tag
                ]
                entry["annotations"] = {oci.ANN_REF_NAME: r.tag}
                index["manifests"].append(entry)
            elif not any(
                d["digest"] == digest and not d.get("annotations") for d in index["manifests"]
            ):
                index["manifests"].append(entry)
        return digest

    def get_blob(self, repository: str, digest: str) -> bytes:
        """Returns a blob, digest-checked.

        Raises:
            NotFoundError: No such blob.
            DigestMismatchError: The stored bytes do not match ``digest``.
        """
        return self._layout.get_blob(Reference.parse(repository).repository, digest)

    def put_blob(self, repository: str, data: bytes) -> Descriptor:
        """Stores a blob (atomically, idempotently); returns its descriptor."""
        repo = Reference.parse(repository).repository
        self._layout.put_blob(repo, data)
        return Descriptor.for_bytes(data, "application/octet-stream")
