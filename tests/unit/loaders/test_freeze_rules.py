"""Attacks on the bundle server's trust decisions across rounds and restarts.

One freeze rule for the verifier and the server (the age counts from
``VerifiedArtifact.age_from``, the deadline is that plus the limit), and a
stored bundle is served by a watch only once it verified under the watch's
current trust policy.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from policysupply import Signer, TrustPolicy, Verifier
from policysupply.loaders import BundleServer
from tests.unit._sigstore_pki import FakeSigstore
from tests.unit.loaders._env import Env, make_bundle
from tests.unit.test_verifier_signing_time import (
    cosign_bundle_annotation,
    edit_sig_layers,
    log_key_signature,
)

LIMIT = dt.timedelta(hours=1)


def test_policy_change_at_restart_keeps_serving_a_stored_bundle_it_no_longer_trusts(
    env: Env, tmp_path: Path
) -> None:
    # Served under the old policy (key A); the operator rotates A out after a
    # compromise and restarts. The tag did not move: the stored bundle, signed
    # by A only, must not stay served for want of a new digest.
    env.release("1", ["alice"])
    store = tmp_path / "store"
    first = BundleServer(store)
    watch = first.watch(env.registry, "acme/policy:prod", env.verifier, name="authz", interval=3600)
    watch.stop()
    watch.check()
    assert first.served("authz") is not None

    rotated = Verifier(TrustPolicy(keys=[Signer.generate().public_key_pem]))
    second = BundleServer(store)
    watch = second.watch(env.registry, "acme/policy:prod", rotated, name="authz", interval=3600)
    watch.stop()
    watch.check()
    assert second.served("authz") is None
    assert "UntrustedSignatureError" in (watch.last_error or "")
    watch.check()  # and it stays withdrawn on later rounds
    assert second.served("authz") is None


def test_policy_change_at_restart_with_the_tag_moved_to_junk_keeps_the_stored_bundle(
    env: Env, tmp_path: Path
) -> None:
    # The attacker also moves the tag to an unsigned image: the new digest is
    # refused, and the stored one (never verified under the new policy) must
    # not stay served for lack of a better candidate.
    env.release("1", ["alice"])
    store = tmp_path / "store"
    first = BundleServer(store)
    w = first.watch(env.registry, "acme/policy:prod", env.verifier, name="authz", interval=3600)
    w.stop()
    env.push_unsigned("2", ["mallory"])
    rotated = Verifier(TrustPolicy(keys=[Signer.generate().public_key_pem]))
    second = BundleServer(store)
    w = second.watch(env.registry, "acme/policy:prod", rotated, name="authz", interval=3600)
    w.stop()
    assert second.served("authz") is None
    # Under the policy that trusts it, the stored bundle is verified by digest and kept.
    third = BundleServer(store)
    assert third._stored("authz") is not None
    w = third.watch(env.registry, "acme/policy:prod", env.verifier, name="authz", interval=3600)
    w.stop()
    assert "NoSignatureError" in (w.last_error or "")
    assert third.served("authz") is not None


def test_stored_bundle_verified_again_under_the_current_policy_stays_served(
    env: Env, tmp_path: Path
) -> None:
    env.release("1", ["alice"])
    store = tmp_path / "store"
    first = BundleServer(store)
    w = first.watch(env.registry, "acme/policy:prod", env.verifier, name="authz", interval=3600)
    w.stop()
    w.check()
    second = BundleServer(store)
    assert second.served("authz") is not None  # at once, before any round
    w = second.watch(env.registry, "acme/policy:prod", env.verifier, name="authz", interval=3600)
    w.stop()
    assert w.check() is False  # verified again; the same bytes stay served
    assert second.served("authz") is not None
    assert w.last_error is None


@pytest.fixture(scope="module")
def fake() -> FakeSigstore:
    return FakeSigstore()


def test_freeze_rule_differs_between_verifier_and_server_for_witnessed_age(
    env: Env, tmp_path: Path, fake: FakeSigstore
) -> None:
    # A policy that opted into insecure_witnessed_age verified the bundle (its
    # age counts from the log time); the server applied another rule (signed
    # time only) and its watch failed every round.
    root = fake.write_trusted_root(tmp_path / "trusted_root.json")
    signer = env.signer
    env.registry.push(make_bundle("1", ["alice"]), "acme/policy:prod")
    # cosign 3's `sign --key`: a log entry, no signed time.
    sig = signer.sign(env.registry, "acme/policy:prod", timestamp=False)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    entry = log_key_signature(fake, signer, sig.payload, sig.signature, now)

    def attach(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        layers[0]["annotations"][cosign_bundle_annotation()] = entry
        return layers

    edit_sig_layers(env.registry, "acme/policy:prod", attach)
    policy = TrustPolicy(
        keys=[signer.public_key_pem], max_signature_age=LIMIT, insecure_witnessed_age=True
    )
    verifier = Verifier(policy, trusted_root=root)
    artifact = verifier.verify_bundle(env.registry, "acme/policy:prod").artifact
    assert artifact.signed_at is None
    since = policy.age_from(artifact)
    assert since is not None
    server = BundleServer(tmp_path / "store")
    watch = server.watch(env.registry, "acme/policy:prod", verifier, name="authz", interval=3600)
    watch.stop()
    watch.check()
    assert watch.last_error is None
    served = server.served("authz")
    assert served is not None
    assert served.expires == since + LIMIT
