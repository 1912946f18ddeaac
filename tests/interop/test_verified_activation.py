"""Verified activation at the speed of the wire, against real peers (issue #18).

- the fetch path's round trips, counted by a proxy in front of Debian's
  docker-registry: one manifest GET by tag, the layer fetched while the
  signatures are looked up, one signature lookup however many keys;
- what reaches OPA is the verified bytes: a bundle built by ``opa build`` is
  served byte for byte by ``BundleServer``; ``OPA.load`` data reads in real OPA
  exactly as OPA's own bundle reader reads the same tarball;
- a load costs what it changes: with 500 unrelated modules in a real OPA it
  makes the same requests as into an empty one, and never lists all modules;
- push notifications from the real registry wake the watch at once.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from policysupply import Bundle, NoSignatureError, Registry, Signer, TrustPolicy, Verifier
from policysupply._internal import tarball
from policysupply.loaders import OPA, BundleServer, fetch_verified, publish
from tests.interop import faultproxy
from tests.interop._loader_fixtures import wait_for
from tests.interop.conftest import OpaServer, RegistryServer, _start_distribution, run_opa
from tests.unit.loaders._env import get, push_tarball

pytestmark = pytest.mark.interop

MODULE = "package app\n\nallow if input.user in data.app.users\n"


def _bundle(revision: str, users: list[str], extra: str = "") -> Bundle:
    entries = {
        ".manifest": json.dumps({"revision": revision, "roots": ["app"]}).encode(),
        "app/policy.rego": (MODULE + extra).encode(),
        "app/data.json": json.dumps({"users": users}).encode(),
    }
    return Bundle.from_bytes(tarball.write_entries(entries))


@pytest.fixture
def proxied(distribution: RegistryServer) -> Iterator[tuple[Registry, faultproxy.FaultProxy]]:
    for proxy in faultproxy.start(distribution.host):
        registry = Registry.remote(proxy.host, insecure=True)
        yield registry, proxy
        registry.close()


# -- round trips ------------------------------------------------------------------------


def _requests(proxy: faultproxy.FaultProxy) -> list[str]:
    return [f"{m} {re.sub(r'[0-9a-f]{64}', 'H', p.split('?')[0])}" for m, p, _ in proxy.log]


def test_fetch_verified_is_one_manifest_get_and_the_layer_streams_during_verification(
    proxied: tuple[Registry, faultproxy.FaultProxy],
) -> None:
    registry, proxy = proxied
    signer = Signer.generate()
    publish(_bundle("1", ["alice"]), registry, "acme/app:prod", signer)
    verifier = Verifier(TrustPolicy(keys=[signer.public_key_pem]))
    # The signature manifest answers slowly: the layer must be on its way meanwhile.
    proxy.add(faultproxy.Rule("GET", r"\.sig$", "slow", times=-1, delay=0.5))
    proxy.log.clear()
    verified = fetch_verified(registry, "acme/app:prod", verifier)
    assert verified.bundle.manifest.revision == "1"
    sent = _requests(proxy)
    assert not [r for r in sent if r.startswith("HEAD")]  # no HEAD by tag, no GET by digest
    assert sent.count("GET /v2/acme/app/manifests/prod") == 1
    assert sent.count("GET /v2/acme/app/manifests/sha256-H.sig") == 1
    raw = [p for _, p, _ in proxy.log]
    layer_at = raw.index(f"/v2/acme/app/blobs/{verified.tarball_digest}")
    payload_at = next(i for i, p in enumerate(raw) if "/blobs/" in p and i != layer_at)
    assert layer_at < payload_at  # the layer was on its way before the signed payload
    # The registry (distribution 2.8) has no referrers API: learnt once per client.
    assert sorted(sent) == sorted(
        [
            "GET /v2/acme/app/manifests/prod",
            "GET /v2/acme/app/manifests/sha256-H.sig",
            "GET /v2/acme/app/blobs/sha256:H",  # the signed payload
            "GET /v2/acme/app/referrers/sha256:H",
            "GET /v2/acme/app/manifests/sha256-H",  # the referrers fallback tag
            "GET /v2/acme/app/blobs/sha256:H",  # the layer
        ]
    )
    proxy.log.clear()
    fetch_verified(registry, "acme/app:prod", verifier)
    assert len(proxy.log) == 5  # warm client: the referrers API is known to be missing


def test_one_signature_lookup_serves_every_key(
    proxied: tuple[Registry, faultproxy.FaultProxy],
) -> None:
    registry, proxy = proxied
    signers = [Signer.generate() for _ in range(3)]
    publish(_bundle("1", ["alice"]), registry, "acme/app:prod", signers[0])
    signers[1].sign(registry, "acme/app:prod")
    verifier = Verifier(TrustPolicy(keys=[s.public_key_pem for s in signers], threshold=2))
    proxy.log.clear()
    verified = fetch_verified(registry, "acme/app:prod", verifier)
    assert len(verified.artifact.signers) == 2
    sent = _requests(proxy)
    assert sent.count("GET /v2/acme/app/manifests/sha256-H.sig") == 1
    assert sent.count("GET /v2/acme/app/manifests/sha256-H") == 1
    assert sent.count("GET /v2/acme/app/manifests/prod") == 1


def test_an_unsigned_bundle_is_refused_and_nothing_of_it_returned(
    proxied: tuple[Registry, faultproxy.FaultProxy],
) -> None:
    registry, _ = proxied
    registry.push(_bundle("evil", ["mallory"]), "acme/app:prod")
    verifier = Verifier(TrustPolicy(keys=[Signer.generate().public_key_pem]))
    with pytest.raises(NoSignatureError):
        fetch_verified(registry, "acme/app:prod", verifier)


# -- the verified bytes reach OPA ----------------------------------------------------------


def test_an_opa_build_bundle_is_served_byte_for_byte(
    distribution: RegistryServer,
    opa_bin: Path,
    tmp_path: Path,
    start_opa: Callable[..., OpaServer],
) -> None:
    src = tmp_path / "src"
    (src / "app").mkdir(parents=True)
    (src / "app" / "policy.rego").write_text(MODULE)
    (src / "app" / "data.json").write_text('{"users": ["alice"], "n": 1.50}')
    (src / ".manifest").write_text('{"revision": "built", "roots": ["app"]}')
    out = tmp_path / "bundle.tar.gz"
    proc = run_opa(opa_bin, "build", "-b", ".", "-o", str(out), cwd=src)
    assert proc.returncode == 0, proc.stderr
    built = out.read_bytes()
    assert Bundle.from_bytes(built).to_bytes() != built  # a re-encoding would differ
    registry = Registry.remote(distribution.host, insecure=True)
    signer = Signer.generate()
    signer.sign(registry, push_tarball(registry, "acme/app:prod", built))
    verified = fetch_verified(
        registry, "acme/app:prod", Verifier(TrustPolicy(keys=[signer.public_key_pem]))
    )
    assert verified.tarball == built
    with BundleServer(tmp_path / "served") as server:
        served = server.publish(verified, "app")
        assert served.etag == f'"{hashlib.sha256(built).hexdigest()}"'
        assert served.etag.strip('"') == verified.tarball_digest.removeprefix("sha256:")
        status, headers, body = get(f"{server.url}/bundles/app")
        assert status == 200
        assert body == built
        assert headers["ETag"] == served.etag
        config = tmp_path / "opa.yaml"
        config.write_text(server.opa_config_yaml())
        opa = start_opa("-c", str(config))
        wait_for(
            lambda: opa.post("/v1/data/app/allow", {"input": {"user": "alice"}}).get("result")
            is True,
            what="OPA to activate the served bundle",
        )
    registry.close()


TRICKY = (
    b'{"big": 123456789012345678901234567890, "precise": 1.00000000000000000001,'
    b' "negzero": -0, "tiny": 5e-324, "exp": 1E+2, "esc": "caf\\u00e9 \\ud800 \\"q\\"",'
    b' "utf8": "\xc3\xa9\xf0\x9f\x98\x80", "dup": 1, "dup": 2, "nested": {"a": [true, null]}}'
)


@pytest.mark.parametrize(
    "entries",
    [
        {"app/data.json": TRICKY},  # the document at the root: sent as the file
        {"data.json": b'{"app": ' + TRICKY + b', "other": 1}'},  # a member of a file
        {"app/data.json": TRICKY, "app/more/data.yaml": b"y: [1, 2.5]\n"},  # merged: encoded
    ],
    ids=["file", "member", "encoded"],
)
def test_loaded_data_reads_in_opa_as_opas_bundle_reader_reads_it(
    entries: dict[str, bytes],
    opa_bin: Path,
    tmp_path: Path,
    start_opa: Callable[..., OpaServer],
) -> None:
    roots = ["app"] if "data.json" not in entries else ["app", "other"]
    layer = tarball.write_entries(
        {".manifest": json.dumps({"revision": "r", "roots": roots}).encode(), **entries}
    )
    (tmp_path / "b.tar.gz").write_bytes(layer)
    proc = run_opa(
        opa_bin, "eval", "--format", "json", "-b", str(tmp_path / "b.tar.gz"), "data.app"
    )
    assert proc.returncode == 0, proc.stderr
    # Numbers compared as exact decimals (as OPA compares them), not as floats:
    # 1.00000000000000000001 is not 1.0; -0 is 0 and 1E+2 is 100.
    exact: dict[str, Any] = {"parse_float": decimal.Decimal, "parse_int": decimal.Decimal}
    by_opa = json.loads(proc.stdout, **exact)["result"][0]["expressions"][0]["value"]
    registry = Registry.local(tmp_path / "oci")
    signer = Signer.generate()
    signer.sign(registry, push_tarball(registry, "acme/app:prod", layer))
    verified = fetch_verified(
        registry, "acme/app:prod", Verifier(TrustPolicy(keys=[signer.public_key_pem]))
    )
    server = start_opa()
    with OPA(server.url) as opa:
        opa.load(verified, name="app")
    with urllib.request.urlopen(f"{server.url}/v1/data/app", timeout=10) as resp:
        loaded = json.loads(resp.read(), **exact)["result"]
    assert loaded == by_opa


# -- loads cost what they change ------------------------------------------------------------


def _unrelated(tmp: Path, n: int) -> list[str]:
    """``opa run`` arguments that load ``n`` unrelated modules at start (one compile)."""
    if n == 0:
        return []
    d = tmp / f"unrelated-{n}"
    d.mkdir()
    for i in range(n):
        (d / f"m{i}.rego").write_text(f"package unrelated.m{i}\n\nx := {i}\n")
    return [str(d)]


def test_a_load_with_500_unrelated_modules_makes_the_requests_of_one_into_an_empty_opa(
    tmp_path: Path, start_opa: Callable[..., OpaServer]
) -> None:
    registry = Registry.local(tmp_path / "oci")
    signer = Signer.generate()
    verifier = Verifier(TrustPolicy(keys=[signer.public_key_pem]))
    revisions = []
    for revision, users in (("1", ["alice"]), ("2", ["bob"])):
        extra = f'\nrevision := "{revision}"\n'
        publish(_bundle(revision, users, extra), registry, f"acme/app:{revision}", signer)
        revisions.append(fetch_verified(registry, f"acme/app:{revision}", verifier))
    sent: dict[int, list[list[str]]] = {}
    for unrelated in (0, 500):
        server = start_opa(*_unrelated(tmp_path, unrelated))
        assert len(server.get("/v1/policies")["result"]) == unrelated
        for proxy in faultproxy.start(server.url.removeprefix("http://")):
            sent[unrelated] = []
            for fresh in (False, True):
                with OPA(f"http://{proxy.host}") as opa:
                    opa.load(revisions[0], name="app")
                    other = opa if not fresh else OPA(f"http://{proxy.host}")
                    proxy.log.clear()
                    other.load(revisions[1], name="app")
                    other.close()
                    sent[unrelated].append([f"{m} {p}" for m, p, _ in proxy.log])
                    assert other.query("app/revision") == "2"
        for requests in sent[unrelated]:
            assert "GET /v1/policies" not in requests  # never every module OPA holds
    assert sent[0] == sent[500]
    remembered, fresh_reads = sent[500]
    # Remembered: the records, and the AST of the one changed module whose
    # package also holds data (to see whether its rules collide with it).
    assert [r for r in remembered if r.startswith("GET")] == [
        "GET /v1/data/system/policysupply/bundles",
        "GET /v1/policies/policysupply/app/~/app/policy.rego",
    ]
    assert [r for r in fresh_reads if r.startswith("GET")] == [
        "GET /v1/data/system/policysupply/bundles",
        "GET /v1/policies/policysupply/app/~/app/policy.rego",
        "GET /v1/data/app",
    ]


# -- push notifications ---------------------------------------------------------------------


def _post(url: str, body: bytes, token: str | None) -> int:
    headers = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_registry_push_notifications_wake_the_watch_and_decide_nothing(
    tmp_path: Path,
) -> None:
    token = "events-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    with BundleServer(tmp_path / "served", events_token=token) as server:
        notifications = server.registry_notifications()
        assert notifications["endpoints"][0]["url"] == f"{server.url}/registry/events"
        for registry_server in _start_distribution(
            tmp_path / "registry", notifications=notifications
        ):
            registry = Registry.remote(registry_server.host, insecure=True)
            signer = Signer.generate()
            verifier = Verifier(TrustPolicy(keys=[signer.public_key_pem]))
            publish(_bundle("1", ["alice"]), registry, "acme/app:prod", signer)
            # Polling alone would take an hour: only an event can wake it in time.
            watch = server.watch(registry, "acme/app:prod", verifier, name="app", interval=3600)
            wait_for(lambda: server.served("app") is not None, 20, "the first revision")
            for revision in ("2", "3"):
                started = time.monotonic()
                publish(_bundle(revision, ["bob"]), registry, "acme/app:prod", signer)
                wait_for(
                    lambda r=revision: (server.served("app") or _Nothing).revision == r,  # type: ignore[misc]
                    20,
                    f"revision {revision} after the registry's event",
                )
                assert time.monotonic() - started < 10
            # An authenticated event never decides content: an unsigned push is not served.
            registry.push(_bundle("evil", ["mallory"]), "acme/app:prod")
            wait_for(
                lambda w=watch: w.last_error is not None,  # type: ignore[misc]
                20,
                "the unsigned push to be refused",
            )
            assert "NoSignatureError" in (watch.last_error or "")
            assert (server.served("app") or _Nothing).revision == "3"
            registry.close()
        # The receiver: the shared secret, a bounded body, the registry's envelope.
        events = f"{server.url}/registry/events"
        body = json.dumps({"events": [{"action": "push", "target": {"repository": "acme/app"}}]})
        assert _post(events, body.encode(), None) == 401
        assert _post(events, body.encode(), "wrong") == 401
        assert _post(events, b"not json", token) == 400
        assert _post(events, body.encode(), token) == 200
        assert _post(f"{server.url}/bundles/app", b"{}", token) == 405


class _Nothing:
    revision: Any = None
