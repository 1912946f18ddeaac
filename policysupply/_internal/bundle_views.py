"""What is derived from a bundle and kept beside it: its cache, raw data documents, a summary.

Used by :class:`policysupply.bundle.Bundle`; none of it is part of the
bundle's identity.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from policysupply._internal import bundle_format as bf
from policysupply._manifest import dumps

if TYPE_CHECKING:
    from policysupply._internal.engines.base import Prepared, RegoEngine
    from policysupply._manifest import Manifest


class Cache:
    """Derived values computed once per Bundle (not part of its identity)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.bytes: bytes | None = None
        # Compiled preparations per engine (Bundle.prepare), closed with the bundle.
        self.prepared: dict[RegoEngine, Prepared] = {}
        # The data files as read (from_bytes), so loaders can send their bytes on.
        self.sources: tuple[bf.DataSource, ...] | None = None
        self.inexact = False  # data holds numbers a float cannot (bf.ExactFloat)
        # The data was parsed from JSON/YAML files (from_directory, from_bytes):
        # JSON by construction, so checks need not serialise it to find out.
        self.parsed_data = False
        # The entries to_bytes() writes. Set when reading a bundle that
        # carries an OPA-native signature: its signature covers the bytes as
        # read, and rewriting data or manifest in our canonical form could
        # break it. Otherwise computed once (and reused by sign()).
        self.source: dict[str, bytes] | None = None
        self.signed_source = False


def canonical_entries(
    manifest: Manifest,
    modules: Mapping[str, str],
    data: Mapping[str, Any],
    files: Mapping[str, bytes],
) -> dict[str, bytes]:
    """A bundle's tarball entries in our canonical serialisation; see ``Bundle.entries``."""
    out = dict(files)
    out[".manifest"] = dumps(manifest.to_json(), entry=".manifest")
    out["data.json"] = dumps(dict(data), entry="data.json")
    for name, source in modules.items():
        out[name] = source.encode("utf-8")
    return out


def raw_document(cache: Cache, data: Mapping[str, Any], root: tuple[str, ...]) -> bytes | None:
    """The data document at ``root`` as JSON; see ``Bundle._raw_document``."""
    raw = None if cache.sources is None else bf.raw_document(cache.sources, root)
    if raw is None and cache.inexact:
        node: Any = data
        for seg in root:
            if not isinstance(node, Mapping) or seg not in node:
                return None
            node = node[seg]
        return bf.exact_json(node).encode("utf-8")
    return raw


def summary_html(
    manifest: Manifest,
    *,
    digest: str,
    size: int,
    modules: Mapping[str, str],
    data: Mapping[str, Any],
    files: Mapping[str, bytes],
) -> str:
    """A summary table of a bundle for Jupyter."""
    import html

    e = html.escape
    rows = [
        ("Revision", e(manifest.revision or "(none)")),
        ("Roots", e(", ".join(repr(r) for r in manifest.effective_roots))),
        ("Rego version", e(str(manifest.rego_version or 1))),
        ("Digest", f"<code>{e(digest)}</code>"),
        ("Size", f"{size:,} bytes"),
        (
            "Modules",
            "<br>".join(f"<code>{e(m)}</code>" for m in sorted(modules)) or "(none)",
        ),
        ("Top-level data", e(", ".join(sorted(data))) or "(none)"),
    ]
    if files:
        rows.append(("Other files", "<br>".join(e(f) for f in sorted(files))))
    body = "".join(
        f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
        for k, v in rows
    )
    return f"<table><caption>OPA bundle</caption>{body}</table>"
