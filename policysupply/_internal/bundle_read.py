"""Reading a bundle's parts: from a policy directory, or from tarball entries.

What :meth:`Bundle.from_directory <policysupply.bundle.Bundle.from_directory>`
and :meth:`Bundle.from_bytes <policysupply.bundle.Bundle.from_bytes>` parse,
before the bundle is built (and validated) from it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

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
    # os.path.islink, like Go's os.Lstat, follows a link given with a
    # trailing slash: `opa build -b link/` reads through it, `-b link` not.
    if os.path.islink(path):
        raise BundleError(
            "the policy directory is a symlink: opa build -b and opa check --bundle read "
            "nothing through it (they do not follow it unless the path ends in '/'); "
            "give the directory it points to",
            entry=os.fspath(path),
        )
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root} is not a directory")
    modules: dict[str, str] = {}
    data_files: dict[str, bytes] = {}
    carried: dict[str, bytes] = {}  # Wasm modules and plans, as opa build carries them
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
        top = not rel_dir.parts
        for dname in dirnames:
            # os.walk lists a symlinked directory here but does not enter it.
            full = os.path.join(dirpath, dname)
            if os.path.islink(full) and holds_bundle_files(Path(full)):
                fix = "replace the link with the directory, or remove it"
                if dname == "..data":
                    # OPA reads such a volume through its timestamped directory
                    # only, its data at data["2026_..."]: nothing to match.
                    fix = (
                        "this looks like a Kubernetes ConfigMap or Secret volume, a tree of "
                        "symlinks: give the rules as a bundle file or a signed policy image"
                    )
                raise BundleError(
                    f"a symlinked directory holding policy or data files: {LEFT_OUT}; {fix}",
                    entry=(rel_dir / dname).as_posix(),
                )
        for fname in sorted(filenames):
            rel = (rel_dir / fname).as_posix()
            if top and fname[:1] == "." and fname[1:] in TRIMMED_SPECIAL:
                raise BundleError(
                    f"opa build -b . reads a top-level {fname} as the bundle's {fname[1:]} "
                    "(it trims the first dot off top-level names), opa build -b DIR leaves "
                    f"it out: rename it to {fname[1:]}, or remove it",
                    entry=rel,
                )
            if fname == PLAN_PROTO_FILE:
                refuse_proto_plan(rel)
            if fname == PATCH_FILE:
                raise BundleError(
                    "OPA reads a patch.json as a delta bundle's patch (and refuses it beside "
                    "policy or data); delta bundles are not supported: rename or remove it",
                    entry=rel,
                )
            if not is_bundle_file(fname):
                continue
            full = os.path.join(dirpath, fname)
            refuse_irregular(full, rel)
            is_manifest = rel == ".manifest"
            is_sig = rel == bf.SIGNATURES_FILE
            if not (is_manifest or is_sig):
                refuse_misread(rel, fname)
            # What is left (is_bundle_file, past the refusals): a module, a
            # data file, the manifest, the signatures, a Wasm module or plan.
            verbatim = fname in VERBATIM_FILES
            try:
                with open(full, "rb") as f:
                    raw = f.read()
            except OSError as exc:
                raise BundleError(f"cannot read: {exc.strerror}", entry=rel) from None
            read[rel] = raw
            if verbatim:
                carried[rel] = raw
                continue
            if is_sig:
                continue
            if is_manifest:
                manifest = Manifest.from_json(raw)
            elif fname.endswith(".rego"):
                modules[rel] = decode_rego(raw, rel)
            else:
                data_files[rel] = raw
    refuse_duplicate_modules(modules)
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
    files.update(carried)
    return Parts(
        manifest=manifest,
        modules=modules,
        data=data,
        files=files,
        source=read if sig is not None else None,
    )


# OPA takes a patch.json at any depth as a delta bundle's patch (preProcessBundle).
PATCH_FILE = "patch.json"
# Files OPA's bundle reader keeps as they are, at any depth: Wasm modules and
# plans (v1/bundle/bundle.go); `opa build -b` carries them into the bundle.
VERBATIM_FILES = frozenset({bf.WASM_FILE, "plan.json"})
# A protobuf plan needs a protobuf manifest: `opa build` refuses it beside a
# JSON one, as we refuse protobuf manifests.
PLAN_PROTO_FILE = "plan.pb"


def refuse_proto_plan(rel: str) -> NoReturn:
    """Refuses a ``plan.pb``, which OPA reads only with a protobuf manifest."""
    raise BundleError(
        "protobuf plans (plan.pb) need a protobuf manifest, which is not supported "
        "(opa build refuses one beside a JSON .manifest): remove it",
        entry=rel,
    )


# Names OPA reads specially that a top-level dotted name turns into under
# `opa build -b .`, while `opa build -b DIR` leaves the dotted name out.
TRIMMED_SPECIAL = bf.DATA_BASENAMES | {PATCH_FILE}

# Why a symlink (or other non-regular file) in a policy directory is refused.
LEFT_OUT = (
    "opa build -b and opa check --bundle (without --follow-symlinks) leave every symlink "
    "out, so OPA would not enforce what it holds"
)

# Entries a directory scan may look at behind a symlinked directory before it
# gives up and refuses the link as if it held policy.
SCAN_LIMIT = 10_000


def is_bundle_file(fname: str) -> bool:
    """Whether a file of this name is read, or refused, by ``read_directory``."""
    return (
        fname.endswith((".rego", ".manifest", ".manifest.pb"))
        or fname in bf.DATA_BASENAMES
        or fname in (bf.SIGNATURES_FILE, PATCH_FILE, PLAN_PROTO_FILE)
        or fname in VERBATIM_FILES
    )


def refuse_irregular(full: str, rel: str) -> None:
    """Refuses a bundle file that OPA leaves out: a symlink, a FIFO, a device.

    OPA's directory walk (``filepath.Walk``, which uses ``lstat``) keeps only
    regular files; reading what it skips would build a different bundle, and
    skipping it silently would drop policy the tree shows (ADR 0023).
    """
    try:
        mode = os.lstat(full).st_mode
    except OSError as exc:
        raise BundleError(f"cannot read: {exc.strerror}", entry=rel) from None
    if stat.S_ISLNK(mode):
        raise BundleError(
            f"a symlink: {LEFT_OUT}; replace the link with the file, or remove it", entry=rel
        )
    if not stat.S_ISREG(mode):
        raise BundleError(
            "not a regular file: opa build -b and opa check --bundle leave it out; "
            "replace it with a file, or remove it",
            entry=rel,
        )


def holds_bundle_files(top: Path) -> bool:
    """Whether a symlinked directory holds a file ``read_directory`` would read.

    Links below it are followed (each directory visited once), as a reader of
    the tree would see them. True too when that cannot be told: a directory
    that cannot be listed, or more than :data:`SCAN_LIMIT` entries.
    """
    seen: set[tuple[int, int]] = set()
    pending = [top]
    looked = 0
    try:
        while pending:
            here = pending.pop()
            st = here.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(here) as entries:
                for entry in entries:
                    looked += 1
                    if looked > SCAN_LIMIT:
                        return True
                    if entry.is_dir():
                        pending.append(Path(entry.path))
                    elif is_bundle_file(entry.name):
                        return True
    except OSError:
        return True
    return False


def refuse_duplicate_modules(modules: Mapping[str, str]) -> None:
    """Refuses two modules that ``opa build -b .`` takes for one.

    Under the root ``.``, OPA's ``formatPath`` (``v1/bundle/file.go``) trims
    the root as a string prefix, so the first dot of a top-level name goes:
    ``.h/x.rego`` and ``h/x.rego`` both become ``h/x.rego``, and ``compile``
    (``v1/compile/compile.go``) refuses the bundle ("duplicate module URL").
    """
    for rel in modules:
        if rel.startswith(".") and not rel.startswith("..") and rel[1:] in modules:
            raise BundleError(
                f"duplicate module: {rel} and {rel[1:]} are one module to opa build -b . "
                "(it trims the first dot off top-level names, and refuses the bundle); "
                "rename one of them",
                entry=rel[1:],
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
        elif base == PATCH_FILE:
            raise BundleError("delta bundles (patch.json) are not supported", entry=name)
        elif base == PLAN_PROTO_FILE:
            refuse_proto_plan(name)
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
