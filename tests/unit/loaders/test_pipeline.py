"""Only verified bundles reach a loader; publish and fetch_verified."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from policysupply import Signer
from policysupply.loaders import (
    OPA,
    BundleServer,
    extract_verified,
    fetch_verified,
    publish,
)
from policysupply.native import NativeTrust
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
    # Defence in depth: the bundle inside also carries an OPA-native
    # signature by the same key, and nothing else changed.
    assert attrs.evolve(verified.bundle, files={}) == bundle
    native = NativeTrust.from_cosign_keys([env.signer.public_key_pem])
    assert verified.bundle.verify_native(native).key_ids == (env.signer.key_id,)


def test_publish_native_signature_options(env: Env) -> None:
    bundle = make_bundle("1", ["alice"])
    publish(bundle, env.registry, "acme/policy:plain", env.signer, native=False)
    assert env.registry.pull("acme/policy:plain") == bundle
    # A bundle that is already signed natively keeps its own signature.
    own = bundle.sign(Signer.generate(), key_id="release")
    publish(own, env.registry, "acme/policy:own", env.signer)
    assert env.registry.pull("acme/policy:own").files == own.files
