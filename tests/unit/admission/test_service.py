"""The admission service's answers, in-process over a local OCI layout (offline)."""

from __future__ import annotations

import json

import pytest

from tests.unit.admission._reviews import pod_spec, provider_request, review, workload
from tests.unit.admission.conftest import patch_of

WORKLOADS = ["Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"]


def pod(*images: str, **kw: object) -> dict[str, object]:
    return workload("Pod", "web", "shop", pod_spec(list(images), **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", WORKLOADS)
def test_signed_image_is_admitted_for_every_workload_kind(harness, kind):
    h = harness()
    h.image("shop/web:1")
    r = h.answer(review(workload(kind, "web", "shop", pod_spec(["shop/web:1"]))))
    assert r["allowed"] is True
    assert "status" not in r or r["status"]["code"] == 200
    evidence = json.loads(r["auditAnnotations"]["images"])
    assert evidence[0]["outcome"] == "allow"
    assert evidence[0]["reference"].endswith("shop/web@" + evidence[0]["reference"].split("@")[1])
    assert evidence[0]["signers"]


@pytest.mark.parametrize("kind", WORKLOADS)
def test_unsigned_image_is_refused_for_every_workload_kind(harness, kind):
    h = harness()
    h.image("shop/web:1", sign=False)
    r = h.answer(review(workload(kind, "web", "shop", pod_spec(["shop/web:1"]))))
    assert r["allowed"] is False
    assert r["status"]["code"] == 403
    assert r["status"]["reason"] == "Forbidden"
    assert 'image "shop/web:1"' in r["status"]["message"]
    assert "unsigned" in r["status"]["message"]
    assert r["auditAnnotations"]["decision"] == "deny"


@pytest.mark.parametrize("field", ["init", "ephemeral"])
def test_unsigned_init_and_ephemeral_containers_are_checked(harness, field):
    h = harness()
    h.image("shop/web:1")
    h.image("tools/debug:1", sign=False)
    spec = pod_spec(["shop/web:1"], **{field: ["tools/debug:1"]})
    r = h.answer(review(workload("Pod", "web", "shop", spec)))
    assert r["allowed"] is False
    assert 'image "tools/debug:1"' in r["status"]["message"]
    assert 'image "shop/web:1"' not in r["status"]["message"]


def test_ephemeral_container_subresource_update_is_checked(harness):
    h = harness()
    h.image("shop/web:1")
    h.image("tools/debug:1", sign=False)
    obj = pod("shop/web:1", ephemeral=["tools/debug:1"])
    r = h.answer(review(obj, operation="UPDATE", sub_resource="ephemeralcontainers"))
    assert r["allowed"] is False


def test_status_subresource_and_delete_are_not_judged(harness):
    h = harness()
    h.image("shop/web:1", sign=False)
    assert h.answer(review(pod("shop/web:1"), operation="UPDATE", sub_resource="status"))["allowed"]
    assert h.answer(review(pod("shop/web:1"), operation="DELETE"))["allowed"]


def test_message_names_each_denied_image_and_its_reason(harness):
    h = harness()
    h.image("shop/a:1", sign=False)
    h.image("shop/b:1", sign=False)
    h.image("shop/ok:1")
    r = h.answer(review(pod("shop/a:1", "shop/b:1", "shop/ok:1")))
    msg = r["status"]["message"]
    assert 'image "shop/a:1" (container c0): unsigned' in msg
    assert 'image "shop/b:1" (container c1): unsigned' in msg
    assert "shop/ok:1" not in msg


def test_warn_mode_admits_with_a_warning(harness):
    h = harness(mode="warn")
    h.image("shop/web:1", sign=False)
    r = h.answer(review(pod("shop/web:1")))
    assert r["allowed"] is True
    assert len(r["warnings"]) == 1
    assert r["warnings"][0].startswith('policysupply: image "shop/web:1" would be denied: unsigned')
    assert r["auditAnnotations"]["decision"] == "deny-warn"


def test_audit_mode_admits_silently_but_records(harness):
    h = harness(mode="audit")
    h.image("shop/web:1", sign=False)
    r = h.answer(review(pod("shop/web:1")))
    assert r["allowed"] is True
    assert "warnings" not in r
    assert r["auditAnnotations"]["decision"] == "deny-audit"
    assert json.loads(r["auditAnnotations"]["images"])[0]["outcome"] == "deny"


def test_mutation_pins_verified_tags_to_their_digests(harness):
    h = harness(mutate=True)
    digest = h.image("shop/web:1")
    h.image("shop/side:2")
    obj = workload("Deployment", "web", "shop", pod_spec(["shop/web:1", "shop/side:2"]))
    r = h.answer(review(obj), path="/mutate")
    assert r["allowed"] is True
    ops = patch_of(r)
    assert ops[0] == {
        "op": "replace",
        "path": "/spec/template/spec/containers/0/image",
        "value": f"shop/web:1@{digest}",
    }
    assert ops[1]["path"] == "/spec/template/spec/containers/1/image"


def test_mutation_leaves_denied_and_pinned_images_alone(harness):
    h = harness(mutate=True, mode="warn")
    digest = h.image("shop/web:1")
    h.image("shop/bad:1", sign=False)
    r = h.answer(review(pod(f"shop/web:1@{digest}", "shop/bad:1")), path="/mutate")
    assert r["allowed"] is True
    assert "patch" not in r


def test_mutation_is_off_unless_configured(harness):
    h = harness()
    h.image("shop/web:1")
    r = h.answer(review(pod("shop/web:1")), path="/mutate")
    assert r["allowed"] is True
    assert "patch" not in r


def test_dry_run_is_answered_like_a_real_request(harness):
    h = harness()
    h.image("shop/web:1", sign=False)
    r = h.answer(review(pod("shop/web:1"), dry_run=True))
    assert r["allowed"] is False


def test_tag_moved_to_unsigned_image_is_refused(harness):
    """Attack: the tag is re-pointed at an unsigned image after the signed one was admitted."""
    h = harness(tag_ttl=0)
    h.image("shop/web:1", seed="good")
    assert h.answer(review(pod("shop/web:1")))["allowed"]
    h.image("shop/web:1", sign=False, seed="evil")
    assert not h.answer(review(pod("shop/web:1")))["allowed"]


def test_second_request_is_a_cache_hit(harness):
    h = harness()
    h.image("shop/web:1")
    first = json.loads(h.answer(review(pod("shop/web:1")))["auditAnnotations"]["images"])
    second = json.loads(h.answer(review(pod("shop/web:1")))["auditAnnotations"]["images"])
    assert first[0]["cache"] == "registry"
    assert second[0]["cache"] == "local"
    metrics = h.get("/metrics").text
    assert 'policysupply_admission_cache_hits_total{layer="local"} 1.0' in metrics


def test_unknown_kind_is_refused_in_enforce_mode(harness):
    h = harness()
    obj = workload("Rollout", "web", "shop", pod_spec(["shop/web:1"]))
    r = h.answer(review(obj))
    assert r["allowed"] is False
    assert r["status"]["code"] == 400
    assert "example.com/Rollout is not one policysupply admission checks" in r["status"]["message"]


def test_unknown_kind_can_be_allowed_with_a_warning(harness):
    h = harness(unknown_kinds="allow")
    r = h.answer(review(workload("Rollout", "web", "shop", pod_spec(["x/y:1"]))))
    assert r["allowed"] is True
    assert "not one policysupply admission checks" in r["warnings"][0]


def test_kind_from_another_group_is_unknown(harness):
    """Attack: a custom resource named Pod in another API group is not a Pod."""
    h = harness()
    obj = workload("Pod", "web", "shop", pod_spec(["shop/web:1"]))
    rv = review(obj)
    rv["request"]["kind"]["group"] = "evil.example.com"
    assert h.answer(rv)["allowed"] is False


def test_excluded_namespace_is_not_judged(harness):
    h = harness(exclude_namespaces=("kube-system",))
    obj = workload("Pod", "dns", "kube-system", pod_spec(["unsigned/thing:1"]))
    r = h.answer(review(obj))
    assert r["allowed"] is True
    assert r["auditAnnotations"]["decision"] == "skipped-namespace"


def test_image_patterns_limit_the_scope(harness):
    h = harness(include_images=("docker.io/shop/*",), exclude_images=("docker.io/shop/legacy*",))
    h.image("shop/web:1", sign=False)
    assert not h.answer(review(pod("shop/web:1")))["allowed"]
    r = h.answer(review(pod("shop/legacy:1", "other/x:1")))
    assert r["allowed"] is True
    assert {e["outcome"] for e in json.loads(r["auditAnnotations"]["images"])} == {"skipped"}


def test_image_that_does_not_exist_is_refused_not_allowed(harness):
    h = harness()
    r = h.answer(review(pod("shop/missing:1")))
    assert r["allowed"] is False
    assert "registry:" in r["status"]["message"]


def test_invalid_image_reference_is_refused(harness):
    h = harness()
    r = h.answer(review(pod("Shop/UPPER:1")))
    assert r["allowed"] is False
    assert "invalid" in r["status"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1",'
        b' "request": {"uid": "x"}}',
        b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}',
        b'{"kind": "Other", "apiVersion": "admission.k8s.io/v1"}',
        b"[" * 100000,
    ],
)
def test_malformed_review_is_a_400(harness, body):
    h = harness()
    resp = h.post("/validate", None, raw=body)
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("malformed AdmissionReview")


def test_object_without_its_pod_spec_is_refused(harness):
    h = harness()
    rv = review(workload("Deployment", "web", "shop", pod_spec(["shop/web:1"])))
    del rv["request"]["object"]["spec"]["template"]
    r = h.answer(rv)
    assert r["allowed"] is False
    assert r["status"]["code"] == 400


def test_container_without_image_is_refused(harness):
    h = harness()
    rv = review(pod("shop/web:1"))
    del rv["request"]["object"]["spec"]["containers"][0]["image"]
    assert h.answer(rv)["allowed"] is False


def test_huge_body_is_a_413(harness):
    h = harness(max_request_bytes=64 << 10)
    rv = review(pod("shop/web:1"))
    rv["request"]["object"]["metadata"]["annotations"] = {"big": "x" * (128 << 10)}
    resp = h.post("/validate", rv)
    assert resp.status_code == 413


def test_too_many_containers_is_refused(harness):
    h = harness(max_images=3)
    r = h.answer(review(pod(*(f"shop/web{i}:1" for i in range(4)))))
    assert r["allowed"] is False
    assert "more than the limit of 3" in r["status"]["message"]


def test_get_on_a_webhook_endpoint_is_405_and_unknown_path_404(harness):
    h = harness()
    assert h.get("/validate").status_code == 405
    assert h.get("/nope").status_code == 404


def test_health_and_readiness(harness):
    h = harness()
    assert h.get("/healthz").status_code == 200
    assert h.get("/readyz").status_code == 200


def test_external_data_answers_per_key(harness):
    h = harness()
    digest = h.image("shop/web:1")
    h.image("shop/bad:1", sign=False)
    resp = h.post("/externaldata", provider_request(["shop/web:1", "shop/bad:1", "Bad Ref"]))
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["apiVersion"] == "externaldata.gatekeeper.sh/v1beta1"
    assert doc["kind"] == "ProviderResponse"
    assert doc["response"]["systemError"] == ""
    items = {i["key"]: i for i in doc["response"]["items"]}
    assert items["shop/web:1"]["error"] == ""
    assert items["shop/web:1"]["value"]["allowed"] is True
    assert items["shop/web:1"]["value"]["digest"] == digest
    assert items["shop/bad:1"]["error"].startswith("deny: unsigned")
    assert items["shop/bad:1"]["value"]["allowed"] is False
    assert items["Bad Ref"]["error"].startswith("invalid:")


def test_external_data_refuses_plain_http(harness):
    h = harness()
    import asyncio

    import httpx

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=h.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
            return await c.post("/externaldata", json=provider_request(["a/b:1"]))

    assert h.loop.run_until_complete(go()).status_code == 403
    del asyncio


def test_malformed_provider_request_is_a_system_error(harness):
    h = harness()
    resp = h.post("/externaldata", {"kind": "ProviderRequest", "request": {"keys": "x"}})
    assert resp.status_code == 400
    assert resp.json()["response"]["systemError"].startswith("malformed ProviderRequest")


def test_metrics_count_decisions_by_outcome_and_reason(harness):
    h = harness()
    h.image("shop/bad:1", sign=False)
    h.answer(review(pod("shop/bad:1")))
    text = h.get("/metrics").text
    labels = 'endpoint="validate",outcome="deny",reason="unsigned"'
    assert f"policysupply_admission_decisions_total{{{labels}}} 1.0" in text
    assert "policysupply_admission_request_seconds_bucket" in text


class _Namespaces:
    """A loopback stand-in for the API server's namespace endpoint (labels only)."""

    def __init__(self, labels: dict[str, dict[str, str]]) -> None:
        import http.server
        import threading

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                if name not in labels:
                    self.send_response(500)
                    self.end_headers()
                    return
                body = json.dumps(
                    {"kind": "Namespace", "metadata": {"name": name, "labels": labels[name]}}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        del outer

    def close(self) -> None:
        self.server.shutdown()


def test_namespace_selector_limits_the_scope(harness):
    from policysupply.admission import LabelSelector

    api = _Namespaces({"shop": {"policysupply.dev/enforce": "true"}, "lab": {}})
    try:
        h = harness(
            kubernetes_api=api.url,
            namespace_selector=LabelSelector(match_labels={"policysupply.dev/enforce": "true"}),
        )
        h.image("shop/web:1", sign=False)
        assert not h.answer(review(workload("Pod", "w", "shop", pod_spec(["shop/web:1"]))))[
            "allowed"
        ]
        lab = h.answer(review(workload("Pod", "w", "lab", pod_spec(["shop/web:1"]))))
        assert lab["allowed"] is True
        assert lab["auditAnnotations"]["decision"] == "skipped-namespace"
        # A namespace whose labels cannot be read stays in scope: its images are checked.
        broken = h.answer(review(workload("Pod", "w", "unknown", pod_spec(["shop/web:1"]))))
        assert broken["allowed"] is False
    finally:
        api.close()


def test_warn_mode_admits_when_no_decision_can_be_made_but_says_so(harness):
    h = harness(mode="warn")
    r = h.answer(review(pod("shop/missing:1")))
    assert r["allowed"] is True
    assert "would be denied: registry:" in r["warnings"][0]


def test_rule_image_moved_back_without_a_state_file_rolls_the_rules_back(tmp_path):
    # rules.state is optional; without it each refresh verifies the rule image
    # with no rollback protection at all. The service has replaced r1 by r2;
    # the registry points the tag back at r1 (validly signed, with the hole r2
    # closed) and r1 decides again. What the service has itself replaced must
    # not come back within its run.
    import asyncio
    import time

    import attrs

    from policysupply import Registry, Signer
    from policysupply.admission import AdmissionConfig, create_app
    from policysupply.gate import Gate, _with_settings
    from policysupply.loaders import publish

    registry = Registry.local(tmp_path / "oci")
    signer = Signer.generate()
    (tmp_path / "cosign.pub").write_bytes(signer.public_key_pem)
    (tmp_path / "trust-policy.yaml").write_text("version: 1\nkeys: [cosign.pub]\n")
    ref = "platform/gate-rules:stable"

    def rules(revision: str) -> object:
        bundle = _with_settings(Gate.default_rules(), {"allowed_registries": [revision]})
        return attrs.evolve(bundle, manifest=attrs.evolve(bundle.manifest, revision=revision))

    old = publish(rules("r1"), registry, ref, signer)
    config = AdmissionConfig(
        trust_policy=tmp_path / "trust-policy.yaml", rules_image=ref, rules_refresh=0.05
    )
    app = create_app(config)
    app._registry_factory = lambda host: registry
    loop = asyncio.new_event_loop()

    def revision_after(change: object) -> str:
        before = app.engine.gate.rules.digest if app.engine else None
        change()  # type: ignore[operator]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.1))
            if app.engine.gate.rules.digest != before and before is not None:
                break
        loop.run_until_complete(asyncio.sleep(0.5))  # a few more refresh rounds
        return str(app.engine.gate.rules.manifest.revision)

    try:
        loop.run_until_complete(app.startup())
        assert app.engine.gate.rules.manifest.revision == "r1"
        assert revision_after(lambda: publish(rules("r2"), registry, ref, signer)) == "r2"
        manifest, media_type = registry.get_manifest(old)
        back = lambda: registry.put_manifest(ref, manifest, media_type=media_type)  # noqa: E731
        assert revision_after(back) == "r2"
    finally:
        loop.run_until_complete(app.shutdown())
        loop.close()
