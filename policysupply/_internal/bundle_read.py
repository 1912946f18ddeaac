"""Reading a bundle's parts: from a policy directory, or from tarball entries.

What :meth:`Bundle.from_directory <policysupply.bundle.Bundle.from_directory>`
and :meth:`Bundle.from_bytes <policysupply.bundle.Bundle.from_bytes>` parse,
before the bundle is built (and validated) from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from policysupply._internal import bundle_format as bf
from policysupply._internal.tarball import Limits
from policysupply._manifest import Manifest
from policysupply.errors import BundleError


@attrs.frozen(kw_only=True)
class Parts:
    """What was read: a bundle's manifest, modules, data and other files.

    Attributes:
        source: The entries as read, to be written again unchanged (set when
            they carry an OPA-native signature that covers them).
        sources: The data files as read (tarball entries only).
    """

    manifest: Manifest
    modules: dict[str, str]
    data: dict[str, Any]
    files: dict[str, bytes]
    source: dict[str, bytes] | None = None
    sources: tuple[bf.DataSource, ...] | None = None


def read_directory(
    path: str | os.PathLike[str],
    *,
    revision: str | None,
    roots: list[str] | tuple[str, ...] | None,
    metadata: Mapping[str, Any] | None,
    rego_version: int | None,
) -> Parts:
    """A policy directory's parts; see ``Bundle.from_directory``."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root} is not a directory")
    real_root = root.resolve()
    modules: dict[str, str] = {}
    data_files: dict[str, bytes] = {}
    read: dict[str, bytes] = {}
    manifest = Manifest()

    # Every directory and file is walked, hidden ones (``.git``, ``.x.rego``)
    # included, as ``opa build -b`` / ``opa check --bundle`` do: skipping them
    # would drop policy OPA enforces. A directory that cannot be listed is an
    # error, never silently left out.
    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename).relative_to(root).as_posix() if exc.filename else None
        raise BundleError(f"cannot read directory: {exc.strerror}", entry=where)

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root)
        for fname in sorted(filenames):
            rel = (rel_dir / fname).as_posix()
            is_manifest = rel == ".manifest"
            is_sig = rel == bf.SIGNATURES_FILE
            if not (is_manifest or is_sig):
                refuse_misread(rel, fname)
            if not (fname.endswith(".rego") or fname in bf.DATA_BASENAMES or is_manifest or is_sig):
                continue
            full = Path(dirpath) / fname
            if full.is_symlink() and not full.resolve().is_relative_to(real_root):
                raise BundleError("symlink points outside the policy directory", entry=rel)
            try:
                raw = full.read_bytes()
            except OSError as exc:
                raise BundleError(f"cannot read: {exc.strerror}", entry=rel) from None
            read[rel] = raw
            if is_sig:
                continue
            if is_manifest:
                manifest = Manifest.from_json(raw)
            elif fname.endswith(".rego"):
                modules[rel] = decode_rego(raw, rel)
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
    # A signature over the files as they are; an override changes the
    # manifest, so the signature would no longer match and is left out.
    sig = None if changes else read.get(bf.SIGNATURES_FILE)
    files = {bf.SIGNATURES_FILE: sig} if sig is not None else {}
    return Parts(
        manifest=manifest,
        modules=modules,
        data=data,
        files=files,
        source=read if sig is not None else None,
    )


def refuse_misread(rel: str, fname: str) -> None:
    """Refuses a file OPA would read as the manifest or signatures but we would not.

    OPA takes any file whose name ends in ``.manifest`` (or ``.manifest.pb``)
    as the bundle's manifest, and any ``.signatures.json`` as its signatures
    file, wherever it is in the tree. Only the top-level ``.manifest`` and
    ``.signatures.json`` are; anything else is refused rather than dropped.
    """
    if fname == bf.SIGNATURES_FILE:
        raise BundleError(
            "a .signatures.json below the bundle root: OPA would take it as the bundle's "
            "signatures file; move it to the top or remove it",
            entry=rel,
        )
    if fname.endswith((".manifest", ".manifest.pb")):
        raise BundleError(
            "OPA reads any file named *.manifest or *.manifest.pb as the bundle's manifest; "
            "only a top-level .manifest is supported: rename or remove this file",
            entry=rel,
        )


def parse_entries(entries: Mapping[str, bytes], limits: Limits) -> Parts:
    """The parts of a bundle's tarball entries; see ``Bundle.from_bytes``."""
    modules: dict[str, str] = {}
    merged: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    sources: list[bf.DataSource] = []
    manifest: Manifest | None = None
    # Data files are placed in a fixed order so that the error for a
    # conflict does not depend on the archive's member order.
    for name in sorted(entries):
        raw = entries[name]
        base = name.rsplit("/", 1)[-1]
        if base == bf.SIGNATURES_FILE and name != bf.SIGNATURES_FILE:
            refuse_misread(name, base)
        elif name.endswith("signatures.json"):
            files[name] = raw
        elif name.endswith(".manifest.pb"):
            raise BundleError(
                "protobuf manifests (.manifest.pb) are not supported; use a JSON .manifest",
                entry=name,
            )
        elif base == "patch.json":
            raise BundleError("delta bundles (patch.json) are not supported", entry=name)
        elif name.endswith(".rego"):
            modules[name] = decode_rego(raw, name)
        elif base in bf.DATA_BASENAMES:
            path = bf.data_path_of(name)
            if base == "data.json":
                value, source = bf.parse_json_source(raw, entry=name, path=path)
            else:
                value = bf.parse_data_file(name, raw, limits=limits)
                source = bf.DataSource(path, None, None)
            sources.append(source)
            bf.insert_data(merged, path, value, entry=name)
        elif name.endswith(".manifest"):
            if manifest is not None:
                raise BundleError("more than one manifest in bundle", entry=name)
            manifest = Manifest.from_json(raw, entry=name)
        else:
            files[name] = raw
    return Parts(
        manifest=manifest or Manifest(),
        modules=modules,
        data=merged,
        files=files,
        sources=tuple(sources),
    )


def decode_rego(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        from policysupply._internal.engines.rego_source import line_of

        good = raw[: exc.start].decode("utf-8")
        raise BundleError(
            f"Rego module is not valid UTF-8 (byte {exc.start})",
            entry=name,
            line=line_of(good, len(good)),
        ) from None
