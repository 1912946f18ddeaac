"""Pure helpers of the REST loader: data paths, module ids, roots, base documents.

Nothing here talks to OPA; every function is a plain computation over values
(OPA's answers included), unit-tested directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from policysupply.errors import LoadError
from policysupply.loaders._api import MISSING, DataPath

if TYPE_CHECKING:
    from policysupply.bundle import Bundle

RECORDS: DataPath = ("system", "policysupply", "bundles")  # where loads are recorded in OPA


def split_path(path: str) -> DataPath:
    p = path.strip().strip("/")
    if p.startswith("data."):
        p = p[5:]
    elif p == "data":
        p = ""
    sep = "/" if "/" in p else "."
    return tuple(s for s in p.split(sep) if s) if p else ()


def module_prefix(name: str) -> str:
    # "~" cannot occur in a registry reference, so no bundle's prefix is a
    # prefix of another's, whatever its module paths are.
    return f"policysupply/{name}/~/"


def record_key(name: str) -> str:
    return name.replace("/", "~")


def check_load_name(name: str) -> str:
    if not name or "~" in name or any(c.isspace() or ord(c) < 32 for c in name):
        raise LoadError(
            f"invalid load name {name!r}: use a reference name like host/repo "
            "(no '~', spaces or control characters)"
        )
    return name.strip("/")


def effective_roots(bundle: Bundle) -> tuple[DataPath, ...]:
    """Roots as data paths; a bundle that owns all of ``data`` gets its top-level keys.

    OPA's bundle plugin would wipe every other document for such a bundle; over
    the REST API we replace only the top-level documents the bundle writes (and,
    via the load record, those its previous revision wrote).
    """
    roots = bundle.manifest.effective_roots
    if "" not in roots:
        return tuple(tuple(r.split("/")) for r in roots)
    from policysupply._internal.engines.rego_source import package_path

    tops = set(bundle.data)
    for path, source in bundle.modules.items():
        pkg = package_path(source, entry=path)
        if pkg:
            tops.add(pkg[0])
    return tuple((t,) for t in sorted(tops))


def overlap(a: DataPath, b: DataPath) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def value_at(doc: Any, path: DataPath) -> Any:
    node = doc
    for seg in path:
        if not isinstance(node, Mapping) or seg not in node:
            return MISSING
        node = node[seg]
    return node


def virtual_paths(policies: list[Mapping[str, Any]]) -> list[DataPath]:
    """Data paths that rules define, from ``GET /v1/policies`` ASTs.

    Each is the package path plus the ground prefix of the rule's head
    reference (``q.r := 1`` in ``package a`` → ``a/q/r``; ``p[x] ...`` → ``a/p``).
    OPA refuses base data at or under such a path, so removing them from a
    ``GET /v1/data`` answer leaves the base documents.
    """
    out: set[DataPath] = set()
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


def base_only(merged: Any, root: DataPath, virtual: list[DataPath]) -> Any:
    """The base document at ``root`` from a merged (base + rules) ``GET /v1/data`` answer."""
    if merged is MISSING:
        return MISSING
    if any(root[: len(v)] == v for v in virtual):
        return MISSING  # a rule defines this path or one above it: no base data can live here
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
        return MISSING
    return doc


def check_overlaps(
    name: str, roots: tuple[DataPath, ...], records: Mapping[str, Any], where: str
) -> None:
    """Refuses roots that overlap another load's (as OPA refuses overlapping bundle roots).

    Raises:
        LoadError: A root overlaps one recorded for another load name.
    """
    key = record_key(name)
    for other_key, other in records.items():
        if other_key == key or not isinstance(other, dict):
            continue
        for r in roots:
            for o in other.get("roots") or []:
                if overlap(r, tuple(str(o).split("/")) if o else ()):
                    raise LoadError(
                        f"root {'/'.join(r)!r} of {name} overlaps root {o!r} of "
                        f"{other.get('name', other_key)}, already loaded in {where}; "
                        "nothing changed"
                    )


def check_roots(reference: object, roots: tuple[DataPath, ...]) -> None:
    """Refuses roots over the load records, before anything is sent.

    Raises:
        LoadError: A root overlaps ``data.system.policysupply.bundles``.
    """
    for r in roots:
        if overlap(r, RECORDS):
            raise LoadError(
                f"{reference}: root {'/'.join(r) or '(all of data)'!r} overlaps "
                f"data.{'.'.join(RECORDS)}, where loads are recorded; declare narrower "
                "roots in the bundle's .manifest"
            )
