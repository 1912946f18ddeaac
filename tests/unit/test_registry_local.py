"""Registry.local: an OCI image layout per repository, atomic and digest-checked."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from policysupply import Bundle, DigestMismatchError, NotFoundError, Registry, RegistryError
from policysupply._internal import oci


@pytest.fixture
def bundle(fixtures_dir: Path) -> Bundle:
    return Bundle.from_directory(fixtures_dir / "pinned")


def test_push_pull_roundtrip_and_layout(tmp_path: Path, bundle: Bundle) -> None:
    reg = Registry.local(tmp_path)
    seen: list[tuple[int, int]] = []
    ref = reg.push(bundle, "acme/policy:1.0", created="2026-01-02T03:04:05Z",
                   progress=lambda done, total: seen.append((done, total)))
    assert ref.digest
    assert reg.resolve("acme/policy:1.0") == ref.digest
    assert reg.pull("acme/policy:1.0") == bundle
    assert reg.pull(ref) == bundle
    assert seen[-1][0] == seen[-1][1]
    assert all(a <= b for a, b in seen)
    layout = tmp_path / "acme" / "policy"
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    manifest = json.loads(reg.get_manifest(ref)[0])
    assert manifest["mediaType"] == oci.MANIFEST_V1
    assert manifest["config"]["mediaType"] == oci.CONFIG_V1
    assert [layer["mediaType"] for layer in manifest["layers"]] == [oci.LAYER_TAR_GZIP]
    assert manifest["layers"][0]["digest"] == bundle.digest
    assert manifest["annotations"][oci.ANN_REVISION] == "pinned-1"
    assert manifest["annotations"][oci.ANN_TITLE] == "acme/policy"


def test_same_bundle_same_created_same_digest(tmp_path: Path, bundle: Bundle) -> None:
    a = Registry.local(tmp_path / "a").push(bundle, "p:1", created="2026-01-01T00:00:00Z")
    b = Registry.local(tmp_path / "b").push(bundle, "p:1", created="2026-01-01T00:00:00Z")
    assert a.digest == b.digest


def test_tags_and_delete(
    tmp_path: Path, bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One creation time, so the three pushes are one manifest even when they
    # straddle a second on a loaded machine (the test was flaky without it).
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    reg = Registry.local(tmp_path)
    d1 = reg.push(bundle, "p:1")
    reg.push(bundle, "p:2")
    reg.push(bundle, "p:latest")
    assert reg.tags("p") == ["1", "2", "latest"]
    reg.delete("p:2")
    assert reg.tags("p") == ["1", "latest"]
    with pytest.raises(NotFoundError):
        reg.delete("p:2")
    reg.delete(d1)  # by digest: every tag on that manifest goes
    assert reg.tags("p") == []
    with pytest.raises(NotFoundError):
        reg.resolve("p:1")


def test_missing_things_are_not_found(tmp_path: Path) -> None:
    reg = Registry.local(tmp_path)
    with pytest.raises(NotFoundError):
        reg.pull("nothing:here")
    with pytest.raises(NotFoundError):
        reg.get_blob("nothing", "sha256:" + "0" * 64)


def test_tampered_layer_is_refused(tmp_path: Path, bundle: Bundle) -> None:
    reg = Registry.local(tmp_path)
    reg.push(bundle, "p:1")
    blob = tmp_path / "p" / "blobs" / "sha256" / bundle.digest.split(":")[1]
    raw = bytearray(blob.read_bytes())
    raw[-1] ^= 0xFF
    blob.write_bytes(bytes(raw))
    with pytest.raises(DigestMismatchError):
        reg.pull("p:1")


def test_tampered_manifest_is_refused(tmp_path: Path, bundle: Bundle) -> None:
    reg = Registry.local(tmp_path)
    ref = reg.push(bundle, "p:1")
    assert ref.digest
    path = tmp_path / "p" / "blobs" / "sha256" / ref.digest.split(":")[1]
    path.write_bytes(path.read_bytes().replace(b"pinned-1", b"pinned-2"))
    with pytest.raises(DigestMismatchError):
        reg.pull("p:1")


def test_failed_push_leaves_no_tag_and_no_partial_blob(tmp_path: Path, bundle: Bundle,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from policysupply._internal import fs

    reg = Registry.local(tmp_path)
    reg.push(bundle, "p:1")
    real = fs.atomic_write
    calls = {"n": 0}

    def flaky(target: Path, data: bytes, **kwargs: Any) -> None:
        calls["n"] += 1
        if target.name == "index.json":
            raise OSError(28, "No space left on device")
        real(target, data, **kwargs)

    monkeypatch.setattr(fs, "atomic_write", flaky)
    other = Bundle.from_bytes(bundle.to_bytes())
    other = Bundle(manifest=other.manifest, modules=dict(other.modules),
                   data={"acme": {"changed": True}})
    # A typed error naming the layout (it was a raw OSError before the layout store wrapped it).
    with pytest.raises(RegistryError, match="No space left on device"):
        reg.push(other, "p:1")
    monkeypatch.undo()
    assert reg.pull("p:1") == bundle  # the tag still names the old, complete image
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_manifest_referencing_missing_blob_is_refused(tmp_path: Path) -> None:
    reg = Registry.local(tmp_path)
    manifest, _ = oci.policy_manifest(b"not stored", title="p", created="x", revision=None)
    with pytest.raises(RegistryError, match="missing blob"):
        reg.put_manifest("p:1", manifest)
    assert reg.tags("p") == []


def _push_many(args: tuple[str, str, int]) -> None:
    root, fixture, worker = args
    b = Bundle.from_directory(fixture)
    reg = Registry.local(root)
    for i in range(5):
        reg.push(b, f"p:w{worker}-{i}")


def test_concurrent_writers_keep_every_tag(tmp_path: Path, fixtures_dir: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_push_many, [(str(tmp_path), str(fixtures_dir / "pinned"), w) for w in range(4)])
    assert len(Registry.local(tmp_path).tags("p")) == 20


@pytest.mark.parametrize("ref", ["UPPER/case:1", "a/b:bad tag", "a@sha256:123", "../x:1", ""])
def test_bad_references_are_refused(tmp_path: Path, ref: str) -> None:
    with pytest.raises(RegistryError):
        Registry.local(tmp_path).resolve(ref)


def test_download_to_a_full_disk_is_a_registry_error_and_keeps_the_old_file(
    tmp_path: Path, bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    reg = Registry.local(tmp_path / "oci")
    reg.push(bundle, "p:1")
    target = tmp_path / "bundle.tar.gz"
    target.write_bytes(b"OLD")

    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RegistryError, match=f"cannot write {target}: No space"):
        reg.download("p:1", target)
    monkeypatch.undo()
    assert target.read_bytes() == b"OLD"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
