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
    TrustPolicy,
    Verifier,
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


def _point_tag_at(env: Env, old: Any, ref: str = "acme/policy:prod") -> None:
    """The registry moves ``ref`` to ``old`` (an earlier signed release, or its reference)."""
    manifest, media_type = env.registry.get_manifest(getattr(old, "reference", old))
    env.registry.put_manifest(ref, manifest, media_type=media_type)


def _serve_two_releases(env: Env, store: Path, verifier: Any = None) -> Any:
    """A first run of the server: revision 1, then 2, served from ``store``; returns revision 1."""
    old = env.release("1", ["alice"])
    server = BundleServer(store)
    watch = server.watch(env.registry, "acme/policy:prod", verifier or env.verifier, interval=3600)
    watch.stop()
    watch.check()
    env.release("2", ["bob"])
    assert watch.check() is True
    assert server.served("policy").revision == "2"  # type: ignore[union-attr]
    return old


def test_restarted_watch_without_trust_state_refuses_to_roll_back_past_its_stored_bundle(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The attack: the server restarts (a pod restart) with no state file; its
    # store still holds revision 2. The registry points the tag back at
    # revision 1, validly signed: the stored bundle, verified under this
    # policy, seeds the in-memory trust state, so the rollback is refused.
    old = _serve_two_releases(env, tmp_path / "store")
    server = BundleServer(tmp_path / "store")
    assert server.served("policy").revision == "2"  # type: ignore[union-attr]
    _point_tag_at(env, old)
    with caplog.at_level(logging.WARNING, logger="policysupply.loaders"):
        watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600)
        watch.stop()  # after its first round
        assert watch.check() is False
    rejected = [r for r in caplog.records if getattr(r, "digest", "") == old.reference.digest]
    assert [getattr(r, "reason", "") for r in rejected] == ["RollbackError"]  # logged once
    assert "RollbackError" in str(watch.last_error)
    assert server.served("policy").revision == "2"  # type: ignore[union-attr]
    # Forward still works: a newer release is served.
    env.release("3", ["carol"])
    assert watch.check() is True
    assert server.served("policy").revision == "3"  # type: ignore[union-attr]


def test_restart_seeds_nothing_from_a_bundle_stored_from_another_tag(
    env: Env, tmp_path: Path
) -> None:
    # The stored "policy" came from :staging; the watch now follows :prod.
    # What staging served says nothing about prod's history.
    old = env.release("1", ["alice"])
    store = tmp_path / "store"
    server = BundleServer(store)
    publish(make_bundle("5", ["bob"]), env.registry, "acme/policy:staging", env.signer)
    watch = server.watch(env.registry, "acme/policy:staging", env.verifier, interval=3600)
    watch.stop()
    watch.check()
    assert server.served("policy").revision == "5"  # type: ignore[union-attr]
    _point_tag_at(env, old)
    server = BundleServer(store)
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600)
    watch.stop()
    watch.check()
    assert server.served("policy").revision == "1"  # type: ignore[union-attr]


def test_restart_seeds_nothing_from_a_stored_bundle_this_policy_does_not_trust(
    env: Env, tmp_path: Path
) -> None:
    # The store's record was accepted under another policy (a key since
    # rotated out): it cannot bind what this policy accepts, so an older
    # revision signed by the new key is served (and the stored one is not).
    _serve_two_releases(env, tmp_path / "store")
    rotated = Signer.generate()
    publish(make_bundle("1", ["alice"]), env.registry, "acme/policy:prod", rotated)
    server = BundleServer(tmp_path / "store")
    verifier = Verifier(TrustPolicy(keys=[rotated.public_key_pem]))
    watch = server.watch(env.registry, "acme/policy:prod", verifier, interval=3600)
    watch.stop()
    watch.check()
    assert server.served("policy").revision == "1"  # type: ignore[union-attr]


def test_restart_seeds_from_a_stored_bundle_past_max_signature_age(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Revisions 1 and 2 were signed two hours ago; the restarted server's
    # policy allows one hour, so the stored revision 2 is withdrawn. Its
    # signatures still verify (only its age fails), so it still bounds what
    # may follow: revision 1 re-signed today is an older release, refused.
    # Revision 2 re-signed (the same digest) is served again.
    import datetime as dt

    from policysupply._internal import cosign

    two_hours_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    annotations = {cosign.ANN_SIGNED_AT: two_hours_ago.strftime("%Y-%m-%dT%H:%M:%SZ")}
    releases = []
    store = tmp_path / "store"
    server = BundleServer(store)
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600)
    watch.stop()
    for revision in ("1", "2"):
        bundle = make_bundle(revision, ["alice"])
        publish(bundle, env.registry, "acme/policy:prod", env.signer, annotations=annotations)
        releases.append(env.registry.resolve("acme/policy:prod"))
        assert watch.check() is True

    limit = dt.timedelta(hours=1)
    verifier = Verifier(TrustPolicy(keys=[env.signer.public_key_pem], max_signature_age=limit))
    server = BundleServer(store)
    env.signer.sign(env.registry, f"acme/policy@{releases[0]}")  # revision 1, signed now
    _point_tag_at(env, f"acme/policy@{releases[0]}")
    with caplog.at_level(logging.WARNING, logger="policysupply.loaders"):
        watch = server.watch(env.registry, "acme/policy:prod", verifier, interval=3600)
        watch.stop()
        watch.check()
    rejected = [r for r in caplog.records if getattr(r, "digest", "") == releases[0]]
    assert {getattr(r, "reason", "") for r in rejected} == {"RollbackError"}
    assert "StaleSignatureError" in str(watch.last_error)  # the clock's verdict comes first
    assert server.served("policy") is None

    env.signer.sign(env.registry, f"acme/policy@{releases[1]}")  # revision 2, signed now
    _point_tag_at(env, f"acme/policy@{releases[1]}")
    watch.check()
    served = server.served("policy")
    assert served is not None
    assert served.revision == "2"
    assert watch.last_error is None


def test_restart_with_a_state_file_uses_it_and_not_the_store(env: Env, tmp_path: Path) -> None:
    # A state file is the record across restarts; the store seeds only the in-memory state.
    from policysupply.trust_state import TrustState

    old = _serve_two_releases(env, tmp_path / "store")
    state = TrustState(tmp_path / "trust.json")
    _point_tag_at(env, old)
    server = BundleServer(tmp_path / "store")
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600, state=state)
    watch.stop()
    watch.check()  # an empty state file: trust on first use, as before
    assert server.served("policy").revision == "1"  # type: ignore[union-attr]
    assert state.get("acme/policy:prod").revision == "1"  # type: ignore[union-attr]


def test_restart_seeds_only_once_the_stored_bundle_can_be_checked(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While the stored image cannot be read, nothing new is trusted: the
    # round fails and the next one seeds first.
    from policysupply.errors import TransientRegistryError

    old = _serve_two_releases(env, tmp_path / "store")
    stored = BundleServer(tmp_path / "store").served("policy")
    assert stored is not None
    _point_tag_at(env, old)
    get_manifest = env.registry.get_manifest
    down = [True]

    def flaky(ref: Any) -> Any:
        if down[0] and getattr(ref, "digest", None) == stored.reference.digest:
            raise TransientRegistryError("503 from the registry")
        return get_manifest(ref)

    monkeypatch.setattr(env.registry, "get_manifest", flaky)
    server = BundleServer(tmp_path / "store")
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600)
    watch.stop()
    watch.check()
    assert "TransientRegistryError" in str(watch.last_error)
    assert server.served("policy").revision == "2"  # type: ignore[union-attr]
    down[0] = False
    assert watch.check() is False
    assert "RollbackError" in str(watch.last_error)
    assert server.served("policy").revision == "2"  # type: ignore[union-attr]


def test_restart_seeds_nothing_when_the_stored_image_is_gone(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stored digest was deleted (garbage-collected once the tag moved on):
    # the watch follows the tag again rather than refusing everything. Only a
    # state file protects against a registry that also deletes what it served.
    from policysupply.errors import NotFoundError

    old = _serve_two_releases(env, tmp_path / "store")
    stored = BundleServer(tmp_path / "store").served("policy")
    assert stored is not None
    _point_tag_at(env, old)
    get_manifest = env.registry.get_manifest

    def gone(ref: Any) -> Any:
        if getattr(ref, "digest", None) == stored.reference.digest:
            raise NotFoundError(f"{ref}: manifest unknown")
        return get_manifest(ref)

    monkeypatch.setattr(env.registry, "get_manifest", gone)
    server = BundleServer(tmp_path / "store")
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600)
    watch.stop()
    watch.check()
    assert server.served("policy").revision == "1"  # type: ignore[union-attr]


def test_restart_seeds_nothing_from_a_store_record_without_a_stream(
    env: Env, tmp_path: Path
) -> None:
    # A record written before stores named the tag (or by BundleServer.publish)
    # says nothing about which tag it came from.
    import json

    old = _serve_two_releases(env, tmp_path / "store")
    meta_path = tmp_path / "store" / "policy.json"
    meta = json.loads(meta_path.read_text())
    assert meta["stream"] == "acme/policy:prod"
    del meta["stream"]
    meta_path.write_text(json.dumps(meta))
    _point_tag_at(env, old)
    server = BundleServer(tmp_path / "store")
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600)
    watch.stop()
    watch.check()
    assert server.served("policy").revision == "1"  # type: ignore[union-attr]


def test_a_watch_names_its_tag_on_a_bundle_published_directly(env: Env, tmp_path: Path) -> None:
    # BundleServer.publish stores no tag; once a watch verifies the same bytes
    # from its tag, the record names it, and a restart seeds from it.
    from policysupply.loaders import fetch_verified

    old = env.release("1", ["alice"])
    env.release("2", ["bob"])
    server = BundleServer(tmp_path / "store")
    server.publish(fetch_verified(env.registry, "acme/policy:prod", env.verifier), name="policy")
    assert server.served("policy").stream is None  # type: ignore[union-attr]
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600)
    watch.stop()
    watch.check()
    assert server.served("policy").stream == "acme/policy:prod"  # type: ignore[union-attr]
    _point_tag_at(env, old)
    server = BundleServer(tmp_path / "store")
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600)
    watch.stop()
    watch.check()
    assert server.served("policy").revision == "2"  # type: ignore[union-attr]
    assert "RollbackError" in str(watch.last_error)


def test_restart_refuses_other_content_under_the_stored_revision(env: Env, tmp_path: Path) -> None:
    # Revision 2 signed again as other bytes (another digest) after the
    # restart: as within a run, or with a state file, the stored revision 2 is
    # what revision 2 means on this tag. The same digest signed again is not
    # affected (test_restart_seeds_from_a_stored_bundle_past_max_signature_age).
    _serve_two_releases(env, tmp_path / "store")
    publish(make_bundle("2", ["mallory"]), env.registry, "acme/policy:prod", env.signer)
    server = BundleServer(tmp_path / "store")
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600)
    watch.stop()
    watch.check()
    assert "RollbackError" in str(watch.last_error)
    served = server.served("policy")
    assert served is not None
    assert served.reference.digest != env.registry.resolve("acme/policy:prod")


def test_restart_seeds_what_verification_says_not_what_the_store_record_claims(
    env: Env, tmp_path: Path
) -> None:
    # The store's revision and signing time were recorded under whatever policy
    # stored them: the seed takes the digest's verified revision and signing
    # time under this policy, so a record claiming revision 99 signed next year
    # does not block revision 3.
    import json

    _serve_two_releases(env, tmp_path / "store")
    meta_path = tmp_path / "store" / "policy.json"
    meta = json.loads(meta_path.read_text())
    meta.update(revision="99", signed_at="2027-12-01T00:00:00+00:00")
    meta_path.write_text(json.dumps(meta))
    env.release("3", ["carol"])
    server = BundleServer(tmp_path / "store")
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, interval=3600)
    watch.stop()
    watch.check()
    assert watch.last_error is None
    assert server.served("policy").revision == "3"  # type: ignore[union-attr]
