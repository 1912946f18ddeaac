"""YAML data files as OPA reads them: JSON-compatible values, bounded alias expansion.

Re-exported by ``bundle_format``.
"""

from __future__ import annotations

from typing import Any

from policysupply._internal.tarball import DEFAULT_LIMITS
from policysupply.errors import BundleError

_INF = float("inf")


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


# go-yaml's alias-expansion bounds (decode.go, allowedAliasRatio), which OPA's
# YAML loader inherits: small documents may draw up to 99% of their decoded
# nodes from alias expansion, very large ones 10%; past that the document is
# refused as "excessive aliasing" (a "billion laughs" bomb).
_ALIAS_RATIO_LOW = 400_000
_ALIAS_RATIO_HIGH = 4_000_000


def _allowed_alias_ratio(decoded: int) -> float:
    if decoded <= _ALIAS_RATIO_LOW:
        return 0.99
    if decoded >= _ALIAS_RATIO_HIGH:
        return 0.10
    span = _ALIAS_RATIO_HIGH - _ALIAS_RATIO_LOW
    return 0.99 - 0.89 * (decoded - _ALIAS_RATIO_LOW) / span


class _YamlBudget:
    """Counts what converting a YAML document to JSON expands to.

    PyYAML resolves an alias to the very object its anchor built, so the
    loaded value is a DAG whose JSON form can be exponentially larger than
    the file. Converting it copies every use; this stops the copy the moment
    it exceeds go-yaml's aliasing ratio (as OPA would refuse the file) or
    the JSON text it would serialise to grows past ``max_size`` bytes.
    """

    def __init__(self, entry: str, max_size: int) -> None:
        self.entry = entry
        self.max_size = max_size
        self.seen: set[int] = set()
        self.alias_depth = 0
        self.decoded = 1  # go-yaml counts the document node too
        self.aliased = 0
        self.size = 0

    def count(self, size: int) -> None:
        self.decoded += 1
        self.size += size
        if self.alias_depth:
            self.aliased += 1
        if (
            self.aliased > 100
            and self.decoded > 1000
            and self.aliased / self.decoded > _allowed_alias_ratio(self.decoded)
        ):
            raise BundleError(
                "YAML document contains excessive aliasing (anchors expand to "
                f"more than {self.decoded} values)",
                entry=self.entry,
            )
        if self.size > self.max_size:
            raise BundleError(
                f"YAML document expands to more than {self.max_size} bytes of JSON "
                "(through aliases); raise Limits.max_entry_size if it is genuine",
                entry=self.entry,
            )


def _jsonify_yaml(value: Any, budget: _YamlBudget) -> Any:
    entry = budget.entry
    if isinstance(value, (dict, list)):
        # A container met a second time is an alias use: go-yaml counts the
        # alias node itself, then everything under it as expansion.
        alias = id(value) in budget.seen
        if alias:
            budget.count(0)
        budget.seen.add(id(value))
        budget.alias_depth += alias
        try:
            if isinstance(value, list):
                budget.count(2)
                return [_jsonify_yaml(v, budget) for v in value]
            budget.count(2)
            out: dict[str, Any] = {}
            for k, v in value.items():
                if k is None or isinstance(k, (dict, list, bytes)):
                    raise BundleError(f"YAML key {k!r} cannot be a JSON object key", entry=entry)
                key = ("true" if k else "false") if isinstance(k, bool) else str(k)
                budget.count(len(key) + 4)
                out[key] = _jsonify_yaml(v, budget)
            return out
        finally:
            budget.alias_depth -= alias
    if isinstance(value, float) and (value != value or value in (_INF, -_INF)):
        raise BundleError("YAML value NaN/Infinity has no JSON form", entry=entry)
    if isinstance(value, bytes) or not isinstance(value, (str, int, float, bool, type(None))):
        raise BundleError(
            f"YAML value of type {type(value).__name__} has no JSON form", entry=entry
        )
    budget.count(len(value) + 3 if isinstance(value, str) else 8)
    return value


def parse_yaml(raw: bytes, *, entry: str, max_size: int = DEFAULT_LIMITS.max_entry_size) -> Any:
    """Parses a YAML data file into JSON-compatible values (OPA's conversion rules).

    Aliases are expanded within go-yaml's bounds (see :class:`_YamlBudget`),
    and the result must fit in ``max_size`` bytes of JSON.
    """
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
    try:
        return _jsonify_yaml(value, _YamlBudget(entry, max_size))
    except RecursionError:
        raise BundleError("invalid YAML: nested too deeply", entry=entry) from None
