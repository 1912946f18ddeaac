"""Adversarial review of the admission service: ways to run an unsigned image, or wedge the service.

Each test names the attack it stands for. Offline: the service reads a local
OCI layout for every registry host (see conftest.Harness).
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.admission._reviews import pod_spec, review, workload
from tests.unit.admission.conftest import patch_of


def pod(*images: str, **kw: Any) -> dict[str, Any]:
    return workload("Pod", "web", "shop", pod_spec(list(images), **kw))


# -- image references: what is verified is what the runtime pulls ---------------------------


def test_tag_and_digest_verifies_the_digest_the_runtime_pulls(harness):
    """Attack: a signed tag in front of an unsigned digest (``repo:tag@sha256:...``).

    The container runtime pulls the digest and ignores the tag, so the digest
    is what must be verified.
    """
    h = harness()
    h.image("shop/web:1")
    evil = h.image("shop/web:evil", sign=False, seed="evil")
    r = h.answer(review(pod(f"shop/web:1@{evil}")))
    assert r["allowed"] is False
    assert "unsigned" in r["status"]["message"]


def test_mutation_never_rewrites_an_image_that_already_names_a_digest(harness):
    """Attack: have the mutating webhook append a second ``@digest`` to a pinned image."""
    h = harness(mutate=True)
    digest = h.image("shop/web:1")
    r = h.answer(review(pod(f"shop/web:1@{digest}")), path="/mutate")
    assert r["allowed"] is True
    assert "patch" not in r


def test_exclusion_by_tag_does_not_skip_an_image_pinned_to_another_digest(harness):
    """Attack: ``exclude: [docker.io/shop/base:3.19]`` and the image ``shop/base:3.19@<unsigned>``.

    The tag of a ``repo:tag@digest`` reference is decoration (it need not even
    exist); the runtime pulls the digest, so a tag pattern must not exclude it.
    """
    h = harness(exclude_images=("docker.io/shop/base:3.19",))
    h.image("shop/base:3.19", sign=False, seed="base")
    evil = h.image("shop/base:evil", sign=False, seed="evil")
    r = h.answer(review(pod(f"shop/base:3.19@{evil}")))
    assert r["allowed"] is False
    evidence = json.loads(r["auditAnnotations"]["images"])
    assert evidence[0]["outcome"] != "skipped"


def test_exclusion_glob_does_not_reach_from_the_path_into_the_host(harness):
    """Attack: ``exclude: ["*.corp.example/*"]`` (meant: our registries) and the image
    ``evil.example/a.corp.example/x:1`` - a repository on another registry whose
    path contains the pattern's host.

    With ``fnmatch``, ``*`` also matches ``/``: the first ``*`` swallows
    ``evil.example/a``. policy-controller's globs do not let ``*`` cross ``/``.
    """
    h = harness(exclude_images=("*.corp.example/*",))
    r = h.answer(review(pod("evil.example/a.corp.example/x:1")))
    assert r["allowed"] is False
    evidence = json.loads(r["auditAnnotations"]["images"])
    assert evidence[0]["outcome"] != "skipped"


def test_host_anchored_exclusion_still_skips_the_registries_it_names(harness):
    h = harness(exclude_images=("*.corp.example/*", "registry.k8s.io/pause:*"))
    r = h.answer(review(pod("reg.corp.example/team/app:1", "registry.k8s.io/pause:3.10")))
    assert r["allowed"] is True
    assert {e["outcome"] for e in json.loads(r["auditAnnotations"]["images"])} == {"skipped"}


# -- UPDATE: judge what changes, do not wedge what already runs -------------------------------


def _scaled(obj: dict[str, Any], replicas: int) -> dict[str, Any]:
    new = copy.deepcopy(obj)
    new["spec"]["replicas"] = replicas
    return new


def test_scaling_down_a_workload_whose_image_is_now_denied_is_admitted(harness):
    """Wedge: the Deployment controller scales an old ReplicaSet down with a full UPDATE
    of the ReplicaSet (not the scale subresource). If its image is denied today
    (signature removed or aged past max_age, registry down), refusing that UPDATE
    keeps the bad pods running and the rollout stuck. policy-controller skips
    validation on scale-down and on objects being deleted.
    """
    h = harness()
    h.image("shop/old:1", sign=False)
    old = workload("ReplicaSet", "web-1", "shop", pod_spec(["shop/old:1"]))
    r = h.answer(review(_scaled(old, 0), operation="UPDATE", old=old))
    assert r["allowed"] is True
    assert r["auditAnnotations"]["decision"] == "unchanged-images"


def test_finalizer_removal_on_a_terminating_pod_is_admitted(harness):
    """Wedge: a pod being deleted needs an UPDATE to drop its finalizers."""
    h = harness()
    h.image("shop/old:1", sign=False)
    old = pod("shop/old:1")
    old["metadata"]["finalizers"] = ["example.com/cleanup"]
    old["metadata"]["deletionTimestamp"] = "2026-12-02T10:00:00Z"
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = []
    assert h.answer(review(new, operation="UPDATE", old=old))["allowed"] is True


def test_update_to_an_unsigned_image_is_still_refused(harness):
    """Attack: ``kubectl set image`` on a running pod or a workload."""
    h = harness()
    h.image("shop/web:1")
    h.image("shop/evil:1", sign=False)
    for kind in ("Pod", "Deployment"):
        old = workload(kind, "web", "shop", pod_spec(["shop/web:1"]))
        new = workload(kind, "web", "shop", pod_spec(["shop/evil:1"]))
        r = h.answer(review(new, operation="UPDATE", old=old))
        assert r["allowed"] is False, kind
        assert 'image "shop/evil:1"' in r["status"]["message"]


def test_update_adding_an_unsigned_image_beside_an_old_one_names_only_the_new_one(harness):
    h = harness()
    h.image("shop/old:1", sign=False)
    h.image("shop/evil:1", sign=False)
    old = workload("Deployment", "web", "shop", pod_spec(["shop/old:1"]))
    new = workload("Deployment", "web", "shop", pod_spec(["shop/old:1"], init=["shop/evil:1"]))
    r = h.answer(review(new, operation="UPDATE", old=old))
    assert r["allowed"] is False
    assert 'image "shop/evil:1"' in r["status"]["message"]
    assert "shop/old:1" not in r["status"]["message"]


def test_ephemeral_container_added_to_a_running_pod_is_judged(harness):
    """Attack: ``kubectl debug`` with an unsigned image (pods/ephemeralcontainers)."""
    h = harness()
    h.image("shop/web:1")
    h.image("tools/debug:1", sign=False)
    old = pod("shop/web:1")
    new = pod("shop/web:1", ephemeral=["tools/debug:1"])
    r = h.answer(review(new, operation="UPDATE", sub_resource="ephemeralcontainers", old=old))
    assert r["allowed"] is False
    assert 'image "tools/debug:1"' in r["status"]["message"]


def test_old_object_of_another_shape_does_not_excuse_anything(harness):
    """Attack: an UPDATE whose oldObject is unreadable must be judged as a CREATE."""
    h = harness()
    h.image("shop/evil:1", sign=False)
    new = workload("Deployment", "web", "shop", pod_spec(["shop/evil:1"]))
    r = h.answer(review(new, operation="UPDATE", old={"spec": "nonsense"}))
    assert r["allowed"] is False


# -- availability: one tenant must not wedge every admission -----------------------------------


class _Tarpit:
    """A registry that takes ``delay`` seconds to fail every call (a slow, hostile registry)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        def slow(*_a: Any, **_k: Any) -> Any:
            from policysupply.errors import RegistryError

            with self._lock:
                self.calls += 1
            time.sleep(self.delay)
            raise RegistryError("tarpit")

        return slow


def test_a_slow_registry_in_one_request_does_not_starve_other_requests(harness):
    h = harness(registry_concurrency=2, deadline=0.6)
    h.image("shop/web:1")
    tarpit = _Tarpit(delay=1.5)
    local = h.registry
    engine = h.app.engine
    engine._registries.clear()
    engine._registry_factory = lambda host: tarpit if host.endswith("tarpit.example") else local
    flood = pod(*(f"r{i}.tarpit.example/x/y:{i}" for i in range(8)))
    assert h.answer(review(flood, dry_run=True))["allowed"] is False
    r = h.answer(review(pod("shop/web:1")))
    assert r["allowed"] is True, r.get("status")
    # The flood held one worker (its request's share); the rest never started.
    assert tarpit.calls == 1
    assert engine.workers.dropped == 7
    assert b"policysupply_admission_registry_work_dropped_total 7.0" in h.get("/metrics").content


def test_requests_flooding_one_slow_registry_host_hold_only_its_share(harness):
    h = harness(registry_concurrency=4, deadline=0.6)
    h.image("shop/web:1")
    tarpit = _Tarpit(delay=1.5)
    local = h.registry
    engine = h.app.engine
    engine._registries.clear()
    engine._registry_factory = lambda host: tarpit if host == "slow.example" else local

    async def flood() -> list[dict[str, Any]]:
        # Concurrent requests (separate pods) on one slow host: only the host's share starts.
        transport = httpx.ASGITransport(app=h.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://svc") as c:
            posts = [
                c.post("/validate", json=review(pod(f"slow.example/x/y:{i}"), dry_run=True))
                for i in range(6)
            ]
            return [r.json()["response"] for r in await asyncio.gather(*posts)]

    assert all(r["allowed"] is False for r in h.loop.run_until_complete(flood()))
    assert tarpit.calls == 2  # half of the 4 workers; the others stayed free
    r = h.answer(review(pod("shop/web:1")))
    assert r["allowed"] is True, r.get("status")


# -- Gatekeeper external data: the documented template must fail closed -----------------------


def _howto_gatekeeper_template() -> str:
    from tests.conftest import ROOT

    text = (ROOT / "docs" / "howto" / "admission.md").read_text()
    section = text.split("## Gatekeeper external data", 1)[1]
    blocks = section.split("```text\n")[1:]
    (rego,) = [b.split("```", 1)[0] for b in blocks if "external_data(" in b]
    return rego


def _gatekeeper_eval(
    opa: Path, tmp_path: Path, rego: str, obj: dict[str, Any], mock: dict[str, Any]
) -> Any:
    """Evaluates the howto's template with OPA, a stand-in for Gatekeeper's ``external_data``.

    The stand-in answers as Gatekeeper does: ``errors`` holds ``[key, error]``
    for each key the provider refused; a provider that failed as a whole
    (unreachable, timeout, non-200) leaves ``errors`` empty and sets
    ``system_error``.
    """
    import subprocess

    module = (
        "package k8sverifiedimages\n"
        "import future.keywords.in\n"
        "gk_external_data(req) := {\n"
        '  "responses": [],\n'
        '  "errors": [[k, data.mock.errors[k]] | k := req.keys[_]; data.mock.errors[k]],\n'
        '  "status_code": 200,\n'
        '  "system_error": data.mock.system_error,\n'
        "}\n" + rego.replace("external_data(", "gk_external_data(")
    )
    (tmp_path / "t.rego").write_text(module)
    (tmp_path / "data.json").write_text(json.dumps({"mock": mock}))
    (tmp_path / "input.json").write_text(json.dumps({"review": {"object": obj}}))
    out = subprocess.run(
        [
            str(opa),
            "eval",
            "--v0-compatible",
            "-f",
            "json",
            "-d",
            str(tmp_path / "t.rego"),
            "-d",
            str(tmp_path / "data.json"),
            "-i",
            str(tmp_path / "input.json"),
            "data.k8sverifiedimages.violation",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)["result"][0]["expressions"][0]["value"]


def test_documented_gatekeeper_template_denies_when_the_provider_fails(tmp_path, opa_bin):
    """Fail-open: when the provider is down, times out or answers 400, Gatekeeper puts the
    failure in ``system_error`` and leaves ``errors`` empty; a template that
    only counts errors then admits every image."""
    obj = pod("shop/evil:1")
    violations = _gatekeeper_eval(
        opa_bin,
        tmp_path,
        _howto_gatekeeper_template(),
        obj,
        {"errors": {}, "system_error": "provider timed out"},
    )
    assert violations, "the documented template admits everything while the provider is down"


@pytest.mark.parametrize("field", ["init", "ephemeral", "volume"])
def test_documented_gatekeeper_template_checks_every_container_kind(tmp_path, opa_bin, field):
    """Attack: the unsigned image goes into an init or ephemeral container, or an image volume."""
    if field == "volume":
        obj = pod("shop/web:1")
        obj["spec"]["volumes"] = [{"name": "d", "image": {"reference": "shop/evil:1"}}]
    else:
        obj = pod("shop/web:1", **{field: ["shop/evil:1"]})
    violations = _gatekeeper_eval(
        opa_bin,
        tmp_path,
        _howto_gatekeeper_template(),
        obj,
        {"errors": {"shop/evil:1": "deny: unsigned"}, "system_error": ""},
    )
    assert violations, f"an unsigned image in {field} containers is admitted"


def test_external_data_answers_every_key_even_duplicates_and_denies_each_bad_one(harness):
    h = harness()
    h.image("shop/web:1")
    from tests.unit.admission._reviews import provider_request

    resp = h.post("/externaldata", provider_request(["shop/evil:1", "shop/web:1", "shop/evil:1"]))
    items = {i["key"]: i for i in resp.json()["response"]["items"]}
    assert set(items) == {"shop/evil:1", "shop/web:1"}
    assert items["shop/evil:1"]["error"]
    assert items["shop/evil:1"]["value"]["allowed"] is False


def test_patch_pins_exactly_what_was_verified(harness):
    """Mismatch check: the digest written by /mutate is the digest /validate then verifies."""
    h = harness(mutate=True)
    digest = h.image("shop/web:1")
    r = h.answer(review(pod("shop/web:1")), path="/mutate")
    (op,) = patch_of(r)
    assert op["value"] == f"shop/web:1@{digest}"
    evidence = json.loads(r["auditAnnotations"]["images"])
    assert evidence[0]["reference"] == f"docker.io/shop/web@{digest}"


# -- who may switch the webhooks off ----------------------------------------------------------


def test_no_webhook_exemption_is_a_label_the_requester_can_set():
    """Bypass: the webhooks skipped namespaces labelled ``policysupply.dev/admission=ignore``.

    Whoever may create or label a namespace (self-service namespaces, a tenant
    admin with ``patch namespaces``) sets that label and runs anything. The
    exemptions must be on ``kubernetes.io/metadata.name``, which the API
    server sets to the namespace's name and nobody can change; no
    ``objectSelector`` (object labels are the requester's too).
    """
    from tests.unit.admission.test_deploy import kind

    webhooks = [
        w
        for d in kind("ValidatingWebhookConfiguration") + kind("MutatingWebhookConfiguration")
        for w in d["webhooks"]
    ]
    for w in webhooks:
        selector = w["namespaceSelector"]
        assert not selector.get("matchLabels"), w["name"]
        assert "objectSelector" not in w, w["name"]
        for expr in selector["matchExpressions"]:
            assert expr["key"] == "kubernetes.io/metadata.name", (w["name"], expr)
            assert expr["operator"] == "NotIn", (w["name"], expr)
        skipped = {v for e in selector["matchExpressions"] for v in e["values"]}
        assert skipped == {"kube-system", "kube-public", "kube-node-lease", "policysupply-system"}


def test_documented_gatekeeper_template_admits_when_every_image_is_allowed(tmp_path, opa_bin):
    obj = pod("shop/web:1", init=["shop/init:1"])
    obj["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "cfg"}}]
    violations = _gatekeeper_eval(
        opa_bin, tmp_path, _howto_gatekeeper_template(), obj, {"errors": {}, "system_error": ""}
    )
    assert violations == []


def test_images_outside_the_allowed_registries_cost_no_registry_call(harness):
    """Starvation, narrowed: with the default rules' ``allowed_registries``, an image from
    any other registry is denied before any registry I/O, so a tenant cannot
    point the service at a slow registry of their own."""
    h = harness(settings={"allowed_registries": ["docker.io/shop"]}, registry_concurrency=2)
    h.image("shop/web:1")
    tarpit = _Tarpit(delay=1.5)
    local = h.registry
    engine = h.app.engine
    engine._registries.clear()
    engine._registry_factory = lambda host: tarpit if host.endswith("tarpit.example") else local
    flood = pod(*(f"r{i}.tarpit.example/x/y:{i}" for i in range(8)))
    r = h.answer(review(flood, dry_run=True))
    assert r["allowed"] is False
    assert (
        "allowed_registries: r0.tarpit.example/x/y is not from an allowed registry"
        in (r["status"]["message"])
    )
    assert tarpit.calls == 0
    assert h.answer(review(pod("shop/web:1")))["allowed"] is True


@pytest.mark.parametrize("image", ["shop/web:1", "shopping/web:1", "shop/team/app:1"])
def test_allowed_registries_before_io_agrees_with_the_rules(harness, image):
    """The early refusal says what the rules would say, for names around the prefix."""
    answers = []
    for early in (True, False):
        h = harness(settings={"allowed_registries": ["docker.io/shop/"]})
        h.image(image)
        if not early:
            h.app.engine._allowed_prefixes = None
        r = h.answer(review(pod(image)))
        answers.append((r["allowed"], r.get("status", {}).get("message")))
    assert answers[0] == answers[1]


def test_a_body_that_never_ends_is_cut_off_at_the_deadline(harness):
    """Wedge: a client in the cluster sends headers and a trickle of body, then nothing.

    Each such connection holds a request (and its file descriptor) forever;
    enough of them exhaust the service. The body must arrive within the deadline.
    """
    import asyncio

    h = harness(deadline=0.3)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not sent:
            sent.append({"type": "marker"})
            return {"type": "http.request", "body": b'{"kind": "Admission', "more_body": True}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/validate",
        "scheme": "https",
        "headers": [(b"content-type", b"application/json")],
    }
    h.loop.run_until_complete(asyncio.wait_for(h.app(scope, receive, send), timeout=5))
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    assert start["status"] == 408


@pytest.mark.parametrize("kind", ["Pod", "Deployment", "CronJob"])
def test_image_volume_is_judged(harness, kind):
    """Attack: mount an unsigned OCI image into a signed container as an image volume.

    ``volumes[].image.reference`` (ImageVolume, KEP-4639: beta since v1.33) is
    pulled by the kubelet like a container image and its files appear in the
    containers that mount it: unverified binaries, plugins or configuration.
    """
    h = harness(mutate=True)
    h.image("shop/web:1")
    h.image("shop/payload:1", sign=False)
    spec = pod_spec(["shop/web:1"])
    spec["volumes"] = [
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "data", "image": {"reference": "shop/payload:1", "pullPolicy": "IfNotPresent"}},
    ]
    r = h.answer(review(workload(kind, "web", "shop", spec)), path="/mutate")
    assert r["allowed"] is False
    assert 'image "shop/payload:1" (volume data): unsigned' in r["status"]["message"]


def test_signed_image_volume_is_pinned_like_a_container_image(harness):
    h = harness(mutate=True)
    h.image("shop/web:1")
    digest = h.image("shop/data:1")
    spec = pod_spec(["shop/web:1"])
    spec["volumes"] = [{"name": "data", "image": {"reference": "shop/data:1"}}]
    r = h.answer(review(workload("Pod", "web", "shop", spec)), path="/mutate")
    assert r["allowed"] is True
    ops = {op["path"]: op["value"] for op in patch_of(r)}
    assert ops["/spec/volumes/0/image/reference"] == f"shop/data:1@{digest}"


# -- the cache: one image's verdict must not answer for another --------------------------------


def test_a_verified_digest_in_one_repository_does_not_admit_it_in_another(harness):
    """Attack: copy a signed image's manifest into a repository of one's own (same digest,
    no signature there) after the signed one was admitted and cached."""
    h = harness()
    signed = h.image("shop/web:1", seed="same")
    copied = h.image("evil/web:1", sign=False, seed="same")
    assert signed == copied
    assert h.answer(review(pod("shop/web:1")))["allowed"] is True
    assert h.answer(review(pod("shop/web:1")))["allowed"] is True  # a cache hit now
    for image in ("evil/web:1", f"evil/web@{signed}"):
        r = h.answer(review(pod(image)))
        assert r["allowed"] is False, image


# -- audit mode: the record must say what would have been denied -----------------------------


def test_audit_annotation_stays_json_and_keeps_the_denied_images(harness):
    h = harness(mode="audit")
    images = [f"shop/img{i}:1" for i in range(45)]
    for image in images:
        h.image(image)
    h.image("shop/zz-unsigned:1", sign=False)
    r = h.answer(review(pod(*images, "shop/zz-unsigned:1")))
    assert r["allowed"] is True
    assert r["auditAnnotations"]["decision"] == "deny-audit"
    evidence = json.loads(r["auditAnnotations"]["images"])
    assert "shop/zz-unsigned:1" in [e.get("image") for e in evidence]


def test_validate_without_mutation_does_not_silently_admit_a_movable_tag(harness):
    h = harness(mutate=False)
    h.image("shop/web:1")
    r = h.answer(review(pod("shop/web:1")))
    assert r["allowed"] is False or r.get("warnings"), r
    assert "referenced by tag" in r["warnings"][0]
    assert "sha256:" in r["warnings"][0]


def test_a_pinned_image_or_a_patched_tag_gets_no_tag_warning(harness):
    h = harness(mutate=True)
    h.image("shop/web:1")
    r = h.answer(review(pod("shop/web:1")), path="/mutate")
    assert r["allowed"] is True
    assert r.get("patch")
    assert not r.get("warnings")
