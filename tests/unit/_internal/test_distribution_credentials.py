"""Attacks on the registry's credentials, against real loopback HTTP(S) servers.

The registry's credentials (Basic, or Basic sent to its token service) go only
to the registry's own origin, or to a token realm it names on another origin
over https. A host a redirect leads to never gets them, whatever it asks for;
an https registry never lets a redirect downgrade to plain HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from policysupply import AuthenticationError, Registry, RegistryError, RetryPolicy
from policysupply.errors import InsecureTransportError
from tests._x509 import self_signed_tls

USER, PASSWORD = "ci-user", "s3cret-Passw0rd-xyz"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BLOB = b"policy bytes\n"
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Server:
    """A loopback HTTP(S) server answering with ``route``; records every request."""

    route: Callable[[str, dict[str, str]], Answer]
    tls: tuple[Path, Path] | None = None
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    origin: str = ""

    def start(self) -> Iterator[Server]:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.seen.append((self.path, headers.get("authorization")))
                a = outer.route(self.path, headers)
                self.send_response(a.status)
                for k, v in a.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(a.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(a.body)

            do_GET = do_HEAD = _answer

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
            scheme = "https"
        self.origin = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()

    @property
    def host(self) -> str:
        return self.origin.split("://", 1)[1]

    def credentials_seen(self) -> list[str]:
        return [auth for _, auth in self.seen if auth and auth.startswith("Basic ")]


def _tls_material(tmp: Path) -> tuple[Path, Path]:
    cert_pem, key_pem = self_signed_tls()
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    return cert_path, key_path


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that this process trusts (SSL_CERT_FILE)."""
    cert, key = _tls_material(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    return cert, key


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    """Starts servers on demand; stops them all afterwards."""
    running: list[Iterator[Server]] = []

    def start(route: Callable[[str, dict[str, str]], Answer], **kw: object) -> Server:
        gen = Server(route, **kw).start()  # type: ignore[arg-type]
        running.append(gen)
        return next(gen)

    yield start
    for gen in reversed(running):
        for _ in gen:  # runs the generator's cleanup
            pass


def _remote(server: Server, **kw: object) -> Registry:
    return Registry.remote(
        server.origin,
        insecure=server.origin.startswith("http://"),
        auth=(USER, PASSWORD),
        retry=RetryPolicy.none(),
        **kw,  # type: ignore[arg-type]
    )


def _basic_registry(redirect_to: Callable[[], str]) -> Callable[[str, dict[str, str]], Answer]:
    """A registry that wants Basic auth and redirects blob GETs to storage."""

    def route(path: str, headers: dict[str, str]) -> Answer:
        if headers.get("authorization") != BASIC:
            return Answer(401, {"WWW-Authenticate": 'Basic realm="registry"'})
        if "/blobs/" in path:
            return Answer(307, {"Location": redirect_to() + "/storage/blob"})
        if "/tags/list" in path:
            return Answer(200, {"Content-Type": "application/json"}, b'{"tags":["1.0"]}')
        return Answer(404)

    return route


# -- a host a redirect leads to ------------------------------------------------


@pytest.mark.parametrize("challenge", ["bearer-self", "bearer-third", "basic"])
def test_redirected_storage_host_challenge_never_gets_registry_credentials(
    servers: Callable[..., Server], challenge: str
) -> None:
    # The storage host (or whoever answers for it) replies 401 and names a
    # token realm on itself, on a third host, or asks for Basic: the old
    # client sent the registry's Basic credentials to that realm.
    third = servers(lambda path, h: Answer(200, body=b'{"token":"t"}'))
    storage: Server

    def storage_route(path: str, headers: dict[str, str]) -> Answer:
        realm = {
            "bearer-self": f'Bearer realm="{storage.origin}/token",service="s"',
            "bearer-third": f'Bearer realm="{third.origin}/token",service="s"',
            "basic": 'Basic realm="storage"',
        }[challenge]
        if path.startswith("/token"):
            return Answer(200, body=b'{"token":"stolen"}')
        if headers.get("authorization"):
            return Answer(200, body=BLOB)
        return Answer(401, {"WWW-Authenticate": realm})

    storage = servers(storage_route)
    registry = servers(_basic_registry(lambda: storage.origin))
    with _remote(registry) as reg:
        assert reg.tags("acme/policy") == ["1.0"]  # the client now knows it wants Basic
        with pytest.raises(RegistryError) as err:
            reg.get_blob("acme/policy", DIGEST)
    assert registry.credentials_seen()  # the registry itself did get them
    assert storage.seen  # storage was asked ...
    assert storage.credentials_seen() == []  # ... but never given the credentials
    assert third.credentials_seen() == []
    assert not any(auth for _, auth in storage.seen + third.seen)
    assert isinstance(err.value, AuthenticationError)
    assert "redirected" in str(err.value)


def test_redirect_to_storage_without_a_challenge_still_works(
    servers: Callable[..., Server],
) -> None:
    storage = servers(lambda path, h: Answer(200, body=BLOB))
    registry = servers(_basic_registry(lambda: storage.origin))
    with _remote(registry) as reg:
        assert reg.get_blob("acme/policy", DIGEST) == BLOB
    assert [auth for _, auth in storage.seen] == [None]


# -- a token realm the registry names -------------------------------------------


def _token_registry(realm: Callable[[], str]) -> Callable[[str, dict[str, str]], Answer]:
    def route(path: str, headers: dict[str, str]) -> Answer:
        if path.startswith("/token"):  # a realm on the registry's own origin
            ok = headers.get("authorization") == BASIC
            return Answer(200 if ok else 401, body=b'{"token":"good"}' if ok else b"")
        if headers.get("authorization") != "Bearer good":
            return Answer(401, {"WWW-Authenticate": f'Bearer realm="{realm()}",service="reg"'})
        if "/tags/list" in path:
            return Answer(200, {"Content-Type": "application/json"}, b'{"tags":["1.0"]}')
        return Answer(404)

    return route


def _token_service(path: str, headers: dict[str, str]) -> Answer:
    ok = headers.get("authorization") == BASIC
    return Answer(200 if ok else 401, body=b'{"token":"good"}' if ok else b"")


def test_token_realm_on_another_origin_over_plain_http_never_gets_credentials(
    servers: Callable[..., Server],
) -> None:
    tokens = servers(_token_service)
    registry = servers(_token_registry(lambda: tokens.origin + "/token"))
    with _remote(registry) as reg, pytest.raises(AuthenticationError, match="only over https"):
        reg.tags("acme/policy")
    assert tokens.credentials_seen() == []


def test_token_realm_on_another_origin_over_https_gets_credentials(
    servers: Callable[..., Server], tls: tuple[Path, Path]
) -> None:
    tokens = servers(_token_service, tls=tls)
    registry = servers(_token_registry(lambda: tokens.origin + "/token"))
    with _remote(registry) as reg:
        assert reg.tags("acme/policy") == ["1.0"]
    assert tokens.credentials_seen() == [BASIC]


def test_token_realm_on_the_registry_origin_gets_credentials(
    servers: Callable[..., Server],
) -> None:
    registry: Server = servers(_token_registry(lambda: registry.origin + "/token"))
    with _remote(registry) as reg:
        assert reg.tags("acme/policy") == ["1.0"]
    assert registry.credentials_seen() == [BASIC]


def test_anonymous_token_from_a_plain_http_realm_on_another_origin(
    servers: Callable[..., Server],
) -> None:
    # Without credentials there is nothing to leak: the anonymous token flow
    # of a plain-HTTP lab registry keeps working.
    def anon_tokens(path: str, headers: dict[str, str]) -> Answer:
        return Answer(200, body=b'{"token":"good"}')

    tokens = servers(anon_tokens)
    registry = servers(_token_registry(lambda: tokens.origin + "/token"))
    anonymous = Registry.remote(registry.host, insecure=True, docker_config="/nonexistent")
    with anonymous as reg:
        assert reg.tags("acme/policy") == ["1.0"]
    assert [auth for _, auth in tokens.seen] == [None]


# -- plain HTTP -------------------------------------------------------------------


def test_https_registry_redirect_to_plain_http_is_refused(
    servers: Callable[..., Server], tls: tuple[Path, Path]
) -> None:
    plain = servers(lambda path, h: Answer(200, body=BLOB))
    registry = servers(_basic_registry(lambda: plain.origin), tls=tls)
    with _remote(registry) as reg, pytest.raises(InsecureTransportError, match="plain HTTP"):
        reg.get_blob("acme/policy", DIGEST)
    assert plain.seen == []  # not even contacted


def test_https_token_realm_redirect_to_plain_http_is_refused(
    servers: Callable[..., Server], tls: tuple[Path, Path]
) -> None:
    plain = servers(_token_service)
    tokens = servers(lambda path, h: Answer(302, {"Location": plain.origin + "/token"}), tls=tls)
    registry = servers(_token_registry(lambda: tokens.origin + "/token"), tls=tls)
    with _remote(registry) as reg, pytest.raises(InsecureTransportError, match="plain HTTP"):
        reg.tags("acme/policy")
    assert plain.seen == []


def test_remote_http_url_without_insecure_is_a_configuration_error() -> None:
    with pytest.raises(InsecureTransportError, match="insecure=True") as err:
        Registry.remote("http://127.0.0.1:5000")
    assert isinstance(err.value, RegistryError)
    Registry.remote("http://127.0.0.1:5000", insecure=True).close()
    Registry.remote("https://127.0.0.1:5000").close()
    Registry.remote("127.0.0.1:5000", insecure=True).close()


def test_plain_http_scheme_is_what_insecure_means(servers: Callable[..., Server]) -> None:
    # insecure=True is oras's --plain-http: the registry is spoken to over HTTP.
    registry: Server = servers(_token_registry(lambda: registry.origin + "/token"))
    with Registry.remote(registry.host, insecure=True, auth=(USER, PASSWORD)) as reg:
        assert reg.tags("acme/policy") == ["1.0"]
    assert registry.seen
    assert registry.origin.startswith("http://")


# -- URLs the registry names in headers (pagination, upload sessions) -----------------


def _paging_registry(next_page: Callable[[], str]) -> Callable[[str, dict[str, str]], Answer]:
    """An https registry whose tags and referrers lists link their next page to ``next_page``."""

    def route(path: str, headers: dict[str, str]) -> Answer:
        if headers.get("authorization") != BASIC:
            return Answer(401, {"WWW-Authenticate": 'Basic realm="registry"'})
        link = {"Link": f'<{next_page()}>; rel="next"'}
        if "/tags/list" in path:
            return Answer(200, {"Content-Type": "application/json", **link}, b'{"tags":["1.0"]}')
        if "/referrers/" in path:
            index = b'{"schemaVersion":2,"mediaType":"%s","manifests":[]}' % INDEX.encode()
            return Answer(200, {"Content-Type": INDEX, **link}, index)
        return Answer(404)

    return route


def test_https_registry_link_header_to_plain_http_is_refused(
    servers: Callable[..., Server], tls: tuple[Path, Path]
) -> None:
    # Not a redirect: the next page's URL comes from a Link header. Followed
    # over plain HTTP, anyone on the path could answer the listing (hide or
    # add tags, poison the referrers list that signatures are found through).
    plain = servers(lambda path, h: Answer(200, {"Content-Type": "application/json"}, b"{}"))
    registry = servers(
        _paging_registry(lambda: plain.origin + "/v2/acme/policy/tags/list?n=1"), tls=tls
    )
    with _remote(registry) as reg, pytest.raises(InsecureTransportError, match="plain HTTP"):
        reg.tags("acme/policy")
    assert plain.seen == []


def test_https_registry_referrers_link_to_plain_http_is_refused(
    servers: Callable[..., Server], tls: tuple[Path, Path]
) -> None:
    plain = servers(lambda path, h: Answer(200, {"Content-Type": "application/json"}, b"{}"))
    registry = servers(
        _paging_registry(lambda: plain.origin + "/v2/acme/policy/referrers/x"), tls=tls
    )
    with _remote(registry) as reg, pytest.raises(InsecureTransportError, match="plain HTTP"):
        reg.referrers(f"acme/policy@{DIGEST}")
    assert plain.seen == []


def test_https_registry_naming_a_plain_http_token_realm_is_refused_even_anonymously(
    servers: Callable[..., Server], tls: tuple[Path, Path]
) -> None:
    # No password to leak, but the token exchange (and the token that
    # authorises every later request) would travel in clear: a downgrade of
    # an https registry like any other.
    tokens = servers(lambda path, h: Answer(200, body=b'{"token":"good"}'))
    registry = servers(_token_registry(lambda: tokens.origin + "/token"), tls=tls)
    anonymous = Registry.remote(
        registry.origin, docker_config="/nonexistent", retry=RetryPolicy.none()
    )
    with anonymous as reg, pytest.raises(InsecureTransportError, match="plain HTTP"):
        reg.tags("acme/policy")
    assert tokens.seen == []
