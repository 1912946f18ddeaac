"""Pure OPA bundle rules: manifest parsing, data placement, roots.

Mirrors OPA's own bundle reader (see shared spec opa-bundle.md): data files
are placed by their directory, roots must not overlap, and every module and
data leaf must sit under a root.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from typing import Any

from policysupply.errors import BundleError

DATA_BASENAMES = frozenset({"data.json", "data.yaml", "data.yml"})


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes, *, entry: str) -> Any:
    """Parses strict JSON (no NaN/Infinity), naming ``entry`` and the line on failure."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"not valid UTF-8 at byte {exc.start}", entry=entry) from None
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"invalid JSON: {exc.msg}", entry=entry, line=exc.lineno, column=exc.colno
        ) from None
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"invalid JSON: {exc}", entry=entry) from None


def _yaml_loader() -> Any:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[valid-type,misc]
        """Safe loader that, like OPA's YAML-to-JSON path, keeps timestamps as strings."""

    Loader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
        for k, v in base.yaml_implicit_resolvers.items()
    }

    def mapping(loader: Any, node: Any) -> dict[str, Any]:
        # Keys become JSON strings as they are read, so that `1:` and `true:`
        # stay two keys (they are equal as Python dict keys).
        loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key is None or isinstance(key, (dict, list, bytes)):
                raise BundleError(f"YAML key {key!r} cannot be a JSON object key")
            out[("true" if key else "false") if isinstance(key, bool) else str(key)] = (
                loader.construct_object(value_node, deep=True)
            )
        return out

    Loader.add_constructor("tag:yaml.org,2002:map", mapping)
    return Loader


def _jsonify_yaml(value: Any, entry: str) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k is None or isinstance(k, (dict, list, bytes)):
                raise BundleError(f"YAML key {k!r} cannot be a JSON object key", entry=entry)
            key = ("true" if k else "false") if isinstance(k, bool) else str(k)
            out[key] = _jsonify_yaml(v, entry)
        return out
    if isinstance(value, list):
        return [_jsonify_yaml(v, entry) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        raise BundleError("YAML value NaN/Infinity has no JSON form", entry=entry)
    if isinstance(value, bytes) or not isinstance(value, (str, int, float, bool, type(None))):
        raise BundleError(
            f"YAML value of type {type(value).__name__} has no JSON form", entry=entry
        )
    return value


def parse_yaml(raw: bytes, *, entry: str) -> Any:
    """Parses a YAML data file into JSON-compatible values (OPA's conversion rules)."""
    import yaml

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"not valid UTF-8 at byte {exc.start}", entry=entry) from None
    try:
        value = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except BundleError as exc:
        raise BundleError(exc.reason, entry=entry) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise BundleError(
            f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
            entry=entry,
            line=mark.line + 1 if mark else None,
        ) from None
    except RecursionError:
        raise BundleError("invalid YAML: nested too deeply", entry=entry) from None
    return _jsonify_yaml(value, entry)


def parse_data_file(name: str, raw: bytes) -> Any:
    """Parses a ``data.json`` / ``data.yaml`` / ``data.yml`` entry."""
    if name.rsplit("/", 1)[-1] == "data.json":
        return parse_json(raw, entry=name)
    return parse_yaml(raw, entry=name)


def data_path_of(name: str) -> tuple[str, ...]:
    """The data path a data file's directory maps to (``a/b/data.json`` → ``(a, b)``)."""
    directory = name.rsplit("/", 1)[0] if "/" in name else ""
    return tuple(p for p in directory.split("/") if p)


def insert_data(target: dict[str, Any], path: tuple[str, ...], value: Any, *, entry: str) -> None:
    """Deep-merges ``value`` at ``path`` into ``target``, refusing conflicting leaves."""
    if not path:
        if not isinstance(value, dict):
            raise BundleError("a data file at the bundle root must hold a JSON object", entry=entry)
        _merge(target, value, (), entry)
        return
    node = target
    for i, key in enumerate(path[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise BundleError(
                f"data path {'/'.join(path[: i + 1])} already holds a non-object value", entry=entry
            )
        node = child
    last = path[-1]
    if last in node:
        if isinstance(node[last], dict) and isinstance(value, dict):
            _merge(node[last], value, path, entry)
            return
        raise BundleError(f"data at {'/'.join(path)} is already set by another file", entry=entry)
    node[last] = value


def _merge(dst: dict[str, Any], src: Mapping[str, Any], at: tuple[str, ...], entry: str) -> None:
    for k, v in src.items():
        if k in dst:
            if isinstance(dst[k], dict) and isinstance(v, dict):
                _merge(dst[k], v, (*at, k), entry)
                continue
            if dst[k] == v:
                continue
            raise BundleError(
                f"data at {'/'.join((*at, k))} is already set by another file", entry=entry
            )
        dst[k] = v


def normalize_root(root: str) -> str:
    """Trims leading and trailing ``/`` from a root, as OPA does."""
    return root.strip("/")


def _segments(root: str) -> tuple[str, ...]:
    return tuple(root.split("/")) if root else ()


def _is_prefix(prefix: tuple[str, ...], path: tuple[str, ...]) -> bool:
    return path[: len(prefix)] == prefix


def check_roots_disjoint(roots: Iterable[str]) -> None:
    """Raises if two roots overlap (one is a segment-wise prefix of the other)."""
    segs = [(_segments(r), r) for r in roots]
    for i, (a, ra) in enumerate(segs):
        for b, rb in segs[i + 1 :]:
            if _is_prefix(a, b) or _is_prefix(b, a):
                raise BundleError(f"manifest roots {ra!r} and {rb!r} overlap", entry=".manifest")


def path_under_roots(path: tuple[str, ...], roots: Iterable[str]) -> bool:
    """Whether a data path lies under (or at) one of ``roots``."""
    return any(_is_prefix(_segments(r), path) for r in roots)


def check_data_in_roots(data: Mapping[str, Any], roots: tuple[str, ...]) -> None:
    """Raises if any data leaf lies outside every root (containers above roots are fine)."""
    root_segs = [_segments(r) for r in roots]
    if any(not s for s in root_segs):
        return

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if any(_is_prefix(s, path) for s in root_segs):
            return
        above_a_root = any(_is_prefix(path, s) for s in root_segs)
        if isinstance(node, Mapping) and above_a_root:
            for k, v in node.items():
                walk(v, (*path, k))
            return
        raise BundleError(
            f"manifest roots {list(roots)} do not permit data at path {'/'.join(path)}",
            entry=".manifest",
        )

    walk(data, ())


def rego_version_of(name: str, default: int | None, per_file: Mapping[str, int] | None) -> int:
    """The Rego version a module is parsed with: per-file glob, then manifest, then v1."""
    for pattern, version in sorted((per_file or {}).items()):
        if fnmatch.fnmatchcase("/" + name, "/" + pattern.lstrip("/")):
            return version
    return 1 if default is None else default
