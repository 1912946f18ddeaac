"""An admission service over a local OCI layout, called in-process through ASGI."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from policysupply import Registry, Signer
from policysupply.admission import AdmissionConfig, create_app
from tests.interop._gate_fixtures import push_image


class Harness:
    """A service plus the registry it reads, with helpers to post documents."""

    def __init__(self, tmp: Path, **config: Any) -> None:
        self.tmp = tmp
        self.registry = Registry.local(tmp / "oci")
        self.signer = Signer.generate()
        (tmp / "cosign.pub").write_bytes(self.signer.public_key_pem)
        (tmp / "trust-policy.yaml").write_text("version: 1\nkeys: [cosign.pub]\n")
        self.config = AdmissionConfig(trust_policy=tmp / "trust-policy.yaml", **config)
        self.app: Any = create_app(self.config)
        self.app._registry_factory = lambda host: self.registry
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.app.startup())

    def image(self, name: str, *, sign: bool = True, seed: str | None = None) -> str:
        """Pushes ``name`` (``repo:tag``), signs it unless told not to; returns its digest."""
        pinned = push_image(self.registry, name, seed=seed or name)
        if sign:
            self.signer.sign(self.registry, name)
        return str(pinned.digest)

    def post(self, path: str, doc: Any, *, raw: bytes | None = None) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="https://svc") as c:
                content = raw if raw is not None else json.dumps(doc).encode()
                return await c.post(path, content=content)

        return self.loop.run_until_complete(go())

    def get(self, path: str) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="https://svc") as c:
                return await c.get(path)

        return self.loop.run_until_complete(go())

    def answer(self, review: dict[str, Any], path: str = "/validate") -> dict[str, Any]:
        resp = self.post(path, review)
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert doc["apiVersion"] == "admission.k8s.io/v1"
        assert doc["kind"] == "AdmissionReview"
        assert doc["response"]["uid"] == review["request"]["uid"]
        out: dict[str, Any] = doc["response"]
        return out

    def close(self) -> None:
        self.loop.run_until_complete(self.app.shutdown())
        self.loop.close()


def patch_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return ops


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(**config: Any) -> Harness:
        h = Harness(tmp_path / f"h{len(made)}", **config)
        made.append(h)
        return h

    (tmp_path / "h0").mkdir()
    for i in range(1, 4):
        (tmp_path / f"h{i}").mkdir()
    yield make
    for h in made:
        h.close()
