"""The Kubernetes manifests in deploy/admission/ say what the ADRs promise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from policysupply._internal.admission.config import parse
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy" / "admission"


def documents() -> list[dict[str, Any]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def kind(name: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == name]


def test_every_piece_is_there():
    kinds = {d["kind"] for d in documents()}
    assert {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "Certificate",
    } <= kinds


def test_service_runs_two_replicas_behind_a_pdb():
    (service,) = [
        d for d in kind("Deployment") if d["metadata"]["name"] == "policysupply-admission"
    ]
    assert service["spec"]["replicas"] >= 2
    assert service["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container = service["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (pdb,) = kind("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1


def test_webhooks_fail_closed_within_the_service_deadline(tmp_path: Path):
    (config_map,) = kind("ConfigMap")
    doc = yaml.safe_load(config_map["data"]["admission.yaml"])
    # The key file is the mounted secret; it exists only in the pod.
    key_file = doc["cache"]["redis"]["hmac_key_file"]
    assert key_file.startswith("/etc/policysupply/cache-key/")
    stand_in = tmp_path / "key"
    stand_in.write_text("k" * 32)
    doc["cache"]["redis"]["hmac_key_file"] = str(stand_in)
    config = parse(doc, base=Path("/etc"), where="cm")
    webhooks = [
        w
        for d in kind("ValidatingWebhookConfiguration") + kind("MutatingWebhookConfiguration")
        for w in d["webhooks"]
    ]
    assert len(webhooks) == 2
    for w in webhooks:
        assert w["failurePolicy"] == "Fail"
        assert w["sideEffects"] == "None"
        assert w["admissionReviewVersions"] == ["v1"]
        assert config["deadline"] < w["timeoutSeconds"] <= 30
        resources = {r for rule in w["rules"] for r in rule["resources"]}
        assert resources == {
            "pods",
            "pods/ephemeralcontainers",
            "replicationcontrollers",
            "deployments",
            "replicasets",
            "statefulsets",
            "daemonsets",
            "jobs",
            "cronjobs",
        }
        ignored = w["namespaceSelector"]["matchExpressions"]
        assert {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-system", "kube-public", "kube-node-lease", "policysupply-system"],
        } in ignored
    paths = {w["clientConfig"]["service"]["path"] for w in webhooks}
    assert paths == {"/validate", "/mutate"}


def test_own_namespace_is_never_judged():
    (ns,) = kind("Namespace")
    name = ns["metadata"]["name"]
    for w in [
        w
        for d in kind("ValidatingWebhookConfiguration") + kind("MutatingWebhookConfiguration")
        for w in d["webhooks"]
    ]:
        skipped = [
            e
            for e in w["namespaceSelector"]["matchExpressions"]
            if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"
        ]
        assert any(name in e["values"] for e in skipped), w["name"]
