"""Sigstore bundles, DSSE envelopes, log entries (``policysupply._internal.sigstore_bundle``).

Registries serve bundles as referrer layers and cosign's bundle annotation;
users pass ``--bundle`` files. The bytes are parsed as a bundle (then written
back out and parsed again: what we accept we can also emit), as a DSSE
envelope, and as cosign's ``dev.sigstore.cosign/bundle`` annotation.
"""

from __future__ import annotations

import contextlib
import json

from tests.fuzz import _harness

with _harness.instrumented():
    from policysupply._internal import sigstore_bundle as sb
    from policysupply.errors import PolicySupplyError


def one_input(data: bytes) -> None:
    with contextlib.suppress(PolicySupplyError):
        parsed = sb.parse_bundle(data)
        again = sb.parse_bundle(parsed.to_json())
        assert again.to_json() == parsed.to_json(), "bundle does not round-trip"
        if parsed.is_dsse:
            assert isinstance(parsed.content, sb.Envelope)
            parsed.content.pae()
        for entry in parsed.tlog_entries:
            entry.body_json()
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        doc = None
    if doc is not None:
        with contextlib.suppress(PolicySupplyError):
            sb.Envelope.from_json(doc).pae()
        with contextlib.suppress(PolicySupplyError):
            sb.TlogEntry.from_json(doc).to_cosign_annotation()
    with contextlib.suppress(PolicySupplyError):
        entry = sb.TlogEntry.from_cosign_annotation(data.decode("utf-8", "replace"))
        entry.to_json()


if __name__ == "__main__":
    _harness.run(one_input)
