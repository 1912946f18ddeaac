"""Our remote push/pull against the oras CLI, and OPA's OCI downloader pulling our images."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from policysupply import Bundle, Registry
from tests.interop.conftest import RegistryServer

pytestmark = pytest.mark.interop


def oras(oras_bin: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(oras_bin), *args, "--plain-http"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_oras_pulls_what_we_push(
    oras_bin: Path, any_registry: RegistryServer, example_dir: Path, tmp_path: Path
) -> None:
    bundle = Bundle.from_directory(example_dir)
    with Registry.remote(any_registry.host, insecure=True) as reg:
        ref = reg.push(bundle, "acme/policy:1.0")
    proc = oras(oras_bin, "pull", f"{any_registry.host}/acme/policy:1.0", cwd=tmp_path)
    assert str(ref.digest) in proc.stdout
    # The layer title is the repository name (opcr style), so that is the file oras writes.
    written = tmp_path / any_registry.host / "acme" / "policy"
    assert written.read_bytes() == bundle.to_bytes()


def test_we_pull_what_oras_pushes(
    oras_bin: Path, any_registry: RegistryServer, example_dir: Path, tmp_path: Path
) -> None:
    bundle = Bundle.from_directory(example_dir)
    bundle.write(tmp_path / "bundle.tar.gz")
    proc = oras(
        oras_bin,
        "push",
        f"{any_registry.host}/team/policies:v2",
        "bundle.tar.gz:application/vnd.oci.image.layer.v1.tar+gzip",
        cwd=tmp_path,
    )
    with Registry.remote(any_registry.host, insecure=True) as reg:
        digest = reg.resolve("team/policies:v2")
        assert digest in proc.stdout
        pulled = reg.pull("team/policies:v2")
    assert pulled.to_bytes() == bundle.to_bytes()


def test_oras_sees_our_referrers(
    oras_bin: Path, referrers_registry: RegistryServer, example_dir: Path, tmp_path: Path
) -> None:
    bundle = Bundle.from_directory(example_dir)
    (tmp_path / "note.txt").write_text("reviewed")
    with Registry.remote(referrers_registry.host, insecure=True) as reg:
        ref = reg.push(bundle, "acme/policy:1.0")
        oras(
            oras_bin,
            "attach",
            "--artifact-type",
            "application/vnd.dev.policysupply.note",
            f"{referrers_registry.host}/acme/policy@{ref.digest}",
            "note.txt",
            cwd=tmp_path,
        )
        found = reg.referrers(ref, artifact_type="application/vnd.dev.policysupply.note")
    assert len(found) == 1
    proc = oras(
        oras_bin,
        "discover",
        "--format",
        "json",
        f"{referrers_registry.host}/acme/policy@{ref.digest}",
        cwd=tmp_path,
    )
    assert found[0].digest in proc.stdout


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_opa_oci_downloader_loads_our_image(
    start_opa: Any,
    distribution: RegistryServer,
    example_dir: Path,
    fixtures_dir: Path,
    tmp_path: Path,
    by: str,
) -> None:
    import json

    bundle = Bundle.from_directory(example_dir, revision="oci-test")
    with Registry.remote(distribution.host, insecure=True) as reg:
        ref = reg.push(bundle, "acme/policy:1.0")
    resource = (
        f"{distribution.host}/acme/policy:1.0"
        if by == "tag"
        else f"{distribution.host}/acme/policy@{ref.digest}"
    )
    config = tmp_path / f"opa-{by}.yaml"
    config.write_text(
        json.dumps(
            {
                "services": {"registry": {"url": distribution.url, "type": "oci"}},
                "bundles": {
                    "k8s": {
                        "service": "registry",
                        "resource": resource,
                        "polling": {"min_delay_seconds": 1, "max_delay_seconds": 2},
                    }
                },
                "persistence_directory": str(tmp_path / f"opa-persist-{by}"),
            }
        )
    )
    opa = start_opa("--config-file", str(config))
    cases = json.loads((fixtures_dir / "kubernetes_cases.json").read_text())
    case = cases[0]
    deadline = time.monotonic() + 60
    result = None
    while time.monotonic() < deadline:
        revision = opa.get("/v1/data/system/bundles").get("result", {}).get("k8s", {})
        if revision.get("manifest", {}).get("revision") == "oci-test":
            result = opa.post("/v1/" + case["query"].replace(".", "/"), {"input": case["input"]})
            break
        time.sleep(0.2)
    assert result is not None, f"OPA never activated the OCI bundle: {opa.log.read_text()}"
    assert result.get("result") == case["expected"]
