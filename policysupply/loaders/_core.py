"""Pure helpers of the REST loader: data paths, module ids, roots, base documents."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from policysupply.errors import LoadError

if TYPE_CHECKING:
    from policysupply.bundle import Bundle


_MISSING = object()  # "no document here" (distinct from JSON null)
Path_ = tuple[str, ...]  # a data path, split into segments


def _split(path: str) -> Path_:
    p = path.strip().strip("/")
    if p.startswith("data."):
        p = p[5:]
    elif p == "data":
        p = ""
    sep = "/" if "/" in p else "."
    return tuple(s for s in p.split(sep) if s) if p else ()


def _url_path(path: Path_) -> str:
    return "/".join(urllib.parse.quote(s, safe="") for s in path)


def _module_prefix(name: str) -> str:
    # "~" cannot occur in a registry reference, so no bundle's prefix is a
    # prefix of another's, whatever its module paths are.
    return f"policysupply/{name}/~/"


def _record_key(name: str) -> str:
    return name.replace("/", "~")


def _check_load_name(name: str) -> str:
    if not name or "~" in name or any(c.isspace() or ord(c) < 32 for c in name):
        raise LoadError(
            f"invalid load name {name!r}: use a reference name like host/repo "
            "(no '~', spaces or control characters)"
        )
    return name.strip("/")


def _effective_roots(bundle: Bundle) -> tuple[Path_, ...]:
    """Roots as data paths; a bundle that owns all of ``data`` gets its top-level keys.

    OPA's bundle plugin would wipe every other document for such a bundle; over
    the REST API we replace only the top-level documents the bundle writes (and,
    via the load record, those its previous revision wrote).
    """
    roots = bundle.manifest.effective_roots
    if "" not in roots:
        return tuple(tuple(r.split("/")) for r in roots)
    from policysupply._internal.rego import package_path

    tops = set(bundle.data)
    for path, source in bundle.modules.items():
        pkg = package_path(source, entry=path)
        if pkg:
            tops.add(pkg[0])
    return tuple((t,) for t in sorted(tops))


def _overlap(a: Path_, b: Path_) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _value_at(doc: Any, path: Path_) -> Any:
    node = doc
    for seg in path:
        if not isinstance(node, Mapping) or seg not in node:
            return _MISSING
        node = node[seg]
    return node


def _virtual_paths(policies: list[Mapping[str, Any]]) -> list[Path_]:
    """Data paths that rules define, from ``GET /v1/policies`` ASTs.

    Each is the package path plus the ground prefix of the rule's head
    reference (``q.r := 1`` in ``package a`` → ``a/q/r``; ``p[x] ...`` → ``a/p``).
    OPA refuses base data at or under such a path, so removing them from a
    ``GET /v1/data`` answer leaves the base documents.
    """
    out: set[Path_] = set()
    for policy in policies:
        ast = policy.get("ast") or {}
        pkg_terms = (ast.get("package") or {}).get("path") or []
        pkg = tuple(str(t.get("value")) for t in pkg_terms[1:])
        for rule in ast.get("rules") or []:
            head = rule.get("head") or {}
            ref = head.get("ref") or [{"type": "var", "value": head.get("name")}]
            ground = [str(ref[0].get("value"))] if ref else []
            for term in ref[1:]:
                if term.get("type") != "string":
                    break
                ground.append(str(term.get("value")))
            if ground and ground[0] != "None":
                out.add(pkg + tuple(ground))
    return sorted(out)


def _base_only(merged: Any, root: Path_, virtual: list[Path_]) -> Any:
    """The base document at ``root`` from a merged (base + rules) ``GET /v1/data`` answer."""
    if merged is _MISSING:
        return _MISSING
    if any(root[: len(v)] == v for v in virtual):
        return _MISSING  # a rule defines this path or one above it: no base data can live here
    rels = [v[len(root) :] for v in virtual if v[: len(root)] == root]
    if not rels:
        return merged
    doc = json.loads(json.dumps(merged))  # a private copy to prune
    for rel in rels:
        trail: list[tuple[dict[str, Any], str]] = []
        node = doc
        for seg in rel:
            if not isinstance(node, dict) or seg not in node:
                trail = []
                break
            trail.append((node, seg))
            node = node[seg]
        if not trail:
            continue
        parent, key = trail.pop()
        del parent[key]
        # Package containers exist only because of the rules: drop those left empty.
        while trail and not parent:
            parent, key = trail.pop()
            if not parent[key]:
                del parent[key]
    if isinstance(doc, dict) and not doc and isinstance(merged, dict) and merged:
        return _MISSING
    return doc


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "<redacted>") if secret else text


_RECORDS: Path_ = ("system", "policysupply", "bundles")
