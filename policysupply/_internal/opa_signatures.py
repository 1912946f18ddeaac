"""OPA's own bundle signature format (``/.signatures.json``), as pure functions.

The wire format is written up in ``docs/concepts/opa-signatures.md``. In
short: ``.signatures.json`` holds a list of compact JWS tokens; each token's
payload lists every other file of the bundle with a hash of its content.
Rego, wasm and other files are hashed as bytes; ``data.json``,
``data.yaml``/``data.yml`` and ``.manifest`` are hashed in a canonical JSON
form of their parsed value, so that whitespace and key order do not matter
but every number keeps the text it was written with.

Nothing here touches the disk or the network; the public layer is
:mod:`policysupply.native`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from policysupply.errors import BundleError, SigningError

SIGNATURES_FILE = ".signatures.json"
DEFAULT_PLUGIN = "_default"
DEFAULT_HASH = "SHA-256"
_STRUCTURED = frozenset({"data.json", "data.yaml", "data.yml", ".manifest"})

# OPA's HashingAlgorithm names -> hashlib constructors. MD5 and SHA-1 are
# accepted by OPA when reading; we only read them when told to (collisions).
HASHES: dict[str, Callable[[], Any]] = {
    "MD5": hashlib.md5,
    "SHA-1": hashlib.sha1,
    "SHA-224": hashlib.sha224,
    "SHA-256": hashlib.sha256,
    "SHA-384": hashlib.sha384,
    "SHA-512": hashlib.sha512,
    "SHA-512-224": lambda: hashlib.new("sha512_224"),
    "SHA-512-256": lambda: hashlib.new("sha512_256"),
}
WEAK_HASHES = frozenset({"MD5", "SHA-1"})

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


def basename(name: str) -> str:
    """The last path component of a bundle entry name."""
    return name.rsplit("/", 1)[-1]


def is_signatures_file(name: str) -> bool:
    """Whether OPA reads ``name`` as the bundle's signatures file (at any depth)."""
    return basename(name) == SIGNATURES_FILE


def is_structured(name: str) -> bool:
    """Whether OPA hashes ``name`` in canonical JSON form rather than as bytes."""
    return basename(name) in _STRUCTURED


# -- Go's encoding/json, as far as OPA's hashes and tokens depend on it ------------


class RawNumber:
    """A JSON number kept as the literal text it was written with (Go's ``json.Number``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"RawNumber({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


_ESCAPE_PLAIN = re.compile('[\\x00-\\x1f"\\\\\u2028\u2029]')
_ESCAPE_HTML = re.compile('[\\x00-\\x1f"\\\\\u2028\u2029<>&]')
_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(m: re.Match[str]) -> str:
    c = m.group(0)
    return _SHORT.get(c) or f"\\u{ord(c):04x}"


def go_string(s: str, *, html: bool) -> str:
    """``s`` as Go's JSON encoder writes it (Go 1.22+ short escapes; HTML escaping optional)."""
    return '"' + (_ESCAPE_HTML if html else _ESCAPE_PLAIN).sub(_escape_char, s) + '"'


def go_float(value: float) -> str:
    """A float64 as Go's ``encoding/json`` writes it (shortest digits, ``e`` only when far out)."""
    if not math.isfinite(value):
        raise ValueError(f"{value} has no JSON form")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    from decimal import Decimal

    a = abs(value)
    d = Decimal(repr(value))
    if a < 1e-6 or a >= 1e21:
        sign, digits, exponent = d.normalize().as_tuple()
        exponent = int(exponent)  # finite: never 'n'/'N'/'F'
        text = "".join(map(str, digits))
        exp = exponent + len(text) - 1
        mant = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{'-' if sign else ''}{mant}e{'-' if exp < 0 else '+'}{abs(exp)}"
    return format(d.normalize(), "f")


def go_json(value: Any, *, html: bool) -> str:
    """``value`` as Go's ``json.Marshal`` writes a decoded document (map keys sorted).

    Strings follow Go's escaping; :class:`RawNumber` is written verbatim;
    Python floats as Go writes a float64.
    """
    parts: list[str] = []
    _go_json(value, parts, html)
    return "".join(parts)


def _go_json(value: Any, out: list[str], html: bool) -> None:
    if isinstance(value, RawNumber):
        out.append(value.text)
    elif isinstance(value, str):
        out.append(go_string(value, html=html))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(go_float(value))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise ValueError(f"object key {key!r} is not a string")
            if i:
                out.append(",")
            out.append(go_string(key, html=html))
            out.append(":")
            _go_json(value[key], out, html)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _go_json(item, out, html)
        out.append("]")
    else:
        raise ValueError(f"a {type(value).__name__} has no JSON form")


class _Exotic(Exception):
    """A number whose Python form would not keep the text it was written with."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _checked_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or repr(value) != text:
        raise _Exotic
    return value


# JSON integers survive int() -> str() unchanged except "-0". Spotting one
# textually (a false hit inside a string only costs the slow path) keeps the
# C parser's own integer handling, which matters for large data files.
_NEGATIVE_ZERO = re.compile(rb"-0(?![0-9.eE])")


def _loads(text: str, raw: bytes, entry: str, **hooks: Any) -> Any:
    from policysupply._internal.bundle_format import (
        _SURROGATE_ESCAPE,
        _replace_lone_surrogates,
    )

    try:
        value = json.loads(text, parse_constant=_no_constant, **hooks)
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"invalid JSON: {exc.msg}", entry=entry, line=exc.lineno, column=exc.colno
        ) from None
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"invalid JSON: {exc}", entry=entry) from None
    if _SURROGATE_ESCAPE.search(raw):
        value = _replace_lone_surrogates(value)
    return value


def canonical_json(raw: bytes, *, entry: str) -> bytes:
    """The canonical form OPA hashes a JSON document in.

    Objects with keys sorted, no whitespace, strings re-escaped as Go writes
    them (without HTML escaping), and every number exactly as written
    (``1.50`` stays ``1.50``). Fast path: documents whose numbers all survive
    a trip through Python's own types are written by the C encoder.

    Raises:
        BundleError: Not UTF-8 or not JSON (OPA would not load it either).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"not valid UTF-8 at byte {exc.start}", entry=entry) from None
    try:
        if _NEGATIVE_ZERO.search(raw):
            raise _Exotic
        value = _loads(text, raw, entry, parse_float=_checked_float)
    except _Exotic:
        value = _loads(text, raw, entry, parse_float=RawNumber, parse_int=RawNumber)
        try:
            return go_json(value, html=False).encode("utf-8")
        except RecursionError:
            raise BundleError("invalid JSON: nested too deeply", entry=entry) from None
    return canonical_value(value)


def canonical_value(value: Any) -> bytes:
    """The canonical form of an already parsed document whose numbers are plain Python ones.

    Integers are written as digits and floats as Python's shortest repr,
    which is the text our own writer puts into ``data.json``.
    """
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    if "\u2028" in text or "\u2029" in text:
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode("utf-8")


def canonical_yaml_value(value: Any) -> bytes:
    """The canonical form of a parsed YAML document: OPA converts YAML to JSON first.

    That conversion writes floats as Go writes a float64 (``1.0`` → ``1``).
    """
    return go_json(value, html=False).encode("utf-8")


def canonical_form(name: str, raw: bytes) -> bytes:
    """The bytes OPA feeds to the hash for entry ``name``: canonical if structured, else ``raw``."""
    if not is_structured(name):
        return raw
    if basename(name) in ("data.yaml", "data.yml"):
        from policysupply._internal.bundle_format import parse_yaml

        try:
            return canonical_yaml_value(parse_yaml(raw, entry=name))
        except (ValueError, RecursionError) as exc:
            raise BundleError(f"cannot be hashed: {exc}", entry=name) from None
    return canonical_json(raw, entry=name)


def file_digest(name: str, raw: bytes, algorithm: str = DEFAULT_HASH) -> str:
    """Lowercase hex hash of entry ``name`` as OPA computes it."""
    h = HASHES[algorithm]()
    h.update(canonical_form(name, raw))
    return str(h.hexdigest())


def signing_order(names: Iterable[str]) -> list[str]:
    """Entries in the order ``opa build`` lists them: modules, ``data.json``, others, manifest.

    Within a group, by path components, as a directory walk visits them.
    """

    def key(n: str) -> tuple[int, list[str]]:
        if n.endswith(".rego"):
            group = 0
        elif n == "data.json":
            group = 1
        elif n == ".manifest":
            group = 3
        else:
            group = 2
        return group, n.split("/")

    return sorted(names, key=key)


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


def encode_signatures_file(tokens: list[str], *, plugin: str | None = DEFAULT_PLUGIN) -> bytes:
    """``.signatures.json`` as ``opa build`` writes it (Go's ``MarshalIndent`` with one space)."""
    body = ",\n".join(f"  {go_string(t, html=True)}" for t in tokens)
    out = '{\n "signatures": [\n' + body + "\n ]"
    if plugin:
        out += f',\n "plugin": {go_string(plugin, html=True)}'
    return (out + "\n}").encode("utf-8")


def decode_signatures_file(raw: bytes) -> tuple[list[str] | None, str]:
    """``(tokens, plugin)`` from ``.signatures.json`` (``tokens`` ``None`` when absent).

    Raises:
        ValueError: Not a JSON object of the expected shape.
    """
    obj = _json_object(raw, SIGNATURES_FILE)
    sigs = obj.get("signatures")
    plugin = obj.get("plugin") or ""
    if sigs is not None and (
        not isinstance(sigs, list) or not all(isinstance(s, str) for s in sigs)
    ):
        raise ValueError('"signatures" is not a list of strings')
    if not isinstance(plugin, str):
        raise ValueError('"plugin" is not a string')
    return sigs, plugin


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


# -- exclude_files: Go's path/filepath.Match ------------------------------------------


def _go_class(pattern: str, i: int) -> tuple[str, int] | None:
    """Translates a ``[...]`` class starting at ``pattern[i]``; ``None`` if malformed."""
    j = i + 1
    negate = j < len(pattern) and pattern[j] == "^"
    if negate:
        j += 1
    items: list[str] = []
    first = True
    while True:
        if j >= len(pattern):
            return None
        c = pattern[j]
        if c == "]" and not first:
            break
        first = False
        if c == "\\":
            j += 1
            if j >= len(pattern):
                return None
            c = pattern[j]
        elif c in "-]":
            return None
        lo = c
        j += 1
        if j < len(pattern) and pattern[j] == "-":
            j += 1
            if j >= len(pattern):
                return None
            hi = pattern[j]
            if hi == "\\":
                j += 1
                if j >= len(pattern):
                    return None
                hi = pattern[j]
            elif hi in "-]":
                return None
            j += 1
            if hi < lo:
                return None
            items.append(f"{re.escape(lo)}-{re.escape(hi)}")
        else:
            items.append(re.escape(lo))
    body = "".join(items)
    return (f"[^{body}]" if negate else f"[{body}]"), j + 1


def go_match_regex(pattern: str) -> re.Pattern[str] | None:
    r"""A regex equivalent to Go's ``filepath.Match(pattern, name)``; ``None`` if malformed.

    ``*`` matches any run of non-``/`` characters, ``?`` one, ``[...]`` /
    ``[^...]`` a class, ``\\`` escapes. A malformed pattern matches nothing
    (Go returns ``ErrBadPattern``, which OPA reads as no match).
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            cls = _go_class(pattern, i)
            if cls is None:
                return None
            out.append(cls[0])
            i = cls[1]
        elif c == "\\":
            if i + 1 >= len(pattern):
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def go_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match`` on ``/``-separated names (malformed pattern: ``False``)."""
    rx = go_match_regex(pattern)
    return bool(rx is not None and rx.fullmatch(name))
