"""Only verified bundles reach a loader; publish and fetch_verified."""

from __future__ import annotations

from pathlib import Path

import pytest

from policysupply.loaders import (
    OPA,
    BundleServer,
    extract_verified,
    fetch_verified,
    publish,
)
from tests.unit.loaders._env import Env, make_bundle


def test_loaders_refuse_anything_but_a_verified_bundle(env: Env, tmp_path: Path) -> None:
    bundle = make_bundle("1", ["alice"])
    with pytest.raises(TypeError, match="VerifiedBundle"):
        OPA("http://127.0.0.1:1").load(bundle)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="VerifiedBundle"):
        extract_verified(bundle, tmp_path / "out")  # type: ignore[arg-type]
    server = BundleServer(tmp_path / "store")
    with pytest.raises(TypeError, match="VerifiedBundle"):
        server.publish(bundle, "authz")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    assert server.names() == []


def test_publish_signs_the_pushed_digest_and_fetch_verified_pulls_it(env: Env) -> None:
    bundle = make_bundle("1", ["alice"])
    ref = publish(bundle, env.registry, "acme/policy:1", env.signer)
    verified = fetch_verified(env.registry, "acme/policy:1", env.verifier)
    assert verified.reference == ref
    assert verified.bundle == bundle
