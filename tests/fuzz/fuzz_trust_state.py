"""TrustState files (``policysupply.trust_state``): a file on the verifying machine.

A corrupt file must fail closed with a typed error; a readable one must let
a verifier look records up and accept a new one.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from tests.fuzz import _harness

with _harness.instrumented():
    from policysupply.trust_state import TrustState

# tmpfs where there is one: every accept fsyncs.
_DIR = Path(
    tempfile.mkdtemp(
        prefix="fuzz-trust-state-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
    )
)
_PATH = _DIR / "trust.json"
_DIGEST = "sha256:" + "1" * 64


def one_input(data: bytes) -> None:
    _PATH.write_bytes(data)
    state = TrustState(_PATH)
    records = state.records()
    for ref in list(records)[:3]:
        state.get(ref)
    state.get("registry.test/acme/policy:1")
    state.accept(
        "registry.test/acme/policy:1",
        digest=_DIGEST,
        revision="1.2.3",
        signed_at=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc),
    )


if __name__ == "__main__":
    _harness.run(one_input)
