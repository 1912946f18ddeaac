"""The shared harness of the atheris fuzz targets (why atheris: docs/adr/0017-fuzzing.md).

A target module does::

    from tests.fuzz import _harness

    with _harness.instrumented():
        from policysupply._internal import oci

    def one_input(data: bytes) -> None:
        oci.parse_manifest(data, what="fuzz")

    if __name__ == "__main__":
        _harness.run(one_input)

and is run as ``python -m tests.fuzz._internal.fuzz_oci [libFuzzer flags] DIR...``.
``one_input`` may raise any :class:`~policysupply.errors.PolicySupplyError`;
any other exception is a finding: libFuzzer writes the input as
``crash-<sha1>`` and exits non-zero. A hang past ``-timeout`` seconds and a
process over ``-rss_limit_mb`` are findings too. Given files instead of
directories, the target runs just those inputs once (to replay a finding).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import atheris


@contextlib.contextmanager
def instrumented() -> Iterator[None]:
    """Instruments every policysupply module first imported inside the block (coverage).

    A target imports here every module its code reaches, also those
    policysupply imports lazily: a module first imported later runs without
    coverage feedback. Nothing else is instrumented (dependencies are not
    ours to fuzz, and instrumenting them slows every execution).
    """
    with atheris.instrument_imports(include=["policysupply"]):
        yield


def run(one_input: Callable[[bytes], None]) -> None:
    """Fuzzes ``one_input`` with libFuzzer's command-line flags from ``sys.argv``."""
    from policysupply.errors import PolicySupplyError

    def guarded(data: bytes) -> None:
        # Refusing hostile input with a typed error is the point.
        with contextlib.suppress(PolicySupplyError):
            one_input(data)

    atheris.Setup(sys.argv, guarded)
    atheris.Fuzz()


def consume_str(fdp: atheris.FuzzedDataProvider, max_len: int) -> str:
    """A string of up to ``max_len`` bytes, decoded leniently (bytes the mutator likes)."""
    n = fdp.ConsumeIntInRange(0, max_len)
    return fdp.ConsumeBytes(n).decode("utf-8", "surrogateescape")
