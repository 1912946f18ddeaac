"""TLS: https registries are verified (lazily created context); untrusted certificates fail fast."""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from policysupply import Registry, RegistryError, RetryPolicy, TransientRegistryError


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from tests._x509 import self_signed_tls

    cert, key = self_signed_tls()
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    return cert_path, key_path


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"name":"a/b","tags":["v1"]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def test_untrusted_certificate_fails_at_once_with_a_clear_error(
    tls_server: tuple[str, Path],
) -> None:
    host, _ = tls_server
    start = time.monotonic()
    reg = Registry.remote(host, retry=RetryPolicy(deadline=30))
    with (
        reg,
        pytest.raises(
            RegistryError, match=r"TLS certificate of 127\.0\.0\.1 is not trusted"
        ) as err,
    ):
        reg.tags("a/b")
    assert not isinstance(err.value, TransientRegistryError)
    assert time.monotonic() - start < 10  # not retried until the deadline


def test_trusted_certificate_works(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with Registry.remote(host) as reg:
        assert reg.tags("a/b") == ["v1"]
