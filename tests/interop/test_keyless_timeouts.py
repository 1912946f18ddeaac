"""Keyless signing against the loopback Sigstore stack when a service never answers.

sigstore-python posts to Fulcio and Rekor without a timeout; ``Signer.keyless``
gives every request one. Here the real Fulcio certifies the key, and Rekor (or
the TSA) is a loopback port that accepts connections and never answers.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from policysupply import Signer
from policysupply.errors import SigningError
from tests.interop import _sigstore_fixtures
from tests.interop._sigstore_fixtures import SigstoreStack

pytestmark = pytest.mark.interop
sigstore_stack = _sigstore_fixtures.sigstore_stack


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A URL whose server accepts connections (kernel backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def _config_with(stack: SigstoreStack, tmp_path: Path, **urls: str) -> Path:
    config = json.loads(stack.trust_config_path.read_text())
    for key, url in urls.items():
        for service in config["signingConfig"][key]:
            service["url"] = url
    path = tmp_path / "trust_config.json"
    path.write_text(json.dumps(config))
    return path


def test_a_rekor_that_never_answers_is_a_signing_error(
    sigstore_stack: SigstoreStack, black_hole: str, tmp_path: Path
) -> None:
    trust = _config_with(sigstore_stack, tmp_path, rekorTlogUrls=black_hole, tsaUrls=black_hole)
    signer = Signer.keyless(identity_token=sigstore_stack.mint_token(), trust=trust, timeout=2)
    started = time.monotonic()
    # sigstore skips a failed TSA (its own 5 s timeout) and then posts to Rekor
    with pytest.raises(SigningError, match=r"keyless signing failed: timed out .*timeout=2\b"):
        signer.sign_blob(b"package x\n")
    assert time.monotonic() - started < 15


def test_a_timestamp_authority_that_never_answers_is_a_signing_error(
    sigstore_stack: SigstoreStack, black_hole: str, tmp_path: Path
) -> None:
    from policysupply._internal.keyless import KeylessSession

    trust = _config_with(sigstore_stack, tmp_path, tsaUrls=black_hole)
    session = KeylessSession(sigstore_stack.mint_token(), trust, timeout=2)
    started = time.monotonic()
    with pytest.raises(SigningError, match=r"timestamp authority failed: timed out"):
        session.timestamp(b"envelope")
    assert time.monotonic() - started < 15


def test_signing_still_works_with_a_short_timeout(sigstore_stack: SigstoreStack) -> None:
    signer = Signer.keyless(
        identity_token=sigstore_stack.mint_token(),
        trust=sigstore_stack.trust_config_path,
        timeout=10,
    )
    assert signer.sign_blob(b"package x\n").keyless
