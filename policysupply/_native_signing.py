"""OPA-native signing: ``.signatures.json`` for a bundle's entries (re-exported by ``native.py``).

The token is what ``opa build --signing-key`` writes; see :meth:`Bundle.sign
<policysupply.bundle.Bundle.sign>`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policysupply._internal import opa_signatures as osig
from policysupply.errors import BundleError, SigningError

if TYPE_CHECKING:
    from policysupply.bundle import Bundle


def load_signing_key(key: Any, alg: str | None) -> tuple[Any, str]:
    """``(key material, algorithm)`` for :meth:`Bundle.sign`.

    ``key`` may be a :class:`~policysupply.Signer` (key-based), a
    ``cryptography`` private key, PEM text/bytes, a path to a PEM file, or
    for ``HS*`` the secret itself. A ``str`` follows ``opa build
    --signing-key``: PEM if it starts with ``-----BEGIN``, else a file if one
    exists there, else (``HS*`` only) the secret.

    Raises:
        SigningError: Unreadable key, or one that does not fit ``alg``.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from policysupply._internal import keys as _keys
    from policysupply.signer import Signer

    if alg is not None and alg not in osig.ALGORITHMS:
        raise SigningError(
            f"unsupported signing algorithm {alg!r}; use one of {', '.join(osig.ALGORITHMS)}"
        )
    hmac_alg = alg is not None and osig.ALGORITHMS[alg][0] == "HMAC"
    material: Any
    if isinstance(key, Signer):
        if key.is_keyless:
            raise SigningError(
                "a keyless signer has no lasting key OPA could be configured with; "
                "sign OPA-natively with a key"
            )
        material = key._need_key("an OPA-native signature")
    elif isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        material = key
    else:
        data: bytes
        if isinstance(key, os.PathLike):
            data = _read_key_file(Path(key))
        elif isinstance(key, str):
            if key.startswith("-----BEGIN"):
                data = key.encode("utf-8")
            elif os.path.exists(key):
                data = _read_key_file(Path(key))
            elif hmac_alg:
                data = key.encode("utf-8")
            else:
                raise SigningError(f"signing key {key!r}: no such file, and not PEM")
        elif isinstance(key, (bytes, bytearray)):
            data = bytes(key)
        else:
            raise SigningError(f"a {type(key).__name__} is not a signing key")
        material = data if hmac_alg else _keys.load_private_key(data, None, what="signing key")
    if alg is None:
        alg = osig.algorithm_for_key(material)
    try:
        osig.check_key_fits(alg, material, private=True)
    except ValueError as exc:
        raise SigningError(f"signing key does not fit: {exc}") from None
    return material, alg


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read signing key {path}: {exc.strerror}") from None


def sign_entries(
    entries: Mapping[str, bytes],
    *,
    key: Any,
    alg: str | None,
    key_id: str | None,
    scope: str | None,
    claims: Mapping[str, Any] | None,
    canonical: Mapping[str, bytes] | None = None,
    previous: bytes | None = None,
) -> bytes:
    """``.signatures.json`` bytes for ``entries`` (every entry but a signatures file).

    Args:
        entries: Bundle entries to cover.
        key: See :func:`load_signing_key`.
        alg: JWS algorithm; ``None`` picks one from the key.
        key_id: ``kid`` header (and, without claims, ``keyid`` claim).
        scope: ``scope`` claim.
        claims: Extra claims.
        canonical: Canonical forms already known for structured entries.
        previous: An existing signatures file to append the new token to.

    Raises:
        SigningError: Bad key, algorithm or claims.
    """
    material, alg = load_signing_key(key, alg)
    if claims is not None and not isinstance(claims, Mapping):
        raise SigningError("claims must be a mapping")
    merged: dict[str, Any] | None = dict(claims) if claims is not None else None
    if scope is not None:
        merged = {**(merged or {}), "scope": scope}
    files: list[tuple[str, str]] = []
    known = canonical or {}
    import hashlib

    for name in osig.signing_order(n for n in entries if not osig.is_signatures_file(n)):
        raw = entries[name]
        try:
            form = known.get(name)
            if form is None:
                form = osig.canonical_form(name, raw)
        except BundleError as exc:
            raise SigningError(f"cannot sign {name}: {exc.reason}") from None
        files.append((name, hashlib.sha256(form).hexdigest()))
    try:
        token = osig.make_token(files, alg=alg, key=material, key_id=key_id, claims=merged)
    except ValueError as exc:
        raise SigningError(f"cannot make the signature token: {exc}") from None
    tokens = [token]
    if previous is not None:
        try:
            old, _ = osig.decode_signatures_file(previous)
        except ValueError as exc:
            raise SigningError(f"cannot append to the existing signatures: {exc}") from None
        tokens = [*(old or []), token]
    return osig.encode_signatures_file(tokens)


def sign_bundle(
    bundle: Bundle,
    *,
    key: Any,
    alg: str | None,
    key_id: str | None,
    scope: str | None,
    claims: Mapping[str, Any] | None,
    append: bool,
) -> Bundle:
    """The body of :meth:`Bundle.sign <policysupply.bundle.Bundle.sign>` (Bundle's own helper).

    Reads and sets the bundles' private caches: what was signed is kept as
    the signed bundle's entries, so 50 MB of data is not serialised again.
    """
    import attrs

    entries = {n: b for n, b in bundle.entries().items() if not osig.is_signatures_file(n)}
    previous = bundle.files.get(osig.SIGNATURES_FILE) if append else None
    known: dict[str, bytes] = {}
    if not bundle._cache.signed_source:
        # Our own writer's output is already canonical JSON except that
        # Go escapes U+2028/U+2029; no need to parse it again.
        for name in (".manifest", "data.json"):
            known[name] = (
                entries[name]
                .replace(b"\xe2\x80\xa8", b"\\u2028")
                .replace(b"\xe2\x80\xa9", b"\\u2029")
            )
    signatures = sign_entries(
        entries,
        key=key,
        alg=alg,
        key_id=key_id,
        scope=scope,
        claims=claims,
        canonical=known,
        previous=previous,
    )
    files = {n: b for n, b in bundle.files.items() if not osig.is_signatures_file(n)}
    files[osig.SIGNATURES_FILE] = signatures
    signed = attrs.evolve(bundle, files=files)
    # Exactly the entries that were signed: for a bundle read with its own
    # bytes those bytes, otherwise what entries() would recompute.
    signed._cache.source = {**entries, osig.SIGNATURES_FILE: signatures}
    signed._cache.signed_source = bundle._cache.signed_source
    return signed
