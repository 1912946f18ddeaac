"""Freeze attacks on the bundle server: the clock, not a change, ends a bundle's life.

An attacker who can keep a tag pointing at an old digest (or keep the
registry unreachable) must not keep OPA on a bundle whose newest signature is
older than ``TrustPolicy.max_signature_age``. The watch re-evaluates the
served bundle's age every round and at start-up; an expired bundle is
reported (structured log, ``last_error``) and, by default, no longer served.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path

import pytest

from policysupply import Signer, TrustPolicy, Verifier
from policysupply._internal import cosign
from policysupply.loaders import BundleServer, fetch_verified, publish
from tests.unit.loaders._env import Env, get, make_bundle

LIMIT = dt.timedelta(hours=1)
LEFT = 3  # seconds of validity the signature has left when the test starts


def sign_aging(env: Env, revision: str, *, left: float = LEFT) -> None:
    """Publishes a release whose signed time makes it expire ``left`` seconds from now."""
    signed = dt.datetime.now(dt.timezone.utc) - LIMIT + dt.timedelta(seconds=left)
    annotations = {cosign.ANN_SIGNED_AT: signed.strftime("%Y-%m-%dT%H:%M:%SZ")}
    publish(
        make_bundle(revision, ["alice"]),
        env.registry,
        "acme/policy:prod",
        env.signer,
        annotations=annotations,
    )


def aging_verifier(env: Env) -> Verifier:
    return Verifier(TrustPolicy(keys=[env.signer.public_key_pem], max_signature_age=LIMIT))


def wait_past(seconds: float) -> None:
    time.sleep(seconds + 1.1)  # signed times have one-second resolution


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == name]


def test_freeze_attack_unchanged_tag_past_max_signature_age_is_withdrawn(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sign_aging(env, "1")
    with BundleServer(tmp_path / "store") as server:
        watch = server.watch(
            env.registry, "acme/policy:prod", aging_verifier(env), name="authz", interval=3600
        )
        watch.stop()
        watch.check()
        assert server.served("authz") is not None
        assert get(f"{server.url}/bundles/authz")[0] == 200
        wait_past(LEFT)
        # The attacker changes nothing: the tag still names the same digest.
        with caplog.at_level(logging.INFO, logger="policysupply.loaders"):
            assert watch.check() is False
        assert server.served("authz") is None
        assert get(f"{server.url}/bundles/authz")[0] == 404
        assert watch.last_error is not None
        assert "StaleSignatureError" in watch.last_error
        assert watch.expired
        (record,) = events(caplog, "policysupply.bundle_expired")
        assert record.levelno == logging.ERROR
        assert record.bundle == "authz"  # type: ignore[attr-defined]
        assert record.serving is None  # type: ignore[attr-defined]


def test_freeze_attack_expired_bundle_is_not_served_even_between_rounds(
    env: Env, tmp_path: Path
) -> None:
    """The server itself stops at the deadline; it does not wait for the next round."""
    sign_aging(env, "1")
    with BundleServer(tmp_path / "store") as server:
        watch = server.watch(
            env.registry, "acme/policy:prod", aging_verifier(env), name="authz", interval=3600
        )
        watch.stop()
        watch.check()
        served = server.served("authz")
        assert served is not None
        assert served.expires is not None
        assert served.signed_at is not None
        assert served.expires - served.signed_at == LIMIT
        wait_past(LEFT)
        assert get(f"{server.url}/bundles/authz")[0] == 404
        assert server.served("authz") is None


def test_freeze_attack_persisted_bundle_past_its_age_is_not_served_after_restart(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sign_aging(env, "1")
    store = tmp_path / "store"
    first = BundleServer(store)
    watch = first.watch(
        env.registry, "acme/policy:prod", aging_verifier(env), name="authz", interval=3600
    )
    watch.stop()
    watch.check()
    assert first.served("authz") is not None
    wait_past(LEFT)
    with caplog.at_level(logging.ERROR, logger="policysupply.loaders"):
        second = BundleServer(store)
    assert second.served("authz") is None
    assert events(caplog, "policysupply.bundle_expired")
    with second:
        assert get(f"{second.url}/bundles/authz")[0] == 404


def test_a_store_without_signing_times_is_checked_when_a_watch_starts(
    env: Env, tmp_path: Path
) -> None:
    """A bundle stored without its signed time (older store) is withdrawn at once under a
    policy with a maximum age, before the watch's first network round."""
    sign_aging(env, "1", left=600)
    store = tmp_path / "store"
    BundleServer(store).publish(
        fetch_verified(env.registry, "acme/policy:prod", env.verifier), "authz"
    )
    meta = json.loads((store / "authz.json").read_text())
    meta.pop("signed_at", None)
    meta.pop("expires", None)
    (store / "authz.json").write_text(json.dumps(meta))
    server = BundleServer(store)
    assert server.served("authz") is not None  # no policy known yet
    env.registry.delete("acme/policy:prod")  # and the registry cannot help
    watch = server.watch(
        env.registry, "acme/policy:prod", aging_verifier(env), name="authz", interval=3600
    )
    watch.stop()
    assert server.served("authz") is None
    assert watch.expired


def test_a_fresh_signature_on_the_same_digest_is_served_again(env: Env, tmp_path: Path) -> None:
    sign_aging(env, "1")
    server = BundleServer(tmp_path / "store")
    watch = server.watch(
        env.registry, "acme/policy:prod", aging_verifier(env), name="authz", interval=3600
    )
    watch.stop()
    watch.check()
    etag = server.served("authz").etag  # type: ignore[union-attr]
    wait_past(LEFT)
    assert watch.check() is False
    assert server.served("authz") is None
    env.signer.sign(env.registry, "acme/policy:prod")  # re-signed now
    assert watch.check() is True
    served = server.served("authz")
    assert served is not None
    assert served.etag == etag  # the same bytes: OPA's ETag stays valid
    assert watch.last_error is None
    assert not watch.expired


def test_on_expiry_serve_keeps_serving_and_still_reports(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sign_aging(env, "1")
    with BundleServer(tmp_path / "store") as server:
        watch = server.watch(
            env.registry,
            "acme/policy:prod",
            aging_verifier(env),
            name="authz",
            interval=3600,
            on_expiry="serve",
        )
        watch.stop()
        watch.check()
        wait_past(LEFT)
        with caplog.at_level(logging.INFO, logger="policysupply.loaders"):
            assert watch.check() is False
        assert server.served("authz") is not None
        assert get(f"{server.url}/bundles/authz")[0] == 200
        assert watch.expired
        assert "StaleSignatureError" in (watch.last_error or "")
        (record,) = events(caplog, "policysupply.bundle_expired")
        assert record.levelno == logging.WARNING


def test_without_a_maximum_age_nothing_expires(env: Env, tmp_path: Path) -> None:
    sign_aging(env, "1", left=-7200)  # signed three hours ago
    server = BundleServer(tmp_path / "store")
    watch = server.watch(env.registry, "acme/policy:prod", env.verifier, name="a", interval=3600)
    watch.stop()
    watch.check()
    served = server.served("a")
    assert served is not None
    assert served.expires is None
    assert watch.check() is False
    assert not watch.expired
    assert watch.last_error is None


def test_on_expiry_must_be_known(env: Env, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_expiry"):
        BundleServer(tmp_path / "store").watch(
            env.registry,
            "acme/policy:prod",
            Verifier(TrustPolicy(keys=[Signer.generate().public_key_pem])),
            on_expiry="ignore",  # type: ignore[arg-type]
        )
