"""Registry.local against the real oras CLI on OCI image layouts, both directions."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from policysupply import Bundle, Registry

pytestmark = pytest.mark.interop


def oras(oras_bin: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(oras_bin), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_oras_pulls_what_we_push_byte_identical(
    oras_bin: Path, tmp_path: Path, example_dir: Path
) -> None:
    bundle = Bundle.from_directory(example_dir)
    ref = Registry.local(tmp_path / "layout").push(bundle, "acme/policy:1.0")
    out = tmp_path / "out"
    out.mkdir()
    proc = oras(oras_bin, "pull", "--oci-layout", f"{tmp_path}/layout/acme/policy:1.0", cwd=out)
    assert ref.digest in proc.stdout
    # oras names the file after the layer's title annotation (opcr style: the repository).
    assert (out / "acme" / "policy").read_bytes() == bundle.to_bytes()


def test_we_pull_what_oras_pushes(oras_bin: Path, tmp_path: Path, example_dir: Path) -> None:
    bundle = Bundle.from_directory(example_dir)
    bundle.write(tmp_path / "bundle.tar.gz")
    oras(
        oras_bin,
        "push",
        "--oci-layout",
        f"{tmp_path}/layout/team/policies:v2",
        "bundle.tar.gz:application/vnd.oci.image.layer.v1.tar+gzip",
        cwd=tmp_path,
    )
    pulled = Registry.local(tmp_path / "layout").pull("team/policies:v2")
    assert pulled == bundle
    assert pulled.to_bytes() == bundle.to_bytes()
    assert Registry.local(tmp_path / "layout").tags("team/policies") == ["v2"]
