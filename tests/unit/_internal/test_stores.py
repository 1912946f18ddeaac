"""Hand-written (hostile) manifests in an OCI layout: skipped or RegistryError, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policysupply import Bundle, Registry, RegistryError
from policysupply._internal import oci, stores

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    r = Registry.local(tmp_path / "oci")
    r.push(Bundle(modules={"a.rego": "package a\nallow := true\n"}), "acme/p:1")
    return r


def _referrer(reg: Registry, subject: str, **fields: object) -> str:
    empty = reg.put_blob("acme/p", b"{}", media_type=oci.EMPTY_V1)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST_V1,
        "config": empty.to_json(),
        "layers": [],
        "subject": {"mediaType": oci.MANIFEST_V1, "digest": subject, "size": 1},
        **fields,
    }
    return reg.put_manifest("acme/p", json.dumps(manifest).encode())


@pytest.mark.parametrize(
    "fields",
    [
        {"annotations": 5},
        {"annotations": ["a"]},
        {"annotations": {"a": [1]}},
        {"artifactType": 5},
        {"artifactType": {"a": 1}},
    ],
)
def test_malformed_referrers_are_not_listed(reg: Registry, fields: dict[str, object]) -> None:
    subject = reg.resolve("acme/p:1")
    good = _referrer(reg, subject, artifactType="a/b", annotations={"k": "v"})
    _referrer(reg, subject, **fields)
    found = reg.referrers(f"acme/p@{subject}")
    assert [(d.digest, d.artifact_type, dict(d.annotations)) for d in found] == [
        (good, "a/b", {"k": "v"})
    ]


def test_referrer_descriptor_checks_its_fields() -> None:
    base = {
        "schemaVersion": 2,
        "config": {"mediaType": "c", "digest": "sha256:" + "0" * 64, "size": 2},
        "layers": [],
        "subject": {"digest": "sha256:" + "1" * 64},
    }
    with pytest.raises(RegistryError, match="annotations"):
        stores.referrer_descriptor(json.dumps(base | {"annotations": 5}).encode(), "d")
    with pytest.raises(RegistryError, match="artifactType"):
        stores.referrer_descriptor(json.dumps(base | {"artifactType": 5}).encode(), "d")
    desc = stores.referrer_descriptor(json.dumps(base).encode(), "d")
    assert desc is not None
    assert desc.artifact_type == "c"


def test_deeply_nested_manifests(reg: Registry, tmp_path: Path) -> None:
    assert stores.media_type_of(DEEP, "x/y") == "x/y"
    digest = oci.sha256_digest(DEEP)
    blob = tmp_path / "oci" / "acme" / "p" / "blobs" / "sha256" / digest.split(":")[1]
    blob.write_bytes(DEEP)
    index = tmp_path / "oci" / "acme" / "p" / "index.json"
    doc = json.loads(index.read_bytes())
    doc["manifests"].append({"mediaType": oci.MANIFEST_V1, "digest": digest, "size": len(DEEP)})
    index.write_text(json.dumps(doc))
    subject = reg.resolve("acme/p:1")
    assert reg.referrers(f"acme/p@{subject}") == []
    with pytest.raises(RegistryError):
        reg.pull(f"acme/p@{digest}")


def test_index_entry_with_null_annotations(reg: Registry, tmp_path: Path) -> None:
    index = tmp_path / "oci" / "acme" / "p" / "index.json"
    doc = json.loads(index.read_bytes())
    doc["manifests"].insert(0, dict(doc["manifests"][0], annotations=None))
    index.write_text(json.dumps(doc))
    assert reg.resolve("acme/p:1").startswith("sha256:")
    assert reg.tags("acme/p") == ["1"]


@pytest.mark.parametrize(
    "desc",
    [
        {"mediaType": "a", "digest": 5, "size": 1},
        {"mediaType": "a", "digest": None, "size": 1},
        {"mediaType": "a", "digest": "sha256:" + "0" * 64, "size": 1, "artifactType": 5},
    ],
)
def test_descriptor_with_wrongly_typed_fields(desc: dict[str, object]) -> None:
    with pytest.raises(RegistryError):
        oci.Descriptor.from_json(desc)
