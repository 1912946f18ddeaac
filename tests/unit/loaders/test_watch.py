"""BundleWatch: publishes what verifies, keeps serving the last good bundle otherwise."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from policysupply import (
    LoadError,
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


def _post(url: str, body: bytes, token: str | None) -> int:
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _wait(predicate: Any, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(predicate())


def test_push_events_wake_the_watch_only_when_authenticated(env: Env, tmp_path: Path) -> None:
    import json

    env.release("1", ["alice"])
    token = "events-secret-123"
    with BundleServer(tmp_path / "store", events_token=token) as server:
        watch = server.watch(
            env.registry, "acme/policy:prod", env.verifier, name="authz", interval=3600
        )
        assert _wait(lambda: server.served("authz") is not None)
        env.release("2", ["bob"])
        url = f"{server.url}/registry/events"

        def event(repository: str, action: str = "push") -> bytes:
            return json.dumps(
                {"events": [{"action": action, "target": {"repository": repository}}]}
            ).encode()

        # Unauthenticated, malformed, for another repository, or not a push: no wake-up.
        assert _post(url, event("acme/policy"), None) == 401
        assert _post(url, event("acme/policy"), "wrong") == 401
        assert _post(url, b"[1, 2", token) == 400
        assert _post(url, event("acme/other"), token) == 200
        assert _post(url, event("acme/policy", "pull"), token) == 200
        time.sleep(0.5)
        assert server.served("authz").revision == "1"  # type: ignore[union-attr]
        assert _post(url, event("acme/policy"), token) == 200
        assert _wait(lambda: server.served("authz").revision == "2")  # type: ignore[union-attr]
        # The event decides nothing: an unsigned push it announces is not served.
        env.push_unsigned("3", ["mallory"])
        assert _post(url, event("acme/policy"), token) == 200
        assert _wait(lambda: watch.last_error is not None)
        assert "NoSignatureError" in str(watch.last_error)
        assert server.served("authz").revision == "2"  # type: ignore[union-attr]
        config = server.registry_notifications()["endpoints"][0]
        assert config["url"] == url
        assert config["headers"] == {"Authorization": [f"Bearer {token}"]}


def test_event_receiver_is_off_without_a_token_and_bounds_the_body(tmp_path: Path) -> None:
    with BundleServer(tmp_path / "store") as server:
        assert _post(f"{server.url}/registry/events", b"{}", None) == 405
        with pytest.raises(LoadError, match="events_token"):
            server.registry_notifications()
    with BundleServer(tmp_path / "store2", events_token="t") as server:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        # Refused from the header alone: the body is never read.
        conn.putrequest("POST", "/registry/events")
        conn.putheader("Authorization", "Bearer t")
        conn.putheader("Content-Length", str(2 << 20))
        conn.endheaders()
        assert conn.getresponse().status == 413
        conn.close()


def test_watch_without_trust_state_rolls_back_to_a_release_it_replaced(
    env: Env, tmp_path: Path
) -> None:
    # BundleServer.watch's state defaults to None (and `policysupply serve`
    # runs without --state): "rollback protection across restarts". Within
    # one run the watch has seen revision 2 replace revision 1; the registry
    # points the tag back at revision 1 (validly signed, with a known hole),
    # and the watch publishes it. The freeze property: content the watch has
    # itself superseded is refused once a newer one was seen.
    old = env.release("1", ["alice"])
    server = BundleServer(tmp_path / "store")
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600)
    watch.stop()
    watch.check()
    env.release("2", ["bob"])
    assert watch.check() is True
    manifest, media_type = env.registry.get_manifest(old.reference)
    env.registry.put_manifest("acme/policy:prod", manifest, media_type=media_type)
    watch.check()
    served = server.served("policy")
    assert served is not None
    assert served.revision == "2"
