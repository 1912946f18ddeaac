"""Deeply nested JSON in Sigstore bundles and cosign annotations is malformed, not a crash."""

from __future__ import annotations

import base64
import json

import pytest

from policysupply import VerificationError
from policysupply._internal import sigstore_bundle as sb

DEEP = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_bundle() -> None:
    with pytest.raises(VerificationError, match="not JSON"):
        sb.parse_bundle(DEEP)


def test_deeply_nested_cosign_annotation_and_entry_body() -> None:
    with pytest.raises(VerificationError, match="not JSON"):
        sb.TlogEntry.from_cosign_annotation(DEEP.decode())
    body = base64.b64encode(DEEP).decode()
    annotation = json.dumps({"Payload": {"body": body, "logID": "00", "logIndex": 1}})
    with pytest.raises(VerificationError, match="not JSON"):
        sb.TlogEntry.from_cosign_annotation(annotation)
