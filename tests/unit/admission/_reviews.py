"""AdmissionReview documents in the exact shape the Kubernetes API server sends.

Field names follow the Go API types: ``k8s.io/api/admission/v1``
(AdmissionReview, AdmissionRequest with uid, kind, resource, subResource,
requestKind, requestResource, requestSubResource, name, namespace,
operation, userInfo, object, oldObject, dryRun, options), ``k8s.io/api/core/v1``
(Pod, PodSpec, Container, EphemeralContainer, PodTemplateSpec),
``k8s.io/api/apps/v1`` (Deployment, ReplicaSet, StatefulSet, DaemonSet) and
``k8s.io/api/batch/v1`` (Job, CronJob, JobTemplateSpec). The API server
sends every object with its apiVersion and kind, defaults applied.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

GVR = {
    "Pod": ("", "v1", "pods"),
    "ReplicationController": ("", "v1", "replicationcontrollers"),
    "Deployment": ("apps", "v1", "deployments"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
}


def container(name: str, image: str) -> dict[str, Any]:
    """A core/v1 Container as the API server defaults it."""
    return {
        "name": name,
        "image": image,
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }


def pod_spec(
    images: list[str],
    *,
    init: list[str] | None = None,
    ephemeral: list[str] | None = None,
) -> dict[str, Any]:
    """A core/v1 PodSpec with one container per image."""
    spec: dict[str, Any] = {
        "volumes": [],
        "containers": [container(f"c{i}", img) for i, img in enumerate(images)],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": [],
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    if init:
        spec["initContainers"] = [container(f"init{i}", img) for i, img in enumerate(init)]
    if ephemeral:
        spec["ephemeralContainers"] = [
            {**container(f"debug{i}", img), "targetContainerName": "c0"}
            for i, img in enumerate(ephemeral)
        ]
    return spec


def _template(spec: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"labels": labels, "creationTimestamp": None}, "spec": spec}


def workload(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An object of ``kind`` whose pods run ``spec``."""
    group, version, _ = GVR.get(kind, ("example.com", "v1", kind.lower() + "s"))
    api_version = f"{group}/{version}" if group else version
    labels = {"app": name}
    meta = {
        "name": name,
        "namespace": namespace,
        "uid": str(uuid.uuid4()),
        "creationTimestamp": None,
        "labels": labels,
    }
    selector = {"matchLabels": labels}
    body: dict[str, Any]
    if kind == "Pod":
        body = {"spec": spec, "status": {}}
    elif kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"):
        body = {"spec": {"selector": selector, "template": _template(spec, labels)}, "status": {}}
        if kind != "DaemonSet":
            body["spec"]["replicas"] = 2
        if kind == "StatefulSet":
            body["spec"]["serviceName"] = name
    elif kind == "ReplicationController":
        body = {"spec": {"replicas": 1, "selector": labels, "template": _template(spec, labels)}}
    elif kind == "Job":
        job_spec = copy.deepcopy(spec)
        job_spec["restartPolicy"] = "Never"
        body = {"spec": {"backoffLimit": 6, "template": _template(job_spec, labels)}, "status": {}}
    elif kind == "CronJob":
        job_spec = copy.deepcopy(spec)
        job_spec["restartPolicy"] = "OnFailure"
        body = {
            "spec": {
                "schedule": "*/5 * * * *",
                "concurrencyPolicy": "Allow",
                "jobTemplate": {
                    "metadata": {"creationTimestamp": None},
                    "spec": {"template": _template(job_spec, labels)},
                },
            },
            "status": {},
        }
    else:
        body = {"spec": {"template": _template(spec, labels)}}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **body}


def review(
    obj: dict[str, Any],
    *,
    operation: str = "CREATE",
    dry_run: bool = False,
    uid: str | None = None,
    sub_resource: str | None = None,
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The AdmissionReview the API server posts for ``obj``."""
    kind = obj["kind"]
    group, version, resource = GVR.get(kind, ("example.com", "v1", kind.lower() + "s"))
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": resource}
    options_kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions"}.get(
        operation, "DeleteOptions"
    )
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": obj["metadata"].get("name", ""),
        "namespace": obj["metadata"].get("namespace", ""),
        "operation": operation,
        "userInfo": {
            "username": "system:serviceaccount:ci:deployer",
            "uid": str(uuid.uuid4()),
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:ci",
                "system:authenticated",
            ],
        },
        "object": obj if operation != "DELETE" else None,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {"kind": options_kind, "apiVersion": "meta.k8s.io/v1"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}


def provider_request(keys: list[str]) -> dict[str, Any]:
    """A Gatekeeper ``ProviderRequest`` (externaldata.gatekeeper.sh/v1beta1)."""
    return {
        "apiVersion": "externaldata.gatekeeper.sh/v1beta1",
        "kind": "ProviderRequest",
        "request": {"keys": keys},
    }
