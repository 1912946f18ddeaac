"""Hostile key files: SigningError (private) or VerificationError (public), never raw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448

from policysupply import (
    Bundle,
    Registry,
    Signer,
    SigningError,
    TrustPolicy,
    VerificationError,
    Verifier,
)
from policysupply._internal import keys

# openssl ecparam -name sect163k1 -genkey | openssl pkcs8 -topk8 -nocrypt
SECT163K1_PRIVATE = b"""-----BEGIN PRIVATE KEY-----
MGMCAQAwEAYHKoZIzj0CAQYFK4EEAAEETDBKAgEBBBUAPNBlKSxcwVVrfrT6amE8
mpUAlHuhLgMsAAQBtdMaECitu0cBO9BKztVJOroKuLQG6d7b/rLZc3nUPXQj/7Xn
X68G/tc=
-----END PRIVATE KEY-----
"""
# openssl genpkey -algorithm SM2 | openssl pkey -pubout
SM2_PUBLIC = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoEcz1UBgi0DQgAENt2TySG4G6HqOm7kv8ffxSf348ZU
pObbioECWQfHu4T0ZzSAtG8wh6WcEYtLqy4mta36bo8k9hHyAgQ/1a+A+w==
-----END PUBLIC KEY-----
"""
SECT163K1_PUBLIC = b"""-----BEGIN PUBLIC KEY-----
MEAwEAYHKoZIzj0CAQYFK4EEAAEDLAAEBXuWJK7UBJk8trW7lFc8mvbzf2oeBFQJ
epKS310inGaRU6yxMEbs3KaK
-----END PUBLIC KEY-----
"""


def _encrypted(body: bytes) -> bytes:
    return keys.pem_encode(keys.ENCRYPTED_TYPES[0], body)


def _cosign_key_doc() -> dict[str, object]:
    pem = keys.encrypt_private_key(b"x", b"pw", n=32768)
    return json.loads(keys.pem_blocks(pem)[0][1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["kdf"]["params"].update(N=float("inf")),
        lambda d: d["kdf"]["params"].update(N="9" * 5000),
        lambda d: d.update(kdf=[1]),
        lambda d: d.update(cipher="x"),
    ],
)
def test_malformed_encrypted_key_bodies(mutate) -> None:  # type: ignore[no-untyped-def]
    doc = _cosign_key_doc()
    mutate(doc)
    with pytest.raises(SigningError, match="malformed"):
        keys.load_private_key(_encrypted(json.dumps(doc).encode()), b"pw", what="k")


def test_key_file_with_huge_or_deep_numbers() -> None:
    raw = json.dumps(_cosign_key_doc()).replace('"N": 32768', '"N": 1e999').encode()
    assert b"1e999" in raw
    with pytest.raises(SigningError, match="malformed"):
        keys.load_private_key(_encrypted(raw), b"pw", what="k")
    deep = b'{"kdf":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(SigningError, match="malformed"):
        keys.load_private_key(_encrypted(deep), b"pw", what="k")


def test_unsupported_curves_private() -> None:
    with pytest.raises(SigningError, match="unsupported"):
        keys.load_private_key(SECT163K1_PRIVATE, None, what="k")


@pytest.mark.parametrize(
    "pem",
    [
        SM2_PUBLIC,
        SECT163K1_PUBLIC,
        keys.public_pem(ec.generate_private_key(ec.SECP224R1())),
        keys.public_pem(ed448.Ed448PrivateKey.generate()),
    ],
)
def test_unsupported_public_keys(pem: bytes) -> None:
    with pytest.raises(VerificationError, match="unsupported"):
        keys.load_public_key(pem, what="k")
    with pytest.raises(VerificationError, match="unsupported"):
        TrustPolicy(keys=[pem])


def test_key_object_on_an_unsupported_curve_verifies_nothing(tmp_path: Path) -> None:
    reg = Registry.local(tmp_path / "oci")
    reg.push(Bundle(modules={"a.rego": "package a\nallow := true\n"}), "acme/p:1")
    Signer.generate().sign(reg, "acme/p:1")
    other = ec.generate_private_key(ec.SECP224R1()).public_key()
    assert not keys.verify(other, b"sig", b"msg")
    with pytest.raises(VerificationError):
        Verifier(TrustPolicy(keys=[other])).verify(reg, "acme/p:1")
    with pytest.raises(SigningError, match="unsupported curve"):
        keys.sign(ec.generate_private_key(ec.SECP224R1()), b"msg")
