"""Helpers for the loader interop tests: policy revisions, OPA state snapshots, a proxy."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from policysupply import Bundle
from tests.interop import faultproxy
from tests.interop.conftest import OpaServer

CASES = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "kubernetes_cases.json").read_text()
)


def k8s_revision(example_dir: Path, tmp: Path, revision: str) -> Bundle:
    """The example policy at ``revision``: v1 as shipped; v2 changes data and modules.

    v2 drops the example's own registry from the allow-list (so the compliant
    pod is denied), edits a module, deletes one and adds one: every kind of
    write a load does.
    """
    if revision == "v1":
        return Bundle.from_directory(example_dir, revision="v1")
    tree = tmp / f"k8s-{revision}"
    if tree.exists():
        shutil.rmtree(tree)
    shutil.copytree(example_dir, tree)
    (tree / "k8s" / "images" / "data.json").write_text(
        json.dumps({"allowed_registries": ["gcr.io/distroless/"]})
    )
    labels = tree / "k8s" / "labels" / "labels.rego"
    labels.write_text(labels.read_text() + "\nrevision := " + json.dumps(revision) + "\n")
    (tree / "k8s" / "security" / "security.rego").unlink()
    (tree / "k8s" / "extra").mkdir()
    (tree / "k8s" / "extra" / "extra.rego").write_text(
        "package k8s.extra\n\nnote := " + json.dumps(revision) + "\n"
    )
    return Bundle.from_directory(tree, revision=revision)


def answers(server: OpaServer) -> list[Any]:
    """OPA's answers to every Kubernetes case (its full decision surface for these tests)."""
    out = []
    for case in CASES:
        path = case["query"].removeprefix("data.").replace(".", "/")
        out.append(server.post(f"/v1/data/{path}", {"input": case["input"]}).get("result"))
    return out


def state(server: OpaServer) -> tuple[dict[str, str], Any]:
    """Every policy (id → source) and the whole data document."""
    policies = {p["id"]: p["raw"] for p in server.get("/v1/policies")["result"]}
    return policies, server.get("/v1/data").get("result")


@pytest.fixture(name="opa_proxy")
def opa_proxy_fixture(start_opa: Callable[..., OpaServer]) -> Iterator[tuple[OpaServer, Any]]:
    """A real OPA and a fault-injecting proxy in front of it."""
    server = start_opa()
    for proxy in faultproxy.start(server.url.removeprefix("http://")):
        yield server, proxy


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what or predicate}")


def opa_revision(server: OpaServer, name: str) -> str | None:
    """The revision OPA's bundle plugin activated for bundle ``name``."""
    try:
        body = server.get(f"/v1/data/system/bundles/{name}/manifest/revision")
    except (urllib.error.URLError, ConnectionError):
        return None
    result = body.get("result")
    return None if result is None else str(result)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
