"""Keyless signing without pasting a token: the CI's ambient credential (GitHub Actions shape).

GitHub Actions hands a job two variables; the OIDC token is fetched from the
URL with the bearer token, for audience ``sigstore``. Here that endpoint is a
loopback server handing out a token the loopback Sigstore stack's OIDC issuer
signed, and Fulcio/Rekor are the stack's: the real sign path, end to end.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop import _sigstore_fixtures
from tests.interop._sigstore_fixtures import SigstoreStack
from tests.interop.conftest import RegistryServer
from tests.interop.test_cli import home, ok, run  # noqa: F401 - fixture

pytestmark = pytest.mark.interop
sigstore_stack = _sigstore_fixtures.sigstore_stack

REQUEST_TOKEN = "ghs_request-token-for-the-test"


@pytest.fixture
def actions_token_endpoint(sigstore_stack: SigstoreStack) -> Iterator[tuple[str, str, list[str]]]:
    """A GitHub-Actions-like ID token endpoint; yields (url, certificate identity, audiences)."""
    token, identity = sigstore_stack.github_token()
    audiences: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            audiences.extend(query.get("audience", []))
            if self.headers.get("Authorization", "").lower() != f"bearer {REQUEST_TOKEN}":
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"value": token}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (
            f"http://127.0.0.1:{server.server_address[1]}/token?api-version=2.0",
            identity,
            audiences,
        )
    finally:
        server.shutdown()
        server.server_close()


def test_sign_picks_up_the_ambient_github_actions_credential(
    distribution: RegistryServer,
    example_dir: Path,
    home: Path,  # noqa: F811
    sigstore_stack: SigstoreStack,
    actions_token_endpoint: tuple[str, str, list[str]],
) -> None:
    stack = sigstore_stack
    url, identity, audiences = actions_token_endpoint
    ref = f"{distribution.host}/acme/policy:ambient"
    ok(run("push", str(example_dir), ref, "--json", home=home))
    ambient = {
        "GITHUB_ACTIONS": "true",
        "ACTIONS_ID_TOKEN_REQUEST_URL": url,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN,
    }
    signed = run(
        "sign", ref, "--sigstore-trust", str(stack.trust_config_path), "--scheme", "bundle",
        "--json", home=home, password=None, extra_env=ambient,
    )  # fmt: skip
    doc = ok(signed)
    assert doc["keyless"] is True
    assert audiences == ["sigstore"]
    verified = ok(
        run(
            "verify", ref, "--certificate-identity", identity,
            "--certificate-oidc-issuer", stack.github_issuer,
            "--trusted-root", str(stack.trusted_root_path), "--json", home=home,
        )
    )  # fmt: skip
    assert verified["signatures"][0]["subject"] == identity

    # --oidc off ignores the ambient credential: nothing to sign with (exit 2).
    off = run("sign", ref, "--oidc", "off", "--json", home=home, password=None, extra_env=ambient)
    assert off.returncode == 2
    assert json.loads(off.stdout)["error"]["type"] == "UsageError"
