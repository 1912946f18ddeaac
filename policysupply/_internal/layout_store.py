"""The OCI image layout back end: a directory per repository, as oras and skopeo read it."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from policysupply._internal import fs, oci
from policysupply._internal.oci import Descriptor
from policysupply._internal.stores import Count, Sink, Source, media_type_of, referrer_descriptor
from policysupply.errors import DigestMismatchError, NotFoundError, RegistryError

_LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'
_CHUNK = 1024 * 1024


# File systems limit one path component to 255 bytes (names here are ASCII).
_MAX_NAME = 255


@attrs.frozen(kw_only=True)
class LayoutStore:
    """One OCI image layout per repository under ``root``."""

    root: Path

    def describe(self) -> str:
        return f"OCI layout {self.root}"

    def close(self) -> None:
        pass

    def _repo_dir(self, repository: str) -> Path:
        # Reference.parse restricts repository components to [a-z0-9._-], so
        # joining cannot escape the root.
        if any(len(part) > _MAX_NAME for part in repository.split("/")) or len(repository) > 1024:
            raise RegistryError(
                f"repository name {repository[:40]!r}... is too long for an OCI layout on disk "
                f"(at most {_MAX_NAME} characters per path component, 1024 in all)"
            )
        return self.root / repository

    def _not_found(self, repository: str, what: str) -> NotFoundError:
        """``what`` is missing; says so plainly when the layout itself is missing."""
        if not self.root.is_dir():
            return NotFoundError(
                f"no OCI layout at {self.root}: the directory does not exist "
                "(check the path; push creates it)"
            )
        if not (self._repo_dir(repository) / "oci-layout").is_file():
            return NotFoundError(
                f"no repository {repository!r} in the OCI layout at {self.root} "
                "(check the repository name; push creates it)"
            )
        return NotFoundError(f"{what} not found in {repository} ({self.root})")

    @contextlib.contextmanager
    def _writing(self, repository: str) -> Iterator[None]:
        """Turns a failed disk write into a ``RegistryError`` naming the layout.

        Too long a name, no space, no permission: the atomic writes leave nothing partial.
        """
        try:
            yield
        except OSError as exc:
            raise RegistryError(
                f"cannot write {repository!r} to the OCI layout at {self.root}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None

    def blob_path(self, repository: str, digest: str) -> Path:
        oci.check_digest(digest)
        return self._repo_dir(repository) / "blobs" / "sha256" / digest.split(":", 1)[1]

    # -- blobs -----------------------------------------------------------------

    def has_blob(self, repository: str, digest: str) -> bool:
        return self.blob_path(repository, digest).is_file()

    def _ensure_layout(self, repository: str) -> None:
        d = self._repo_dir(repository)
        if not (d / "oci-layout").exists():
            fs.atomic_write(d / "oci-layout", _LAYOUT_FILE)

    def put_bytes(self, repository: str, data: bytes) -> str:
        digest = oci.sha256_digest(data)
        path = self.blob_path(repository, digest)
        with self._writing(repository):
            if not path.exists():
                self._ensure_layout(repository)
                fs.atomic_write(path, data)
        return digest

    def get_bytes(self, repository: str, digest: str) -> bytes:
        path = self.blob_path(repository, digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{digest} not found in {repository} ({self.root})") from None
        except OSError as exc:
            raise RegistryError(f"cannot read blob {digest}: {exc.strerror}") from None
        oci.verify_digest(data, digest, what=f"blob {digest} in {repository}")
        return data

    def read_blob(self, repository: str, digest: str, size: int | None, sink: Sink) -> int:
        path = self.blob_path(repository, digest)
        sink.reset()
        h = hashlib.sha256()
        n = 0
        try:
            with path.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    n += len(chunk)
                    if size is not None and n > size:
                        break
                    h.update(chunk)
                    sink.write(chunk)
                    if sink.progress:
                        sink.progress(n)
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} not found in {repository} ({self.root})") from None
        except OSError as exc:
            raise RegistryError(f"cannot read blob {digest}: {exc.strerror}") from None
        if "sha256:" + h.hexdigest() != digest or (size is not None and n != size):
            raise DigestMismatchError(
                f"blob {digest} in {repository} ({self.root}) does not match its digest"
            )
        return n

    def write_blob(
        self, repository: str, digest: str, size: int, source: Source, progress: Count | None
    ) -> None:
        path = self.blob_path(repository, digest)
        if path.exists():
            if progress:
                progress(size)
            return
        with self._writing(repository):
            self._ensure_layout(repository)
        h = hashlib.sha256()
        n = 0
        with self._writing(repository), fs.atomic_file(path) as f:
            for chunk in source():
                n += len(chunk)
                h.update(chunk)
                f.write(chunk)
                if progress:
                    progress(n)
            if "sha256:" + h.hexdigest() != digest or n != size:
                raise DigestMismatchError(
                    f"blob for {repository} does not match {digest} ({n} bytes); not stored"
                )

    # -- index -----------------------------------------------------------------

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
        with self._writing(repository):
            self._ensure_layout(repository)
        with self._writing(repository), fs.locked(self._repo_dir(repository) / ".lock"):
            index = self.read_index(repository)
            yield index
            fs.atomic_write(
                self._repo_dir(repository) / "index.json",
                json.dumps(index, indent=2, sort_keys=True).encode(),
            )

    # -- manifests -------------------------------------------------------------

    def resolve(self, repository: str, tag: str) -> str | None:
        for d in reversed(self.read_index(repository)["manifests"]):
            if (d.get("annotations") or {}).get(oci.ANN_REF_NAME) == tag:
                return str(d["digest"])
        return None

    def has_manifest(self, repository: str, digest: str) -> bool:
        return self.has_blob(repository, digest)

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        digest = reference
        if not reference.startswith("sha256:"):
            found = self.resolve(repository, reference)
            if found is None:
                raise self._not_found(repository, f"tag {reference!r}")
            digest = found
        data = self.get_bytes(repository, digest)
        return data, media_type_of(data)

    def put_manifest(self, repository: str, data: bytes, media_type: str, tag: str | None) -> str:
        obj = oci.parse_manifest(data, what=repository)
        refs = obj.get("manifests") or [obj["config"], *obj["layers"]]
        for d in refs:
            if not self.has_blob(repository, d["digest"]):
                raise RegistryError(f"{repository}: manifest references missing blob {d['digest']}")
        digest = self.put_bytes(repository, data)
        entry = Descriptor(media_type=media_type, digest=digest, size=len(data)).to_json()
        if isinstance(obj.get("artifactType"), str):
            entry["artifactType"] = obj["artifactType"]
        with self.editing_index(repository) as index:
            if tag:
                index["manifests"] = [
                    d
                    for d in index["manifests"]
                    if (d.get("annotations") or {}).get(oci.ANN_REF_NAME) != tag
                ]
                entry["annotations"] = {oci.ANN_REF_NAME: tag}
                index["manifests"].append(entry)
            elif not any(d["digest"] == digest for d in index["manifests"]):
                index["manifests"].append(entry)
        return digest

    def tags(self, repository: str) -> list[str]:
        names = {
            (d.get("annotations") or {}).get(oci.ANN_REF_NAME)
            for d in self.read_index(repository)["manifests"]
        }
        return sorted(n for n in names if n)

    def delete(self, repository: str, reference: str) -> None:
        with self.editing_index(repository) as index:
            before = len(index["manifests"])
            if reference.startswith("sha256:"):
                index["manifests"] = [d for d in index["manifests"] if d["digest"] != reference]
            else:
                index["manifests"] = [
                    d
                    for d in index["manifests"]
                    if (d.get("annotations") or {}).get(oci.ANN_REF_NAME) != reference
                ]
            if len(index["manifests"]) == before:
                raise NotFoundError(f"{repository}: {reference} not found ({self.root})")

    def referrers(
        self, repository: str, digest: str, artifact_type: str | None
    ) -> list[Descriptor]:
        out: list[Descriptor] = []
        seen: set[str] = set()
        for d in self.read_index(repository)["manifests"]:
            candidate = d.get("digest")
            if not isinstance(candidate, str) or candidate in seen:
                continue
            seen.add(candidate)
            try:
                data = self.get_bytes(repository, candidate)
                obj = json.loads(data)
            except (NotFoundError, ValueError, RecursionError):
                continue
            subject = obj.get("subject") if isinstance(obj, dict) else None
            if not isinstance(subject, dict) or subject.get("digest") != digest:
                continue
            try:
                desc = referrer_descriptor(data, candidate)
            except RegistryError:
                continue  # a malformed referrer is not listed (anyone may push one)
            if desc and (artifact_type is None or desc.artifact_type == artifact_type):
                out.append(desc)
        return out
