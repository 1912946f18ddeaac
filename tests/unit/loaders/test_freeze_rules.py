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
    assert third._shelf.stored("authz") is not None
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


def test_policy_change_at_restart_with_the_tag_moved_to_a_stale_release_keeps_the_stored_bundle(
    env: Env, tmp_path: Path
) -> None:
    # As above, but the tag now names a release whose only fault is its age:
    # that verdict is about the new digest, not about the stored bundle.
    env.release("1", ["alice"])
    store = tmp_path / "store"
    w = BundleServer(store).watch(
        env.registry, "acme/policy:prod", env.verifier, name="authz", interval=3600
    )
    w.stop()
    old = dt.datetime.now(dt.timezone.utc) - 2 * LIMIT
    from policysupply._internal import cosign
    from policysupply.loaders import publish

    rotated_signer = Signer.generate()
    publish(
        make_bundle("2", ["mallory"]),
        env.registry,
        "acme/policy:prod",
        rotated_signer,
        annotations={cosign.ANN_SIGNED_AT: old.strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    rotated = Verifier(TrustPolicy(keys=[rotated_signer.public_key_pem], max_signature_age=LIMIT))
    second = BundleServer(store)
    w = second.watch(env.registry, "acme/policy:prod", rotated, name="authz", interval=3600)
    w.stop()
    assert "StaleSignatureError" in (w.last_error or "")
    assert second.served("authz") is None  # the stored one is not trusted by this policy


def test_stricter_threshold_at_restart_keeps_the_old_deadline(env: Env, tmp_path: Path) -> None:
    # Served under 1-of-{A, B}: its age counted from A's fresh signature. The
    # operator restarts with 2-of-{A, B}: B signed long ago, so the bundle's
    # age now counts from B's time and its deadline is earlier.
    from policysupply._internal import cosign

    b = Signer.generate()
    env.release("1", ["alice"])  # signed by A (env.signer) now
    b_time = (dt.datetime.now(dt.timezone.utc) - LIMIT / 2).replace(microsecond=0)
    b.sign(
        env.registry,
        "acme/policy:prod",
        annotations={cosign.ANN_SIGNED_AT: b_time.strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    keys = [env.signer.public_key_pem, b.public_key_pem]
    store = tmp_path / "store"
    one = Verifier(TrustPolicy(keys=keys, max_signature_age=LIMIT))
    w = BundleServer(store).watch(env.registry, "acme/policy:prod", one, name="a", interval=3600)
    w.stop()
    two = Verifier(TrustPolicy(keys=keys, threshold=2, max_signature_age=LIMIT))
    second = BundleServer(store)
    w = second.watch(env.registry, "acme/policy:prod", two, name="a", interval=3600)
    w.stop()
    served = second.served("a")
    assert served is not None
    assert served.expires == b_time + LIMIT


def test_stored_bundle_superseded_in_the_trust_state_is_served_after_a_restart(
    env: Env, tmp_path: Path
) -> None:
    # The server kept R1; meanwhile this machine's TrustState accepted R2 (the
    # server was down, another process verified it). After the restart the
    # attacker moves the tag to junk: the stored R1 is a rollback, not a
    # bundle to fall back on.
    from policysupply import TrustState

    state = TrustState(tmp_path / "trust.json")
    env.release("1", ["alice"])
    store = tmp_path / "store"
    w = BundleServer(store).watch(
        env.registry, "acme/policy:prod", env.verifier, name="authz", interval=3600, state=state
    )
    w.stop()
    env.release("2", ["bob"])
    env.verifier.verify_bundle(env.registry, "acme/policy:prod", state=state)
    env.push_unsigned("3", ["mallory"])
    second = BundleServer(store)
    w = second.watch(
        env.registry, "acme/policy:prod", env.verifier, name="authz", interval=3600, state=state
    )
    w.stop()
    assert second.served("authz") is None
