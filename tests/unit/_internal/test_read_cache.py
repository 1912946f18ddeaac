"""The gate's read cache: a read-only store in front of a registry, reusing only digest reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policysupply import Registry, RegistryError, Signer
from policysupply._internal import cosign
from policysupply._internal.read_cache import BlobCache, CachedReads
from tests.interop._gate_fixtures import push_image


class Spy(Registry):
    """Counts what reaches the real registry (a spy: the store is a real layout)."""

    def __init__(self, inner: Registry) -> None:
        super().__init__(inner._store, host=inner.host)
        self.reads: list[str] = []

    def get_manifest(self, ref: object) -> tuple[bytes, str]:  # type: ignore[override]
        self.reads.append(f"manifest {ref}")
        return super().get_manifest(ref)  # type: ignore[arg-type]

    def get_blob(self, repository: str, digest: str, *, limit: int = 64 << 20) -> bytes:
        self.reads.append(f"blob {digest}")
        return super().get_blob(repository, digest, limit=limit)


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry.local(tmp_path / "layout")


def view(inner: Registry, cache: BlobCache, resolved: str = "") -> Registry:
    return Registry(CachedReads(inner, cache, resolved), host=inner.host)


def test_digest_reads_are_reused_tags_are_not(reg: Registry) -> None:
    image = push_image(reg, "acme/app:1")
    digest = str(image.digest)
    Signer.generate().sign(reg, "acme/app:1")
    spy, cache = Spy(reg), BlobCache()
    for _ in range(3):
        cached = view(spy, cache, digest)
        assert cached.resolve(f"acme/app@{digest}") == digest  # no existence check
        cached.get_manifest(f"acme/app@{digest}")
        sig, _ = cached.get_manifest(f"acme/app:{cosign.sig_tag(digest)}")
        payload = json.loads(sig)["layers"][0]["digest"]
        cached.get_blob("acme/app", payload, limit=1 << 20)
    assert spy.reads.count(f"manifest acme/app@{digest}") == 1
    assert spy.reads.count(f"blob {payload}") == 1
    assert sum(r.startswith("manifest acme/app:sha256-") for r in spy.reads) == 3


def test_a_cached_blob_over_the_callers_limit_is_refused(reg: Registry) -> None:
    push_image(reg, "acme/app:1")
    sig = Signer.generate().sign(reg, "acme/app:1")
    data, _ = reg.get_manifest(f"acme/app:{sig.location}")
    payload = json.loads(data)["layers"][0]["digest"]
    cached = view(reg, BlobCache())
    cached.get_blob("acme/app", payload)
    with pytest.raises(RegistryError, match="larger than 8 bytes"):
        cached.get_blob("acme/app", payload, limit=8)


def test_the_view_cannot_write(reg: Registry) -> None:
    image = push_image(reg, "acme/app:1")
    cached = view(reg, BlobCache())
    with pytest.raises(RegistryError, match="cannot write"):
        cached.put_blob("acme/app", b"x")
    with pytest.raises(RegistryError, match="cannot write"):
        cached.delete(f"acme/app@{image.digest}")


def test_the_cache_is_bounded() -> None:
    cache = BlobCache(max_bytes=64)
    cache.put("blob:big", b"x" * 9)  # over an eighth of the cache: not kept
    assert cache.get("blob:big") is None
    for i in range(10):
        cache.put(f"blob:{i}", b"y" * 8)
    assert cache.get("blob:0") is None  # least recently used went first
    assert cache.get("blob:9") == (b"y" * 8, "")
