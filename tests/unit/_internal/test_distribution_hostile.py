"""A hostile registry's malformed answers are RegistryErrors (or skipped), never raw exceptions."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from policysupply import Registry, RegistryError
from policysupply._internal import oci, stores
from policysupply._internal.credentials import Credentials
from policysupply._internal.distribution import Client, RetryPolicy, Timeout

D = "sha256:" + "a" * 64
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, creds: Credentials | None = None) -> Client:
    return Client(
        "reg.test",
        scheme="https",
        credentials=lambda: creds,
        timeout=Timeout(),
        retry=RetryPolicy(deadline=5, initial_backoff=0.01, max_backoff=0.02),
        transport=httpx.MockTransport(handler),
    )


def registry(handler: Handler) -> Registry:
    return Registry(stores.RemoteStore(client=client(handler), chunk_size=None), host="reg.test")


@pytest.mark.parametrize(
    "body",
    [b'{"tags": 5}', b'{"tags": "abc"}', b"[1, 2]", b"[" * 100_000 + b"]" * 100_000],
)
def test_malformed_tag_lists(body: bytes) -> None:
    with pytest.raises(RegistryError, match="malformed response"):
        client(lambda _: httpx.Response(200, content=body)).tags("x")


def test_malformed_link_header() -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        link = '<http://[::1>; rel="next"'
        return httpx.Response(200, json={"tags": ["a"]}, headers={"Link": link})

    with pytest.raises(RegistryError, match="malformed Link header"):
        client(handler).tags("x")


def test_relative_link_cannot_name_another_host() -> None:
    # "https://reg.test" + ".evil.test/..." would be another host: the Link
    # is resolved as a URL reference, so it stays on the registry.
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization")
        seen.append((str(request.url.host), auth))
        if not auth:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if "last" in str(request.url):
            return httpx.Response(200, json={"tags": ["b"]})
        link = '<.evil.test/v2/x/tags/list?last=a>; rel="next"'
        return httpx.Response(200, json={"tags": ["a"]}, headers={"Link": link})

    c = client(handler, Credentials(username="u", password="p"))
    assert c.tags("x") == ["a", "b"]
    assert {host for host, _ in seen} == {"reg.test"}


@pytest.mark.parametrize("location", ["http://[::1", "http://a:b/up"])
def test_malformed_upload_location(location: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(404)
        return httpx.Response(202, headers={"Location": location})

    with pytest.raises(RegistryError, match="malformed upload location"):
        registry(handler).put_blob("x", b"a")


def _index(*manifests: object) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": oci.INDEX_V1, "manifests": manifests})


@pytest.mark.parametrize(
    "bad",
    [
        {"mediaType": oci.MANIFEST_V1, "digest": 5, "size": 1},
        {"mediaType": oci.MANIFEST_V1, "digest": D, "size": 1, "artifactType": 5},
        {"mediaType": oci.MANIFEST_V1, "digest": D, "size": 1, "annotations": 5},
        {"mediaType": oci.MANIFEST_V1, "digest": D, "size": "1"},
    ],
)
def test_malformed_referrer_descriptors_are_skipped(bad: dict[str, object]) -> None:
    good = {"mediaType": oci.MANIFEST_V1, "digest": D, "size": 1, "artifactType": "a/b"}

    def handler(_: httpx.Request) -> httpx.Response:
        body = _index(bad, good)
        return httpx.Response(200, content=body, headers={"Content-Type": oci.INDEX_V1})

    found = registry(handler).referrers("x@" + D)
    assert [(d.digest, d.artifact_type) for d in found] == [(D, "a/b")]


@pytest.mark.parametrize(
    "body",
    [b'{"manifests": 5}', b'{"manifests": "abc"}', b"[" * 100_000 + b"]" * 100_000],
)
def test_malformed_referrers_index(body: bytes) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": oci.INDEX_V1})

    with pytest.raises(RegistryError, match="malformed index"):
        registry(handler).referrers("x@" + D)


def test_deeply_nested_manifest() -> None:
    body = b"[" * 100_000 + b"]" * 100_000

    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Docker-Content-Digest": D})

    digest = oci.sha256_digest(body)
    with pytest.raises(RegistryError):
        registry(handler).pull(f"x@{digest}")


def test_deeply_nested_error_body_gives_no_detail() -> None:
    body = b"[" * 60_000 + b"]" * 60_000

    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=body)

    with pytest.raises(RegistryError, match="400"):
        client(handler).tags("x")


@pytest.mark.parametrize("listing", ["referrers", "tags"])
def test_endless_paginated_listing_exhausts_memory(listing: str) -> None:
    # A hostile registry answers every page of a referrers (or tags) list with
    # a full page and a Link to the next: the client kept every descriptor
    # for up to 10 000 pages of 16 MiB each. The whole listing is bounded.
    pages = 0
    entry = {"mediaType": oci.MANIFEST_V1, "digest": D, "size": 1, "artifactType": "a/b"}
    page = json.dumps({"manifests": [entry] * 12_000, "tags": ["t" * 80] * 12_000}).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal pages
        pages += 1
        if pages > 200:  # the test's own stop: far past any bound the client should keep
            return httpx.Response(404)
        headers = {
            "Content-Type": oci.INDEX_V1 if listing == "referrers" else "application/json",
            "Link": f'<{request.url.path}?page={pages}>; rel="next"',
        }
        return httpx.Response(200, content=page, headers=headers)

    reg = registry(handler)
    read = (lambda: reg.referrers("x@" + D)) if listing == "referrers" else (lambda: reg.tags("x"))
    with pytest.raises(RegistryError, match="listing larger than"):
        read()
    assert pages < 200
