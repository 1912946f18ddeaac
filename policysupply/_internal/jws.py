"""Compact JWS as OPA signs bundles: algorithms, keys, signing, verifying, tokens.

Pure functions; ``opa_signatures`` re-exports them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from policysupply._internal.go_compat import RawNumber, _no_constant, go_json, go_string
from policysupply.errors import SigningError

DEFAULT_HASH = "SHA-256"

# JWS algorithm -> (family, hash name). The family decides the key type.
ALGORITHMS: dict[str, tuple[str, str]] = {
    "RS256": ("RSA", "sha256"),
    "RS384": ("RSA", "sha384"),
    "RS512": ("RSA", "sha512"),
    "PS256": ("PSS", "sha256"),
    "PS384": ("PSS", "sha384"),
    "PS512": ("PSS", "sha512"),
    "ES256": ("EC", "sha256"),
    "ES384": ("EC", "sha384"),
    "ES512": ("EC", "sha512"),
    "HS256": ("HMAC", "sha256"),
    "HS384": ("HMAC", "sha384"),
    "HS512": ("HMAC", "sha512"),
}
# RFC 7518: each ES algorithm names one curve.
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_CURVE_ALG = {v: k for k, v in _CURVES.items()}
_EC_SIZE = {"secp256r1": 32, "secp384r1": 48, "secp521r1": 66}


# -- JWS compact serialisation --------------------------------------------------


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def unb64url(text: str, what: str) -> bytes:
    """Decodes unpadded base64url strictly (as Go's ``RawURLEncoding``).

    Raises:
        ValueError: Padding, characters outside the alphabet, or a bad length.
    """
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError(f"{what} is not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not unpadded base64url") from None
    if b64url(data) != text:  # non-zero trailing bits: Go refuses them
        raise ValueError(f"{what} is not canonical base64url")
    return data


@attrs.frozen(kw_only=True)
class Token:
    """One compact JWS from ``.signatures.json``, split and decoded (not yet verified).

    Attributes:
        compact: The token as written.
        header: Decoded protected header.
        payload: Decoded payload object.
        signing_input: ``<header>.<payload>`` bytes the signature covers.
        signature: Decoded signature bytes.
    """

    compact: str
    header: Mapping[str, Any]
    payload: Mapping[str, Any]
    signing_input: bytes
    signature: bytes


def parse_token(compact: str) -> Token:
    """Splits and decodes a compact JWS.

    Raises:
        ValueError: Not three base64url parts, or header/payload not JSON objects.
    """
    if not isinstance(compact, str):
        raise ValueError("a token is not a string")
    parts = compact.split(".")
    if len(parts) != 3:
        raise ValueError("a token is not a compact JWS (three dot-separated parts)")
    h64, p64, s64 = parts
    header = _json_object(unb64url(h64, "JWS header"), "JWS header")
    payload = _json_object(unb64url(p64, "JWS payload"), "JWS payload")
    return Token(
        compact=compact,
        header=header,
        payload=payload,
        signing_input=f"{h64}.{p64}".encode("ascii"),
        signature=unb64url(s64, "JWS signature"),
    )


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(
            raw.decode("utf-8"),
            parse_constant=_no_constant,
            parse_float=RawNumber,
            parse_int=RawNumber,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def parse_claims(raw: bytes) -> dict[str, Any]:
    """A claims file (JSON object), numbers kept as written (as ``opa build --claims-file``).

    Raises:
        ValueError: Not a JSON object.
    """
    value = _json_object(raw, "claims file")
    return value


# -- keys, signing and verifying -----------------------------------------------------


def _hash_algorithm(name: str) -> Any:
    from cryptography.hazmat.primitives import hashes

    return {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[name]


def algorithm_for_key(key: Any) -> str:
    """The algorithm used when none is given: OPA's default RS256 for RSA, ES* by curve.

    Raises:
        SigningError: A key type OPA cannot verify.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, (bytes, bytearray)):
        return "HS256"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _CURVE_ALG:
        return _CURVE_ALG[key.curve.name]
    raise SigningError(
        f"a {type(key).__name__} cannot sign OPA bundles; use an RSA key, an ECDSA "
        "P-256/P-384/P-521 key, or an HMAC secret"
    )


def check_key_fits(alg: str, key: Any, *, private: bool) -> None:
    """Raises ``ValueError`` unless ``key`` is of the type ``alg`` needs (curve included)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    family = ALGORITHMS[alg][0]
    if family == "HMAC":
        ok = isinstance(key, (bytes, bytearray)) and len(key) > 0
        need = "a non-empty HMAC secret"
    elif family in ("RSA", "PSS"):
        cls: Any = rsa.RSAPrivateKey if private else rsa.RSAPublicKey
        ok = isinstance(key, cls)
        need = "an RSA key"
    else:
        cls = ec.EllipticCurvePrivateKey if private else ec.EllipticCurvePublicKey
        ok = isinstance(key, cls) and key.curve.name == _CURVES[alg]
        need = f"an ECDSA {_CURVES[alg]} key"
    if not ok:
        raise ValueError(f"{alg} needs {need}, not {type(key).__name__}")


def _deterministic_ecdsa() -> bool:
    try:
        from cryptography.hazmat.backends.openssl import backend

        return bool(backend.ecdsa_deterministic_supported())
    except AttributeError:  # cryptography < 44
        return False


def jws_sign(alg: str, key: Any, signing_input: bytes) -> bytes:
    """Signs ``signing_input`` (RFC 7515/7518); ECDSA is deterministic (RFC 6979) when available."""
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

    family, hname = ALGORITHMS[alg]
    check_key_fits(alg, key, private=True)
    if family == "HMAC":
        return hmac.new(bytes(key), signing_input, hname).digest()
    h = _hash_algorithm(hname)
    if family == "RSA":
        return bytes(key.sign(signing_input, padding.PKCS1v15(), h))
    if family == "PSS":
        pss = padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.DIGEST_LENGTH)
        return bytes(key.sign(signing_input, pss, h))
    if _deterministic_ecdsa():
        der = key.sign(signing_input, ec.ECDSA(h, deterministic_signing=True))
    else:
        der = key.sign(signing_input, ec.ECDSA(h))
    r, s = utils.decode_dss_signature(der)
    size = _EC_SIZE[key.curve.name]
    return bytes(r.to_bytes(size, "big") + s.to_bytes(size, "big"))


def jws_verify(alg: str, key: Any, signing_input: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``signing_input`` is valid for ``key`` under ``alg``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

    family, hname = ALGORITHMS[alg]
    try:
        check_key_fits(alg, key, private=False)
    except ValueError:
        return False
    if family == "HMAC":
        return hmac.compare_digest(hmac.new(bytes(key), signing_input, hname).digest(), signature)
    h = _hash_algorithm(hname)
    try:
        if family == "RSA":
            key.verify(signature, signing_input, padding.PKCS1v15(), h)
        elif family == "PSS":
            pss = padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.DIGEST_LENGTH)
            key.verify(signature, signing_input, pss, h)
        else:
            size = _EC_SIZE[key.curve.name]
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(utils.encode_dss_signature(r, s), signing_input, ec.ECDSA(h))
    except InvalidSignature:
        return False
    return True


# Registered claims jwx gives a type to; OPA's token builder writes them in that form.
_NUMERIC_DATES = ("exp", "iat", "nbf")
_STRING_CLAIMS = ("iss", "sub", "jti", "keyid", "scope")


def normalize_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """Extra claims as OPA's token builder writes them, or ``ValueError``.

    ``aud`` becomes a list, ``exp``/``iat``/``nbf`` must be whole seconds,
    ``iss``/``sub``/``jti``/``keyid``/``scope`` strings; ``files`` is reserved.
    """
    out: dict[str, Any] = {}
    for k, v in claims.items():
        if not isinstance(k, str):
            raise ValueError(f"claim name {k!r} is not a string")
        if k == "files":
            raise ValueError('"files" is the signed file list and cannot be given as a claim')
        if k in _NUMERIC_DATES:
            whole = _whole_number(v)
            if whole is None:
                raise ValueError(f'claim "{k}" must be a whole number of seconds')
            out[k] = whole
        elif k in _STRING_CLAIMS:
            if not isinstance(v, str):
                raise ValueError(f'claim "{k}" must be a string')
            out[k] = v
        elif k == "aud":
            items = [v] if isinstance(v, str) else v
            if not isinstance(items, list) or not all(isinstance(a, str) for a in items):
                raise ValueError('claim "aud" must be a string or a list of strings')
            out[k] = list(items)
        else:
            out[k] = v
    return out


def _whole_number(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    text = str(v) if isinstance(v, (RawNumber, float)) else None
    if text is None:
        return None
    from decimal import Decimal

    try:
        d = Decimal(text)
    except ArithmeticError:
        return None
    return int(d) if d.is_finite() and d == d.to_integral_value() else None


def make_token(
    files: list[tuple[str, str]],
    *,
    alg: str,
    key: Any,
    key_id: str | None,
    claims: Mapping[str, Any] | None,
) -> str:
    """A signed token over ``files`` (``(name, hex sha256)`` pairs) as OPA's signer makes it.

    Without ``claims`` the deprecated ``keyid`` claim repeats ``key_id``;
    with claims it is left out, as ``opa build --claims-file`` does.
    """
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if key_id:
        header["kid"] = key_id
    payload: dict[str, Any] = dict(normalize_claims(claims)) if claims is not None else {}
    if claims is None and key_id:
        payload["keyid"] = key_id
    file_list = ",".join(
        f'{{"name":{go_string(n, html=True)},"hash":"{h}","algorithm":"{DEFAULT_HASH}"}}'
        for n, h in files
    )
    members = [(k, go_json(v, html=True)) for k, v in payload.items()]
    members.append(("files", f"[{file_list}]"))
    body = ",".join(f"{go_string(k, html=True)}:{v}" for k, v in sorted(members))
    h64 = b64url(go_json(header, html=True).encode("utf-8"))
    p64 = b64url(("{" + body + "}").encode("utf-8"))
    signing_input = f"{h64}.{p64}".encode("ascii")
    return f"{h64}.{p64}.{b64url(jws_sign(alg, key, signing_input))}"
