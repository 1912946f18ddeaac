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

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from policysupply._internal.bundle_format import SIGNATURES_FILE as SIGNATURES_FILE
from policysupply._internal.go_compat import RawNumber as RawNumber
from policysupply._internal.go_compat import go_float as go_float
from policysupply._internal.go_compat import go_json as go_json
from policysupply._internal.go_compat import go_match as go_match
from policysupply._internal.go_compat import go_match_regex as go_match_regex
from policysupply._internal.go_compat import go_string as go_string
from policysupply._internal.jws import _CURVE_ALG as _CURVE_ALG
from policysupply._internal.jws import ALGORITHMS as ALGORITHMS
from policysupply._internal.jws import DEFAULT_HASH as DEFAULT_HASH
from policysupply._internal.jws import Token as Token
from policysupply._internal.jws import _deterministic_ecdsa as _deterministic_ecdsa
from policysupply._internal.jws import _json_object
from policysupply._internal.jws import _whole_number as _whole_number
from policysupply._internal.jws import algorithm_for_key as algorithm_for_key
from policysupply._internal.jws import b64url as b64url
from policysupply._internal.jws import check_key_fits as check_key_fits
from policysupply._internal.jws import jws_sign as jws_sign
from policysupply._internal.jws import jws_verify as jws_verify
from policysupply._internal.jws import make_token as make_token
from policysupply._internal.jws import normalize_claims as normalize_claims
from policysupply._internal.jws import parse_claims as parse_claims
from policysupply._internal.jws import parse_token as parse_token
from policysupply._internal.jws import unb64url as unb64url
from policysupply.errors import BundleError

DEFAULT_PLUGIN = "_default"
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


def basename(name: str) -> str:
    """The last path component of a bundle entry name."""
    return name.rsplit("/", 1)[-1]


def is_signatures_file(name: str) -> bool:
    """Whether OPA reads ``name`` as the bundle's signatures file (at any depth)."""
    return basename(name) == SIGNATURES_FILE


def is_structured(name: str) -> bool:
    """Whether OPA hashes ``name`` in canonical JSON form rather than as bytes."""
    return basename(name) in _STRUCTURED


class _Exotic(Exception):
    """A number whose Python form would not keep the text it was written with."""


def _checked_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or repr(value) != text:
        raise _Exotic
    return value


# JSON integers survive int() -> str() unchanged except "-0". Spotting one
# textually (a false hit inside a string only costs the slow path) keeps the
# C parser's own integer handling, which matters for large data files.
_NEGATIVE_ZERO = re.compile(rb"-0(?![0-9.eE])")


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
    from policysupply._internal.bundle_format import loads_json

    try:
        if _NEGATIVE_ZERO.search(raw):
            raise _Exotic
        value = loads_json(text, raw, entry=entry, parse_float=_checked_float)
    except _Exotic:
        value = loads_json(text, raw, entry=entry, parse_float=RawNumber, parse_int=RawNumber)
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
