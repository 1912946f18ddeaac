"""AdmissionReview documents (``admission.k8s.io/v1``): reading requests, writing responses.

Pure functions over JSON values; field names are those of the Kubernetes
API types (``k8s.io/api/admission/v1``: ``AdmissionReview``,
``AdmissionRequest``, ``AdmissionResponse``; ``k8s.io/api/core/v1``:
``PodSpec``, ``Container``, ``EphemeralContainer``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

API_VERSION = "admission.k8s.io/v1"

# kind -> JSON path (as keys) from the object to its PodSpec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")
# Besides containers, image volumes (``volumes[].image.reference``) name images.
# Subresources that change images; others (status, scale, binding...) carry none.
IMAGE_SUBRESOURCES = ("", "ephemeralcontainers")


class ReviewError(ValueError):
    """The request is not an AdmissionReview we can answer (HTTP 400)."""


@attrs.frozen(kw_only=True)
class ContainerImage:
    """One image named by an object.

    Attributes:
        image: The image string as written in the object.
        container: The container's name (for an image volume, the volume's).
        field: ``containers``, ``initContainers``, ``ephemeralContainers`` or
            ``volumes`` (an image volume: ``volumes[].image.reference``).
        pointer: JSON pointer (RFC 6901) to the image string, for a patch.
    """

    image: str
    container: str
    field: str
    pointer: str


@attrs.frozen(kw_only=True)
class Request:
    """The parts of an ``AdmissionRequest`` the service reads."""

    uid: str
    api_version: str
    kind: str
    group: str
    resource: str
    sub_resource: str
    namespace: str
    name: str
    operation: str
    dry_run: bool
    obj: Any
    old_obj: Any = None


def _pointer(parts: tuple[str | int, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def parse_review(body: bytes) -> Request:
    """Reads an ``AdmissionReview`` request body.

    Raises:
        ReviewError: Not JSON, not an ``admission.k8s.io/v1`` AdmissionReview,
            or a request without a uid.
    """
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise ReviewError("body is not JSON") from None
    if not isinstance(doc, dict):
        raise ReviewError("an AdmissionReview is a JSON object")
    if doc.get("kind") != "AdmissionReview":
        raise ReviewError(f"kind must be AdmissionReview, got {doc.get('kind')!r}")
    if doc.get("apiVersion") != API_VERSION:
        raise ReviewError(
            f"apiVersion must be {API_VERSION} (set admissionReviewVersions: [v1]), "
            f"got {doc.get('apiVersion')!r}"
        )
    req = doc.get("request")
    if not isinstance(req, dict):
        raise ReviewError("the AdmissionReview has no request")
    uid = req.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid is missing")
    kind: dict[str, Any] = req["kind"] if isinstance(req.get("kind"), dict) else {}
    resource: dict[str, Any] = req["resource"] if isinstance(req.get("resource"), dict) else {}

    def text(value: Any) -> str:
        return value if isinstance(value, str) else ""

    return Request(
        uid=uid,
        api_version=text(doc.get("apiVersion")),
        kind=text(kind.get("kind")),
        group=text(kind.get("group")),
        resource=text(resource.get("resource")),
        sub_resource=text(req.get("subResource")),
        namespace=text(req.get("namespace")),
        name=text(req.get("name")),
        operation=text(req.get("operation")),
        dry_run=req.get("dryRun") is True,
        obj=req.get("object"),
        old_obj=req.get("oldObject"),
    )


def pod_spec_path(kind: str) -> tuple[str, ...] | None:
    """Where ``kind`` keeps its PodSpec, or ``None`` for a kind we do not know."""
    return POD_SPEC_PATHS.get(kind)


def container_images(obj: Any, path: tuple[str, ...]) -> Iterator[ContainerImage]:
    """Every image of the PodSpec at ``path`` in ``obj``: containers' and image volumes'.

    Raises:
        ReviewError: The object does not have the PodSpec its kind promises,
            or a container has no image string.
    """
    node = obj
    for part in path:
        if not isinstance(node, dict):
            raise ReviewError(f"object has no {'.'.join(path)}")
        node = node.get(part)
    if not isinstance(node, dict):
        raise ReviewError(f"object has no {'.'.join(path)}")
    for field in CONTAINER_FIELDS:
        items = node.get(field)
        if items is None:
            continue
        if not isinstance(items, list):
            raise ReviewError(f"{'.'.join(path)}.{field} is not a list")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ReviewError(f"{'.'.join(path)}.{field}[{i}] is not an object")
            image = item.get("image")
            name = item.get("name")
            if not isinstance(image, str) or not image:
                raise ReviewError(f"{'.'.join(path)}.{field}[{i}] has no image")
            yield ContainerImage(
                image=image,
                container=name if isinstance(name, str) else f"#{i}",
                field=field,
                pointer=_pointer((*path, field, i, "image")),
            )
    # Image volumes (KEP-4639): the kubelet pulls them like container images
    # and mounts their files into the containers. A volume without a
    # reference pulls nothing (workload templates may leave it to a controller).
    volumes = node.get("volumes")
    if volumes is None:
        return
    if not isinstance(volumes, list):
        raise ReviewError(f"{'.'.join(path)}.volumes is not a list")
    for i, volume in enumerate(volumes):
        if not isinstance(volume, dict):
            raise ReviewError(f"{'.'.join(path)}.volumes[{i}] is not an object")
        source = volume.get("image")
        if source is None:
            continue
        if not isinstance(source, dict):
            raise ReviewError(f"{'.'.join(path)}.volumes[{i}].image is not an object")
        reference = source.get("reference")
        if reference is None or reference == "":
            continue
        if not isinstance(reference, str):
            raise ReviewError(f"{'.'.join(path)}.volumes[{i}].image.reference is not a string")
        name = volume.get("name")
        yield ContainerImage(
            image=reference,
            container=name if isinstance(name, str) else f"#{i}",
            field="volumes",
            pointer=_pointer((*path, "volumes", i, "image", "reference")),
        )


def response(
    uid: str,
    *,
    allowed: bool,
    message: str | None = None,
    code: int | None = None,
    warnings: list[str] | None = None,
    audit: Mapping[str, str] | None = None,
    patch: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An ``AdmissionReview`` response document."""
    resp: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if message is not None or code is not None:
        resp["status"] = {
            "code": code if code is not None else (200 if allowed else 403),
            **({"message": message} if message is not None else {}),
        }
        if not allowed:
            resp["status"]["reason"] = "Forbidden" if (code or 403) == 403 else "BadRequest"
            resp["status"]["status"] = "Failure"
    if warnings:
        resp["warnings"] = warnings
    if audit:
        resp["auditAnnotations"] = dict(audit)
    if patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": resp}
