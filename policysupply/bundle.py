"""OPA bundles: read, build, check and evaluate policy bundles.

A :class:`Bundle` is an immutable value holding what OPA would load from a
``.tar.gz`` bundle: the manifest, the Rego modules and the merged data
document. Its :meth:`Bundle.to_bytes` is deterministic, so the same policy
tree always has the same :attr:`Bundle.digest`.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import threading
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from policysupply._internal import bundle_format as bf
from policysupply._internal import tarball
from policysupply._internal.tarball import DEFAULT_LIMITS, Limits
from policysupply.errors import BundleError

__all__ = ["Bundle", "Limits", "Manifest"]


def _freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
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
    metadata: Mapping[str, Any] | None = attrs.field(default=None, converter=_freeze_mapping)
    rego_version: int | None = None
    file_rego_versions: Mapping[str, int] | None = attrs.field(
        default=None, converter=_freeze_mapping
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
            file_rego_versions=frv,
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


def _dumps(value: Any, *, entry: str) -> bytes:
    # Values read from bundles are vetted when parsed; this catches ones a
    # caller put into a Bundle or Manifest directly.
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise BundleError(f"cannot be written as JSON: {exc}", entry=entry) from None


class _Cache:
    """Derived values computed once per Bundle (not part of its identity)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes: bytes | None = None
        self.engine: Any = None


@attrs.frozen(kw_only=True)
class Bundle:
    """An OPA bundle: manifest, Rego modules and data.

    Build one with :meth:`from_directory`, :meth:`from_bytes` or
    :meth:`from_file`. Construction validates what OPA validates when it reads
    a bundle (roots disjoint, every package and data leaf under a root);
    :meth:`check` additionally compiles the Rego.

    Attributes:
        manifest: The ``.manifest``.
        modules: Module path relative to the bundle root (``k8s/images.rego``)
            → Rego source.
        data: The merged data document (read-only view; do not mutate nested
            values).
        files: Other entries carried verbatim (``.signatures.json``,
            ``policy.wasm``, ``plan.json``, …), path → bytes.
    """

    manifest: Manifest = attrs.field(factory=Manifest)
    modules: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_mapping)
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    files: Mapping[str, bytes] = attrs.field(factory=dict, converter=_freeze_mapping)
    _cache: _Cache = attrs.field(init=False, factory=_Cache, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        roots = self.manifest.effective_roots
        for name, source in self.modules.items():
            from policysupply._internal.rego import package_path

            pkg = package_path(source, entry=name)
            if not bf.path_under_roots(pkg, roots):
                raise BundleError(
                    f"package {'.'.join(pkg)} is outside the manifest roots {list(roots)}",
                    entry=name,
                )
        bf.check_data_in_roots(self.data, roots)
        clash = set(self.files) & (set(self.modules) | {".manifest", "data.json"})
        if clash:
            raise BundleError(
                "entry given both as a file and as a module/data/manifest", entry=sorted(clash)[0]
            )

    # -- constructors ------------------------------------------------------

    @classmethod
    def from_directory(
        cls,
        path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        roots: list[str] | tuple[str, ...] | None = None,
        metadata: Mapping[str, Any] | None = None,
        rego_version: int | None = None,
    ) -> Bundle:
        """Builds a bundle from a policy directory.

        Reads every ``*.rego``, every ``data.json`` / ``data.yaml`` /
        ``data.yml`` (its directory is its data path) and ``.manifest`` at the
        top if present. Hidden directories (``.git``…) and other files are
        skipped; symlinks must stay inside the directory.

        Args:
            path: The policy directory.
            revision: Overrides the manifest revision.
            roots: Overrides the manifest roots.
            metadata: Overrides the manifest metadata.
            rego_version: Overrides the manifest ``rego_version``.

        Raises:
            BundleError: Unreadable or invalid content, naming the file.
        """
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"{root} is not a directory")
        real_root = root.resolve()
        modules: dict[str, str] = {}
        data_files: dict[str, bytes] = {}
        manifest = Manifest()
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = Path(dirpath).relative_to(root)
            for fname in sorted(filenames):
                rel = (rel_dir / fname).as_posix()
                is_manifest = rel == ".manifest"
                if not (fname.endswith(".rego") or fname in bf.DATA_BASENAMES or is_manifest):
                    continue
                if fname.startswith(".") and not is_manifest:
                    continue
                full = Path(dirpath) / fname
                if full.is_symlink() and not full.resolve().is_relative_to(real_root):
                    raise BundleError("symlink points outside the policy directory", entry=rel)
                try:
                    raw = full.read_bytes()
                except OSError as exc:
                    raise BundleError(f"cannot read: {exc.strerror}", entry=rel) from None
                if is_manifest:
                    manifest = Manifest.from_json(raw)
                elif fname.endswith(".rego"):
                    modules[rel] = _decode_rego(raw, rel)
                else:
                    data_files[rel] = raw
        # Same placement order as from_bytes, so conflicts name the same file.
        data: dict[str, Any] = {}
        for rel in sorted(data_files):
            bf.insert_data(
                data, bf.data_path_of(rel), bf.parse_data_file(rel, data_files[rel]), entry=rel
            )
        changes: dict[str, Any] = {}
        if revision is not None:
            changes["revision"] = revision
        if roots is not None:
            changes["roots"] = roots
        if metadata is not None:
            changes["metadata"] = metadata
        if rego_version is not None:
            changes["rego_version"] = rego_version
        if changes:
            manifest = attrs.evolve(manifest, **changes)
        return cls(manifest=manifest, modules=modules, data=data)

    @classmethod
    def from_bytes(cls, data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Bundle:
        """Reads a ``.tar.gz`` bundle (as ``opa build`` writes it) from memory.

        The input is treated as hostile: it is read within ``limits``, and
        links, devices, path traversal, duplicate entries, invalid UTF-8 Rego,
        invalid JSON/YAML and root violations are refused. Nothing is written
        to disk.

        Args:
            data: The bundle bytes.
            limits: Size and count bounds.

        Raises:
            BundleError: The bundle is malformed or unsafe; the error names
                the entry.
        """
        entries = tarball.read_entries(bytes(data), limits)
        modules: dict[str, str] = {}
        merged: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        manifest: Manifest | None = None
        # Data files are placed in a fixed order so that the error for a
        # conflict does not depend on the archive's member order.
        for name in sorted(entries):
            raw = entries[name]
            base = name.rsplit("/", 1)[-1]
            if name.endswith("signatures.json"):
                files[name] = raw
            elif base == "patch.json":
                raise BundleError("delta bundles (patch.json) are not supported", entry=name)
            elif name.endswith(".rego"):
                modules[name] = _decode_rego(raw, name)
            elif base in bf.DATA_BASENAMES:
                bf.insert_data(
                    merged,
                    bf.data_path_of(name),
                    bf.parse_data_file(name, raw, limits=limits),
                    entry=name,
                )
            elif name.endswith(".manifest"):
                if manifest is not None:
                    raise BundleError("more than one manifest in bundle", entry=name)
                manifest = Manifest.from_json(raw, entry=name)
            else:
                files[name] = raw
        return cls(manifest=manifest or Manifest(), modules=modules, data=merged, files=files)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> Bundle:
        """Reads a ``.tar.gz`` bundle file; see :meth:`from_bytes`.

        Raises:
            BundleError: Unreadable, too large, or invalid.
        """
        p = Path(path)
        try:
            size = p.stat().st_size
            if size > limits.max_compressed:
                raise BundleError(f"{p} is {size} bytes, over the limit of {limits.max_compressed}")
            raw = p.read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read {p}: {exc.strerror}") from None
        return cls.from_bytes(raw, limits=limits)

    # -- serialisation -----------------------------------------------------

    def entries(self) -> dict[str, bytes]:
        """The tarball entries (name without leading ``/`` → bytes) ``to_bytes`` writes."""
        out = dict(self.files)
        out[".manifest"] = _dumps(self.manifest.to_json(), entry=".manifest")
        out["data.json"] = _dumps(dict(self.data), entry="data.json")
        for name, source in self.modules.items():
            out[name] = source.encode("utf-8")
        return out

    def to_bytes(self) -> bytes:
        """The bundle as a deterministic ``.tar.gz`` that OPA loads.

        The same bundle gives the same bytes on every run and machine: entries
        sorted, fixed mtime/owner/mode, no timestamp or name in the gzip
        header, data serialised with sorted keys.
        """
        cache = self._cache
        with cache.lock:
            if cache.bytes is None:
                cache.bytes = tarball.write_entries(self.entries())
            return cache.bytes

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of :meth:`to_bytes`."""
        return "sha256:" + hashlib.sha256(self.to_bytes()).hexdigest()

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Writes :meth:`to_bytes` to ``path`` atomically (temp file + rename).

        A reader never sees a partial file, and an existing good file is only
        replaced by a complete new one.

        Returns:
            The path written.

        Raises:
            BundleError: The file could not be written.
        """
        from policysupply._internal import fs

        target = Path(path)
        payload = self.to_bytes()
        try:
            with fs.atomic_file(target, mode=0o644, parents=False) as f:
                f.write(payload)
        except OSError as exc:
            raise BundleError(f"cannot write {target}: {exc.strerror}") from None
        return target

    # -- Rego --------------------------------------------------------------

    def rego_version_of(self, module: str) -> int:
        """The Rego version OPA parses ``module`` with (0 or 1)."""
        return bf.rego_version_of(
            module, self.manifest.rego_version, self.manifest.file_rego_versions
        )

    def _packages(self) -> dict[str, tuple[str, ...]]:
        from policysupply._internal.rego import package_path

        return {name: package_path(src, entry=name) for name, src in self.modules.items()}

    def check(self) -> None:
        """Parses and compiles every module with the embedded engine.

        Catches syntax errors, Rego v1 rule bodies without ``if``, calls to
        undefined functions and builtin arity mismatches, as ``opa check``
        does. Modules parsed as Rego v0 skip the v1 keyword check.

        Raises:
            BundleError: Naming the first broken module and line; the message
                lists every problem found.
        """
        from policysupply._internal.rego import compile_diagnostics

        v1 = frozenset(m for m in self.modules if self.rego_version_of(m) == 1)
        diags = compile_diagnostics(dict(self.modules), v1_modules=v1, packages=self._packages())
        if diags:
            first = diags[0]
            more = "".join(
                f"\n  {d.entry}{f':{d.line}' if d.line else ''}: {d.message}" for d in diags[1:]
            )
            suffix = f" ({len(diags) - 1} more problem(s):{more})" if more else ""
            raise BundleError(first.message + suffix, entry=first.entry, line=first.line)

    def evaluate(self, query: str, input: Any = None) -> Any:
        """Evaluates ``query`` in-process with the embedded Rego engine.

        Args:
            query: A Rego query, e.g. ``"data.k8s.admission.deny"``.
            input: The ``input`` document.

        Returns:
            The value of a single-expression query (sets come back as sorted
            lists, as OPA returns them in JSON); a dict of bindings when the
            query binds variables; ``None`` when the result is undefined.

        Raises:
            BundleError: The query or a module failed, or the bundle holds
                Rego v0 modules, whose semantics the embedded engine does not
                implement (load such bundles into OPA instead).
        """
        v0 = sorted(m for m in self.modules if self.rego_version_of(m) == 0)
        if v0:
            raise BundleError(
                "the embedded engine does not implement Rego v0 semantics (e.g. "
                "`deny[msg] { ... }` would evaluate as an object, not a set), so it "
                "will not answer for this bundle; evaluate it with OPA, or migrate the "
                "module to Rego v1 (`opa fmt --write --v0-v1`)",
                entry=v0[0],
            )
        from policysupply._internal.rego import Engine

        cache = self._cache
        with cache.lock:
            if cache.engine is None:
                cache.engine = Engine(dict(self.modules), dict(self.data))
            engine = cache.engine
        from policysupply._internal.rego import RESULT_VAR, wrap_single_expression

        wrapped = wrap_single_expression(query)
        results = engine.query(wrapped or query, input)
        if not results:
            return None
        first = results[0]
        bindings = first.get("bindings") or {}
        if wrapped is not None:
            return bindings.get(RESULT_VAR)
        if bindings:
            return bindings
        exprs = first.get("expressions", [])
        return exprs[0] if len(exprs) == 1 else exprs

    # -- display -----------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"Bundle(revision={self.manifest.revision!r}, roots={self.manifest.roots!r}, "
            f"modules={len(self.modules)}, files={len(self.files)})"
        )

    def _repr_html_(self) -> str:
        """A summary table for Jupyter."""
        e = html.escape
        rows = [
            ("Revision", e(self.manifest.revision or "(none)")),
            ("Roots", e(", ".join(repr(r) for r in self.manifest.effective_roots))),
            ("Rego version", e(str(self.manifest.rego_version or 1))),
            ("Digest", f"<code>{e(self.digest)}</code>"),
            ("Size", f"{len(self.to_bytes()):,} bytes"),
            (
                "Modules",
                "<br>".join(f"<code>{e(m)}</code>" for m in sorted(self.modules)) or "(none)",
            ),
            ("Top-level data", e(", ".join(sorted(self.data))) or "(none)"),
        ]
        if self.files:
            rows.append(("Other files", "<br>".join(e(f) for f in sorted(self.files))))
        body = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
            for k, v in rows
        )
        return f"<table><caption>OPA bundle</caption>{body}</table>"


def _decode_rego(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        from policysupply._internal.rego import line_of

        good = raw[: exc.start].decode("utf-8")
        raise BundleError(
            f"Rego module is not valid UTF-8 (byte {exc.start})",
            entry=name,
            line=line_of(good, len(good)),
        ) from None
