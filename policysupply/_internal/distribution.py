"""The OCI distribution protocol over httpx: manifests, tags, referrers, blobs.

Requests go through ``registry_http.Session`` (timeouts, one retry policy,
auth, redirects).

Why not oras-py's transport: see ``docs/adr/0005-registry-client.md``. In
short, it has no timeouts, its retry decorator swallows exceptions, and it
checks no digests; every request here has connect/read timeouts, only
transient failures are retried (within an overall deadline), and every byte
read is hashed while it streams.

Retries wrap whole units of work (one request, one blob download, one blob
upload session), never a half-consumed stream, so a retry always starts from a
clean state.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx

from policysupply._internal import oci
from policysupply._internal.netconfig import RetryPolicy as RetryPolicy
from policysupply._internal.netconfig import Timeout as Timeout
from policysupply._internal.registry_http import ACCEPT_MANIFESTS, MAX_MANIFEST, Session
from policysupply._internal.registry_http import _retry_after as _retry_after
from policysupply._internal.registry_http import parse_challenge as parse_challenge
from policysupply.errors import (
    AuthenticationError,
    DigestMismatchError,
    NotFoundError,
    RegistryError,
    TransientRegistryError,
)

# All pages of one tags or referrers listing together: a hostile registry
# linking page after page must not fill memory (10 000 pages of 16 MiB).
_MAX_LISTING = 16 * 1024 * 1024


class Client(Session):
    """A distribution-spec client for one registry host."""

    # -- manifests -------------------------------------------------------------

    @staticmethod
    def scope(repository: str, *, push: bool = False) -> str:
        """The token scope for pulling (or pushing to) ``repository``."""
        return f"repository:{repository}:{'pull,push' if push else 'pull'}"

    def head_manifest(self, repository: str, reference: str) -> tuple[bool, oci.Descriptor | None]:
        """``(exists, descriptor)``; the descriptor is None when the registry sent no digest."""
        what = (
            f"resolve {repository}:{reference}"
            if ":" not in reference
            else f"resolve {repository}@{reference}"
        )
        _, headers, status = self.request_bytes(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            scope=self.scope(repository),
            what=what,
            headers={"Accept": ACCEPT_MANIFESTS},
            missing_ok=True,
        )
        if status == 404:
            return False, None
        digest = headers.get("docker-content-digest")
        if not digest or not digest.startswith("sha256:"):
            return True, None  # caller falls back to GET and hashes
        return True, oci.Descriptor(
            media_type=headers.get("content-type", oci.MANIFEST_V1).split(";")[0],
            digest=oci.check_digest(digest),
            size=int(headers.get("content-length", "0") or 0),
        )

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """``(bytes, media type, digest)`` of a manifest, digest-checked.

        Raises:
            NotFoundError: No such manifest.
            DigestMismatchError: The bytes do not hash to the requested digest
                (or to the digest the registry announced for a tag).
        """
        sep = "@" if reference.startswith("sha256:") else ":"
        what = f"get manifest {repository}{sep}{reference}"
        data, headers, _ = self.request_bytes(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            limit=MAX_MANIFEST,
            scope=self.scope(repository),
            what=what,
            headers={"Accept": ACCEPT_MANIFESTS},
        )
        digest = oci.sha256_digest(data)
        expected = reference if sep == "@" else headers.get("docker-content-digest")
        if expected and expected.startswith("sha256:") and expected != digest:
            raise DigestMismatchError(
                f"manifest {repository}{sep}{reference} from {self.host} hashes to {digest}, "
                f"expected {expected}; refusing it"
            )
        media_type = headers.get("content-type", "").split(";")[0].strip()
        return data, media_type, digest

    def put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str
    ) -> tuple[str, bool]:
        """Uploads a manifest under a tag or its digest.

        Returns:
            ``(digest, subject_indexed)``: whether the registry said (with
            ``OCI-Subject``) that it indexed the manifest's subject as a referrer.
        """
        digest = oci.sha256_digest(data)
        what = f"put manifest {repository}:{reference}"
        _, headers, _ = self.request_bytes(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scope=self.scope(repository, push=True),
            what=what,
            headers={"Content-Type": media_type},
            content=lambda: data,
            ok=(200, 201, 202),
        )
        announced = headers.get("docker-content-digest")
        if announced and announced.startswith("sha256:") and announced != digest:
            raise DigestMismatchError(f"{what}: registry stored {announced}, we sent {digest}")
        return digest, "oci-subject" in headers

    def delete_manifest(self, repository: str, reference: str) -> None:
        """Deletes a manifest (by digest) or a tag (where the registry allows it)."""
        what = f"delete {repository}:{reference}"
        try:
            self.request_bytes(
                "DELETE",
                f"/v2/{repository}/manifests/{reference}",
                scope=self.scope(repository, push=True).replace("pull,push", "delete,pull,push"),
                what=what,
                ok=(200, 202),
            )
        except RegistryError as exc:
            if isinstance(exc, (NotFoundError, AuthenticationError, TransientRegistryError)):
                raise
            raise RegistryError(
                f"{exc}; the registry may not allow deletes (distribution needs "
                "storage.delete.enabled) or deleting by tag (delete by digest instead)"
            ) from None

    def tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """All tags, following ``Link`` pagination."""
        out: list[str] = []
        url: str | None = f"/v2/{repository}/tags/list"
        params = {"n": str(page_size)} if page_size else None
        seen = [0, 0]
        while url:
            body, headers, _ = self._listing_page(
                repository, url, params, what=f"list tags of {repository}", seen=seen
            )
            page = _list_field(body, "tags")
            if page is None:
                raise RegistryError(f"list tags of {repository}: malformed response")
            names = [t for t in page if isinstance(t, str)]
            out.extend(names)
            nxt = self._next_link(headers, url, f"list tags of {repository}")
            if nxt:
                url, params = nxt, None
            elif page_size and len(names) == page_size and names[-1] != (params or {}).get("last"):
                # Some registries (ggcr) honour n/last but send no Link header:
                # a full page means there may be more.
                url, params = (
                    f"/v2/{repository}/tags/list",
                    {"n": str(page_size), "last": names[-1]},
                )
            else:
                url = None
        return list(dict.fromkeys(out))

    def referrers(
        self, repository: str, digest: str, artifact_type: str | None
    ) -> list[dict[str, Any]] | None:
        """Referrer descriptors from the OCI 1.1 API; None when unsupported."""
        if self._no_referrers_api:
            return None
        url: str | None = f"/v2/{repository}/referrers/{digest}"
        params = {"artifactType": artifact_type} if artifact_type else None
        out: list[dict[str, Any]] = []
        filtered = False
        seen = [0, 0]
        while url:
            body, headers, status = self._listing_page(
                repository,
                url,
                params,
                what=f"list referrers of {repository}@{digest}",
                seen=seen,
                missing_ok=True,
                ok=(200,),
            )
            ctype = headers.get("content-type", "").split(";")[0].strip()
            if status == 404 or (ctype and ctype != oci.INDEX_V1):
                # Unsupported (some registries answer unknown routes with HTML).
                self._no_referrers_api = True
                return None
            manifests = _list_field(body, "manifests")
            if manifests is None:
                raise RegistryError(f"referrers of {repository}@{digest}: malformed index")
            out.extend(m for m in manifests if isinstance(m, dict))
            filtered = "artifacttype" in headers.get("oci-filters-applied", "").lower()
            what = f"list referrers of {repository}@{digest}"
            url, params = self._next_link(headers, url, what), None
        if artifact_type and filtered:
            out = [m for m in out if m.get("artifactType") == artifact_type]
        # Unfiltered results are filtered by the caller, after normalising.
        return out

    def _listing_page(
        self,
        repository: str,
        url: str,
        params: dict[str, str] | None,
        *,
        what: str,
        seen: list[int],
        **options: Any,
    ) -> tuple[bytes, httpx.Headers, int]:
        """One page of a listing (tags, referrers).

        ``seen`` counts pages and bytes so far: a listing has at most 10,000
        pages and ``_MAX_LISTING`` bytes.
        """
        seen[0] += 1
        if seen[0] > 10_000:
            raise RegistryError(f"{what}: too many pages")
        body, headers, status = self.request_bytes(
            "GET", url, scope=self.scope(repository), what=what, params=params, **options
        )
        seen[1] += len(body)
        if seen[1] > _MAX_LISTING:
            raise RegistryError(f"{what}: listing larger than {_MAX_LISTING} bytes")
        return body, headers, status

    # -- blobs -----------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the registry has the blob."""
        _, _, status = self.request_bytes(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            scope=self.scope(repository),
            what=f"check blob {digest} in {repository}",
            missing_ok=True,
        )
        return status != 404

    def download_blob(
        self,
        repository: str,
        digest: str,
        *,
        size: int | None,
        reset: Callable[[], None],
        write: Callable[[bytes], None],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Streams a blob into ``write``, hashing as it goes; returns its size.

        Each attempt calls ``reset`` first, so a retried download starts over.
        Raises DigestMismatchError (never retried) when the bytes do not hash
        to ``digest`` or exceed ``size``.
        """
        what = f"download blob {digest} from {repository}"

        def once() -> int:
            reset()
            resp = self.send(
                "GET", f"/v2/{repository}/blobs/{digest}", scope=self.scope(repository), what=what
            )
            h = hashlib.sha256()
            n = 0
            try:
                for chunk in self._body(resp, what):
                    n += len(chunk)
                    if size is not None and n > size:
                        raise DigestMismatchError(
                            f"{what}: more than the {size} bytes its descriptor declares"
                        )
                    h.update(chunk)
                    write(chunk)
                    if progress:
                        progress(n)
            finally:
                resp.close()
            got = "sha256:" + h.hexdigest()
            if got != digest or (size is not None and n != size):
                raise DigestMismatchError(
                    f"{what}: received {n} bytes hashing to {got}; refusing them"
                )
            return n

        return self.retrying(what, once)

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        source: Callable[[], Iterable[bytes]],
        *,
        chunk_size: int | None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Uploads a blob: one PUT, or PATCH chunks of ``chunk_size`` then PUT.

        The whole upload session is one retried unit; ``source`` is called
        again for each attempt.
        """
        what = f"upload blob {digest} to {repository}"
        scope = self.scope(repository, push=True)

        def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
            done = 0
            for c in chunks:
                done += len(c)
                yield c
                if progress:
                    progress(done)

        def once() -> None:
            _, headers, _ = self.once_bytes(
                "POST",
                f"/v2/{repository}/blobs/uploads/",
                scope=scope,
                what=what,
                ok=(202,),
                headers={"Content-Length": "0"},
            )
            location = self._location(headers, what)
            if chunk_size is None or size <= chunk_size:
                self._put_final(location, digest, what, scope, lambda: counted(source()), size)
                return
            offset = 0
            for piece in _rechunk(source(), chunk_size):
                end = offset + len(piece) - 1
                _, headers, _ = self.once_bytes(
                    "PATCH",
                    location,
                    scope=scope,
                    what=what,
                    ok=(202,),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{end}",
                        "Content-Length": str(len(piece)),
                    },
                    content=lambda p=piece: p,
                )
                offset = end + 1
                if progress:
                    progress(offset)
                location = self._location(headers, what)
            self._put_final(location, digest, what, scope, lambda: b"", 0)

        # Requests inside a session are not retried one by one (after a reset
        # the server's offset is unknown); a transient failure restarts the
        # whole session from POST.
        self.retrying(what, once)

    def _put_final(
        self,
        location: str,
        digest: str,
        what: str,
        scope: str,
        body: Callable[[], bytes | Iterable[bytes]],
        size: int,
    ) -> None:
        url = httpx.URL(location).copy_merge_params({"digest": digest})
        _, headers, _ = self.once_bytes(
            "PUT",
            str(url),
            scope=scope,
            what=what,
            ok=(201,),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=body,
        )
        announced = headers.get("docker-content-digest")
        if announced and announced != digest:
            raise DigestMismatchError(f"{what}: registry stored {announced}")

    def _location(self, headers: httpx.Headers, what: str) -> str:
        loc = headers.get("location")
        if not loc:
            raise RegistryError(f"{what}: registry sent no upload location")
        try:
            return str(httpx.URL(self.base + "/").join(loc))
        except httpx.InvalidURL:
            raise RegistryError(f"{what}: registry sent a malformed upload location") from None

    def _next_link(self, headers: httpx.Headers, current: str, what: str) -> str | None:
        """The next page's absolute URL from a ``Link`` header, resolved against ``current``.

        Absolute, so a relative reference cannot be glued onto our host name
        (``<.evil.test/...>``) and the same-origin check on credentials applies.
        """
        link = headers.get("link")
        m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link) if link else None
        if not m:
            return None
        try:
            return str(httpx.URL(self.base + "/").join(current).join(m.group(1)))
        except httpx.InvalidURL:
            raise RegistryError(f"{what}: registry sent a malformed Link header") from None


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    buf = bytearray()
    for c in chunks:
        buf += c
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def _list_field(body: bytes, field: str) -> list[Any] | None:
    """The list ``field`` of a JSON object (``[]`` when absent); ``None`` when malformed."""
    try:
        value = json.loads(body).get(field) or []
    except (ValueError, RecursionError, AttributeError):
        return None
    return value if isinstance(value, list) else None
