"""Bundle tarballs (``policysupply._internal.tarball``), below the gzip layer.

The input is the tar stream; the harness gzips it (a mutated gzip stream
mostly fails its CRC, which would starve the tar reader of inputs). A first
byte of 0 passes the input as it is instead, so the gzip reader is fuzzed too.
Small limits make the bounds reachable.
"""

from __future__ import annotations

from tests.fuzz import _harness

with _harness.instrumented():
    from policysupply._internal import tarball

LIMITS = tarball.Limits(
    max_compressed=1 << 20,
    max_uncompressed=1 << 20,
    max_entries=64,
    max_entry_size=256 << 10,
    max_depth=8,
)


def one_input(data: bytes) -> None:
    raw = data[1:] if data[:1] == b"\0" else tarball.gzip_deterministic(data, level=1)
    entries = tarball.read_entries(raw, LIMITS)
    total = sum(len(v) for v in entries.values())
    assert total <= LIMITS.max_uncompressed, f"materialised {total} bytes"
    assert tarball.read_entries(tarball.write_entries(entries), LIMITS) == entries


if __name__ == "__main__":
    _harness.run(one_input)
