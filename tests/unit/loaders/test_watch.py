"""BundleWatch: publishes what verifies, keeps serving the last good bundle otherwise."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from policysupply import (
    Signer,
)
from policysupply.loaders import (
    BundleServer,
    publish,
)
from tests.unit.loaders._env import Env, make_bundle


def test_watch_publishes_what_verifies_and_keeps_serving_it_otherwise(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env.release("2", ["bob"])
    server = BundleServer(tmp_path / "store")
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600)
    assert watch.name == "policy"
    watch.stop()
    watch.check()
    served = server.served("policy")
    assert served is not None
    assert served.revision == "2"
    assert watch.check() is False  # same digest: nothing to do

    env.push_unsigned("3", ["mallory"])
    with caplog.at_level(logging.DEBUG, logger="policysupply.loaders"):
        assert watch.check() is False
        assert watch.check() is False
    rejected = [
        r for r in caplog.records if getattr(r, "event", "") == "policysupply.bundle_rejected"
    ]
    assert [r.levelno for r in rejected] == [logging.WARNING, logging.DEBUG]  # logged once
    first: Any = rejected[0]
    assert first.reason == "NoSignatureError"
    assert first.bundle == "policy"
    assert first.reference == "acme/policy:prod"
    assert first.digest == env.registry.resolve("acme/policy:prod")
    assert first.serving == str(served.reference)
    assert server.served("policy") == served
    assert watch.last_error is not None
    assert "NoSignatureError" in watch.last_error

    # The same digest, signed later, is picked up by the next round.
    env.signer.sign(env.registry, "acme/policy:prod")
    assert watch.check() is True
    now = server.served("policy")
    assert now is not None
    assert now.revision == "3"

    # A signature by an untrusted key is rejected too.
    publish(make_bundle("4", ["eve"]), env.registry, "acme/policy:prod", Signer.generate())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="policysupply.loaders"):
        assert watch.check() is False
    assert [getattr(r, "reason", "") for r in caplog.records] == ["UntrustedSignatureError"]
    assert server.served("policy") == now


def test_watch_thread_runs_and_stops(env: Env, tmp_path: Path) -> None:
    env.release("1", ["alice"])
    with BundleServer(tmp_path / "store") as server:
        watch = server.watch(
            env.registry, "acme/policy:prod", env.verifier, name="authz", interval=0.05
        )
        deadline = time.monotonic() + 10
        while server.served("authz") is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.served("authz") is not None
        env.release("2", ["bob"])
        while server.served("authz").revision != "2" and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.02)
        assert server.served("authz").revision == "2"  # type: ignore[union-attr]
        assert watch.running
    assert not watch.running


def test_watch_passes_trust_state_and_refuses_a_rollback(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from policysupply.trust_state import TrustState

    old = env.release("1", ["alice"])
    server = BundleServer(tmp_path / "store")
    watch = server.watch(
        env.registry,
        "acme/policy:prod",
        env.verifier,
        name="authz",
        interval=3600,
        state=TrustState(tmp_path / "trust.json"),
    )
    watch.stop()
    watch.check()
    env.release("2", ["bob"])
    assert watch.check() is True
    # The tag is pointed back at revision 1: correctly signed, but older.
    manifest, media_type = env.registry.get_manifest(old.reference)
    env.registry.put_manifest("acme/policy:prod", manifest, media_type=media_type)
    with caplog.at_level(logging.WARNING, logger="policysupply.loaders"):
        assert watch.check() is False
    assert [getattr(r, "reason", "") for r in caplog.records] == ["RollbackError"]
    served = server.served("authz")
    assert served is not None
    assert served.revision == "2"
