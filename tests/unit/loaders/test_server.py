"""BundleServer: OPA's bundle protocol, long polls, timeouts, token, config, store."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from policysupply import (
    Bundle,
    LoadError,
)
from policysupply.loaders import (
    BundleServer,
)
from tests.unit.loaders._env import Env, get


def test_server_speaks_opas_bundle_protocol(env: Env, tmp_path: Path) -> None:
    v1 = env.release("1", ["alice"])
    with BundleServer(tmp_path / "store") as server:
        served = server.publish(v1, "authz")
        url = f"{server.url}/bundles/authz"
        status, headers, body = get(url)
        assert status == 200
        assert headers["ETag"] == served.etag
        assert headers["Content-Type"] == "application/gzip"
        assert Bundle.from_bytes(body) == v1.bundle
        status, headers, body = get(url, {"If-None-Match": served.etag})
        assert (status, headers["ETag"], body) == (304, served.etag, b"")
        assert get(url, {"If-None-Match": '"other"'})[0] == 200
        assert get(f"{server.url}/bundles/nope")[0] == 404
        assert get(f"{server.url}/other")[0] == 404
        req = urllib.request.Request(url, data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 405
        # Publishing the same bytes again keeps the ETag OPA holds.
        assert server.publish(v1, "authz").etag == served.etag


def test_server_long_poll_answers_when_a_bundle_is_published(env: Env, tmp_path: Path) -> None:
    v1, v2 = env.release("1", ["alice"]), env.release("2", ["bob"])
    with BundleServer(tmp_path / "store") as server:
        etag = server.publish(v1, "authz").etag
        url = f"{server.url}/bundles/authz"
        prefer = {"If-None-Match": etag, "Prefer": "modes=snapshot,delta;wait=1"}
        start = time.monotonic()
        assert get(url, prefer)[0] == 304  # nothing new within the wait
        assert time.monotonic() - start >= 0.9
        timer = threading.Timer(0.3, server.publish, args=(v2, "authz"))
        timer.start()
        prefer["Prefer"] = "modes=snapshot,delta;wait=20"
        start = time.monotonic()
        status, headers, body = get(url, prefer)
        timer.join()
        assert status == 200
        assert time.monotonic() - start < 10
        assert headers["Content-Type"] == "application/vnd.openpolicyagent.bundles"
        assert Bundle.from_bytes(body).manifest.revision == "2"


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (EOF) within ``seconds``; reads anything sent."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def _server_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("Thread-"))


def test_server_drops_idle_connections(env: Env, tmp_path: Path) -> None:
    v1 = env.release("1", ["alice"])
    with BundleServer(tmp_path / "store", timeout=0.5) as server:
        server.publish(v1, "authz")
        before = _server_threads()
        silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        # a client that sends half a request and stops
        silent[0].sendall(b"GET /bundles/authz HTTP/1.1\r\nHost: x\r\n")
        keep_alive = socket.create_connection(("127.0.0.1", server.port))
        keep_alive.sendall(b"GET /bundles/authz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        try:
            assert all(_closed_within(s, 5) for s in [*silent, keep_alive])
            assert time.monotonic() - started < 5
        finally:
            for s in [*silent, keep_alive]:
                s.close()
        deadline = time.monotonic() + 5
        while _server_threads() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _server_threads() <= before  # each connection's thread has ended
        assert get(f"{server.url}/bundles/authz")[0] == 200  # and the server still serves


def test_server_timeout_does_not_cut_long_polls(env: Env, tmp_path: Path) -> None:
    v1, v2 = env.release("1", ["alice"]), env.release("2", ["bob"])
    with BundleServer(tmp_path / "store", timeout=0.5) as server:
        etag = server.publish(v1, "authz").etag
        url = f"{server.url}/bundles/authz"
        prefer = {"If-None-Match": etag, "Prefer": "modes=snapshot,delta;wait=2"}
        start = time.monotonic()
        assert get(url, prefer)[0] == 304  # held past the socket timeout, then answered
        assert time.monotonic() - start >= 1.9
        timer = threading.Timer(1.5, server.publish, args=(v2, "authz"))
        timer.start()
        prefer["Prefer"] = "modes=snapshot,delta;wait=20"
        status, _, body = get(url, prefer)
        timer.join()
        assert status == 200
        assert Bundle.from_bytes(body).manifest.revision == "2"


def test_server_timeout_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        BundleServer(tmp_path / "store", timeout=0)


def test_server_token(env: Env, tmp_path: Path) -> None:
    v1 = env.release("1", ["alice"])
    with BundleServer(tmp_path / "store", token="t0ken-xyz") as server:
        server.publish(v1, "authz")
        url = f"{server.url}/bundles/authz"
        assert get(url)[0] == 401
        assert get(url, {"Authorization": "Bearer wrong"})[0] == 401
        assert get(url, {"Authorization": "Bearer t0ken-xyz"})[0] == 200
        config = server.opa_config()
        # The config names an environment variable, never the secret.
        assert "t0ken-xyz" not in json.dumps(config)
        assert config["services"]["policysupply"]["credentials"] == {
            "bearer": {"token": "${POLICYSUPPLY_BUNDLE_TOKEN}"}
        }


def test_opa_config(env: Env, tmp_path: Path) -> None:
    v1 = env.release("1", ["alice"])
    server = BundleServer(tmp_path / "store")
    with pytest.raises(LoadError, match="start"):
        _ = server.url
    with server:
        with pytest.raises(LoadError, match="no bundles"):
            server.opa_config()
        server.publish(v1, "authz")
        parsed = yaml.safe_load(server.opa_config_yaml(long_polling_timeout_seconds=30))
        assert parsed == {
            "services": {"policysupply": {"url": server.url}},
            "bundles": {
                "authz": {
                    "service": "policysupply",
                    "resource": "bundles/authz",
                    "polling": {
                        "min_delay_seconds": 10,
                        "max_delay_seconds": 20,
                        "long_polling_timeout_seconds": 30,
                    },
                }
            },
        }


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 200])
def test_bundle_names_are_checked(env: Env, tmp_path: Path, name: str) -> None:
    v1 = env.release("1", ["alice"])
    with pytest.raises(LoadError, match="invalid bundle name"):
        BundleServer(tmp_path / "store").publish(v1, name)


def test_store_survives_restart_and_ignores_tampered_files(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v1, v2 = env.release("1", ["alice"]), env.release("2", ["bob"])
    store = tmp_path / "store"
    first = BundleServer(store)
    first.publish(v1, "authz")
    first.publish(v1, "other")
    second = first.publish(v2, "authz")
    # Only the current tarball of each name is kept.
    assert {p.name for p in store.iterdir() if p.name.startswith("authz")} == {
        "authz.json",
        f"authz.{second.etag.strip(chr(34))}.tar.gz",
    }
    assert (store.stat().st_mode & 0o777) == 0o700
    again = BundleServer(store)
    assert again.served("authz") == second
    assert again.names() == ["authz", "other"]
    # A tarball changed on disk no longer matches its record: not served.
    tar = next(store.glob("other.*.tar.gz"))
    raw = bytearray(tar.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    tar.write_bytes(bytes(raw))
    with caplog.at_level(logging.ERROR, logger="policysupply.loaders"):
        third = BundleServer(store)
    assert third.names() == ["authz"]
    record = next(
        r
        for r in caplog.records
        if getattr(r, "event", "") == "policysupply.bundle_store_unreadable"
    )
    assert "sha256" in record.detail  # type: ignore[attr-defined]
