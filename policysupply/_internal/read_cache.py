"""Content-addressed reads served from a cache: a ``Store`` in front of a ``Registry``.

The gate verifies the same signatures again and again; their manifests (by
digest) and payload blobs never change, so it reads them through
:class:`CachedReads`, a storage back end whose misses go to the caller's
registry through its public methods (a ``Registry`` subclass keeps its
behaviour) and whose hits come from a shared :class:`BlobCache`. Tags (the
image tag, cosign's ``.sig`` tag, referrers) are always read from the
registry; only bytes named by their digest are reused.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from policysupply._internal.oci import Descriptor, Reference
from policysupply.errors import RegistryError

if TYPE_CHECKING:
    from policysupply._internal.stores import Count, Sink, Source
    from policysupply.registry import Registry

# What a miss reads a blob with: the verifier reads only signature material,
# which cosign_storage bounds by the same limit (callers' own limits still apply).
BLOB_LIMIT = 1 << 20


class BlobCache:
    """Content-addressed bytes (signature payloads, manifests by digest), LRU-bounded.

    Safe to share across registries and decisions: a digest names its bytes,
    and they were digest-checked when first read.
    """

    def __init__(self, max_bytes: int = 16 << 20) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._size = 0
        self._max = max_bytes

    def get(self, key: str) -> tuple[bytes, str] | None:
        """``(bytes, media type)`` stored under ``key``, or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, data: bytes, media_type: str = "") -> None:
        """Keeps ``data`` under ``key``, evicting the least recently used."""
        size = len(data)
        if size > self._max // 8:
            return  # a single huge blob would flush everything else
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (data, media_type)
            self._size += size
            while self._size > self._max:
                _, (evicted, _) = self._items.popitem(last=False)
                self._size -= len(evicted)


class CachedReads:
    """A read-only ``Store`` over ``inner``: digest-addressed reads come from ``cache``.

    Args:
        inner: The registry misses go to (through its public methods).
        cache: Shared content-addressed cache.
        resolved: A digest the caller just resolved: its existence is not
            checked again.
    """

    def __init__(self, inner: Registry, cache: BlobCache, resolved: str) -> None:
        self._inner = inner
        self._cache = cache
        self._resolved = resolved

    def describe(self) -> str:
        return f"cached reads of {self._inner!r}"

    def resolve(self, repository: str, tag: str) -> str | None:
        return self._inner.resolve(Reference(repository=repository, tag=tag))

    def has_manifest(self, repository: str, digest: str) -> bool:
        if digest != self._resolved:
            self._inner.resolve(Reference(repository=repository, digest=digest))
        return True

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        if ":" not in reference:  # a tag
            return self._inner.get_manifest(Reference(repository=repository, tag=reference))
        hit = self._cache.get(f"manifest:{reference}")
        if hit is not None:
            return hit
        data, media_type = self._inner.get_manifest(
            Reference(repository=repository, digest=reference)
        )
        self._cache.put(f"manifest:{reference}", data, media_type)
        return data, media_type

    def read_blob(self, repository: str, digest: str, size: int | None, sink: Sink) -> int:
        hit = self._cache.get(f"blob:{digest}")
        if hit is not None:
            data = hit[0]
        else:
            data = self._inner.get_blob(repository, digest, limit=BLOB_LIMIT)
            self._cache.put(f"blob:{digest}", data)
        sink.reset()
        sink.write(data)
        return len(data)

    def referrers(
        self, repository: str, digest: str, artifact_type: str | None
    ) -> list[Descriptor]:
        return self._inner.referrers(Reference(repository=repository, digest=digest), artifact_type)

    def tags(self, repository: str) -> list[str]:
        return self._inner.tags(repository)

    def has_blob(self, repository: str, digest: str) -> bool:
        raise self._read_only()

    def put_manifest(self, repository: str, data: bytes, media_type: str, tag: str | None) -> str:
        raise self._read_only()

    def write_blob(
        self, repository: str, digest: str, size: int, source: Source, progress: Count | None
    ) -> None:
        raise self._read_only()

    def delete(self, repository: str, reference: str) -> None:
        raise self._read_only()

    def close(self) -> None:
        """Nothing to release: ``inner`` belongs to the caller."""

    @staticmethod
    def _read_only() -> RegistryError:
        return RegistryError("a cached read view of a registry cannot write")
