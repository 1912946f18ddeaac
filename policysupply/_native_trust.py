"""OPA-native trust: keys, trust settings and results (re-exported by ``policysupply.native``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from policysupply._internal import opa_signatures as osig
from policysupply.errors import (
    VerificationError,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "ALGORITHMS",
    "ExcludedContent",
    "NativeKey",
    "NativeSignature",
    "NativeTrust",
    "NativeVerification",
    "native_algorithm",
]

ALGORITHMS = tuple(osig.ALGORITHMS)
"""JWS algorithms OPA signs and verifies bundles with."""

ExcludedContent = Literal["refuse", "warn"]


def _check_algorithm(alg: str, what: str) -> str:
    if alg not in osig.ALGORITHMS:
        raise VerificationError(
            f"{what}: unsupported algorithm {alg!r}; OPA signs bundles with one of "
            f"{', '.join(osig.ALGORITHMS)}"
        )
    return alg


def _load_verification_key(value: Any, alg: str) -> Any:
    """Key material for ``alg``: HMAC secret bytes, or a ``cryptography`` public key."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if osig.ALGORITHMS[alg][0] == "HMAC":
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, (bytes, bytearray)) or not value:
            raise VerificationError(f"{alg} needs a non-empty shared secret (str or bytes)")
        return bytes(value)
    if isinstance(value, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        pub = value
    elif isinstance(value, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        pub = value.public_key()
    else:
        if isinstance(value, os.PathLike) or (
            isinstance(value, str) and not value.lstrip().startswith("-----")
        ):
            try:
                value = Path(value).read_bytes()
            except OSError as exc:
                raise VerificationError(
                    f"cannot read verification key {value}: {exc.strerror}"
                ) from None
        raw = value.encode("utf-8") if isinstance(value, str) else value
        if not isinstance(raw, (bytes, bytearray)):
            raise VerificationError(f"a {type(value).__name__} is not a verification key")
        pub = _pem_public_key(bytes(raw))
    try:
        osig.check_key_fits(alg, pub, private=False)
    except ValueError as exc:
        raise VerificationError(f"verification key does not fit: {exc}") from None
    return pub


def _pem_public_key(raw: bytes) -> Any:
    """A public key from the PEM forms OPA accepts: public key, certificate, private key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from policysupply._internal import keys as _keys

    blocks = _keys.pem_blocks(raw)
    kind = blocks[0][0] if blocks else ""
    try:
        if kind == "CERTIFICATE":
            return x509.load_pem_x509_certificate(raw).public_key()
        if kind in ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"):
            return serialization.load_pem_private_key(raw, password=None).public_key()
        return serialization.load_pem_public_key(raw)
    except (ValueError, TypeError) as exc:
        raise VerificationError(f"not a PEM key OPA accepts: {exc.__class__.__name__}") from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm
        raise VerificationError(f"unsupported verification key: {exc}") from None


@attrs.frozen(kw_only=True)
class NativeKey:
    """One trusted key for OPA-native signatures: an entry of OPA's ``keys`` config.

    Attributes:
        key: The public key (PEM ``str``/``bytes``, a path to a PEM file, or
            a ``cryptography`` key) or, for ``HS*``, the shared secret itself.
        algorithm: The JWS algorithm the key verifies (``RS256``, ``PS384``,
            ``ES256``, ``HS512``, ...). As in OPA, this, not the token's
            header, decides how a signature is checked.
        scope: The scope tokens made with this key must carry, unless the
            trust names one (OPA's ``keys.<id>.scope``).
    """

    key: Any = attrs.field(repr=False)
    algorithm: str = "RS256"
    scope: str | None = None
    _material: Any = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        _check_algorithm(self.algorithm, "NativeKey")
        object.__setattr__(self, "_material", _load_verification_key(self.key, self.algorithm))

    @property
    def material(self) -> Any:
        """The loaded key: secret bytes or a ``cryptography`` public key."""
        return self._material

    def public_pem(self) -> str:
        """The public key as PEM text, as OPA's ``keys.<id>.key`` takes it.

        Raises:
            VerificationError: An HMAC key (its secret is not public).
        """
        if isinstance(self._material, bytes):
            raise VerificationError(f"an {self.algorithm} key is a shared secret, not public")
        from policysupply._internal import keys as _keys

        return _keys.public_pem(self._material).decode("ascii")


def _native_keys(value: Mapping[str, NativeKey]) -> Mapping[str, NativeKey]:
    import types

    out = dict(value)
    for kid, key in out.items():
        if not isinstance(kid, str) or not kid:
            raise VerificationError(f"key ids must be non-empty strings, not {kid!r}")
        if not isinstance(key, NativeKey):
            raise VerificationError(f"keys[{kid!r}] must be a NativeKey, not {type(key).__name__}")
    return types.MappingProxyType(out)


@attrs.frozen(kw_only=True)
class NativeTrust:
    """What an OPA-native bundle signature must satisfy: OPA's ``keys`` + ``signing`` config.

    Attributes:
        keys: Trusted keys by key id (OPA's ``keys``). Several at once let
            signers move to a new key with no gap: each token names its key
            in ``kid``.
        key_id: Verify every token with this key, whatever its ``kid`` says
            (OPA's ``signing.keyid``).
        scope: The scope tokens must carry (OPA's ``signing.scope``); when
            unset, the key's own scope, else none.
        exclude_files: Go ``filepath.Match`` patterns of files left
            unverified (OPA's ``signing.exclude_files``).
        excluded_content: What to do when ``exclude_files`` would leave a
            file OPA loads (Rego, data, manifest, wasm, plan) unverified:
            ``refuse`` (default) or ``warn`` and go on, as OPA does.
        threshold: How many distinct trusted keys must have signed. A bundle
            OPA accepts carries one token, so more than 1 only fits bundles
            verified by policysupply alone.
        allow_weak_hashes: Accept MD5/SHA-1 file hashes (OPA does; no signer
            we know writes them, and they allow collisions).
    """

    keys: Mapping[str, NativeKey] = attrs.field(converter=_native_keys)
    key_id: str | None = None
    scope: str | None = None
    exclude_files: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    excluded_content: ExcludedContent = "refuse"
    threshold: int = 1
    allow_weak_hashes: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.keys:
            raise VerificationError("an OPA-native trust needs at least one key")
        if self.key_id is not None and self.key_id not in self.keys:
            raise VerificationError(f"key id {self.key_id!r} is not among the trusted keys")
        if self.excluded_content not in ("refuse", "warn"):
            raise VerificationError("excluded_content must be 'refuse' or 'warn'")
        distinct = 1 if self.key_id is not None else len(self.keys)
        if not 1 <= self.threshold <= distinct:
            raise VerificationError(
                f"threshold {self.threshold} cannot be met by {distinct} usable key(s)"
            )
        if not all(isinstance(p, str) for p in self.exclude_files):
            raise VerificationError("exclude_files must be strings")

    @classmethod
    def from_opa_config(cls, config: Mapping[str, Any], bundle: str | None = None) -> NativeTrust:
        """Reads OPA's own config: ``keys`` and ``bundles.<bundle>.signing``.

        Args:
            config: The parsed OPA configuration (``keys`` at least).
            bundle: The bundle whose ``signing`` block applies; ``None`` uses
                the keys alone (tokens pick their key by ``kid``).

        Raises:
            VerificationError: A key or the signing block is malformed.
        """
        raw_keys = config.get("keys") or {}
        if not isinstance(raw_keys, Mapping):
            raise VerificationError("OPA config: keys must be an object")
        keys: dict[str, NativeKey] = {}
        for kid, kc in raw_keys.items():
            if not isinstance(kc, Mapping) or "key" not in kc:
                continue  # signing-only entries (private_key) verify nothing
            keys[str(kid)] = NativeKey(
                key=kc["key"], algorithm=kc.get("algorithm") or "RS256", scope=kc.get("scope")
            )
        signing: Mapping[str, Any] = {}
        if bundle is not None:
            source = (config.get("bundles") or {}).get(bundle)
            if not isinstance(source, Mapping):
                raise VerificationError(f"OPA config: no bundle {bundle!r}")
            signing = source.get("signing") or {}
        return cls(
            keys=keys,
            key_id=signing.get("keyid") or None,
            scope=signing.get("scope") or None,
            exclude_files=tuple(signing.get("exclude_files") or ()),
        )

    @classmethod
    def from_cosign_keys(cls, keys: Iterable[Any], **options: Any) -> NativeTrust:
        """Trusts the same keys as a cosign :class:`~policysupply.TrustPolicy`, by cosign key id.

        :func:`~policysupply.publish` signs natively with the cosign key under
        its key id (``sha256:<hex>``), so this is the trust that verifies
        what it publishes. Keys OPA cannot use (Ed25519) are left out.

        Args:
            keys: ``cryptography`` public keys (``TrustPolicy.keys``), PEM,
                or paths to ``cosign.pub`` files.
            **options: Other :class:`NativeTrust` fields (``scope``, ...).

        Raises:
            VerificationError: None of the keys is usable by OPA.
        """
        from policysupply._internal import keys as _keys

        out: dict[str, NativeKey] = {}
        for k in keys:
            pub = _load_any_public(k)
            alg = native_algorithm(pub)
            if alg is not None:
                out[_keys.key_id(pub)] = NativeKey(key=pub, algorithm=alg)
        if not out:
            raise VerificationError("none of the keys can verify OPA-native signatures")
        return cls(keys=out, **options)

    def to_opa_config(self, bundle: str, *, include_secrets: bool = False) -> dict[str, Any]:
        """OPA config that verifies the same way: ``keys`` and ``bundles.<bundle>.signing``.

        Merge it into the rest of the bundle source (``service``,
        ``resource``, polling). A ``signing`` block, even an empty one, makes
        OPA refuse unsigned bundles.

        Args:
            bundle: The bundle name (``bundles.<bundle>``).
            include_secrets: Include ``HS*`` shared secrets; refused otherwise,
                so a config meant for distribution never carries one.

        Raises:
            VerificationError: An HMAC key without ``include_secrets``.
        """
        keys: dict[str, Any] = {}
        for kid, k in self.keys.items():
            if isinstance(k.material, bytes):
                if not include_secrets:
                    raise VerificationError(
                        f"key {kid!r} is an {k.algorithm} shared secret; pass "
                        "include_secrets=True to write it into a config"
                    )
                entry: dict[str, Any] = {"key": k.material.decode("utf-8", "strict")}
            else:
                entry = {"key": k.public_pem()}
            entry["algorithm"] = k.algorithm
            if k.scope:
                entry["scope"] = k.scope
            keys[kid] = entry
        signing: dict[str, Any] = {}
        if self.key_id:
            signing["keyid"] = self.key_id
        if self.scope:
            signing["scope"] = self.scope
        if self.exclude_files:
            signing["exclude_files"] = list(self.exclude_files)
        return {"keys": keys, "bundles": {bundle: {"signing": signing}}}


def _load_any_public(value: Any) -> Any:
    from policysupply._internal import keys as _keys

    if isinstance(value, os.PathLike) or (
        isinstance(value, str) and not value.lstrip().startswith("-----")
    ):
        try:
            value = Path(value).read_bytes()
        except OSError as exc:
            raise VerificationError(f"cannot read public key {value}: {exc.strerror}") from None
    if isinstance(value, (bytes, str)):
        raw = value.encode() if isinstance(value, str) else value
        return _keys.load_public_key(raw, what="public key")
    return value


def native_algorithm(key: Any) -> str | None:
    """The algorithm a cosign key signs OPA-natively with (``None``: OPA cannot verify it)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return "RS256"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return osig._CURVE_ALG.get(key.curve.name)
    return None


@attrs.frozen(kw_only=True)
class NativeSignature:
    """One token that verified: made by a trusted key, for this scope, over exactly these files.

    Attributes:
        key_id: The trusted key's id.
        algorithm: The algorithm it was checked with.
        scope: The token's scope (``""`` when it has none).
        claims: The token's other claims (``iat``, ``iss``, custom ones).
        files: How many files it covers.
    """

    key_id: str
    algorithm: str
    scope: str
    claims: Mapping[str, Any]
    files: int


@attrs.frozen(kw_only=True)
class NativeVerification:
    """The outcome of a successful OPA-native verification.

    Attributes:
        signatures: The tokens that counted (distinct keys).
        excluded: Files left unverified by ``exclude_files``.
        warnings: What was let through with a warning (``excluded_content="warn"``).
        ignored: Tokens that did not count, and why (a key not trusted here).
    """

    signatures: tuple[NativeSignature, ...]
    excluded: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Distinct trusted keys that signed."""
        return tuple(sorted({s.key_id for s in self.signatures}))
