"""Pure OPA bundle rules: manifest parsing, data placement, roots.

Mirrors OPA's own bundle reader (see shared spec opa-bundle.md): data files
are placed by their directory, roots must not overlap, and every module and
data leaf must sit under a root.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from policysupply._internal.go_compat import _no_constant
from policysupply._internal.tarball import DEFAULT_LIMITS, Limits
from policysupply._internal.yaml_data import parse_yaml as parse_yaml
from policysupply.errors import BundleError

# OPA-native signatures of a bundle: the top-level file of this name.
SIGNATURES_FILE = ".signatures.json"
DATA_BASENAMES = frozenset({"data.json", "data.yaml", "data.yml"})


class _NonFinite(ValueError):
    pass


class ExactFloat(float):
    """A JSON number a float cannot hold exactly, with its text (which OPA keeps).

    OPA reads numbers as arbitrary-precision text; ``1.00000000000000000001``
    is not ``1.0`` to it. Such numbers compare and compute as the nearest
    float here, and are written back out as their text (:func:`exact_json`).
    """

    text: str

    def __new__(cls, text: str) -> ExactFloat:
        value = super().__new__(cls, text)
        value.text = text
        return value


_STATE = threading.local()  # per thread: how many ExactFloats parsing made


def inexact_numbers_seen() -> int:
    """How many JSON numbers this thread has parsed that a float cannot hold exactly."""
    return int(getattr(_STATE, "inexact", 0))


def _inexact(text: str, value: float) -> bool:
    import decimal  # only for long literals: most data never needs it

    return decimal.Decimal(text) != decimal.Decimal(repr(value))


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise _NonFinite(text)
    # Up to 15 significant digits a double holds any decimal exactly enough to
    # give it back (DBL_DIG), and a float's text has a '.' or an exponent.
    if len(text) > 16 and _inexact(text, value):
        _STATE.inexact = inexact_numbers_seen() + 1
        return ExactFloat(text)
    return value


def exact_json(value: Any) -> str:
    """Compact JSON of ``value`` with each :class:`ExactFloat` written as its own text.

    Slower than ``json.dumps`` (containers are walked here); used only for
    documents that hold such numbers.

    Raises:
        ValueError: NaN or an infinity.
        TypeError: A value JSON has no form for.
    """
    if isinstance(value, dict):
        return (
            "{" + ",".join(json.dumps(str(k)) + ":" + exact_json(v) for k, v in value.items()) + "}"
        )
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(exact_json(v) for v in value) + "]"
    if isinstance(value, ExactFloat):
        return value.text
    return json.dumps(value, allow_nan=False)


_INF = float("inf")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Only a ``\uD8xx``-``\uDFxx`` escape can put a surrogate into parsed JSON text
# (raw UTF-8 cannot encode one), so most files skip the fix-up walk entirely.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _replace_lone_surrogates(value: Any) -> Any:
    r"""Replaces each lone surrogate in strings (keys too) with U+FFFD, as Go's JSON decoder does.

    Python's decoder keeps ``"\ud800"`` as a lone surrogate, which cannot be
    encoded as UTF-8 and so could never be written back out; OPA reads the
    same escape as U+FFFD. Valid pairs are already combined by the decoder,
    so any surrogate left is a lone one. Iterative: depth is bounded only by
    the decoder's recursion limit.
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if not isinstance(value, (dict, list)):
        return value
    root: list[Any] = [value]
    stack: list[tuple[list[Any] | dict[str, Any], Any]] = [(root, 0)]
    while stack:
        parent, key = stack.pop()
        node = parent[key]
        if isinstance(node, str):
            parent[key] = _SURROGATE.sub("\ufffd", node)
        elif isinstance(node, list):
            stack.extend((node, i) for i in range(len(node)))
        elif isinstance(node, dict):
            if any(_SURROGATE.search(k) for k in node):
                # Rebuilt in order, so a key that collides after replacement
                # keeps the last value, as Go's decoder does.
                fixed = {_SURROGATE.sub("\ufffd", k): v for k, v in node.items()}
                node.clear()
                node.update(fixed)
            stack.extend((node, k) for k in node)
    return root[0]


def parse_json(raw: bytes, *, entry: str) -> Any:
    r"""Parses strict JSON, naming ``entry`` and the line on failure.

    Kept in line with OPA's loader (Go's ``encoding/json``): ``NaN`` and
    ``Infinity`` are not JSON and are refused; a lone surrogate escape such as
    ``"\ud800"`` becomes U+FFFD. One deliberate difference: OPA keeps numbers
    as arbitrary-precision text, so it accepts ``1e999``; a Python float
    cannot hold it (it would become ``inf``, which has no JSON form and could
    never be written back out), so such a number is refused here.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"not valid UTF-8 at byte {exc.start}", entry=entry) from None
    return loads_json(text, raw, entry=entry, parse_float=_finite_float)


def loads_json(text: str, raw: bytes, *, entry: str, **hooks: Any) -> Any:
    r"""``json.loads`` of ``text`` (decoded from ``raw``) as OPA's loader reads JSON.

    ``NaN`` and ``Infinity`` are refused; a lone surrogate escape such as
    ``"\ud800"`` becomes U+FFFD. ``hooks`` are ``json.loads``' number hooks
    (``parse_float``, ``parse_int``); an exception they raise that is not a
    ``ValueError`` passes through.

    Raises:
        BundleError: Not JSON, naming ``entry`` (and the line where known).
    """
    try:
        value = json.loads(text, parse_constant=_no_constant, **hooks)
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"invalid JSON: {exc.msg}", entry=entry, line=exc.lineno, column=exc.colno
        ) from None
    except _NonFinite as exc:
        raise BundleError(
            f"number {str(exc)[:40]} is out of the range of a 64-bit float "
            "(it would be infinite, which has no JSON form)",
            entry=entry,
        ) from None
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"invalid JSON: {exc}", entry=entry) from None
    if _SURROGATE_ESCAPE.search(raw):
        value = _replace_lone_surrogates(value)
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
_WS = re.compile(r"[ \t\n\r]*")


class DataSource(NamedTuple):
    """A data file as it was read, so its documents can be sent on as the very same bytes.

    Attributes:
        path: The data path its directory maps to.
        text: The JSON text (``None`` for YAML, which is re-encoded as JSON).
        spans: For a top-level object: each member's value as ``(start, end)``
            in ``text`` (the last one for a repeated key, as both Python's
            and Go's decoders keep the last); ``None`` otherwise.
    """

    path: tuple[str, ...]
    text: str | None
    spans: Mapping[str, tuple[int, int]] | None


def _members(
    text: str, fix: bool = False
) -> tuple[dict[str, Any], dict[str, tuple[int, int]]] | None:
    """Decodes a top-level JSON object member by member, noting where each value lies.

    The same C decoder as ``json.loads`` does the work (``raw_decode`` on each
    value), so this costs one parse. ``None`` when the text is not a
    well-formed object; the caller then parses it the ordinary way, for the
    value or the error message. ``fix``: the text has lone surrogate escapes,
    replaced (keys as they are read, so a repeated key keeps its last value).
    """
    scanstring = json.decoder.scanstring  # type: ignore[attr-defined]
    value: dict[str, Any] = {}
    spans: dict[str, tuple[int, int]] = {}
    try:
        i = _WS.match(text, 0).end()  # type: ignore[union-attr]
        if text[i] != "{":
            return None
        i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
        if text[i] == "}":
            i += 1
        else:
            while True:
                if text[i] != '"':
                    return None
                key, i = scanstring(text, i + 1, True)
                if fix:
                    key = _SURROGATE.sub("\ufffd", key)  # as Go's decoder reads it
                i = _WS.match(text, i).end()  # type: ignore[union-attr]
                if text[i] != ":":
                    return None
                i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
                member, end = _DECODER.raw_decode(text, i)
                value[key] = _replace_lone_surrogates(member) if fix else member
                spans[key] = (i, end)
                i = _WS.match(text, end).end()  # type: ignore[union-attr]
                if text[i] == ",":
                    i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
                    continue
                if text[i] != "}":
                    return None
                i += 1
                break
    except (ValueError, IndexError, RecursionError):
        return None
    if _WS.match(text, i).end() != len(text):  # type: ignore[union-attr]
        return None
    return value, spans


def parse_json_source(raw: bytes, *, entry: str, path: tuple[str, ...]) -> tuple[Any, DataSource]:
    """:func:`parse_json`, also returning where the file's top-level documents lie in its text.

    Raises:
        BundleError: As :func:`parse_json`.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"not valid UTF-8 at byte {exc.start}", entry=entry) from None
    found = _members(text, fix=_SURROGATE_ESCAPE.search(raw) is not None)
    if found is None:
        # Not an object, or malformed (parse_json names the error): no spans.
        return parse_json(raw, entry=entry), DataSource(path, text, None)
    return found[0], DataSource(path, text, found[1])


def raw_document(sources: Iterable[DataSource], root: tuple[str, ...]) -> bytes | None:
    """The JSON document at ``root`` as the bundle's own bytes, or ``None`` if it has none.

    Built only from the data files' text: a file exactly at ``root``, one
    top-level member of a file just above it, or files below ``root`` (none
    inside another) nested in objects by their paths. ``None`` when the
    document comes from anywhere else (merged files, YAML, a member deeper
    in a file): then it must be encoded from the parsed value.
    """
    relevant = [
        s
        for s in sources
        if s.path[: len(root)] == root
        or (
            root[: len(s.path)] == s.path
            # a file above root whose members are known matters only if it has root's
            and (s.spans is None or len(s.path) == len(root) or root[len(s.path)] in s.spans)
        )
    ]
    if not relevant or any(s.text is None for s in relevant):
        return None
    if len(relevant) == 1:
        s = relevant[0]
        assert s.text is not None  # noqa: S101 - checked above
        if s.path == root:
            return s.text.encode("utf-8")
        if len(s.path) == len(root) - 1:
            span = (s.spans or {}).get(root[-1])
            return None if span is None else s.text[span[0] : span[1]].encode("utf-8")
        if len(s.path) < len(root):
            return None
    paths = [s.path for s in relevant]
    for s in relevant:
        if len(s.path) <= len(root):
            return None  # a file at or above root next to others: their data merges
        if any(p != s.path and p[: len(s.path)] == s.path for p in paths):
            return None  # a file inside another file's document: merged
    tree: dict[str, Any] = {}
    for s in relevant:
        node = tree
        rel = s.path[len(root) :]
        for seg in rel[:-1]:
            node = node.setdefault(seg, {})
        node[rel[-1]] = s.text
    return _compose(tree).encode("utf-8")


def _compose(node: dict[str, Any]) -> str:
    parts = []
    for key, value in node.items():
        inner = value if isinstance(value, str) else _compose(value)
        parts.append(json.dumps(key) + ":" + inner)
    return "{" + ",".join(parts) + "}"


def parse_data_file(name: str, raw: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Parses a ``data.json`` / ``data.yaml`` / ``data.yml`` entry.

    A YAML file's aliases may expand it to at most ``limits.max_entry_size``
    bytes of JSON: the bundle is written back out with its data as JSON, and
    must stay readable under the same limits.
    """
    if name.rsplit("/", 1)[-1] == "data.json":
        return parse_json(raw, entry=name)
    return parse_yaml(raw, entry=name, max_size=limits.max_entry_size)


def data_path_of(name: str) -> tuple[str, ...]:
    """The data path a data file's directory maps to (``a/b/data.json`` → ``(a, b)``).

    As OPA does (``getNormalizedPath`` in ``v1/bundle/bundle.go``), the leading
    ``/`` and ``.`` characters of the directory are stripped first, so
    ``.hidden/data.json`` → ``(hidden,)`` while ``a/.b/data.json`` → ``(a, .b)``.

    Raises:
        BundleError: The first directory's name consists only of dots
            (``.../data.json``): OPA would strip it away and place the data
            a level higher than the tree shows.
    """
    directory = name.rsplit("/", 1)[0] if "/" in name else ""
    parts = [p for p in directory.split("/") if p]
    if parts:
        first = parts[0].lstrip(".")
        if not first:
            raise BundleError(
                f"data directory name {parts[0]!r} is only dots: OPA would drop it from "
                "the data path and place this file's data a level higher; rename the directory",
                entry=name,
            )
        parts[0] = first
    return tuple(parts)


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


WASM_FILE = "policy.wasm"


def check_wasm_resolvers(
    resolvers: Iterable[Mapping[str, Any]], files: Iterable[str], roots: tuple[str, ...]
) -> None:
    """Raises where OPA refuses a manifest's ``wasm`` entrypoint mappings.

    Each must name a ``policy.wasm`` of the bundle (by its ``/``-rooted path),
    an entrypoint under the roots, and no entrypoint twice.
    """
    modules = {"/" + f.lstrip("/") for f in files if f.rsplit("/", 1)[-1] == WASM_FILE}
    seen: set[str] = set()
    for r in resolvers:
        module, entrypoint = r.get("module"), r.get("entrypoint")
        if not isinstance(module, str) or not isinstance(entrypoint, str):
            raise BundleError(
                "manifest wasm entries need a string entrypoint and module", entry=".manifest"
            )
        if module not in modules:
            raise BundleError(
                f"manifest references wasm module {module!r} but the module file does not exist",
                entry=".manifest",
            )
        if not path_under_roots(_segments(entrypoint), roots):
            raise BundleError(
                f"manifest roots {list(roots)} do not permit {entrypoint!r} entrypoint "
                f"for wasm module {module!r}",
                entry=".manifest",
            )
        if entrypoint in seen:
            raise BundleError(
                f"entrypoint {entrypoint!r} cannot be used by more than one wasm module",
                entry=".manifest",
            )
        seen.add(entrypoint)


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
