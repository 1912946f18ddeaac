"""The admission service called by a real kube-apiserver (with etcd).

Everything on loopback, started once for the module: Debian's registry with
a signed and an unsigned image, two ``policysupply admission serve``
processes (enforce + mutate for namespace ``shop``, warn + mutate for
``shop-warn``), etcd, and kube-apiserver with our Mutating- and
ValidatingWebhookConfiguration (deploy/admission/webhooks.yaml, pointed at
the services' URLs with our test CA as caBundle). Objects are created through
the API server's REST API, as kubectl would, so what is checked is what a
cluster user sees: the API server's status code and message, the object it
stored (after applying our JSONPatch), and its ``Warning`` headers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from policysupply import Registry, Signer
from tests.interop._admission_fixtures import Service, start_service
from tests.interop._gate_fixtures import push_image
from tests.interop._kube_fixtures import (
    ControlPlane,
    deployment,
    pod,
    start_control_plane,
    webhook_configurations,
)
from tests.interop.conftest import _start_distribution

pytestmark = pytest.mark.interop

ENFORCE_NS = "shop"
WARN_NS = "shop-warn"
VERIFY_ONLY_NS = "shop-verify"  # the validating webhook alone, no mutation


class Cluster:
    """The module's world: registry, images, services, control plane."""

    def __init__(self, tmp: Path, host: str, plane: ControlPlane) -> None:
        self.tmp = tmp
        self.host = host
        self.plane = plane
        self.registry = Registry.remote(host, insecure=True)
        self.signer = Signer.generate()
        (tmp / "cosign.pub").write_bytes(self.signer.public_key_pem)
        (tmp / "trust-policy.yaml").write_text("version: 1\nkeys: [cosign.pub]\n")
        self.services: list[Service] = []
        self.signed = f"{host}/shop/web:1"
        self.unsigned = f"{host}/shop/evil:1"
        self.signed_digest = str(push_image(self.registry, self.signed, seed="web").digest)
        self.signer.sign(self.registry, self.signed)
        self.unsigned_digest = str(push_image(self.registry, self.unsigned, seed="evil").digest)

    def service(self, name: str, **config: Any) -> Service:
        doc = {
            "trust_policy": str(self.tmp / "trust-policy.yaml"),
            "registries": {"insecure": [self.host]},
            "limits": {"deadline": "5s"},
            **config,
        }
        s = start_service(self.tmp / name, doc)
        self.services.append(s)
        return s

    def register(
        self, name: str, service: Service, namespace: str, *, mutating: bool = True
    ) -> None:
        assert service.cert is not None
        mutate, validating = webhook_configurations(
            name,
            ca_bundle=service.cert.read_bytes(),
            url=service.url,
            namespaces=[namespace],
        )
        if mutating:
            self.plane.apply(
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", mutate
            )
        self.plane.apply(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", validating
        )

    def namespace(self, name: str) -> None:
        self.plane.apply(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )

    def pods(self, ns: str) -> str:
        return f"/api/v1/namespaces/{ns}/pods"

    def deployments(self, ns: str) -> str:
        return f"/apis/apps/v1/namespaces/{ns}/deployments"


def _wait_for_webhooks(cluster: Cluster) -> None:
    """The API server picks up webhook configurations asynchronously: wait until
    a dry-run of an unsigned Pod is refused in ``shop`` and warned about in
    ``shop-warn``."""
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        enforced = cluster.plane.create(
            cluster.pods(ENFORCE_NS), pod("probe", cluster.unsigned), dry_run=True
        )
        warned = cluster.plane.create(
            cluster.pods(WARN_NS), pod("probe", cluster.unsigned), dry_run=True
        )
        verified = cluster.plane.create(
            cluster.pods(VERIFY_ONLY_NS), pod("probe", cluster.unsigned), dry_run=True
        )
        if (
            enforced.status_code == 403
            and verified.status_code == 403
            and warned.headers.get_list("warning")
        ):
            return
        last = f"{enforced.status_code} {enforced.text[:300]} / {warned.status_code}"
        last += f" / {verified.status_code}"
        time.sleep(0.5)
    pytest.fail(f"webhooks were not in effect after 60 s: {last}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("kube")
    for registry in _start_distribution(tmp / "distribution"):
        for plane in start_control_plane(tmp / "control-plane"):
            c = Cluster(tmp, registry.host, plane)
            try:
                enforce = c.service("enforce", mutate=True)
                warn = c.service("warn", mutate=True, mode="warn")
                for ns in (ENFORCE_NS, WARN_NS, VERIFY_ONLY_NS):
                    c.namespace(ns)
                c.register("policysupply-enforce", enforce, ENFORCE_NS)
                c.register("policysupply-warn", warn, WARN_NS)
                c.register("policysupply-verify", enforce, VERIFY_ONLY_NS, mutating=False)
                _wait_for_webhooks(c)
                yield c
            finally:
                for s in c.services:
                    s.stop()


def _status(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = resp.json()
    assert body["kind"] == "Status", body
    return body


def test_unsigned_pod_refused_with_our_message(cluster):
    resp = cluster.plane.create(cluster.pods(ENFORCE_NS), pod("evil", cluster.unsigned))
    assert resp.status_code == 403, resp.text
    status = _status(resp)
    assert status["reason"] == "Forbidden"
    message = status["message"]
    # The API server prefixes our message with the webhook that denied it: the
    # mutating one, which the API server calls first.
    assert message.startswith('admission webhook "pin.policysupply.dev" denied the request')
    assert f'image "{cluster.unsigned}" (container c0)' in message
    assert "unsigned: no signature" in message
    assert cluster.plane.get(f"{cluster.pods(ENFORCE_NS)}/evil").status_code == 404


def test_validating_webhook_alone_refuses_and_admits_unchanged(cluster):
    # Without the mutating webhook, the denial is the validating webhook's.
    resp = cluster.plane.create(cluster.pods(VERIFY_ONLY_NS), pod("evil", cluster.unsigned))
    assert resp.status_code == 403, resp.text
    message = _status(resp)["message"]
    assert message.startswith('admission webhook "verify.policysupply.dev" denied the request')
    assert f'image "{cluster.unsigned}" (container c0)' in message

    admitted = cluster.plane.create(cluster.pods(VERIFY_ONLY_NS), pod("web", cluster.signed))
    assert admitted.status_code == 201, admitted.text
    assert admitted.json()["spec"]["containers"][0]["image"] == cluster.signed


def test_signed_pod_admitted_and_pinned_to_its_digest(cluster):
    resp = cluster.plane.create(cluster.pods(ENFORCE_NS), pod("web", cluster.signed))
    assert resp.status_code == 201, resp.text
    assert not resp.headers.get_list("warning")
    pinned = f"{cluster.signed}@{cluster.signed_digest}"
    assert resp.json()["spec"]["containers"][0]["image"] == pinned
    # What etcd holds is the patched object.
    stored = cluster.plane.get(f"{cluster.pods(ENFORCE_NS)}/web")
    assert stored.status_code == 200
    assert stored.json()["spec"]["containers"][0]["image"] == pinned
    # The API server sent the patched object on to the validating webhook.
    seen = [
        line
        for s in cluster.services
        for line in s.logs()
        if line.get("message") == "admission review"
        and line.get("namespace") == ENFORCE_NS
        and line.get("object_name") == "web"
        and line.get("kind") == "Pod"
    ]
    assert {line["endpoint"] for line in seen} == {"mutate", "validate"}, seen
    validated = [line for line in seen if line["endpoint"] == "validate"]
    assert [i["image"] for i in validated[-1]["images"]] == [pinned]


def test_one_unsigned_container_refuses_the_whole_pod(cluster):
    resp = cluster.plane.create(
        cluster.pods(ENFORCE_NS), pod("mixed", cluster.signed, cluster.unsigned)
    )
    assert resp.status_code == 403, resp.text
    message = _status(resp)["message"]
    assert f'image "{cluster.unsigned}" (container c1)' in message
    assert f'image "{cluster.signed}"' not in message


def test_deployment_template_pinned_and_unsigned_refused_on_create_and_update(cluster):
    resp = cluster.plane.create(cluster.deployments(ENFORCE_NS), deployment("web", cluster.signed))
    assert resp.status_code == 201, resp.text
    stored = cluster.plane.get(f"{cluster.deployments(ENFORCE_NS)}/web").json()
    image = stored["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{cluster.signed}@{cluster.signed_digest}"

    refused = cluster.plane.create(
        cluster.deployments(ENFORCE_NS), deployment("evil", cluster.unsigned)
    )
    assert refused.status_code == 403, refused.text
    assert f'image "{cluster.unsigned}"' in _status(refused)["message"]

    # An UPDATE to an unsigned image is refused too; the stored object keeps
    # its pinned image.
    containers = [{"name": "c0", "image": cluster.unsigned}]
    updated = cluster.plane.merge_patch(
        f"{cluster.deployments(ENFORCE_NS)}/web",
        {"spec": {"template": {"spec": {"containers": containers}}}},
    )
    assert updated.status_code == 403, updated.text
    assert f'image "{cluster.unsigned}"' in _status(updated)["message"]
    stored = cluster.plane.get(f"{cluster.deployments(ENFORCE_NS)}/web").json()
    image = stored["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{cluster.signed}@{cluster.signed_digest}"


def test_warn_mode_admits_with_a_warning_header(cluster):
    resp = cluster.plane.create(cluster.pods(WARN_NS), pod("evil", cluster.unsigned))
    assert resp.status_code == 201, resp.text
    warnings = resp.headers.get_list("warning")
    # RFC 7234 warn-code 299 with our text, one per denied image.
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("299 - ")
    assert cluster.unsigned in warnings[0]
    assert "unsigned" in warnings[0]
    # Stored as given: an unverified image is never pinned.
    stored = cluster.plane.get(f"{cluster.pods(WARN_NS)}/evil").json()
    assert stored["spec"]["containers"][0]["image"] == cluster.unsigned

    signed = cluster.plane.create(cluster.pods(WARN_NS), pod("web", cluster.signed))
    assert signed.status_code == 201, signed.text
    assert not signed.headers.get_list("warning")
    image = signed.json()["spec"]["containers"][0]["image"]
    assert image == f"{cluster.signed}@{cluster.signed_digest}"


def test_dry_run_is_judged_and_patched_but_not_stored(cluster):
    refused = cluster.plane.create(
        cluster.pods(ENFORCE_NS), pod("dry-evil", cluster.unsigned), dry_run=True
    )
    assert refused.status_code == 403, refused.text

    admitted = cluster.plane.create(
        cluster.pods(ENFORCE_NS), pod("dry-web", cluster.signed), dry_run=True
    )
    assert admitted.status_code == 201, admitted.text
    image = admitted.json()["spec"]["containers"][0]["image"]
    assert image == f"{cluster.signed}@{cluster.signed_digest}"
    assert cluster.plane.get(f"{cluster.pods(ENFORCE_NS)}/dry-web").status_code == 404
