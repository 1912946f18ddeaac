"""Key files as cosign writes and reads them, and raw sign/verify.

- ``cosign.pub``: PEM ``PUBLIC KEY`` (DER SubjectPublicKeyInfo).
- ``cosign.key``: PEM ``ENCRYPTED SIGSTORE PRIVATE KEY`` (or the older
  ``ENCRYPTED COSIGN PRIVATE KEY``) whose body is JSON: scrypt parameters and
  salt, a NaCl secretbox nonce, and the secretbox ciphertext of the PKCS#8 DER
  private key.
- plain PKCS#8 PEM (``PRIVATE KEY``, ``EC PRIVATE KEY``) is accepted too.

Every failure is a ``SigningError`` (private keys) or ``VerificationError``
(public keys) naming the file; no dependency exception escapes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from typing import Any

from policysupply.errors import PolicySupplyError, SigningError, VerificationError

ENCRYPTED_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
_SCRYPT_N = (32768, 65536, 131072)  # the three parameter sets cosign accepts
_CURVE_HASHES = {"secp256r1": "SHA256", "secp384r1": "SHA384", "secp521r1": "SHA512"}
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)\r?\n-----END \1-----", re.DOTALL)


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """``(type, DER/body bytes)`` for every PEM block in ``data``."""
    out = []
    for m in _PEM.finditer(data):
        try:
            body = base64.b64decode(b"".join(m.group(2).split()), validate=True)
        except ValueError:
            continue
        out.append((m.group(1).decode(), body))
    return out


def pem_encode(kind: str, der: bytes) -> bytes:
    """PEM with 64-column lines and a trailing newline, as Go's encoding/pem writes it."""
    b64 = base64.b64encode(der).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----\n").encode()


def _kdf(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    # hashlib.scrypt needs maxmem above 128*N*r bytes (128 MiB for N=2^17).
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 * 1024 * 1024)


def encrypt_private_key(pkcs8_der: bytes, password: bytes, *, n: int = 65536) -> bytes:
    """The ``cosign.key`` PEM for a PKCS#8 DER private key."""
    import nacl.secret

    salt = os.urandom(32)
    nonce = os.urandom(24)
    box = nacl.secret.SecretBox(_kdf(password, salt, n, 8, 1))
    ciphertext = box.encrypt(pkcs8_der, nonce).ciphertext
    doc = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": n, "r": 8, "p": 1},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    return pem_encode(ENCRYPTED_TYPES[0], json.dumps(doc, separators=(",", ":")).encode())


def decrypt_private_key(body: bytes, password: bytes, *, what: str) -> bytes:
    """PKCS#8 DER from the JSON body of an encrypted cosign key.

    Raises:
        SigningError: Malformed file, unsupported parameters, or wrong password.
    """
    import nacl.exceptions
    import nacl.secret

    try:
        doc: Any = json.loads(body)
        kdf, cipher = doc["kdf"], doc["cipher"]
        params = kdf["params"]
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        ciphertext = base64.b64decode(doc["ciphertext"], validate=True)
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        raise SigningError(
            f"{what}: not a valid encrypted cosign key (malformed JSON body)"
        ) from None
    if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
        raise SigningError(
            f"{what}: unsupported key encryption {kdf.get('name')!r}/{cipher.get('name')!r} "
            "(cosign keys use scrypt + nacl/secretbox)"
        )
    if n not in _SCRYPT_N or r != 8 or p != 1:
        raise SigningError(f"{what}: unsupported scrypt parameters N={n} r={r} p={p}")
    if len(nonce) != 24:
        raise SigningError(f"{what}: malformed secretbox nonce")
    try:
        return nacl.secret.SecretBox(_kdf(password, salt, n, r, p)).decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise SigningError(f"{what}: wrong password (or the key file is corrupt)") from None


def load_private_key(data: bytes, password: bytes | None, *, what: str) -> Any:
    """A ``cryptography`` private key from a cosign key file or plain PKCS#8/SEC1 PEM.

    Raises:
        SigningError: Unreadable, wrong password, or unsupported key type.
    """
    from cryptography.exceptions import InternalError, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    blocks = pem_blocks(data)
    if not blocks:
        raise SigningError(f"{what}: no PEM block found; expected a cosign.key or PEM private key")
    kind, body = blocks[0]
    if kind in ENCRYPTED_TYPES:
        if password is None:
            raise SigningError(f"{what}: the key is encrypted; a password is needed")
        der = decrypt_private_key(body, password, what=what)
    elif kind in ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"):
        der = body
    elif kind in ("PUBLIC KEY", "RSA PUBLIC KEY"):
        raise SigningError(
            f"{what}: that is a public key; signing needs the private key "
            "(cosign.key, not cosign.pub), and the public key is for verifying"
        )
    else:
        raise SigningError(f"{what}: unsupported PEM block {kind!r}")
    try:
        if kind == "EC PRIVATE KEY" or kind == "RSA PRIVATE KEY":
            key = serialization.load_pem_private_key(pem_encode(kind, der), password=None)
        else:
            key = serialization.load_der_private_key(der, password=None)
    except UnsupportedAlgorithm as exc:
        raise SigningError(f"{what}: unsupported key type or curve ({exc})") from None
    except (ValueError, TypeError, InternalError) as exc:
        # InternalError: OpenSSL refusing key material it parsed (an Ed448
        # key of the wrong length, for one).
        raise SigningError(
            f"{what}: cannot parse the private key ({exc.__class__.__name__})"
        ) from None
    _require_supported(key, what=what, error=SigningError)
    return key


def load_public_key(data: bytes, *, what: str) -> Any:
    """A ``cryptography`` public key from PEM (``PUBLIC KEY`` or ``RSA PUBLIC KEY``).

    Raises:
        VerificationError: Unreadable or unsupported.
    """
    from cryptography.exceptions import InternalError, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(data)
    except UnsupportedAlgorithm as exc:
        raise VerificationError(f"{what}: unsupported key type or curve ({exc})") from None
    except (ValueError, TypeError, AttributeError, InternalError):
        raise VerificationError(f"{what}: not a PEM public key") from None
    _require_supported(key, what=what, error=VerificationError)
    return key


def _require_supported(key: Any, *, what: str, error: type[PolicySupplyError]) -> None:
    """Raises ``error`` unless ``key`` is RSA, Ed25519, or EC on a curve we hash for.

    ``key`` is public or private: the loaders return only the kind they read.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if key.curve.name not in _CURVE_HASHES:
            raise error(f"{what}: unsupported curve {key.curve.name}")
    elif not isinstance(
        key,
        (rsa.RSAPrivateKey, rsa.RSAPublicKey, ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey),
    ):
        raise error(f"{what}: unsupported key type {type(key).__name__}")


def public_pem(key: Any) -> bytes:
    """``PUBLIC KEY`` PEM (SubjectPublicKeyInfo) of a public or private key."""
    from cryptography.hazmat.primitives import serialization

    pub = key.public_key() if hasattr(key, "private_bytes") else key
    return pub.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_der(key: Any) -> bytes:
    """DER SubjectPublicKeyInfo of a public or private key."""
    from cryptography.hazmat.primitives import serialization

    pub = key.public_key() if hasattr(key, "private_bytes") else key
    return pub.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: Any) -> str:
    """A stable identifier: ``sha256:<hex>`` of the SubjectPublicKeyInfo DER."""
    return "sha256:" + hashlib.sha256(spki_der(key)).hexdigest()


def _hash_for(key: Any) -> Any:
    """The hash cosign uses with ``key``; None for a curve it does not support."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        name = _CURVE_HASHES.get(key.curve.name)
        return getattr(hashes, name)() if name else None
    return hashes.SHA256()


def sign(key: Any, message: bytes) -> bytes:
    """Signs ``message`` as cosign does for this key type (ECDSA: ASN.1 DER)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding

    if isinstance(key, ec.EllipticCurvePrivateKey):
        if _hash_for(key) is None:
            raise SigningError(f"unsupported curve {key.curve.name}")
        return key.sign(message, ec.ECDSA(_hash_for(key)))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, padding.PKCS1v15(), _hash_for(key))  # type: ignore[no-any-return]


def verify(key: Any, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` over ``message`` verifies with the public ``key``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            if _hash_for(key) is None:
                return False  # a curve cosign does not use (a key object passed in directly)
            key.verify(signature, message, ec.ECDSA(_hash_for(key)))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), _hash_for(key))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


# Group orders of the curves cosign signs with (SEC 2 / FIPS 186-4).
_CURVE_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "secp521r1": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
        "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}


def signature_identity(key: Any, signature: bytes, message: bytes) -> str:
    """What makes two verified signatures the same signature, however they are encoded.

    An ECDSA signature ``(r, s)`` has a twin ``(r, n - s)`` that verifies too,
    made by anyone without the key; both are one act of signing. The identity
    is the key, the message and the signature with ``s`` in its low form, DER
    re-encoded. Other key types (Ed25519 is checked strictly, RSA PKCS#1 v1.5
    is deterministic) use the signature bytes as they are.
    """
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import (
        decode_dss_signature,
        encode_dss_signature,
    )

    canonical = signature
    if isinstance(key, ec.EllipticCurvePublicKey):
        n = _CURVE_ORDERS.get(key.curve.name)
        if n is not None:
            try:
                r, s = decode_dss_signature(signature)
            except ValueError:
                pass  # cannot have verified; keep the bytes
            else:
                canonical = encode_dss_signature(r, min(s, n - s))
    h = hashlib.sha256()
    for part in (spki_der(key), hashlib.sha256(message).digest(), canonical):
        h.update(len(part).to_bytes(4, "big") + part)
    return h.hexdigest()
