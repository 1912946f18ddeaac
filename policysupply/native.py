"""OPA-native bundle signatures: ``/.signatures.json`` as ``opa build --signing-key`` writes it.

OPA verifies these itself when a bundle is loaded with ``--verification-key``
or through a bundle source with a ``signing`` block, so a bundle signed here
is checked by OPA even when policysupply is not in the loading path. This
module verifies them the way OPA does, with a few additions that never let
through anything OPA would refuse for content reasons:

* several trusted keys at once, picked by the token's ``kid`` (key rotation
  without a gap), and a threshold of distinct keys when a bundle carries
  several tokens (OPA itself accepts exactly one token);
* ``exclude_files`` that would leave Rego, data or the manifest unverified
  is refused (or only warned about, by policy);
* MD5 and SHA-1 file hashes are refused unless allowed.

Format details: ``docs/concepts/opa-signatures.md``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from policysupply._internal import opa_signatures as osig
from policysupply.errors import (
    BundleError,
    FileDigestMismatchError,
    MalformedSignatureError,
    MissingSignedFileError,
    NoSignatureError,
    ScopeMismatchError,
    ThresholdNotMetError,
    UnsafeExclusionError,
    UnsignedFileError,
    UntrustedSignatureError,
)

if TYPE_CHECKING:
    from policysupply.bundle import Bundle
from policysupply._native_signing import load_signing_key as load_signing_key
from policysupply._native_signing import sign_entries as sign_entries
from policysupply._native_trust import ALGORITHMS as ALGORITHMS
from policysupply._native_trust import ExcludedContent as ExcludedContent
from policysupply._native_trust import (
    NativeKey,
    NativeSignature,
    NativeTrust,
    NativeVerification,
)
from policysupply._native_trust import native_algorithm as native_algorithm

__all__ = [
    "NativeKey",
    "NativeSignature",
    "NativeTrust",
    "NativeVerification",
    "verify_native",
]

logger = logging.getLogger("policysupply.native")

# More tokens than this is not a signed bundle but an attempt to make us work.
_MAX_TOKENS = 16
# Payload and file-entry fields OPA decodes. Go's decoder matches JSON keys to
# them case-insensitively, so a near-duplicate spelling could be read by OPA
# and not by us (or the other way round): such payloads are refused.
_PAYLOAD_FIELDS = ("files", "keyid", "scope", "iat", "iss")
_FILE_FIELDS = ("name", "hash", "algorithm")
_HEX = re.compile(r"^[0-9a-fA-F]*$")
_LOADED_BASENAMES = frozenset(
    {"data.json", "data.yaml", "data.yml", "policy.wasm", "plan.json", "plan.pb", "patch.json"}
)


def loaded_by_opa(name: str) -> bool:
    """Whether OPA loads entry ``name`` into its store (Rego, data, manifest, wasm, plans)."""
    return (
        name.endswith(".rego")
        or name.endswith(".manifest")
        or name.endswith(".manifest.pb")
        or osig.basename(name) in _LOADED_BASENAMES
    )


# -- verification -------------------------------------------------------------------


def _string_field(obj: Mapping[str, Any], name: str, what: str) -> str:
    value = obj.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedSignatureError(f"{what}: {name!r} is not a string")
    return value


def _guard_fields(obj: Mapping[str, Any], fields: Iterable[str], what: str) -> None:
    wanted = set(fields)
    for k in obj:
        if k not in wanted and k.casefold() in wanted:
            raise MalformedSignatureError(
                f"{what}: field {k!r} is a different spelling of {k.casefold()!r}; "
                "OPA's decoder would read it as that field, so the token is ambiguous"
            )


def _listed_files(payload: Mapping[str, Any], trust: NativeTrust) -> dict[str, tuple[str, str]]:
    files = payload.get("files")
    if files is None:
        return {}
    if not isinstance(files, list):
        raise MalformedSignatureError('token payload: "files" is not a list')
    out: dict[str, tuple[str, str]] = {}
    for f in files:
        if not isinstance(f, dict):
            raise MalformedSignatureError('token payload: a "files" entry is not an object')
        _guard_fields(f, _FILE_FIELDS, "token file entry")
        name = _string_field(f, "name", "token file entry")
        digest = _string_field(f, "hash", "token file entry")
        alg = _string_field(f, "algorithm", "token file entry")
        if not alg:
            raise MalformedSignatureError(f"{name}: no hashing algorithm listed for it")
        if alg not in osig.HASHES:
            raise MalformedSignatureError(f"{name}: unsupported hashing algorithm {alg!r}")
        if alg in osig.WEAK_HASHES and not trust.allow_weak_hashes:
            raise MalformedSignatureError(
                f"{name}: listed with {alg}, a hash that allows collisions; refusing it "
                "(NativeTrust.allow_weak_hashes=True accepts it, as OPA does)"
            )
        if len(digest) % 2 or not _HEX.match(digest):
            raise MalformedSignatureError(f"{name}: listed hash is not hex")
        # Names are compared exactly, as OPA does ("/x" never matches "x").
        out[name] = (digest.lower(), alg)
    return out


@attrs.frozen
class _Checked:
    signature: NativeSignature
    files: dict[str, tuple[str, str]]


def _check_token(token: str, trust: NativeTrust, ignored: list[str]) -> _Checked | None:
    """Verifies one token's signature and scope; ``None`` when its key is not trusted here."""
    try:
        tok = osig.parse_token(token)
    except ValueError as exc:
        raise MalformedSignatureError(f"{osig.SIGNATURES_FILE}: {exc}") from None
    _guard_fields(tok.payload, _PAYLOAD_FIELDS, "token payload")
    kid = trust.key_id
    if kid is None:
        header_kid = tok.header.get("kid")
        if header_kid is not None and not isinstance(header_kid, str):
            raise MalformedSignatureError("token header: kid is not a string")
        kid = header_kid or _string_field(tok.payload, "keyid", "token payload")
    if not kid:
        ignored.append("a token names no key (no kid, no keyid) and the trust sets no key_id")
        return None
    key = trust.keys.get(kid)
    if key is None:
        ignored.append(f"a token by key {kid!r}, which is not trusted here")
        return None
    if tok.header.get("alg") != key.algorithm or not osig.jws_verify(
        key.algorithm, key.material, tok.signing_input, tok.signature
    ):
        raise UntrustedSignatureError(
            f"a token claims trusted key {kid!r} but its {key.algorithm} signature does "
            "not verify: the signatures file was forged or damaged"
        )
    want = trust.scope if trust.scope is not None else (key.scope or "")
    scope = _string_field(tok.payload, "scope", "token payload")
    if scope != want:
        raise ScopeMismatchError(
            f"token by key {kid!r} has scope {scope!r}, but scope {want!r} is required"
        )
    claims = {k: v for k, v in tok.payload.items() if k != "files"}
    for name in ("keyid", "iss"):
        _string_field(tok.payload, name, "token payload")
    iat = tok.payload.get("iat")
    if iat is not None and osig._whole_number(iat) is None:
        raise MalformedSignatureError("token payload: iat is not a whole number")
    files = _listed_files(tok.payload, trust)
    return _Checked(
        signature=NativeSignature(
            key_id=kid,
            algorithm=key.algorithm,
            scope=scope,
            claims=_plain(claims),
            files=len(files),
        ),
        files=files,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, osig.RawNumber):
        text = value.text
        try:
            return int(text)
        except ValueError:
            return float(text)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Digests:
    """File hashes computed once per (entry, algorithm), shared by all tokens."""

    def __init__(self, entries: Mapping[str, bytes]) -> None:
        self.entries = entries
        self.cache: dict[tuple[str, str], str] = {}

    def matches(self, name: str, want: str, alg: str) -> bool:
        raw = self.entries[name]
        got = self.cache.get((name, alg))
        if got is None:
            if osig.basename(name) in ("data.json", ".manifest"):
                # Already in canonical form (as our writer leaves it, or OPA's
                # plus a newline)? Then these bytes hash to the listed value
                # and need no parsing: equal hashes mean the text is the
                # canonical text itself, which parses to the signed value.
                h = osig.HASHES[alg]()
                h.update(raw.strip(b" \t\r\n"))
                if h.hexdigest() == want:
                    return True
            try:
                got = osig.file_digest(name, raw, alg)
            except BundleError as exc:
                raise FileDigestMismatchError(
                    f"cannot be hashed as OPA does ({exc.reason})", entry=name
                ) from None
            self.cache[(name, alg)] = got
        return got == want


def _check_content(
    checked: _Checked, content: list[str], digests: _Digests, excluded: set[str]
) -> None:
    listed = dict(checked.files)
    for name in content:
        if name in excluded:
            listed.pop(name, None)
            continue
        entry = listed.pop(name, None)
        if entry is None:
            raise UnsignedFileError(
                f"not covered by the signature of key {checked.signature.key_id!r} "
                "(added after signing?)",
                entry=name,
            )
        want, alg = entry
        if not digests.matches(name, want, alg):
            raise FileDigestMismatchError(
                f"content differs from what key {checked.signature.key_id!r} signed "
                f"({alg} {want[:16]}...)",
                entry=name,
            )
    if listed:
        missing = sorted(listed)
        raise MissingSignedFileError(
            f"signed by key {checked.signature.key_id!r} but not in the bundle"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            entry=missing[0],
        )


def verify_entries(entries: Mapping[str, bytes], trust: NativeTrust) -> NativeVerification:
    """Verifies bundle entries (name relative to the root → bytes) as OPA would.

    Raises:
        NoSignatureError: No ``.signatures.json``, or one without tokens.
        MalformedSignatureError: Unreadable signatures or tokens.
        UntrustedSignatureError: No token by a trusted key, or a forged one.
        ScopeMismatchError: A trusted token for another scope.
        UnsignedFileError: A file not covered by the signature.
        MissingSignedFileError: A signed file not in the bundle.
        FileDigestMismatchError: A file changed since it was signed.
        UnsafeExclusionError: ``exclude_files`` would skip a loaded file.
        ThresholdNotMetError: Fewer distinct trusted keys than the threshold.
    """
    sig_names = sorted(n for n in entries if osig.is_signatures_file(n))
    if not sig_names:
        raise NoSignatureError(
            "bundle carries no .signatures.json, but an OPA-native signature is required"
        )
    if len(sig_names) > 1:
        raise MalformedSignatureError(
            f"bundle contains more than one signatures file: {', '.join(sig_names)}"
        )
    try:
        tokens, plugin = osig.decode_signatures_file(entries[sig_names[0]])
    except ValueError as exc:
        raise MalformedSignatureError(f"{sig_names[0]}: {exc}") from None
    if tokens is None and not plugin:
        raise NoSignatureError(f"{sig_names[0]} holds no signatures")
    if plugin not in ("", osig.DEFAULT_PLUGIN):
        raise MalformedSignatureError(
            f"{sig_names[0]}: made by signing plugin {plugin!r}; only OPA's default "
            "JWT format is implemented"
        )
    if not tokens:
        raise NoSignatureError(f"{sig_names[0]} holds no signatures")
    if len(tokens) > _MAX_TOKENS:
        raise MalformedSignatureError(f"{sig_names[0]}: more than {_MAX_TOKENS} tokens")

    content = sorted(n for n in entries if n != sig_names[0])
    patterns = [osig.go_match_regex(p) for p in trust.exclude_files]
    excluded = {n for n in content if any(rx is not None and rx.fullmatch(n) for rx in patterns)}
    warnings: list[str] = []
    risky = sorted(n for n in excluded if loaded_by_opa(n))
    if risky:
        msg = (
            f"exclude_files {list(trust.exclude_files)} leaves {len(risky)} file(s) that "
            f"OPA loads unverified: {', '.join(risky[:5])}"
        )
        if trust.excluded_content == "refuse":
            raise UnsafeExclusionError(
                msg + "; narrow the patterns, or set excluded_content='warn' to accept it"
            )
        logger.warning(msg, extra={"event": "policysupply.native_exclusion", "files": risky})
        warnings.append(msg)

    ignored: list[str] = []
    by_key: dict[str, NativeSignature] = {}
    digests = _Digests(entries)
    for token in tokens:
        checked = _check_token(token, trust, ignored)
        if checked is None:
            continue
        _check_content(checked, content, digests, excluded)
        by_key.setdefault(checked.signature.key_id, checked.signature)
    if not by_key:
        raise UntrustedSignatureError(
            "no OPA-native signature by a trusted key: " + "; ".join(ignored)
        )
    if len(by_key) < trust.threshold:
        raise ThresholdNotMetError(
            f"{len(by_key)} of the required {trust.threshold} trusted keys signed "
            f"({', '.join(sorted(by_key))})"
        )
    return NativeVerification(
        signatures=tuple(by_key[k] for k in sorted(by_key)),
        excluded=tuple(sorted(excluded)),
        warnings=tuple(warnings),
        ignored=tuple(ignored),
    )


def verify_native(
    source: Bundle | bytes | str | os.PathLike[str], trust: NativeTrust
) -> NativeVerification:
    """Verifies a bundle's OPA-native signature (``/.signatures.json``) as OPA does.

    Args:
        source: A :class:`~policysupply.Bundle`, ``.tar.gz`` bytes, or a path
            to a bundle file. Bytes and files are checked entry by entry as
            read, before anything is parsed into a bundle.
        trust: The keys and rules.

    Returns:
        What verified.

    Raises:
        VerificationError: A subclass naming what failed (see
            :func:`verify_entries`).
        BundleError: The archive itself is unreadable.
    """
    from policysupply.bundle import Bundle

    if isinstance(source, Bundle):
        return source.verify_native(trust)
    from policysupply._internal import tarball

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            source = path.read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc.strerror}") from None
    return verify_entries(tarball.read_entries(bytes(source)), trust)
