"""Registry.remote behind a fault-injecting proxy in front of a real registry.

Every fault either succeeds within the deadline (retried) or raises the typed
error, and a failed pull into a local layout leaves no partial blob and no tag.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from policysupply import (
    Bundle,
    DigestMismatchError,
    NotFoundError,
    Registry,
    RegistryError,
    TransientRegistryError,
)
from policysupply.registry import RetryPolicy, Timeout
from tests.interop import faultproxy
from tests.interop.conftest import RegistryServer
from tests.interop.faultproxy import FaultProxy, Rule

pytestmark = pytest.mark.interop

BLOB = r"/blobs/sha256:"
MANIFEST = r"/manifests/"
FAST = RetryPolicy(deadline=4.0, initial_backoff=0.05, max_backoff=0.2)


@pytest.fixture
def proxy(distribution: RegistryServer) -> Iterator[FaultProxy]:
    yield from faultproxy.start(distribution.host)


@pytest.fixture
def bundle(example_dir: Path) -> Bundle:
    return Bundle.from_directory(example_dir, revision="faults")


def via(proxy: FaultProxy, **kw: object) -> Registry:
    kw.setdefault("retry", FAST)
    kw.setdefault("timeout", Timeout(connect=2, read=0.5, write=2, pool=2))
    return Registry.remote(proxy.host, insecure=True, **kw)  # type: ignore[arg-type]


@pytest.fixture
def pushed(distribution: RegistryServer, bundle: Bundle) -> str:
    with Registry.remote(distribution.host, insecure=True) as reg:
        ref = reg.push(bundle, "acme/policy:1.0")
    assert ref.digest
    return ref.digest


def assert_layout_clean(root: Path) -> None:
    """No temp files, no blobs, no tags after a failed pull into ``root``."""
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    assert [p for p in files if p.name.endswith(".tmp")] == []
    assert [p for p in files if "blobs" in p.parts] == [] or Registry.local(root).tags(
        "acme/policy"
    ) == []
    if root.exists():
        assert Registry.local(root).tags("acme/policy") == []


@pytest.mark.parametrize("fault", ["reset", "truncate", "slow"])
def test_transient_fault_once_is_retried(
    proxy: FaultProxy, pushed: str, bundle: Bundle, fault: str
) -> None:
    proxy.add(Rule("GET", BLOB, fault, times=1))
    with via(proxy) as reg:
        assert reg.pull("acme/policy:1.0") == bundle
    assert proxy.count("GET", BLOB) >= 2


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_status_honours_retry_after(
    proxy: FaultProxy, pushed: str, bundle: Bundle, status: int
) -> None:
    proxy.add(Rule("GET", MANIFEST, "status", times=1, status=status, retry_after="1"))
    start = time.monotonic()
    with via(proxy) as reg:
        assert reg.pull("acme/policy:1.0") == bundle
    assert time.monotonic() - start >= 0.9  # waited as told, not the 50 ms back-off
    assert [o for _, _, o in proxy.log].count("status") == 1


def test_retry_after_beyond_deadline_gives_up_at_once(proxy: FaultProxy, pushed: str) -> None:
    proxy.add(Rule("GET", MANIFEST, "status", times=-1, status=429, retry_after="3600"))
    proxy.add(Rule("HEAD", MANIFEST, "status", times=-1, status=429, retry_after="3600"))
    start = time.monotonic()
    with via(proxy) as reg, pytest.raises(TransientRegistryError, match="429"):
        reg.pull("acme/policy:1.0")
    assert time.monotonic() - start < FAST.deadline
    assert len(proxy.log) == 1


@pytest.mark.parametrize("status", [400, 403, 404, 500])
def test_other_statuses_are_never_retried(proxy: FaultProxy, pushed: str, status: int) -> None:
    proxy.add(Rule("HEAD", MANIFEST, "status", times=-1, status=status))
    with via(proxy) as reg, pytest.raises(RegistryError) as info:
        reg.resolve("acme/policy:1.0") if status != 404 else reg.pull("acme/policy:1.0")
    assert not isinstance(info.value, TransientRegistryError)
    if status == 404:
        assert isinstance(info.value, NotFoundError)
    assert proxy.count("HEAD", MANIFEST) == 1


@pytest.mark.parametrize("fault", ["reset", "truncate", "slow"])
def test_persistent_fault_fails_typed_and_leaves_layout_clean(
    proxy: FaultProxy, pushed: str, tmp_path: Path, fault: str
) -> None:
    proxy.add(Rule("GET", BLOB, fault, times=-1, delay=1.0))
    layout = tmp_path / "mirror"
    start = time.monotonic()
    with via(proxy) as reg, pytest.raises(TransientRegistryError):
        reg.copy("acme/policy:1.0", to=Registry.local(layout))
    assert time.monotonic() - start < FAST.deadline + 3  # bounded by the deadline
    assert proxy.count("GET", BLOB) >= 2
    assert_layout_clean(layout)


def test_wrong_digest_is_refused_not_retried(
    proxy: FaultProxy, pushed: str, tmp_path: Path
) -> None:
    proxy.add(Rule("GET", BLOB, "corrupt", times=-1))
    layout = tmp_path / "mirror"
    with via(proxy) as reg:
        with pytest.raises(DigestMismatchError):
            reg.pull("acme/policy:1.0")
        with pytest.raises(DigestMismatchError):
            reg.copy("acme/policy:1.0", to=Registry.local(layout))
        with pytest.raises(DigestMismatchError):
            reg.download("acme/policy:1.0", tmp_path / "bundle.tar.gz")
    assert not (tmp_path / "bundle.tar.gz").exists()
    assert_layout_clean(layout)


def test_corrupt_manifest_by_digest_is_refused(proxy: FaultProxy, pushed: str) -> None:
    proxy.add(Rule("GET", MANIFEST + "sha256:", "corrupt", times=-1))
    with via(proxy) as reg, pytest.raises(DigestMismatchError):
        reg.get_manifest(f"acme/policy@{pushed}")


def test_download_keeps_the_previous_file_on_failure(
    proxy: FaultProxy, pushed: str, tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "bundle.tar.gz"
    target.write_bytes(b"previous good bundle")
    proxy.add(Rule("GET", BLOB, "truncate", times=-1))
    with via(proxy) as reg, pytest.raises(TransientRegistryError):
        reg.download("acme/policy:1.0", target)
    assert target.read_bytes() == b"previous good bundle"
    assert [p.name for p in target.parent.iterdir()] == ["bundle.tar.gz"]


def test_failed_manifest_put_leaves_no_tag(
    proxy: FaultProxy, distribution: RegistryServer, bundle: Bundle
) -> None:
    proxy.add(Rule("PUT", MANIFEST, "status", times=-1, status=503))
    with via(proxy) as reg, pytest.raises(TransientRegistryError):
        reg.push(bundle, "acme/policy:2.0")
    with Registry.remote(distribution.host, insecure=True) as direct, pytest.raises(NotFoundError):
        direct.resolve("acme/policy:2.0")


def test_reset_mid_chunked_upload_restarts_the_session(
    proxy: FaultProxy, distribution: RegistryServer
) -> None:
    from tests.interop.test_registry_remote import big_bundle

    big = big_bundle(600_000)
    proxy.add(Rule("PATCH", r"/blobs/uploads/", "reset", times=1))
    with via(proxy, chunk_size=128 * 1024) as reg:
        ref = reg.push(big, "acme/big:1")
    assert proxy.count("POST", r"/blobs/uploads/") >= 2
    with Registry.remote(distribution.host, insecure=True) as direct:
        assert direct.pull(ref) == big


def test_no_retries_policy_fails_on_first_fault(proxy: FaultProxy, pushed: str) -> None:
    proxy.add(Rule("GET", BLOB, "reset", times=1))
    with (
        via(proxy, retry=RetryPolicy.none()) as reg,
        pytest.raises(TransientRegistryError, match="1 attempt"),
    ):
        reg.pull("acme/policy:1.0")
