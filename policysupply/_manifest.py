"""The bundle manifest (``.manifest``); re-exported by ``policysupply.bundle``."""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from typing import Any

import attrs

from policysupply._internal import bundle_format as bf
from policysupply.errors import BundleError

__all__ = ["Manifest"]


def freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if value is None:
        return None
    return types.MappingProxyType(dict(value))


def _roots(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    bad = BundleError("manifest roots must be a list of strings", entry=".manifest")
    if isinstance(value, (str, bytes, Mapping)):
        raise bad
    try:
        items = tuple(value)
    except TypeError:  # a number, a bool: not a list at all
        raise bad from None
    if not all(isinstance(r, str) for r in items):
        raise bad
    return tuple(bf.normalize_root(r) for r in items)


@attrs.frozen(kw_only=True)
class Manifest:
    """The bundle's ``.manifest``.

    Attributes:
        revision: Opaque revision string (a git SHA, a version); ``""`` if unset.
        roots: Data path prefixes the bundle owns, without ``data.``; ``None``
            when undeclared, which OPA reads as owning all of ``data``.
        metadata: Free-form object exposed by OPA under ``data.system.bundles``.
        rego_version: ``0`` or ``1``; ``None`` means OPA's default (v1).
        file_rego_versions: Per-file overrides, glob (``/legacy/*.rego``) → version.
        wasm: Wasm entrypoint mappings, kept as written.
    """

    revision: str = ""
    roots: tuple[str, ...] | None = attrs.field(default=None, converter=_roots)
    metadata: Mapping[str, Any] | None = attrs.field(default=None, converter=freeze_mapping)
    rego_version: int | None = None
    file_rego_versions: Mapping[str, int] | None = attrs.field(
        default=None, converter=freeze_mapping
    )
    wasm: tuple[Mapping[str, Any], ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.revision, str):
            raise BundleError("manifest revision must be a string", entry=".manifest")
        if self.rego_version not in (None, 0, 1):
            raise BundleError("manifest rego_version must be 0 or 1", entry=".manifest")
        for pattern, version in (self.file_rego_versions or {}).items():
            if version not in (0, 1):
                raise BundleError(
                    f"file_rego_versions[{pattern!r}] must be 0 or 1", entry=".manifest"
                )
        bf.check_roots_disjoint(self.effective_roots)

    @property
    def effective_roots(self) -> tuple[str, ...]:
        """The roots OPA enforces: the declared ones, or ``("",)`` (everything)."""
        return self.roots if self.roots is not None else ("",)

    @classmethod
    def from_json(cls, raw: bytes, *, entry: str = ".manifest") -> Manifest:
        """Parses a ``.manifest`` file.

        Raises:
            BundleError: Not JSON, not an object, or a field of the wrong type.
        """
        obj = bf.parse_json(raw, entry=entry)
        if not isinstance(obj, dict):
            raise BundleError("manifest must be a JSON object", entry=entry)
        revision = obj.get("revision", "")
        metadata = obj.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise BundleError("manifest metadata must be an object", entry=entry)
        frv = obj.get("file_rego_versions")
        if frv is not None and not isinstance(frv, dict):
            raise BundleError("manifest file_rego_versions must be an object", entry=entry)
        wasm = obj.get("wasm") or []
        if not isinstance(wasm, list) or not all(isinstance(w, dict) for w in wasm):
            raise BundleError("manifest wasm must be a list of objects", entry=entry)
        rv = obj.get("rego_version")
        if isinstance(rv, bool) or (rv is not None and not isinstance(rv, int)):
            raise BundleError("manifest rego_version must be 0 or 1", entry=entry)
        return cls(
            revision=revision,
            roots=obj.get("roots"),
            metadata=metadata,
            rego_version=rv,
            file_rego_versions=frv or None,  # empty is absent, as OPA writes it
            wasm=wasm,
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest as the JSON object written to ``.manifest``."""
        out: dict[str, Any] = {"revision": self.revision}
        if self.roots is not None:
            out["roots"] = list(self.roots)
        if self.rego_version is not None:
            out["rego_version"] = self.rego_version
        if self.file_rego_versions:
            out["file_rego_versions"] = dict(self.file_rego_versions)
        if self.wasm:
            out["wasm"] = [dict(w) for w in self.wasm]
        if self.metadata is not None:
            out["metadata"] = dict(self.metadata)
        return out


def dumps(value: Any, *, entry: str) -> bytes:
    # Values read from bundles are vetted when parsed; this catches ones a
    # caller put into a Bundle or Manifest directly.
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise BundleError(f"cannot be written as JSON: {exc}", entry=entry) from None
