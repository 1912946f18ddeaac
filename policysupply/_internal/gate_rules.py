"""The gate's rules: the default bundle, its settings, compiling and the result contract.

See docs/adr/0009-gate.md for the settings the default rules read and the
shapes a rule bundle may answer with.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from policysupply._internal.gate_input import jsonable, plain
from policysupply.bundle import Bundle
from policysupply.errors import BundleError

if TYPE_CHECKING:
    from policysupply._internal.engines import EngineChoice

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
ROOTS = ("policysupply/gate",)
SETTINGS_PATH = ("policysupply", "gate", "settings")
DEFAULT_SETTINGS = ("allowed_registries", "required_identities", "required_attestations")


# -- settings -------------------------------------------------------------------


def _identity_setting(value: Any) -> dict[str, str]:
    item = jsonable(value)
    if not isinstance(item, dict):
        raise BundleError(f"gate setting required_identities: {value!r} is not an identity")
    if item.get("extensions"):
        raise BundleError(
            "gate setting required_identities: certificate extension claims are checked "
            "by TrustPolicy(identities=...), not by the gate rules; drop extensions here"
        )
    fields = ("issuer", "issuer_regex", "subject", "subject_regex")
    out = {k: item[k] for k in fields if item.get(k) is not None}
    for name in ("issuer", "subject"):
        given = [k for k in (name, f"{name}_regex") if isinstance(out.get(k), str)]
        if len(given) != 1:
            raise BundleError(
                f"gate setting required_identities: each identity needs exactly one of "
                f"{name} / {name}_regex, got {value!r}"
            )
    return out


def check_default_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Validates settings for the default rules: a typo must not disable a check."""
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise BundleError(
            f"unknown gate setting(s) {unknown}; the default rules read {list(DEFAULT_SETTINGS)}"
        )
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise BundleError(f"gate setting {key} must be a list, got {type(value).__name__}")
        if key == "required_identities":
            out[key] = [_identity_setting(v) for v in value]
        else:
            if not all(isinstance(v, str) and v for v in value):
                raise BundleError(f"gate setting {key} must be a list of non-empty strings")
            out[key] = list(value)
    return out


def with_settings(rules: Bundle, settings: Mapping[str, Any]) -> Bundle:
    data = json.loads(json.dumps(plain(rules.data)))
    node = data
    for part in SETTINGS_PATH:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node.update(settings)
    return attrs.evolve(rules, data=data)


@functools.lru_cache(maxsize=1)
def default_rules() -> Bundle:
    from policysupply import __version__

    return Bundle.from_directory(
        RULES_DIR, roots=list(ROOTS), revision=f"policysupply-{__version__}"
    )


# -- compiled rules -------------------------------------------------------------------


class CompiledRules:
    """The rule bundle prepared once by the selected engine for one query.

    Preparation happens when the gate is built, so a rule that does not
    compile is a ``BundleError`` there; each decision is one query against
    the prepared rules (a managed OPA, or rego-cpp in a worker process: a
    crash in it is a ``BundleError``, never the death of this process).
    """

    def __init__(self, rules: Bundle, query: str, engine: EngineChoice) -> None:
        from policysupply._internal.engines import select_engine
        from policysupply._internal.engines.rego_source import wrap_single_expression

        if wrap_single_expression(query) is None:
            raise BundleError(
                f"gate query {query!r} must be a single expression (e.g. a rule reference)"
            )
        self._query = query
        self.engine = select_engine(engine)
        self._prepared = rules.prepare(self.engine)

    @property
    def engine_name(self) -> str:
        return self._prepared.engine

    def evaluate(self, document: Mapping[str, Any]) -> Any:
        """The query's value for ``document`` as input; ``None`` when undefined.

        Raises:
            BundleError: The rules failed to evaluate, or the engine cannot
                answer exactly (``UnsupportedByEngineError``).
        """
        from policysupply._internal.engines.rego_source import check_value_nesting

        # Deep nesting crashes rego-cpp (and json.dumps recurses): refuse it first.
        check_value_nesting(document, what="gate input")
        results = self._prepared.query(self._query, plain(document))
        if not results:
            return None
        expressions = results[0].get("expressions") or []
        if len(expressions) != 1 or not isinstance(expressions[0], Mapping):
            raise BundleError(f"gate query {self._query!r}: unexpected result shape")
        return expressions[0].get("value")


# -- the result contract ----------------------------------------------------------------


def _violation(item: Any) -> dict[str, str]:
    if isinstance(item, str):
        return {"rule": "deny", "message": item}
    if isinstance(item, Mapping):
        rule = item.get("rule")
        message = item.get("message", item.get("msg"))
        if isinstance(rule, str) and isinstance(message, str):
            return {"rule": rule, "message": message}
    return {"rule": "deny", "message": json.dumps(item, sort_keys=True)}


def interpret(result: Any, query: str) -> tuple[bool, list[dict[str, str]]]:
    """(allow, violations) from the rules' answer; see the ADR's result contract."""
    if result is None:
        return False, [{"rule": "default_deny", "message": f"{query} is undefined for this image"}]
    if isinstance(result, bool):
        allow, deny = result, []
    elif isinstance(result, list):
        allow, deny = True, result
    elif isinstance(result, dict) and ("allow" in result or "deny" in result):
        allow = result.get("allow", True)
        deny = result.get("deny", [])
        if not isinstance(allow, bool) or not isinstance(deny, list):
            raise BundleError(
                f"gate query {query!r}: allow must be a boolean and deny a set, got "
                f"{type(allow).__name__} and {type(deny).__name__}"
            )
    else:
        raise BundleError(
            f"gate query {query!r} must give a boolean, a deny set, or an object with "
            f"allow/deny; got {type(result).__name__}"
        )
    violations = sorted((_violation(d) for d in deny), key=lambda v: (v["rule"], v["message"]))
    if not allow and not violations:
        violations = [{"rule": "default_deny", "message": "the rules did not allow this image"}]
    return allow and not violations, violations
