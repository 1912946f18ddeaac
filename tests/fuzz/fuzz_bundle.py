"""Whole bundles (``policysupply.bundle.Bundle.from_bytes``): tar, ``.manifest``, data, Rego.

The input is the tar stream (gzipped by the harness, see fuzz_tarball). A
bundle that reads must write back to bytes that read as the same bundle.
"""

from __future__ import annotations

from tests.fuzz import _harness

with _harness.instrumented():
    import policysupply._internal.engines.rego_source  # noqa: F401 - lazily imported by Bundle
    from policysupply._internal import tarball
    from policysupply.bundle import Bundle, Limits

LIMITS = Limits(max_uncompressed=1 << 20, max_entries=64, max_entry_size=256 << 10)


def one_input(data: bytes) -> None:
    bundle = Bundle.from_bytes(tarball.gzip_deterministic(data, level=1), limits=LIMITS)
    again = Bundle.from_bytes(bundle.to_bytes())
    assert again == bundle, "bundle does not round-trip"
    assert again.digest == bundle.digest


if __name__ == "__main__":
    _harness.run(one_input)
