"""Signer construction: plain PEM key files, unsupported key types, and keyless trust selection.

Keyless signers are built without touching the network; sigstore's
``ClientTrustConfig.production``/``staging`` (TUF fetches) and its signing
context are replaced here, so only the choice of trust configuration is tested.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from policysupply import Signer, TrustPolicy, Verifier
from policysupply.errors import SigningError

PLAIN = serialization.NoEncryption()


def write_pem(path: Path, key: Any, fmt: serialization.PrivateFormat) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, PLAIN))
    return path


@pytest.mark.parametrize(
    ("make", "fmt", "header"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "PKCS8", b"PRIVATE KEY"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "PKCS8", b"PRIVATE KEY"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "TraditionalOpenSSL", b"EC PRIVATE KEY"),
        (lambda: rsa.generate_private_key(65537, 2048), "PKCS8", b"PRIVATE KEY"),
        (lambda: rsa.generate_private_key(65537, 2048), "TraditionalOpenSSL", b"RSA PRIVATE KEY"),
        (ed25519.Ed25519PrivateKey.generate, "PKCS8", b"PRIVATE KEY"),
    ],
    ids=["p256-pkcs8", "p384-pkcs8", "p256-sec1", "rsa-pkcs8", "rsa-pkcs1", "ed25519-pkcs8"],
)
def test_plain_unencrypted_pem_keys_load_and_sign(
    make: Any, fmt: str, header: bytes, tmp_path: Path
) -> None:
    key = make()
    path = write_pem(tmp_path / "key.pem", key, getattr(serialization.PrivateFormat, fmt))
    assert b"-----BEGIN " + header + b"-----" in path.read_bytes()
    signer = Signer.from_key_file(path)  # no password: the file is not encrypted
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert signer.public_key_pem == pub
    # a password given for a plain key is not needed, and not an error
    assert Signer.from_key_file(path, password="unused").key_id == signer.key_id
    verified = Verifier(TrustPolicy(keys=[pub])).verify_blob(b"x", bundle=signer.sign_blob(b"x"))
    assert verified.key_ids == (signer.key_id,)


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (ed448.Ed448PrivateKey.generate, "Ed448PrivateKey"),
        (lambda: dsa.generate_private_key(2048), "DSAPrivateKey"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "curve secp256k1"),
    ],
    ids=["ed448", "dsa", "secp256k1"],
)
def test_unsupported_key_types_are_a_clear_signing_error(
    make: Any, what: str, tmp_path: Path
) -> None:
    path = write_pem(tmp_path / "key.pem", make(), serialization.PrivateFormat.PKCS8)
    with pytest.raises(SigningError, match=f"key.pem: unsupported (key type )?{what}"):
        Signer.from_key_file(path)


def test_a_public_key_or_certificate_is_not_a_private_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "cosign.pub"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(SigningError, match="unsupported PEM block 'PUBLIC KEY'"):
        Signer.from_key_file(path)


# -- keyless trust selection ------------------------------------------------------------


def _token() -> str:
    import jwt  # PyJWT, installed with sigstore

    now = int(time.time())
    claims = {
        "iss": "https://oauth2.sigstore.dev/auth",
        "sub": "signer@example.com",
        "email": "signer@example.com",
        "email_verified": True,
        "aud": "sigstore",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, "not-verified-by-the-client-" * 2, algorithm="HS256")


class _Stop(Exception):
    pass


@pytest.fixture
def configs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Fake production/staging trust configs; records which one signing starts with."""
    from sigstore.models import ClientTrustConfig
    from sigstore.sign import SigningContext

    made = {"production": object(), "staging": object()}
    calls: dict[str, Any] = {"fetched": [], "used": None}

    def fetch(name: str) -> Any:
        def fetcher(*args: Any, **kwargs: Any) -> Any:
            calls["fetched"].append(name)
            return made[name]

        return classmethod(lambda cls, *a, **kw: fetcher(*a, **kw))

    def from_trust_config(config: Any) -> Any:
        calls["used"] = config
        raise _Stop("no network in unit tests")

    monkeypatch.setattr(ClientTrustConfig, "production", fetch("production"))
    monkeypatch.setattr(ClientTrustConfig, "staging", fetch("staging"))
    monkeypatch.setattr(SigningContext, "from_trust_config", staticmethod(from_trust_config))
    return {"made": made, "calls": calls}


@pytest.mark.parametrize("trust", ["production", "staging", None])
def test_keyless_trust_selects_the_sigstore_instance(
    trust: str | None, configs: dict[str, Any]
) -> None:
    kwargs = {} if trust is None else {"trust": trust}
    signer = Signer.keyless(identity_token=_token(), **kwargs)
    assert configs["calls"]["fetched"] == []  # nothing fetched until the first signature
    assert signer.is_keyless
    with pytest.raises(SigningError, match="cannot get a Fulcio signing certificate"):
        signer.sign_blob(b"data")
    wanted = trust or "production"
    assert configs["calls"]["fetched"] == [wanted]
    assert configs["calls"]["used"] is configs["made"][wanted]


def test_keyless_trust_fetch_failure_is_a_signing_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from sigstore.models import ClientTrustConfig

    def offline(cls: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError("network unreachable")

    monkeypatch.setattr(ClientTrustConfig, "staging", classmethod(offline))
    signer = Signer.keyless(identity_token=_token(), trust="staging")
    with pytest.raises(SigningError, match="cannot fetch Sigstore's staging trust config"):
        signer.sign_blob(b"data")
