"""The admission service as a real process (uvicorn, TLS) against Debian's registry and redis.

Images are pushed to the distribution registry on loopback and signed with
policysupply's own signer (cosign's storage); the service reads them over
HTTP as the API server's webhook calls would reach it: AdmissionReview
documents in the API server's exact JSON shape (tests/unit/admission/_reviews.py).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policysupply import Registry, Signer, TrustPolicy
from policysupply._internal.admission import cache as vcache
from tests.interop._admission_fixtures import (
    Service,
    redis_server,
    start_redis,
    start_service,
    write_certificate,
)
from tests.interop._gate_fixtures import push_image
from tests.interop.conftest import RegistryServer, free_port
from tests.unit.admission._reviews import pod_spec, provider_request, review, workload

pytestmark = pytest.mark.interop
__all__ = ["redis_server"]


class World:
    def __init__(self, tmp: Path, registry: RegistryServer) -> None:
        self.tmp = tmp
        self.host = registry.host
        self.registry = Registry.remote(registry.host, insecure=True)
        self.signer = Signer.generate()
        (tmp / "cosign.pub").write_bytes(self.signer.public_key_pem)
        (tmp / "trust-policy.yaml").write_text("version: 1\nkeys: [cosign.pub]\n")
        self.services: list[Service] = []

    def image(self, name: str, *, sign: bool = True, seed: str | None = None) -> str:
        ref = f"{self.host}/{name}"
        pinned = push_image(self.registry, ref, seed=seed or name)
        if sign:
            self.signer.sign(self.registry, ref)
        return str(pinned.digest)

    def config(self, **over: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "trust_policy": str(self.tmp / "trust-policy.yaml"),
            "registries": {"insecure": [self.host]},
            "limits": {"deadline": "5s"},
        }
        doc.update(over)
        return doc

    def service(self, name: str = "svc", *, tls: bool = True, **over: Any) -> Service:
        s = start_service(self.tmp / name, self.config(**over), tls=tls)
        self.services.append(s)
        return s

    def pod(self, *images: str, kind: str = "Pod") -> dict[str, Any]:
        return workload(kind, "web", "shop", pod_spec([f"{self.host}/{i}" for i in images]))


@pytest.fixture
def world(tmp_path: Path, distribution: RegistryServer) -> Iterator[World]:
    w = World(tmp_path, distribution)
    yield w
    for s in w.services:
        s.stop()


def evidence(response: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(response["auditAnnotations"]["images"])
    return out


def test_unsigned_refused_signed_admitted_and_pinned(world):
    digest = world.image("shop/web:1")
    world.image("shop/evil:1", sign=False)
    svc = world.service(mutate=True)

    denied = svc.review(review(world.pod("shop/evil:1")))
    assert denied["allowed"] is False
    assert denied["status"]["code"] == 403
    assert f'image "{world.host}/shop/evil:1"' in denied["status"]["message"]
    assert "unsigned: no signature" in denied["status"]["message"]

    mutated = svc.review(review(world.pod("shop/web:1", kind="Deployment")), path="/mutate")
    assert mutated["allowed"] is True
    import base64

    ops = json.loads(base64.b64decode(mutated["patch"]))
    assert ops == [
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/image",
            "value": f"{world.host}/shop/web:1@{digest}",
        }
    ]
    # The API server then calls the validating webhook with the pinned image.
    pinned = svc.review(review(world.pod(f"shop/web:1@{digest}", kind="Deployment")))
    assert pinned["allowed"] is True
    assert evidence(pinned)[0]["cache"] == "local"

    uids = {line.get("uid") for line in svc.logs() if line.get("message") == "admission review"}
    assert len(uids) == 3


def test_warn_mode_admits_with_a_warning(world):
    world.image("shop/evil:1", sign=False)
    svc = world.service(mode="warn")
    r = svc.review(review(world.pod("shop/evil:1")))
    assert r["allowed"] is True
    assert "would be denied: unsigned" in r["warnings"][0]


def test_two_replicas_share_one_redis(world, redis_server):
    world.image("shop/web:1")
    cache = {"redis": {"url": redis_server.url}}
    a = world.service("a", cache=cache)
    b = world.service("b", cache=cache)
    first = svc_cache(a.review(review(world.pod("shop/web:1"))))
    second = svc_cache(b.review(review(world.pod("shop/web:1"))))
    assert (first, second) == ("registry", "redis")
    assert 'policysupply_admission_cache_hits_total{layer="redis"} 1.0' in b.metrics()
    assert "policysupply_admission_cache_misses_total 0.0" in b.metrics()


def svc_cache(response: dict[str, Any]) -> str:
    assert response["allowed"] is True, response
    return str(evidence(response)[0]["cache"])


def test_unverified_results_are_never_shared(world, redis_server):
    world.image("shop/evil:1", sign=False)
    svc = world.service(cache={"redis": {"url": redis_server.url}})
    assert svc.review(review(world.pod("shop/evil:1")))["allowed"] is False
    assert redis_server.client().keys("policysupply:*") == []


def test_forged_redis_entry_is_not_trusted(world, redis_server):
    """Attack: someone who can write to Redis plants a "verified" result for an unsigned image."""
    digest = world.image("shop/evil:1", sign=False)
    key_file = world.tmp / "hmac.key"
    key_file.write_text("k" * 32)
    svc = world.service(cache={"redis": {"url": redis_server.url, "hmac_key_file": str(key_file)}})
    policy = TrustPolicy.from_file(world.tmp / "trust-policy.yaml")
    key = vcache.cache_key(
        f"{world.host}/shop/evil",
        digest,
        policy=vcache.policy_hash(policy),
        root="none",
        attestations=None,
    )
    forged = vcache.Entry(
        verification={
            "verified": True,
            "error": None,
            "message": "",
            "key_ids": ["forged"],
            "signers": ["forged"],
            "signatures": [],
            "attestations": [],
        },
        expires=time.time() + 600,
    )
    client = redis_server.client()
    client.set(vcache.KEY_PREFIX + key, b"-." + forged.to_bytes())
    client.set(vcache.KEY_PREFIX + key, b"0" * 64 + b"." + forged.to_bytes())
    r = svc.review(review(world.pod(f"shop/evil:1@{digest}")))
    assert r["allowed"] is False
    assert evidence(r)[0]["cache"] == "registry"


def test_redis_down_falls_back_to_verifying_never_to_allowing(world, tmp_path):
    world.image("shop/web:1")
    world.image("shop/evil:1", sign=False)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    svc = world.service(cache={"redis": {"url": dead, "timeout": "200ms"}})
    assert svc.review(review(world.pod("shop/evil:1")))["allowed"] is False
    assert svc_cache(svc.review(review(world.pod("shop/web:1")))) == "registry"
    assert "policysupply_admission_redis_errors_total 0.0" not in svc.metrics()


def test_redis_dying_mid_run_falls_back_to_verifying(world, tmp_path):
    redis = start_redis(tmp_path / "r")
    world.image("shop/web:1")
    world.image("shop/evil:1", sign=False)
    svc = world.service(cache={"redis": {"url": redis.url, "timeout": "200ms"}})
    assert svc.review(review(world.pod("shop/web:1")))["allowed"] is True
    redis.stop()
    assert svc.review(review(world.pod("shop/evil:1")))["allowed"] is False
    assert svc.review(review(world.pod("shop/web:1")))["allowed"] is True


def test_registry_down_is_refused_within_the_deadline(world, distribution):
    world.image("shop/web:1")
    svc = world.service(limits={"deadline": "3s"})
    distribution.proc.terminate()
    distribution.proc.wait(timeout=10)
    r = svc.review(review(world.pod("shop/web:1")))
    assert r["allowed"] is False
    assert "registry" in r["status"]["message"] or "deadline" in r["status"]["message"]
    assert "policysupply_admission_registry_errors_total 0.0" not in svc.metrics() or (
        "policysupply_admission_deadline_exceeded_total 0.0" not in svc.metrics()
    )


def test_gatekeeper_external_data_over_https(world):
    digest = world.image("shop/web:1")
    world.image("shop/evil:1", sign=False)
    svc = world.service()
    resp = svc.post(
        "/externaldata", provider_request([f"{world.host}/shop/web:1", f"{world.host}/shop/evil:1"])
    )
    assert resp.status_code == 200
    items = {i["key"]: i for i in resp.json()["response"]["items"]}
    good = items[f"{world.host}/shop/web:1"]
    assert good["error"] == ""
    assert good["value"]["digest"] == digest
    assert items[f"{world.host}/shop/evil:1"]["error"].startswith("deny: unsigned")


def test_certificate_is_reloaded_without_a_restart(world):
    svc = world.service()
    before = _served_certificate(svc)
    write_certificate(svc.cert.parent, cn="renewed")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _served_certificate(svc) == before:
        time.sleep(0.2)
    assert _served_certificate(svc) != before
    assert svc.review(review(world.pod("shop/none:1")))["allowed"] is False


def _served_certificate(svc: Service) -> bytes:
    return ssl.get_server_certificate(("127.0.0.1", svc.port)).encode()


def test_sigterm_stops_gracefully(world):
    svc = world.service()
    assert svc.stop() == 0
    assert any(
        line.get("message", "").startswith("Shutting down")
        or line.get("message", "").startswith("Finished server process")
        for line in svc.logs()
    )


def test_plain_http_needs_an_explicit_opt_in(world, tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "plain.yaml"
    cfg.write_text(json.dumps(world.config(server={"port": free_port()})))
    out = subprocess.run(
        [sys.executable, "-m", "policysupply", "admission", "serve", "--config", str(cfg)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert b"HTTPS only" in out.stderr


def test_cli_review_answers_one_document(world, tmp_path):
    import subprocess
    import sys

    world.image("shop/web:1")
    world.image("shop/evil:1", sign=False)
    cfg = tmp_path / "cli.yaml"
    cfg.write_text(json.dumps(world.config()))

    def run(doc: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "policysupply",
                "admission",
                "review",
                "-",
                "--config",
                str(cfg),
                *flags,
            ],
            input=json.dumps(doc).encode(),
            capture_output=True,
            timeout=120,
            check=False,
        )

    ok = run(review(world.pod("shop/web:1")))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["response"]["allowed"] is True
    no = run(review(world.pod("shop/evil:1")), "--json")
    assert no.returncode == 1
    doc = json.loads(no.stdout)
    assert doc["ok"] is True
    assert doc["response"]["status"]["code"] == 403
    bad = run({"kind": "AdmissionReview"}, "--json")
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["error"]["type"] == "ReviewError"


def test_rules_from_a_signed_policy_image_are_followed(world):
    """The rules come from a signed policy image; a new signed revision takes over."""
    import attrs

    from policysupply.gate import Gate, _with_settings
    from policysupply.loaders import publish

    world.image("shop/web:1")
    rules_ref = f"{world.host}/platform/gate-rules:stable"

    def rules(allowed: str, revision: str) -> Any:
        bundle = _with_settings(Gate.default_rules(), {"allowed_registries": [allowed]})
        return attrs.evolve(bundle, manifest=attrs.evolve(bundle.manifest, revision=revision))

    publish(rules(world.host, "r1"), world.registry, rules_ref, world.signer)
    svc = world.service(rules={"image": rules_ref, "refresh": "1s"})
    assert svc.review(review(world.pod("shop/web:1")))["allowed"] is True

    publish(rules("registry.acme.example", "r2"), world.registry, rules_ref, world.signer)
    deadline = time.monotonic() + 30
    answer = None
    while time.monotonic() < deadline:
        answer = svc.review(review(world.pod("shop/web:1")))
        if not answer["allowed"]:
            break
        time.sleep(0.3)
    assert answer is not None
    assert answer["allowed"] is False
    assert "allowed_registries" in answer["status"]["message"]
    assert 'policysupply_admission_rules_refresh_total{result="updated"} 1.0' in svc.metrics()


def test_unsigned_rule_image_stops_the_service_from_starting(world, tmp_path):
    from policysupply.gate import Gate

    rules_ref = f"{world.host}/platform/gate-rules:unsigned"
    world.registry.push(Gate.default_rules(), rules_ref)
    import subprocess
    import sys

    cfg = tmp_path / "rules.yaml"
    doc = world.config(rules={"image": rules_ref}, server={"port": free_port(), "allow_http": True})
    cfg.write_text(json.dumps(doc))
    out = subprocess.run(
        [sys.executable, "-m", "policysupply", "admission", "serve", "--config", str(cfg)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert b"no signature" in out.stderr


def test_dry_run_does_not_write_the_shared_cache(world, redis_server):
    world.image("shop/web:1")
    svc = world.service(cache={"redis": {"url": redis_server.url}})
    assert svc.review(review(world.pod("shop/web:1"), dry_run=True))["allowed"] is True
    assert redis_server.client().keys("policysupply:*") == []
    assert svc.review(review(world.pod("shop/web:1")))["allowed"] is True
    assert svc_cache(svc.review(review(world.pod("shop/web:1")))) == "local"


def test_rule_image_rollback_is_refused(world):
    """Attack: the rules tag is moved back to an older, validly signed revision."""
    import attrs

    from policysupply.gate import Gate, _with_settings
    from policysupply.loaders import publish

    world.image("shop/web:1")
    rules_ref = f"{world.host}/platform/gate-rules:stable"

    def rules(allowed: str, revision: str) -> Any:
        bundle = _with_settings(Gate.default_rules(), {"allowed_registries": [allowed]})
        return attrs.evolve(bundle, manifest=attrs.evolve(bundle.manifest, revision=revision))

    old = publish(rules(world.host, "r1"), world.registry, rules_ref, world.signer)
    time.sleep(1.1)  # signed-at has one-second resolution: r2 is strictly newer
    publish(rules("registry.acme.example", "r2"), world.registry, rules_ref, world.signer)
    svc = world.service(
        rules={"image": rules_ref, "refresh": "1s", "state": str(world.tmp / "rules-state.json")}
    )
    assert svc.review(review(world.pod("shop/web:1")))["allowed"] is False  # r2 denies

    manifest, media_type = world.registry.get_manifest(old)
    world.registry.put_manifest(rules_ref, manifest, media_type=media_type)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if 'policysupply_admission_rules_refresh_total{result="error"}' in svc.metrics():
            break
        time.sleep(0.3)
    assert 'policysupply_admission_rules_refresh_total{result="error"}' in svc.metrics()
    assert svc.review(review(world.pod("shop/web:1")))["allowed"] is False  # still r2
    errors = [str(line.get("error", "")) for line in svc.logs()]
    assert any("before the accepted material" in e for e in errors)


@pytest.fixture
def proxy(distribution: RegistryServer) -> Iterator[Any]:
    from tests.interop import faultproxy

    yield from faultproxy.start(distribution.host)


def _through(world: World, proxy: Any, image: str) -> dict[str, Any]:
    return workload("Pod", "web", "shop", pod_spec([f"{proxy.host}/{image}"]))


def test_concurrent_reviews_of_one_new_image_fetch_it_once(world, proxy):
    """Single flight: 20 concurrent reviews of an image nobody verified yet, one lookup each."""
    import concurrent.futures

    world.image("shop/web:1")
    svc = world.service(registries={"insecure": [world.host, proxy.host]})
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(
            pool.map(lambda _: svc.review(review(_through(world, proxy, "shop/web:1"))), range(20))
        )
    assert all(a["allowed"] for a in answers)
    assert proxy.count("HEAD", r"/v2/shop/web/manifests/1$") == 1
    assert proxy.count("GET", r"\.sig$") == 1


def test_slow_registry_is_answered_within_the_deadline(world, proxy):
    from tests.interop.faultproxy import Rule

    world.image("shop/web:1")
    svc = world.service(
        registries={"insecure": [world.host, proxy.host]}, limits={"deadline": "2s"}
    )
    # The registry would answer after a minute: the review is answered at the deadline.
    proxy.add(Rule("HEAD", r"/manifests/", "slow", times=-1, delay=60.0))
    proxy.add(Rule("GET", r"/manifests/", "slow", times=-1, delay=60.0))
    r = svc.review(review(_through(world, proxy, "shop/web:1")))
    assert r["allowed"] is False
    message = r["status"]["message"]
    assert "no decision within the 2s deadline" in message or "registry" in message


def test_unreadable_trust_policy_is_a_configuration_error(world, tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "bad.yaml"
    doc = world.config(trust_policy=str(tmp_path / "missing.yaml"), server={"allow_http": True})
    cfg.write_text(json.dumps(doc))
    out = subprocess.run(
        [sys.executable, "-m", "policysupply", "admission", "serve", "--config", str(cfg)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert b"cannot read trust policy" in out.stderr
