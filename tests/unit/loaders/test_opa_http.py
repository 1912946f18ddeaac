"""The HTTP adapter to OPA, and what it relies on in opa-python-client.

HttpOpa uses opa-python-client's private ``_session`` for the calls the client
has no method for, and sets ``root_url`` after construction so a path prefix
(OPA behind a gateway) is kept. These tests pin that behaviour against a
recording HTTP server that answers as OPA does, so an upgrade of the client
that changes it fails here, not in production.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from policysupply.errors import LoadError
from policysupply.loaders._api import MISSING, Rejected
from policysupply.loaders._opa_http import HttpOpa

TOKEN = "t0ken-for-opa"


class Recorder(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str, str | None, bytes]] = []
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
        status, doc = self.server.answers.get((self.command, self.path), (200, {}))
        # bytes: sent as they are (a body that is not JSON)
        raw = b"" if doc is None else doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_PUT = do_DELETE = do_POST = _answer


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def adapter(server: Recorder, prefix: str = "/gw/opa") -> HttpOpa:
    port = server.server_address[1]
    return HttpOpa(f"http://127.0.0.1:{port}{prefix}", TOKEN, 5.0, 0, True)


def test_the_private_session_carries_the_token_for_every_call(recorder: Recorder) -> None:
    opa = adapter(recorder)
    assert isinstance(opa.client._session, requests.Session)
    assert opa.session is opa.client._session
    recorder.answers[("GET", "/gw/opa/v1/data/a/b")] = (200, {"result": {"k": 1}})
    recorder.answers[("POST", "/gw/opa/v1/data/a/allow")] = (200, {"result": True})
    recorder.answers[("DELETE", "/gw/opa/v1/data/a")] = (204, None)
    recorder.answers[("PUT", "/gw/opa/v1/data/a")] = (204, None)
    source = "package a\n\nallow if input.x == 1\n"  # v1 syntax: must not be rewritten

    opa.put_policy("policysupply/h/r/~/a.rego", source)  # client method
    opa.delete_policy("policysupply/h/r/~/a.rego")  # client method
    opa.delete_data(("a",))  # client method
    opa.put_data(("a",), {"b": {"k": 1}})  # our session call
    assert opa.get_data(("a", "b")) == {"k": 1}
    assert opa.query(("a", "allow"), {"x": 1}) is True
    assert opa.healthy()

    calls = [(m, p) for m, p, _, _ in recorder.seen]
    assert calls == [
        ("PUT", "/gw/opa/v1/policies/policysupply/h/r/~/a.rego"),
        ("DELETE", "/gw/opa/v1/policies/policysupply/h/r/~/a.rego"),
        ("DELETE", "/gw/opa/v1/data/a"),
        ("PUT", "/gw/opa/v1/data/a"),
        ("GET", "/gw/opa/v1/data/a/b"),
        ("POST", "/gw/opa/v1/data/a/allow"),
        ("GET", "/gw/opa/health"),
    ]
    assert {auth for _, _, auth, _ in recorder.seen} == {f"Bearer {TOKEN}"}
    assert recorder.seen[0][3] == source.encode()  # the verified module, byte for byte
    assert recorder.seen[3][3] == b'{"b":{"k":1}}'  # compact JSON
    assert json.loads(recorder.seen[5][3]) == {"input": {"x": 1}}


def test_answers_map_to_rejected_missing_or_success(recorder: Recorder) -> None:
    opa = adapter(recorder, prefix="")
    recorder.answers[("GET", "/v1/data/none")] = (200, {})
    assert opa.get_data(("none",)) is MISSING
    # What OPA does not have is already gone.
    recorder.answers[("DELETE", "/v1/policies/gone.rego")] = (
        404,
        {"code": "resource_not_found", "message": "storage_not_found_error"},
    )
    recorder.answers[("DELETE", "/v1/data/gone")] = (
        404,
        {"code": "resource_not_found", "message": "storage_not_found_error"},
    )
    opa.delete_policy("gone.rego")
    opa.delete_data(("gone",))
    recorder.answers[("PUT", "/v1/policies/bad.rego")] = (
        400,
        {
            "code": "invalid_parameter",
            "message": "error(s) occurred while compiling module(s)",
            "errors": [{"code": "rego_parse_error", "message": "unexpected eof token"}],
        },
    )
    with pytest.raises(Rejected) as parse:
        opa.put_policy("bad.rego", "package")
    assert parse.value.parse
    assert "unexpected eof token" in parse.value.message
    recorder.answers[("PUT", "/v1/data/x")] = (
        400,
        {
            "code": "invalid_parameter",
            "message": "conflict",
            "errors": [{"code": "rego_compile_error", "message": f"rule x conflicts {TOKEN}"}],
        },
    )
    with pytest.raises(Rejected) as conflict:
        opa.put_data(("x",), 1)
    assert conflict.value.retryable
    assert TOKEN not in conflict.value.message


def test_get_policy_reads_one_module_by_its_id(recorder: Recorder) -> None:
    """``GET /v1/policies/<id>``: the id as a path (slashes kept), absent is ``None``."""
    opa = adapter(recorder)
    pid = "policysupply/acme/app/~/app/a b.rego"
    policy = {"id": pid, "raw": "package a\n", "ast": {"package": {"path": []}}}
    recorder.answers[("GET", "/gw/opa/v1/policies/policysupply/acme/app/~/app/a%20b.rego")] = (
        200,
        {"result": policy},
    )
    assert opa.get_policy(pid) == policy
    recorder.answers[("GET", "/gw/opa/v1/policies/gone.rego")] = (
        404,
        {"code": "resource_not_found", "message": "storage_not_found_error: policy id"},
    )
    assert opa.get_policy("gone.rego") is None
    recorder.answers[("GET", "/gw/opa/v1/policies/odd.rego")] = (200, {"result": ["not", "one"]})
    assert opa.get_policy("odd.rego") is None
    assert [(m, p, a) for m, p, a, _ in recorder.seen] == [
        ("GET", "/gw/opa/v1/policies/policysupply/acme/app/~/app/a%20b.rego", f"Bearer {TOKEN}"),
        ("GET", "/gw/opa/v1/policies/gone.rego", f"Bearer {TOKEN}"),
        ("GET", "/gw/opa/v1/policies/odd.rego", f"Bearer {TOKEN}"),
    ]


def test_get_policy_refused_or_unreadable(recorder: Recorder) -> None:
    """A refusal is ``Rejected`` (not retryable); a body that is not JSON a LoadError."""
    opa = adapter(recorder, prefix="")
    recorder.answers[("GET", "/v1/policies/x.rego")] = (
        401,
        {"code": "unauthorized", "message": f"request rejected by administrative policy {TOKEN}"},
    )
    with pytest.raises(Rejected) as refused:
        opa.get_policy("x.rego")
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    assert not refused.value.retryable
    assert TOKEN not in refused.value.message
    recorder.answers[("GET", "/v1/policies/x.rego")] = (502, b"<html>Bad Gateway</html>")
    with pytest.raises(Rejected) as gateway:
        opa.get_policy("x.rego")
    assert (gateway.value.status, gateway.value.code) == (502, "502")
    recorder.answers[("GET", "/v1/policies/x.rego")] = (200, b"<html>login</html>")
    # requests' JSONDecodeError is a RequestException too: "failed", not "unreadable answer".
    with pytest.raises(LoadError, match=r"reading policy x\.rego failed: JSONDecodeError"):
        opa.get_policy("x.rego")


def test_no_answer_is_a_load_error_without_the_token() -> None:
    with socket_closed_port() as port:
        opa = HttpOpa(f"http://127.0.0.1:{port}", TOKEN, 2.0, 0, True)
        with pytest.raises(LoadError, match="listing policies failed") as err:
            opa.list_policies()
        assert TOKEN not in str(err.value)
        assert opa.healthy() is False


class socket_closed_port:
    """A loopback port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
