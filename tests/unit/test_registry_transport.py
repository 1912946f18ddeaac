"""``Registry.remote(transport=...)``: every request goes through the given httpx transport.

The transport here is an ``httpx.MockTransport`` in front of a small in-memory
registry, so faults can be injected per request (the real registries run in
``tests/interop/``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from policysupply import Bundle, DigestMismatchError, Registry, RetryPolicy
from policysupply.errors import TransientRegistryError

Fault = Callable[[httpx.Request], httpx.Response | None]


class MemoryRegistry:
    """Just enough of the distribution API for push, resolve and pull (no auth)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.requests: list[str] = []
        self.faults: list[Fault] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        for fault in self.faults:
            answer = fault(request)
            if answer is not None:
                return answer
        path = request.url.path
        if path == "/v2/":
            return httpx.Response(200)
        if m := re.fullmatch(r"/v2/(.+)/blobs/uploads/", path):
            return httpx.Response(202, headers={"Location": f"/upload/{m[1]}"})
        if path.startswith("/upload/"):
            data = request.read()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            if request.url.params.get("digest") != digest:
                return httpx.Response(400)
            self.blobs[digest] = data
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        if m := re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", path):
            data = self.blobs.get(m[2])
            if data is None:
                return httpx.Response(404)
            body = b"" if request.method == "HEAD" else data
            return httpx.Response(200, content=body, headers={"Content-Length": str(len(data))})
        if m := re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path):
            return self._manifest(request, m[1], m[2])
        if re.fullmatch(r"/v2/(.+)/referrers/(.+)", path):
            return httpx.Response(404)
        return httpx.Response(404)

    def _manifest(self, request: httpx.Request, repo: str, ref: str) -> httpx.Response:
        if request.method == "PUT":
            data = request.read()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            media_type = request.headers["Content-Type"]
            self.manifests[(repo, digest)] = (data, media_type)
            self.manifests[(repo, ref)] = (data, media_type)
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        found = self.manifests.get((repo, ref))
        if found is None:
            return httpx.Response(404)
        data, media_type = found
        headers = {
            "Content-Type": media_type,
            "Docker-Content-Digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "Content-Length": str(len(data)),
        }
        return httpx.Response(
            200, content=b"" if request.method == "HEAD" else data, headers=headers
        )


@pytest.fixture
def memory() -> MemoryRegistry:
    return MemoryRegistry()


def remote(memory: MemoryRegistry) -> Registry:
    return Registry.remote(
        "reg.test",
        transport=httpx.MockTransport(memory),
        retry=RetryPolicy(deadline=5, initial_backoff=0.01, max_backoff=0.02),
    )


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    (tmp_path / "p.rego").write_text("package acme\n\nallow := true\n")
    return Bundle.from_directory(tmp_path, revision="1")


def test_every_request_goes_through_the_given_transport(
    memory: MemoryRegistry, bundle: Bundle
) -> None:
    with remote(memory) as reg:
        pushed = reg.push(bundle, "acme/policy:1")
        assert reg.resolve("acme/policy:1") == pushed.digest
        assert reg.pull("acme/policy:1").to_bytes() == bundle.to_bytes()
    assert any(r.startswith("PUT /v2/acme/policy/manifests/1") for r in memory.requests)
    assert any(r.startswith("GET /v2/acme/policy/blobs/") for r in memory.requests)


def test_a_transient_fault_on_one_request_is_retried(
    memory: MemoryRegistry, bundle: Bundle
) -> None:
    with remote(memory) as reg:
        reg.push(bundle, "acme/policy:1")
        failed: list[str] = []

        def once_503(request: httpx.Request) -> httpx.Response | None:
            if "/blobs/" in request.url.path and request.method == "GET" and not failed:
                failed.append(request.url.path)
                return httpx.Response(503, headers={"Retry-After": "0"})
            return None

        memory.faults.append(once_503)
        assert reg.pull("acme/policy:1").to_bytes() == bundle.to_bytes()
    assert len(failed) == 1


def test_a_registry_that_keeps_failing_is_a_transient_error(
    memory: MemoryRegistry, bundle: Bundle
) -> None:
    with remote(memory) as reg:
        reg.push(bundle, "acme/policy:1")
        memory.faults.append(lambda request: httpx.Response(503, headers={"Retry-After": "0"}))
        with pytest.raises(TransientRegistryError):
            reg.pull("acme/policy:1")


def test_a_tampered_layer_is_refused(memory: MemoryRegistry, bundle: Bundle) -> None:
    with remote(memory) as reg:
        reg.push(bundle, "acme/policy:1")

        def tamper(request: httpx.Request) -> httpx.Response | None:
            if "/blobs/" in request.url.path and request.method == "GET":
                return httpx.Response(200, content=b"\x1f\x8b" + b"x" * 30)
            return None

        memory.faults.append(tamper)
        with pytest.raises(DigestMismatchError):
            reg.pull("acme/policy:1")


@pytest.mark.parametrize(
    "tls", [{"ca_file": "ca.pem"}, {"verify_tls": False}], ids=["ca_file", "verify_tls"]
)
def test_transport_owns_tls(tls: dict[str, object]) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with pytest.raises(ValueError, match="transport"):
        Registry.remote("reg.test", transport=transport, **tls)  # type: ignore[arg-type]
