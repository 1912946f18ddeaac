"""Protocol details of the distribution client that real registries here don't exercise."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from policysupply import AuthenticationError, RegistryError, TransientRegistryError
from policysupply._internal.credentials import Credentials
from policysupply._internal.distribution import (
    Client,
    RetryPolicy,
    Timeout,
    _retry_after,
    parse_challenge,
)
from policysupply.errors import InsecureTransportError


def client(handler, **kw: object) -> Client:  # type: ignore[no-untyped-def]
    return Client(
        "reg.test",
        scheme="https",
        credentials=lambda: kw.pop("creds", None),
        timeout=Timeout(),
        retry=kw.pop("retry", RetryPolicy(deadline=5, initial_backoff=0.01, max_backoff=0.02)),
        transport=httpx.MockTransport(handler),
    )


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.test/token",service="reg.test",scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.test/token",
        "service": "reg.test",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_retry_after_forms() -> None:
    assert _retry_after("3") == 3.0
    assert _retry_after(None) is None
    assert _retry_after("soon") is None
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= (_retry_after(when) or 0) <= 31


def test_tags_follow_link_headers() -> None:
    pages = {
        None: (["a", "b"], '</v2/x/tags/list?n=2&last=b>; rel="next"'),
        "b": (["c"], None),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        tags, link = pages[request.url.params.get("last")]
        headers = {"Link": link} if link else {}
        return httpx.Response(200, json={"name": "x", "tags": tags}, headers=headers)

    assert client(handler).tags("x", page_size=2) == ["a", "b", "c"]


def test_bearer_token_is_fetched_once_per_scope() -> None:
    calls = {"token": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            calls["token"] += 1
            assert request.url.params["scope"] == "repository:x:pull"
            assert request.headers["Authorization"].startswith("Basic ")
            return httpx.Response(200, json={"access_token": "tok"})
        if request.headers.get("Authorization") != "Bearer tok":
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://auth.test/t",service="reg.test"'
                },
            )
        return httpx.Response(200, json={"tags": ["1"]})

    c = client(handler, creds=Credentials(username="u", password="p"))
    assert c.tags("x") == ["1"]
    assert c.tags("x") == ["1"]
    assert calls["token"] == 1


def test_secret_never_in_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    c = client(handler, creds=Credentials(username="u", password="hunter2-secret"))
    with pytest.raises(AuthenticationError) as info:
        c.tags("x")
    assert "hunter2-secret" not in str(info.value)
    assert "hunter2-secret" not in repr(Credentials(username="u", password="hunter2-secret"))


def test_transient_errors_stop_at_the_deadline() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    start = time.monotonic()
    c = client(handler, retry=RetryPolicy(deadline=0.5, initial_backoff=0.05, max_backoff=0.1))
    with pytest.raises(TransientRegistryError, match="connection failed"):
        c.tags("x")
    assert time.monotonic() - start < 2


def test_registry_error_message_is_bounded_and_named() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            content=json.dumps(
                {"errors": [{"code": "MANIFEST_INVALID", "message": "x" * 5000}]}
            ).encode(),
        )

    with pytest.raises(RegistryError, match="MANIFEST_INVALID") as info:
        client(handler).tags("x")
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("attempts", [1, 2, 4])
def test_retry_counts_every_attempt_and_gives_up_at_the_limit(attempts: int) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, headers={"Retry-After": "0"})

    policy = RetryPolicy(
        deadline=5, max_attempts=attempts, initial_backoff=0.001, max_backoff=0.002
    )
    c = client(handler, retry=policy)
    with pytest.raises(TransientRegistryError, match=f"after {attempts} attempt"):
        c.tags("a/b", page_size=10)
    assert len(calls) == attempts


def test_retry_recovers_after_transient_failures() -> None:
    answers = iter([502, 429, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status != 200:
            return httpx.Response(status)
        return httpx.Response(200, json={"name": "a/b", "tags": ["v1"]})

    policy = RetryPolicy(deadline=5, max_attempts=3, initial_backoff=0.001, max_backoff=0.002)
    assert client(handler, retry=policy).tags("a/b", page_size=10) == ["v1"]


def test_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(429, headers={"Retry-After": "60"})

    start = time.monotonic()
    with pytest.raises(TransientRegistryError, match="after 1 attempt"):
        client(handler, retry=RetryPolicy(deadline=2)).tags("a/b", page_size=10)
    assert len(calls) == 1
    assert time.monotonic() - start < 1.5


def test_refused_connections_give_up_after_a_few_attempts() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    policy = RetryPolicy(deadline=30, initial_backoff=0.001, max_backoff=0.002)
    with pytest.raises(TransientRegistryError) as err:
        client(handler, retry=policy).tags("a/b", page_size=10)
    assert len(calls) == policy.max_refused_attempts == 3
    assert str(err.value).startswith(
        "list tags of a/b on reg.test: connection failed (ConnectError) (gave up after 3 attempt"
    )


@pytest.mark.parametrize("location", ["https://storage.evil.test/up/1", "http://reg.test/up/1"])
def test_credentials_never_follow_location_or_link_to_another_origin(location: str) -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization")
        seen.append((f"{request.url.scheme}://{request.url.host}", auth))
        if request.url.host == "reg.test" and request.url.scheme == "https" and not auth:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": location})
        if request.method == "PUT":
            return httpx.Response(201)
        if request.url.path.endswith("/tags/list") and "last" not in str(request.url):
            link = f'<{location.rsplit("/up", 1)[0]}/v2/x/tags/list?last=a>; rel="next"'
            return httpx.Response(200, json={"tags": ["a"]}, headers={"Link": link})
        return httpx.Response(200, json={"tags": ["b"]})

    c = client(handler, creds=Credentials(username="u", password="p"))
    if location.startswith("http://"):
        # An https registry naming a plain-HTTP URL is a downgrade: refused outright.
        with pytest.raises(InsecureTransportError):
            c.upload_blob("x", "sha256:" + "0" * 64, 5, lambda: [b"hello"], chunk_size=None)
        with pytest.raises(InsecureTransportError):
            c.tags("x", page_size=10)
        assert all(origin == "https://reg.test" for origin, _ in seen)
        return
    c.upload_blob("x", "sha256:" + "0" * 64, 5, lambda: [b"hello"], chunk_size=None)
    c.tags("x", page_size=10)
    foreign = [auth for origin, auth in seen if origin != "https://reg.test"]
    assert foreign  # the other origin was contacted (upload PUT, next tags page) ...
    assert foreign == [None] * len(foreign)  # ... but never with credentials
    assert any(auth for origin, auth in seen if origin == "https://reg.test")


def test_a_body_trickling_in_stops_at_the_deadline() -> None:
    def drip() -> Iterator[bytes]:
        yield b'{"name":"a/b","tags":['
        for _ in range(100):  # each read arrives well inside any per-read timeout
            time.sleep(0.1)
            yield b" "
        yield b"]}"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=drip())

    start = time.monotonic()
    policy = RetryPolicy(deadline=1, initial_backoff=0.01, max_backoff=0.02)
    with pytest.raises(TransientRegistryError, match="deadline passed"):
        client(handler, retry=policy).tags("a/b", page_size=10)
    assert time.monotonic() - start < 3
