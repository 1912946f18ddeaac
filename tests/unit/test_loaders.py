"""Loaders without peers: extraction, the bundle server's HTTP protocol and store, watching
a local layout, and the pure helpers of the REST loader."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from policysupply import (
    Bundle,
    LoadError,
    Manifest,
    Registry,
    Signer,
    TrustPolicy,
    Verifier,
    loaders,
)
from policysupply.loaders import (
    _MISSING,
    OPA,
    BundleServer,
    _base_only,
    _effective_roots,
    _module_prefix,
    _split,
    _virtual_paths,
    extract_verified,
    fetch_verified,
    publish,
)
from policysupply.native import NativeTrust
from policysupply.verifier import VerifiedBundle

MODULE = "package acme.authz\n\ndefault allow := false\n\nallow if input.user in data.acme.users\n"


def make_bundle(revision: str, users: list[str], extra: str = "") -> Bundle:
    modules = {"acme/authz.rego": MODULE}
    if extra:
        modules["acme/extra.rego"] = extra
    return Bundle.from_bytes(
        Bundle(
            manifest=Manifest(revision=revision, roots=["acme"]),
            modules=modules,
            data={"acme": {"users": users}},
        ).to_bytes()
    )


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.registry = Registry.local(tmp / "oci")
        self.signer = Signer.generate()
        self.verifier = Verifier(TrustPolicy(keys=[self.signer.public_key_pem]))

    def release(self, revision: str, users: list[str]) -> VerifiedBundle:
        publish(make_bundle(revision, users), self.registry, "acme/policy:prod", self.signer)
        return fetch_verified(self.registry, "acme/policy:prod", self.verifier)

    def push_unsigned(self, revision: str, users: list[str]) -> None:
        self.registry.push(make_bundle(revision, users), "acme/policy:prod")


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# -- only verified bundles ------------------------------------------------------


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
    other = Signer.generate()
    own = bundle.sign(other, key_id="release")
    publish(own, env.registry, "acme/policy:own", env.signer)
    assert env.registry.pull("acme/policy:own").files == own.files


# -- extraction -------------------------------------------------------------------


def test_extract_writes_exactly_the_bundle_entries_and_replaces_atomically(
    env: Env, tmp_path: Path
) -> None:
    v1 = env.release("1", ["alice"])
    out = extract_verified(v1, tmp_path / "policy")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(v1.bundle.entries())
    assert Bundle.from_directory(out) == v1.bundle
    v2 = env.release("2", ["bob"])
    extract_verified(v2, out)
    assert Bundle.from_directory(out).data == {"acme": {"users": ["bob"]}}
    # No temporary or backup directories are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oci", "policy"]


def test_extract_refuses_a_foreign_directory(env: Env, tmp_path: Path) -> None:
    v1 = env.release("1", ["alice"])
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(LoadError, match="not a previous extraction"):
        extract_verified(v1, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("swap", ["exchange", "two-renames"])
def test_extract_keeps_the_old_tree_on_failure(
    swap: str, env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = env.release("1", ["alice"])
    out = extract_verified(v1, tmp_path / "policy")
    before = (out / "data.json").read_bytes()
    v2 = env.release("2", ["bob"])
    if swap == "exchange":

        def failing_exchange(a: Path, b: Path) -> bool:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(loaders, "_exchange", failing_exchange)
    else:
        monkeypatch.setattr(loaders, "_exchange", lambda a, b: False)  # no renameat2
        real_rename = os.rename
        calls = {"n": 0}

        def failing_rename(src: Any, dst: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 2:  # the new tree's rename into place
                raise OSError(28, "No space left on device")
            real_rename(src, dst)

        monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(LoadError, match="No space left"):
        extract_verified(v2, out)
    assert (out / "data.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oci", "policy"]
    # and the fallback path, once it works, replaces the tree as the swap does
    monkeypatch.undo()
    monkeypatch.setattr(loaders, "_exchange", lambda a, b: False)
    extract_verified(v2, out)
    assert Bundle.from_directory(out) == v2.bundle
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oci", "policy"]


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") or sys.platform == "darwin"),
    reason="atomic directory swap needs renameat2 or renamex_np",
)
def test_extract_swaps_trees_without_a_gap(env: Env, tmp_path: Path) -> None:
    """A reader polling files under the directory always finds them, old or new."""
    v1, v2 = env.release("1", ["alice"]), env.release("2", ["bob"])
    out = extract_verified(v1, tmp_path / "policy")
    assert loaders._exchange(tmp_path / "oci", out)  # the platform can swap here
    assert loaders._exchange(tmp_path / "oci", out)  # and swap back
    known = {
        name: {v.bundle.entries()[name] for v in (v1, v2)} for name in (".manifest", "data.json")
    }
    stop = threading.Event()
    problems: list[str] = []
    reads = {"n": 0}

    def reader() -> None:
        while not stop.is_set():
            for name, wanted in known.items():
                try:
                    content = (out / name).read_bytes()
                except OSError as exc:
                    problems.append(f"{name}: {exc.strerror}")
                    continue
                if content not in wanted:
                    problems.append(f"{name}: partial or unknown content")
                reads["n"] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            extract_verified(v2 if i % 2 == 0 else v1, out)
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert reads["n"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oci", "policy"]
    assert Bundle.from_directory(out) == v1.bundle


# -- bundle server -----------------------------------------------------------------


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


def test_opa_config_with_signing_makes_opa_verify_native_signatures(
    env: Env, tmp_path: Path
) -> None:
    v1 = env.release("1", ["alice"])
    signing = NativeTrust.from_cosign_keys([env.signer.public_key_pem])
    with BundleServer(tmp_path / "store") as server:
        server.publish(v1, "authz")
        server.publish(v1, "other")
        parsed = yaml.safe_load(server.opa_config_yaml(signing=signing))
    kid = env.signer.key_id
    assert parsed["keys"] == {
        kid: {"key": env.signer.public_key_pem.decode(), "algorithm": "ES256"}
    }
    assert parsed["bundles"]["authz"]["signing"] == {}  # {} requires a signature
    assert parsed["bundles"]["other"]["signing"] == {}
    # ...and what publish() pushed verifies under exactly that configuration.
    assert NativeTrust.from_opa_config(parsed, "authz").keys[kid].algorithm == "ES256"
    v1.bundle.verify_native(NativeTrust.from_opa_config(parsed, "authz"))


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


# -- watching ---------------------------------------------------------------------------


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


# -- REST loader helpers ---------------------------------------------------------------


def test_split_paths() -> None:
    assert _split("k8s/admission/allow") == ("k8s", "admission", "allow")
    assert _split("data.k8s.admission.allow") == ("k8s", "admission", "allow")
    assert _split("/k8s/") == ("k8s",)
    assert _split("data") == ()


def test_module_prefixes_never_nest() -> None:
    a, b = _module_prefix("host/acme/policy"), _module_prefix("host/acme/policy/k8s")
    assert not (a + "k8s/~/x.rego").startswith(b)
    assert not b.startswith(a)


def test_rootless_bundle_owns_its_top_level_documents() -> None:
    bundle = Bundle(modules={"a.rego": "package alpha.x\nallow := true\n"}, data={"beta": {"k": 1}})
    assert _effective_roots(bundle) == (("alpha",), ("beta",))


def test_base_documents_are_separated_from_rule_values() -> None:
    policies = [
        {
            "id": "p",
            "ast": {
                "package": {
                    "path": [
                        {"type": "var", "value": "data"},
                        {"type": "string", "value": "a"},
                        {"type": "string", "value": "b"},
                    ]
                },
                "rules": [
                    {"head": {"name": "allow", "ref": [{"type": "var", "value": "allow"}]}},
                    {
                        "head": {
                            "name": "q",
                            "ref": [
                                {"type": "var", "value": "q"},
                                {"type": "string", "value": "r"},
                            ],
                        }
                    },
                    {
                        "head": {
                            "name": "s",
                            "ref": [{"type": "var", "value": "s"}, {"type": "var", "value": "x"}],
                        }
                    },
                ],
            },
        }
    ]
    virtual = _virtual_paths(policies)
    assert virtual == [("a", "b", "allow"), ("a", "b", "q", "r"), ("a", "b", "s")]
    merged = {"b": {"allow": True, "q": {"r": 2, "keep": 1}, "s": [1], "users": ["x"]}}
    assert _base_only(merged, ("a",), virtual) == {"b": {"q": {"keep": 1}, "users": ["x"]}}
    # Only rule values under the root: no base document there at all.
    assert _base_only({"b": {"allow": True, "s": []}}, ("a",), virtual) is _MISSING
    # A root at or under a rule cannot hold base data.
    assert _base_only(True, ("a", "b", "allow"), virtual) is _MISSING
    assert _base_only([1], ("a", "b", "s", "x"), virtual) is _MISSING
    # Nothing in OPA, and roots no rule touches, pass through.
    assert _base_only(_MISSING, ("a",), virtual) is _MISSING
    assert _base_only({"k": 1}, ("c",), virtual) == {"k": 1}


def test_opa_url_checks_and_secrets(tmp_path: Path) -> None:
    for bad in ("ftp://x", "127.0.0.1:8181", "http://u:p@127.0.0.1:8181", "http://h/?q=1"):
        with pytest.raises(LoadError):
            OPA(bad)
    opa = OPA("http://127.0.0.1:1/", token="sekr1t-token")
    assert "sekr1t" not in repr(opa)
    with pytest.raises(LoadError) as err:
        opa.query("x")
    assert "sekr1t" not in str(err.value)
    assert "127.0.0.1:1" in str(err.value)
    assert opa.healthy() is False


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


def test_rest_loads_refuse_roots_over_the_load_records(env: Env, tmp_path: Path) -> None:
    bundle = Bundle(
        manifest=Manifest(revision="1", roots=["system"]),
        modules={"authz.rego": "package system.authz\n\ndefault allow := true\n"},
    )
    publish(bundle, env.registry, "acme/sys:1", env.signer)
    verified = fetch_verified(env.registry, "acme/sys:1", env.verifier)
    # Refused before any request is made (nothing listens on port 1).
    with pytest.raises(LoadError, match=r"data\.system\.policysupply\.bundles"):
        OPA("http://127.0.0.1:1").load(verified)
