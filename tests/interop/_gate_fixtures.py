"""Helpers for the gate tests: container-image-like artifacts, and real cosign."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

from policysupply import Reference, Registry
from tests.conftest import peer

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


def run_cosign(
    version: str, *args: str, cwd: Path, password: str = "pw", check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs real cosign ``version`` ("2" or "3") with a private HOME under ``cwd``."""
    env = {
        **os.environ,
        "COSIGN_PASSWORD": password,
        "COSIGN_YES": "true",
        "HOME": str(cwd),
        "DOCKER_CONFIG": str(cwd / ".docker"),
    }
    proc = subprocess.run(
        [str(peer(f"cosign{version}")), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


# Key-only signing against a loopback plain-HTTP registry, no transparency log.
COSIGN_SIGN_FLAGS = {
    "2": ["--tlog-upload=false", "--allow-http-registry"],
    "3": ["--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry"],
}
COSIGN_VERIFY_FLAGS = ["--insecure-ignore-tlog=true", "--allow-http-registry"]
