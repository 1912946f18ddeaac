"""Registry.remote against real registries: Debian's distribution 2.8 and ggcr's
registry with the OCI referrers API, both started on loopback by fixtures."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from policysupply import (
    AuthenticationError,
    Bundle,
    NotFoundError,
    Registry,
    RegistryError,
)
from policysupply._internal import oci
from policysupply.registry import Credentials, RetryPolicy
from tests.interop.conftest import REGISTRY_PASSWORD, REGISTRY_USER, RegistryServer

pytestmark = pytest.mark.interop

CREATED = "2026-11-24T00:00:00Z"


@pytest.fixture
def bundle(example_dir: Path) -> Bundle:
    return Bundle.from_directory(example_dir, revision="rev-1")


def remote(server: RegistryServer, **kw: object) -> Registry:
    return Registry.remote(server.host, insecure=True, **kw)  # type: ignore[arg-type]


def big_bundle(size: int) -> Bundle:
    # Incompressible data so the tarball really is about `size` bytes.
    blob = os.urandom(size // 2).hex()[:size]
    return Bundle.from_bytes(
        Bundle(
            manifest=Bundle.from_directory(
                Path(__file__).parent.parent / "fixtures" / "pinned"
            ).manifest,
            modules={},
            data={"acme": {"blob": blob}},
        ).to_bytes()
    )


def test_push_pull_resolve_tags(
    any_registry: RegistryServer, bundle: Bundle, tmp_path: Path
) -> None:
    with remote(any_registry) as reg:
        ref = reg.push(bundle, "acme/policy:1.0", created=CREATED)
        assert ref.digest is not None
        assert reg.resolve("acme/policy:1.0") == ref.digest
        assert reg.resolve(f"{any_registry.host}/acme/policy:1.0") == ref.digest
        assert reg.pull("acme/policy:1.0") == bundle
        assert reg.pull(ref).to_bytes() == bundle.to_bytes()
        reg.push(bundle, "acme/policy:latest", created=CREATED)
        assert reg.tags("acme/policy") == ["1.0", "latest"]
        # Same bytes as the local layout writes: the image is deterministic.
        local = Registry.local(tmp_path).push(bundle, "acme/policy:1.0", created=CREATED)
        manifest, _ = reg.get_manifest(ref)
        assert oci.parse_manifest(manifest, what="x")["layers"][0]["digest"] == (bundle.digest)
        assert local.digest != ref.digest  # the title annotation names the registry host
        with pytest.raises(NotFoundError):
            reg.resolve("acme/policy:nope")
        with pytest.raises(NotFoundError):
            reg.pull("acme/other:1.0")
        with pytest.raises(RegistryError, match="names host"):
            reg.resolve("example.com/acme/policy:1.0")


def test_tags_follow_pagination(any_registry: RegistryServer, bundle: Bundle) -> None:
    with remote(any_registry) as reg:
        names = [f"v{i}" for i in range(7)]
        for n in names:
            reg.push(bundle, f"acme/paged:{n}", created=CREATED)
        client = reg._store.client  # type: ignore[attr-defined]
        assert sorted(client.tags("acme/paged", page_size=2)) == names
        assert reg.tags("acme/paged") == names


def test_delete_by_digest_and_tag(distribution: RegistryServer, bundle: Bundle) -> None:
    with remote(distribution) as reg:
        ref = reg.push(bundle, "acme/policy:1.0", created=CREATED)
        reg.delete(ref)
        with pytest.raises(NotFoundError):
            reg.resolve(ref)
        with pytest.raises(NotFoundError):
            reg.pull("acme/policy:1.0")


def test_chunked_upload_and_streamed_download(any_registry: RegistryServer, tmp_path: Path) -> None:
    big = big_bundle(1_500_000)
    seen: list[tuple[int, int]] = []
    with remote(any_registry, chunk_size=256 * 1024) as reg:
        ref = reg.push(
            big, "acme/big:1", created=CREATED, progress=lambda d, t: seen.append((d, t))
        )
        assert seen[-1][0] == seen[-1][1]
        assert len(seen) > 5
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        out = tmp_path / "bundle.tar.gz"
        pulled: list[tuple[int, int]] = []
        layer = reg.download(ref, out, progress=lambda d, t: pulled.append((d, t)))
        assert out.read_bytes() == big.to_bytes()
        assert layer.digest == big.digest
        assert pulled[-1] == (layer.size, layer.size)
        assert reg.pull(ref) == big


def _signature_manifest(reg: Registry, repo: str, subject: str | None, text: bytes) -> bytes:
    """A cosign-like manifest: empty config, one payload layer, optional subject."""
    cfg = reg.put_blob(repo, b"{}", media_type="application/vnd.oci.empty.v1+json")
    layer = reg.put_blob(repo, text, media_type="application/vnd.dev.cosign.simplesigning.v1+json")
    obj: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST_V1,
        "config": cfg.to_json(),
        "layers": [layer.to_json()],
    }
    if subject:
        obj["artifactType"] = "application/vnd.dev.policysupply.test"
        obj["subject"] = {"mediaType": oci.MANIFEST_V1, "digest": subject, "size": 1}
    return oci.canonical_json(obj)


def test_referrers_api_and_tag_fallback(any_registry: RegistryServer, bundle: Bundle) -> None:
    with remote(any_registry) as reg:
        ref = reg.push(bundle, "acme/policy:1.0", created=CREATED)
        assert ref.digest
        assert reg.referrers(ref) == []
        m1 = _signature_manifest(reg, "acme/policy", ref.digest, b"one")
        m2 = _signature_manifest(reg, "acme/policy", ref.digest, b"two")
        d1 = reg.put_manifest("acme/policy", m1)
        d2 = reg.put_manifest("acme/policy", m2)
        found = reg.referrers("acme/policy:1.0")
        assert sorted(d.digest for d in found) == sorted([d1, d2])
        assert {d.artifact_type for d in found} == {"application/vnd.dev.policysupply.test"}
        assert reg.referrers(ref, artifact_type="application/other") == []
        tags = reg.tags("acme/policy")
        if any_registry.kind == "ggcr-referrers":
            assert tags == ["1.0"]  # the API indexed them: no fallback tag
        else:
            assert tags == ["1.0", ref.digest.replace(":", "-")]


def test_copy_local_to_remote_and_back_with_signatures(
    any_registry: RegistryServer, bundle: Bundle, tmp_path: Path
) -> None:
    offline = Registry.local(tmp_path / "offline")
    ref = offline.push(bundle, "acme/policy:1.0", created=CREATED)
    assert ref.digest
    sig = _signature_manifest(offline, "acme/policy", None, b"legacy signature")
    sig_tag = ref.digest.replace(":", "-") + ".sig"
    offline.put_manifest(f"acme/policy:{sig_tag}", sig)
    referrer = offline.put_manifest(
        "acme/policy", _signature_manifest(offline, "acme/policy", ref.digest, b"bundle")
    )
    progress: list[tuple[int, int]] = []
    with remote(any_registry) as reg:
        copied = offline.copy(
            "acme/policy:1.0", to=reg, progress=lambda d, t: progress.append((d, t))
        )
        assert copied.digest == ref.digest
        assert progress
        assert progress[-1][0] == progress[-1][1]
        assert reg.resolve("acme/policy:1.0") == ref.digest
        assert reg.get_manifest(f"acme/policy:{sig_tag}")[0] == sig
        assert [d.digest for d in reg.referrers(ref)] == [referrer]
        # ... and back into a fresh layout, under another name.
        mirror = Registry.local(tmp_path / "mirror")
        back = reg.copy("acme/policy:1.0", to=mirror, to_ref="mirror/policy:stable")
        assert back.digest == ref.digest
        assert mirror.pull("mirror/policy:stable") == bundle
        assert mirror.get_manifest(f"mirror/policy:{sig_tag}")[0] == sig
        assert [d.digest for d in mirror.referrers(back)] == [referrer]
        # Without signatures only the artifact travels.
        bare = Registry.local(tmp_path / "bare")
        reg.copy("acme/policy:1.0", to=bare, with_signatures=False)
        assert bare.tags("acme/policy") == ["1.0"]
        assert bare.referrers("acme/policy:1.0") == []


# -- authentication --------------------------------------------------------------


def test_basic_auth_required_and_refused(
    distribution_auth: RegistryServer,
    bundle: Bundle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    with (
        remote(distribution_auth, retry=RetryPolicy.none()) as anon,
        pytest.raises(AuthenticationError, match="requires credentials"),
    ):
        anon.push(bundle, "acme/policy:1.0")
    wrong = ("ci-user", "not-the-password")
    with remote(distribution_auth, auth=wrong) as reg:
        with pytest.raises(AuthenticationError) as info:
            reg.push(bundle, "acme/policy:1.0")
        assert "not-the-password" not in str(info.value)
        assert "not-the-password" not in repr(reg)
    creds = Credentials(username=REGISTRY_USER, password=REGISTRY_PASSWORD)
    assert REGISTRY_PASSWORD not in repr(creds)
    with remote(distribution_auth, auth=creds) as reg:
        ref = reg.push(bundle, "acme/policy:1.0", created=CREATED)
        assert reg.pull(ref) == bundle


def _docker_config(tmp_path: Path, obj: dict[str, object]) -> Path:
    d = tmp_path / "docker"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(obj))
    return d


def test_credentials_from_docker_config_auths(
    distribution_auth: RegistryServer,
    bundle: Bundle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64

    token = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    d = _docker_config(
        tmp_path, {"auths": {f"http://{distribution_auth.host}/v1/": {"auth": token}}}
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    with remote(distribution_auth) as reg:
        assert reg.push(bundle, "acme/policy:1.0", created=CREATED).digest


def _helper(tmp_path: Path, name: str, script: str) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    path = bindir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bindir


@pytest.mark.parametrize("key", ["credHelpers", "credsStore"])
def test_credentials_from_helper(
    distribution_auth: RegistryServer,
    bundle: Bundle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
) -> None:
    host = distribution_auth.host
    bindir = _helper(
        tmp_path,
        "fake",
        "read host\n"
        f'[ "$host" = "{host}" ] || '
        '{ echo "credentials not found in native keychain"; exit 1; }\n'
        f'printf \'{{"ServerURL":"%s","Username":"{REGISTRY_USER}",'
        f'"Secret":"{REGISTRY_PASSWORD}"}}\' "$host"\n',
    )
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    config = {"credHelpers": {host: "fake"}} if key == "credHelpers" else {"credsStore": "fake"}
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path, config)))
    with remote(distribution_auth) as reg:
        assert reg.push(bundle, "acme/policy:1.0", created=CREATED).digest


def test_broken_helper_is_a_clear_error(
    distribution_auth: RegistryServer,
    bundle: Bundle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bindir = _helper(tmp_path, "broken", f'echo "leaked {REGISTRY_PASSWORD}" >&2\nexit 3\n')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(
        "DOCKER_CONFIG",
        str(_docker_config(tmp_path, {"credHelpers": {distribution_auth.host: "broken"}})),
    )
    with remote(distribution_auth) as reg, pytest.raises(AuthenticationError) as info:
        reg.push(bundle, "acme/policy:1.0")
    assert "docker-credential-broken" in str(info.value)
    assert REGISTRY_PASSWORD not in str(info.value)
    monkeypatch.setenv(
        "DOCKER_CONFIG",
        str(_docker_config(tmp_path, {"credHelpers": {distribution_auth.host: "absent"}})),
    )
    with remote(distribution_auth) as reg, pytest.raises(AuthenticationError, match="not on PATH"):
        reg.push(bundle, "acme/policy:1.0")


def test_bearer_token_flow(
    distribution_token: tuple[RegistryServer, object],
    bundle: Bundle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, tokens = distribution_token
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    # The token service is another origin than the registry: https only.
    monkeypatch.setenv("SSL_CERT_FILE", str(tokens.tls_cert_path))  # type: ignore[attr-defined]
    with remote(server, retry=RetryPolicy.none()) as anon, pytest.raises(AuthenticationError):
        anon.push(bundle, "acme/policy:1.0")
    with (
        remote(server, auth=("ci-user", "wrong-password")) as reg,
        pytest.raises(AuthenticationError, match="token service refused") as info,
    ):
        reg.push(bundle, "acme/policy:1.0")
    assert "wrong-password" not in str(info.value)
    with remote(server, auth=(REGISTRY_USER, REGISTRY_PASSWORD)) as reg:
        ref = reg.push(bundle, "acme/policy:1.0", created=CREATED)
        assert reg.pull(ref) == bundle
        assert reg.tags("acme/policy") == ["1.0"]
    scopes = {r.get("scope") for r in tokens.requests}  # type: ignore[attr-defined]
    assert "repository:acme/policy:pull,push" in scopes
    assert "repository:acme/policy:pull" in scopes
