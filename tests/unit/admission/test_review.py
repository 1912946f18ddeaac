"""Reading AdmissionReview requests and Kubernetes image references."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policysupply._internal.admission import review as rv
from policysupply._internal.admission.engine import normalize
from policysupply.errors import RegistryError
from tests.unit.admission._reviews import pod_spec, review, workload


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("bitnami/redis", "docker.io/bitnami/redis:latest"),
        ("docker.io/nginx", "docker.io/library/nginx:latest"),
        ("ghcr.io/acme/app:1", "ghcr.io/acme/app:1"),
        ("localhost/app", "localhost/app:latest"),
        ("127.0.0.1:5000/a/b@sha256:" + "0" * 64, "127.0.0.1:5000/a/b@sha256:" + "0" * 64),
    ],
)
def test_images_are_read_as_the_container_runtime_reads_them(image, expected):
    assert str(normalize(image)) == expected


@pytest.mark.parametrize(
    "image", ["", " nginx", "UPPER/case", "a/b:bad tag", "a@sha256:short", "x" * 5000]
)
def test_invalid_images(image):
    with pytest.raises(RegistryError):
        normalize(image)


def test_pointers_of_every_container_kind_in_a_cronjob():
    obj = workload("CronJob", "j", "ns", pod_spec(["a:1"], init=["b:1"], ephemeral=["c:1"]))
    found = list(rv.container_images(obj, rv.POD_SPEC_PATHS["CronJob"]))
    base = "/spec/jobTemplate/spec/template/spec"
    assert [(c.image, c.pointer) for c in found] == [
        ("b:1", f"{base}/initContainers/0/image"),
        ("a:1", f"{base}/containers/0/image"),
        ("c:1", f"{base}/ephemeralContainers/0/image"),
    ]


def test_request_fields_are_read():
    doc = review(workload("Pod", "p", "ns", pod_spec(["a:1"])), dry_run=True, uid="u-1")
    import json

    req = rv.parse_review(json.dumps(doc).encode())
    assert (req.uid, req.kind, req.group, req.namespace, req.name, req.dry_run) == (
        "u-1",
        "Pod",
        "",
        "ns",
        "p",
        True,
    )


def test_response_shape():
    out = rv.response("u", allowed=False, message="no", code=403, warnings=["w"], audit={"a": "b"})
    assert out == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": "u",
            "allowed": False,
            "status": {"code": 403, "message": "no", "reason": "Forbidden", "status": "Failure"},
            "warnings": ["w"],
            "auditAnnotations": {"a": "b"},
        },
    }


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(obj=_json, kind=st.sampled_from(sorted(rv.POD_SPEC_PATHS)))
def test_any_object_is_read_or_refused_with_a_review_error(obj, kind):
    """Hostile objects: whatever the API server could be made to send, no other exception."""
    try:
        for c in rv.container_images(obj, rv.POD_SPEC_PATHS[kind]):
            assert isinstance(c.image, str)
            assert c.image
    except rv.ReviewError:
        pass


@settings(max_examples=300, deadline=None)
@given(doc=_json, uid=st.text(max_size=5))
def test_any_review_body_is_parsed_or_refused_with_a_review_error(doc, uid):
    import json

    bodies = [json.dumps(doc).encode()]
    if isinstance(doc, dict):
        wrapped = {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": doc}
        bodies.append(json.dumps(wrapped).encode())
        doc2 = {**doc, "uid": uid}
        bodies.append(json.dumps({**wrapped, "request": doc2}).encode())
    for body in bodies:
        try:
            req = rv.parse_review(body)
        except rv.ReviewError:
            continue
        assert isinstance(req.kind, str)
        assert isinstance(req.namespace, str)
        assert req.uid
