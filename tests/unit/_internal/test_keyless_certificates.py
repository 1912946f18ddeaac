"""Malformed signing certificates are CertificateErrors when loaded, never raw exceptions later.

cryptography parses a certificate's extensions and public key lazily, so a
certificate that loads may still raise ``ValueError`` (or its own exception
types) on first use, deep inside verification. Each case here was found by
fuzzing (tests/fuzz): the key-point case by the verifier mutation property.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from policysupply._internal import keyless
from policysupply.errors import CertificateError
from tests.unit._sigstore_pki import FakeSigstore

SEEDS = Path(__file__).parents[2] / "fuzz" / "corpus" / "_internal.keyless"


@pytest.fixture(scope="module")
def leaf() -> bytes:
    _, der = FakeSigstore().issue()
    return der


def test_genuine_leaf_loads(leaf: bytes) -> None:
    cert = keyless.load_certificate(leaf)
    assert keyless.certificate_identity(cert).subject.startswith("https://github.com/")


def test_public_key_not_on_the_curve_is_a_certificate_error(leaf: bytes) -> None:
    cert = keyless.load_certificate(leaf)
    point = cert.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    broken = point[:-1] + bytes([point[-1] ^ 1])  # Y changed: off the curve
    assert leaf.count(point) == 1
    with pytest.raises(CertificateError, match=r"not a valid X\.509 certificate"):
        keyless.load_certificate(leaf.replace(point, broken))


@pytest.mark.parametrize("seed", sorted(p.name for p in SEEDS.glob("regress-*")))
def test_fuzz_regressions_are_certificate_errors(seed: str) -> None:
    body = (SEEDS / seed).read_bytes()[1:]  # the target's first byte picks the parser
    ders = keyless.pem_chain(body) or [body]

    def load_all() -> None:
        for der in ders:
            keyless.certificate_identity(keyless.load_certificate(der))

    with pytest.raises(CertificateError):
        load_all()
