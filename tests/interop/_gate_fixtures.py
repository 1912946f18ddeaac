"""Helpers for the gate tests: container-image-like artifacts."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

from policysupply import Reference, Registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _layer(seed: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        body = f"hello from {seed}\n".encode()
        info = tarfile.TarInfo("app/hello.txt")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return gzip.compress(raw.getvalue(), mtime=0)


def push_image(registry: Registry, ref: str, seed: str = "app") -> Reference:
    """Pushes a small container image (OCI config + one layer) under ``ref``.

    Returns the reference pinned to the manifest digest (host included for a
    remote registry).
    """
    r = Reference.parse(ref)
    layer = _layer(seed)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/app/hello"], "Labels": {"seed": seed}},
            "rootfs": {"type": "layers", "diff_ids": []},
        },
        sort_keys=True,
    ).encode()
    cdesc = registry.put_blob(r.repository, config, media_type=OCI_CONFIG)
    ldesc = registry.put_blob(r.repository, layer, media_type=OCI_LAYER)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": cdesc.to_json(),
            "layers": [ldesc.to_json()],
        }
    ).encode()
    digest = registry.put_manifest(ref, manifest, media_type=OCI_MANIFEST)
    return Reference(host=registry.host, repository=r.repository, digest=digest)
