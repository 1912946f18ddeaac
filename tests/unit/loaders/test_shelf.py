"""Shelf: the served bundles of one store, shared by BundleServer and its watches."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

from policysupply.loaders._shelf import Shelf
from policysupply.loaders.store import served_record, utcnow
from tests.unit.loaders._env import Env


def test_put_stores_durably_and_the_same_bytes_keep_their_record(env: Env, tmp_path: Path) -> None:
    v1 = env.release("1", ["alice"])
    shelf = Shelf(tmp_path / "store")
    served, payload = served_record(v1, "authz", max_age=None, policy=None)
    assert shelf.put(v1, served, payload) == served
    assert shelf.put(v1, served, payload) is shelf.stored("authz")
    assert shelf.names() == ["authz"]
    assert shelf.keys["authz"]  # the key that verified it, for OPA's config
    # Read back from the store by a new shelf (a restarted server).
    assert Shelf(tmp_path / "store").stored("authz") == served


def test_set_expiry_withdraws_without_forgetting(env: Env, tmp_path: Path) -> None:
    v1 = env.release("1", ["alice"])
    shelf = Shelf(tmp_path / "store")
    shelf.put(v1, *served_record(v1, "authz", max_age=None, policy=None))
    shelf.set_expiry("authz", utcnow() - dt.timedelta(seconds=1))
    assert shelf.served("authz") is None
    assert shelf.names() == []
    assert shelf.stored("authz") is not None
    assert shelf.current("authz", None, 0) is None
    shelf.set_expiry("authz", None)
    assert shelf.served("authz") is not None


def test_current_holds_a_long_poll_until_the_bundle_changes(env: Env, tmp_path: Path) -> None:
    v1, v2 = env.release("1", ["alice"]), env.release("2", ["bob"])
    shelf = Shelf(tmp_path / "store")
    first, payload = served_record(v1, "authz", max_age=None, policy=None)
    shelf.put(v1, first, payload)
    later = threading.Timer(
        0.2, lambda: shelf.put(v2, *served_record(v2, "authz", max_age=None, policy=None))
    )
    later.start()
    start = time.monotonic()
    entry = shelf.current("authz", first.etag, 10)
    later.join()
    assert entry is not None
    assert entry[0].etag != first.etag
    assert time.monotonic() - start < 5
