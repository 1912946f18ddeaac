"""The bundle directory the ``opa`` binary reads, and its output mapped back.

Modules and data written as a bundle (entry names as file names where they
are plain paths, a ``.manifest`` with each module's Rego version) in a
private 0700 directory; OPA's JSON errors, locations and file names read
back as entry names. See docs/adr/0011-opa-engine.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from policysupply._internal.engines.base import (
    RegoVersions,
)
from policysupply.errors import BundleError

_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@=,-]*\Z")


def _file_name(entry: str, index: int) -> str:
    """The file a module is written to: its entry name when that is a plain path."""
    parts = PurePosixPath(entry).parts
    if (
        entry.endswith(".rego")
        and parts
        and not entry.startswith("/")
        and all(_SAFE_SEGMENT.match(p) for p in parts)
        and "/".join(parts) == entry
    ):
        return entry
    return f"__policysupply_module_{index}.rego"


class _BundleDir:
    """Modules and data written as a bundle directory that ``opa`` reads."""

    def __init__(
        self,
        root: Path,
        modules: Mapping[str, str],
        data_json: str,
        rego_versions: RegoVersions,
    ) -> None:
        self.root = root
        self.files: dict[str, str] = {}  # file name -> entry
        root.mkdir(parents=True, exist_ok=True)
        names = sorted(modules)
        versions = {name: rego_versions.get(name, 1) for name in names}
        for i, name in enumerate(names):
            if versions[name] not in (0, 1):
                raise BundleError("Rego version must be 0 or 1", entry=name)
            file = _file_name(name, i)
            self.files[file] = name
            path = root / file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(modules[name], encoding="utf-8")
        # Every module v0: OPA's --v0-compatible mode (the query is read as v0
        # too, as `opa eval --v0-compatible` reads it).
        self.v0 = bool(names) and all(v == 0 for v in versions.values())
        manifest: dict[str, Any] = {"rego_version": 0 if self.v0 else 1}
        other = 1 if self.v0 else 0
        per_file = {"/" + f: other for f, n in self.files.items() if versions[n] == other}
        if per_file:
            manifest["file_rego_versions"] = per_file
        (root / ".manifest").write_text(json.dumps(manifest))
        (root / "data.json").write_text(data_json, encoding="utf-8")

    def entry_of(self, file: str | None) -> str | None:
        """The entry a file named in OPA's output is, if it is one of ours."""
        if not file:
            return None
        prefix = str(self.root) + os.sep
        rel = file[len(prefix) :] if file.startswith(prefix) else file
        if rel == "data.json":
            return "data.json"
        if rel == ".manifest":
            return ".manifest"
        return self.files.get(rel)

    def clean(self, message: str) -> str:
        """``message`` with our temporary paths replaced by entry names."""
        prefix = str(self.root) + os.sep
        if prefix not in message:
            return message
        for file, entry in self.files.items():
            message = message.replace(prefix + file, entry)
        return message.replace(prefix, "")


_SHM = "/dev/shm"  # noqa: S108 - mkdtemp inside it, 0700


def _private_dir(size_hint: int = 0) -> Path:
    """A new 0700 directory for one bundle (and the server's socket).

    Without ``$TMPDIR``, Linux's ``/dev/shm`` (memory) when it has room:
    writing and removing a tree there costs a fraction of a disk's
    directory operations, which otherwise dominate a small ``check``.
    """
    base = tempfile.gettempdir()
    if not os.environ.get("TMPDIR") and os.path.isdir(_SHM) and os.access(_SHM, os.W_OK):
        try:
            st = os.statvfs(_SHM)
            if st.f_bavail * st.f_frsize > 4 * size_hint + (64 << 20):
                base = _SHM
        except OSError:
            pass
    # A Unix socket path must stay under ~100 bytes: prefer a short base.
    if len(base) > 60 and os.path.isdir("/tmp"):  # noqa: S108 - mkdtemp below, 0700
        base = "/tmp"  # noqa: S108
    path = Path(tempfile.mkdtemp(prefix="policysupply-opa-", dir=base))
    path.chmod(0o700)
    return path


def _data_json(data: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(data), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise BundleError(f"data is not JSON: {exc}", entry="data.json") from None


def _paths(node: Any) -> Any:
    """``node`` with every object kept (its keys) and every other value ``None``."""
    if isinstance(node, Mapping):
        return {k: _paths(v) for k, v in node.items()}
    return None


def _data_paths_json(data: Mapping[str, Any]) -> str:
    """The data's paths as JSON: objects with their keys, every other value ``null``.

    What ``opa check`` needs of the data: a rule conflicts with data when the
    rule's path exists in it, or runs through a value that is not an object
    (OPA's ``storage.NonEmpty``); values never matter.
    """
    try:
        return json.dumps(_paths(data), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise BundleError(f"data is not JSON: {exc}", entry="data.json") from None


def _digest(modules: Mapping[str, str], data_json: str, versions: RegoVersions) -> bytes:
    h = hashlib.sha256()
    for name in sorted(modules):
        for part in (name, str(versions.get(name, 1)), modules[name]):
            raw = part.encode("utf-8", "surrogatepass")
            h.update(len(raw).to_bytes(8, "big") + raw)
    h.update(data_json.encode("utf-8", "surrogatepass"))
    return h.digest()


def _size(modules: Mapping[str, str], data_json: str) -> int:
    return sum(len(s) for s in modules.values()) * 4 + len(data_json) * 4


def _opa_errors(proc: subprocess.CompletedProcess[bytes]) -> list[Mapping[str, Any]]:
    """OPA's ``--format json`` errors from either stream (empty if none could be read)."""
    for stream in (proc.stdout, proc.stderr):
        try:
            doc = json.loads(stream)
        except ValueError:
            continue
        if isinstance(doc, Mapping) and isinstance(doc.get("errors"), list):
            return [e for e in doc["errors"] if isinstance(e, Mapping)]
    return []


def _location(error: Mapping[str, Any]) -> tuple[str | None, int | None, int | None]:
    loc = error.get("location")
    if not isinstance(loc, Mapping):
        return None, None, None
    file = loc.get("file")
    row = loc.get("row")
    col = loc.get("col")
    return (
        str(file) if file else None,
        row if isinstance(row, int) else None,
        col if isinstance(col, int) else None,
    )


def _stderr_tail(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = (proc.stderr or proc.stdout or b"").decode("utf-8", "replace").strip()
    return text[-2000:] or f"exit status {proc.returncode}"
