"""A hostile registry's answers (``policysupply._internal.distribution``, ``stores.RemoteStore``).

The input scripts the registry: records separated by ``0x1e``, one per
request in order (status selector byte, content-type selector byte, header
lines, a blank line, the body); requests after the last record get 404. The
client runs over httpx's MockTransport, so nothing leaves the process. A
fixed sequence of operations runs against it: resolve, get, tags (paged),
referrers (with the tag-schema fallback), pull, and a signature lookup by
the verifier. Auth challenges, token responses, redirects, Link headers and
Retry-After values all come from the input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.fuzz import _harness

with _harness.instrumented():
    import policysupply._internal.engines.rego_source  # noqa: F401 - lazily imported by Bundle
    from policysupply import Registry, TrustPolicy, Verifier
    from policysupply._internal import distribution, keys, stores
    from policysupply._internal.credentials import Credentials
    from policysupply._internal.netconfig import RetryPolicy, Timeout
    from policysupply.errors import PolicySupplyError

_STATUS = (200, 201, 202, 204, 401, 404, 429, 500, 307, 403, 301, 503)
_CTYPE = (
    "application/json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "text/html",
    "",
)
_KEY = Path(__file__).parent.parent / "material" / "fuzz-only.key"
_POLICY = TrustPolicy(
    keys=[keys.public_pem(keys.load_private_key(_KEY.read_bytes(), None, what="k"))]
)
_DIGEST = "sha256:" + "ab" * 32
# One attempt: a Retry-After from the input is parsed but never slept on.
_RETRY = RetryPolicy(deadline=5, max_attempts=1)


def _responses(data: bytes) -> Iterator[httpx.Response]:
    for record in data.split(b"\x1e")[:64]:
        if len(record) < 2:
            yield httpx.Response(404)
            continue
        status, ctype = _STATUS[record[0] % len(_STATUS)], _CTYPE[record[1] % len(_CTYPE)]
        head, sep, body = record[2:].partition(b"\n\n")
        if not sep:
            head, body = b"", record[2:]
        headers = [(b"content-type", ctype.encode())] if ctype else []
        for line in head.split(b"\n")[:16]:
            name, colon, value = line.partition(b":")
            if colon and name.strip():
                headers.append((name.strip().lower(), value.strip()))
        try:
            yield httpx.Response(status, headers=headers, content=body)
        except (ValueError, TypeError):  # not expressible as HTTP: the harness's limit
            yield httpx.Response(404)


def one_input(data: bytes) -> None:
    answers = _responses(data)

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        return next(answers, None) or httpx.Response(404)

    client = distribution.Client(
        "registry.test",
        scheme="https",
        credentials=lambda: Credentials(username="u", password="p"),
        timeout=Timeout(),
        retry=_RETRY,
        transport=httpx.MockTransport(handler),
    )
    reg = Registry(stores.RemoteStore(client=client, chunk_size=None), host="registry.test")
    with reg:
        for op in (
            lambda: reg.resolve("acme/p:1"),
            lambda: reg.get_manifest("acme/p:1"),
            lambda: reg.tags("acme/p"),
            lambda: client.tags("acme/p", page_size=2),
            lambda: reg.referrers(f"acme/p@{_DIGEST}"),
            lambda: reg.pull("acme/p:1"),
            lambda: Verifier(_POLICY).verify(reg, f"acme/p@{_DIGEST}"),
        ):
            with contextlib.suppress(PolicySupplyError):
                op()
    for header in data.split(b"\x1e")[:2]:
        text = header.decode("latin-1")
        distribution.parse_challenge(text)
        distribution._retry_after(text)


if __name__ == "__main__":
    _harness.run(one_input)
