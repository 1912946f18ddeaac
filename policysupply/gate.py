"""The deployment gate: YES or NO for a container image, with the reasons.

A :class:`Gate` verifies an image's cosign signatures with a
:class:`~policysupply.verifier.Verifier`, turns the result (plus the image
reference and the caller's context) into a Rego ``input`` document, and asks
a rule bundle for the verdict. Verification failures are verdicts, not
exceptions: an unsigned image is a :class:`Decision` with ``allowed=False``
and the reason ``unsigned: no signature on ...``.

The rule bundle is policysupply's default (:meth:`Gate.default_rules`) or
your own; it may itself come from a signed policy image
(:meth:`Gate.from_registry`). Rules run in-process on the embedded Rego
engine, compiled once per gate. See docs/adr/0009-gate.md for the input
schema and the result contract.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import json
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from policysupply._internal import freeze, read_cache
from policysupply._internal.oci import Reference
from policysupply.bundle import Bundle
from policysupply.errors import (
    BundleError,
    CertificateError,
    DigestMismatchError,
    MissingAttestationError,
    NoSignatureError,
    RollbackError,
    StaleSignatureError,
    ThresholdNotMetError,
    TransparencyLogError,
    UntrustedSignatureError,
    VerificationError,
)
from policysupply.registry import Registry
from policysupply.trust_state import TrustState
from policysupply.verifier import (
    VerifiedArtifact,
    VerifiedAttestation,
    VerifiedSignature,
    Verifier,
)

if TYPE_CHECKING:
    from policysupply._internal.engines import EngineChoice

__all__ = ["DEFAULT_QUERY", "INPUT_SCHEMA", "Decision", "Gate"]

DEFAULT_QUERY = "data.policysupply.gate.decision"
"""The query the default rules answer: ``{"allow": bool, "deny": [{rule, message}]}``."""

INPUT_SCHEMA = "policysupply.gate/v1"
"""Value of ``input.schema``; changes only when the input layout does."""

_RULES_DIR = Path(__file__).resolve().parent / "rules"


def _dt_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


_ROOTS = ("policysupply/gate",)
_SETTINGS_PATH = ("policysupply", "gate", "settings")
_DEFAULT_SETTINGS = ("allowed_registries", "required_identities", "required_attestations")

# Most specific first: the first class an error is an instance of names it.
_ERROR_CODES: tuple[tuple[type[VerificationError], str], ...] = (
    # Before NoSignatureError, its base: signed, but a required attestation is absent.
    (MissingAttestationError, "missing_attestation"),
    (NoSignatureError, "no_signature"),
    # Includes IdentityMismatchError: a valid signature by nobody trusted.
    (UntrustedSignatureError, "untrusted_signature"),
    (ThresholdNotMetError, "threshold_not_met"),
    (StaleSignatureError, "stale_signature"),
    (CertificateError, "certificate"),
    (TransparencyLogError, "transparency_log"),
    (DigestMismatchError, "digest_mismatch"),
    (RollbackError, "rollback"),
    (VerificationError, "verification_failed"),
)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _freeze(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class Decision:
    """The gate's verdict on one image.

    Attributes:
        allowed: ``True`` only if verification passed (unless the gate was
            built with ``require_verification=False``) and the rules allowed.
        reasons: Why not, one line per violation, each starting with the rule
            that fired (``"allowed_registries: ..."``); empty when allowed.
        reference: The image that was judged, pinned to its digest.
        evidence: What was judged and how: ``input`` (the Rego input
            document), ``violations`` (``[{rule, message}]``), ``fired``
            (rule names), ``query``, ``result`` (the raw rule output) and
            ``rules`` (digest, revision and, when pulled from a registry,
            the verified reference of the rule bundle).
    """

    allowed: bool
    reasons: tuple[str, ...] = attrs.field(converter=_strings)
    reference: str
    evidence: Mapping[str, Any] = attrs.field(converter=_freeze)

    @property
    def fired(self) -> tuple[str, ...]:
        """Names of the rules that denied (empty when allowed)."""
        return tuple(self.evidence.get("fired", ()))

    @property
    def input(self) -> Mapping[str, Any]:
        """The Rego input document the rules judged."""
        value: Mapping[str, Any] = self.evidence.get("input", {})
        return value

    def to_json(self) -> dict[str, Any]:
        """The decision as a JSON-ready object (what ``policysupply gate --json`` prints)."""
        return {
            "allowed": self.allowed,
            "decision": "allow" if self.allowed else "deny",
            "reference": self.reference,
            "reasons": list(self.reasons),
            "evidence": _plain(self.evidence),
        }

    def __str__(self) -> str:
        head = f"{'ALLOW' if self.allowed else 'DENY'} {self.reference}"
        return "\n".join([head, *(f"  - {r}" for r in self.reasons)])

    def _repr_html_(self) -> str:
        """A verdict card for Jupyter: verdict, reasons, signers, and the input."""
        e = html.escape
        colour = "#1a7f37" if self.allowed else "#cf222e"
        verdict = "ALLOW" if self.allowed else "DENY"
        reasons = "".join(f"<li>{e(r)}</li>" for r in self.reasons) or "<li>(none)</li>"
        verification = self.input.get("verification", {})
        sigs = verification.get("signatures") or []
        rows = "".join(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>".format(
                e(str(s.get("key_id") or "")[:23]),
                e(str(s.get("scheme") or "")),
                e(_describe_identity(s.get("identity"))),
            )
            for s in sigs
        )
        status = (
            "verified"
            if verification.get("verified")
            else f"not verified ({e(str(verification.get('error')))})"
        )
        table = (
            "<table><tr><th>key</th><th>scheme</th><th>identity</th></tr>" + rows + "</table>"
            if rows
            else ""
        )
        doc = e(json.dumps(_plain(self.input), indent=2, sort_keys=True))
        return (
            f"<div><b style='color:{colour}'>{verdict}</b> <code>{e(self.reference)}</code>"
            f"<div>Signatures: {status}</div>{table}"
            f"<div>Reasons:</div><ul>{reasons}</ul>"
            f"<details><summary>Rego input</summary><pre>{doc}</pre></details></div>"
        )


def _describe_identity(identity: Any) -> str:
    if isinstance(identity, Mapping):
        return f"{identity.get('subject', '?')} ({identity.get('issuer', '?')})"
    return ""


def _plain(value: Any) -> Any:
    """A deep copy with mappings as dicts and tuples as lists (JSON-ready)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """Converts attrs instances and mappings from other modules to JSON values."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if attrs.has(type(value)):
        return {
            k: _jsonable(v)
            for k, v in attrs.asdict(value, recurse=False).items()
            if not k.startswith("_")
        }
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


# -- the Rego input document --------------------------------------------------------


def _identity_doc(sig: VerifiedSignature | None) -> dict[str, Any] | None:
    """The certificate identity of a keyless signature; ``None`` for a key."""
    subject, issuer = getattr(sig, "subject", None), getattr(sig, "issuer", None)
    if subject is None and issuer is None:
        return None
    matched: Any = getattr(sig, "identity", None)
    return {
        "issuer": issuer,
        "subject": subject,
        # Which trusted Identity of the TrustPolicy it matched.
        "matched": matched.describe() if hasattr(matched, "describe") else None,
    }


def _time(value: dt.datetime | None) -> str | None:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    return None


def _signature_doc(sig: VerifiedSignature) -> dict[str, Any]:
    # Read by attribute so fields the verifier gains later do not break the gate.
    return {
        "key_id": getattr(sig, "key_id", None),
        "scheme": getattr(sig, "scheme", None),
        "annotations": _jsonable(getattr(sig, "annotations", None) or {}),
        "identity": _identity_doc(sig),
        "signed_at": _time(getattr(sig, "signed_at", None)),
        "witnessed_at": _time(getattr(sig, "witnessed_at", None)),
        "log_index": getattr(sig, "log_index", None),
    }


def _attestation_doc(att: VerifiedAttestation) -> dict[str, Any]:
    signature = getattr(att, "signature", None)
    return {
        "predicate_type": getattr(att, "predicate_type", None),
        "predicate": _jsonable(getattr(att, "predicate", None)),
        "key_id": getattr(signature, "key_id", None),
        "identity": _identity_doc(signature),
    }


def _verified_doc(artifact: VerifiedArtifact) -> dict[str, Any]:
    return {
        "verified": True,
        "error": None,
        "message": "",
        "key_ids": list(artifact.key_ids),
        "signers": list(getattr(artifact, "signers", artifact.key_ids)),
        "signatures": [_signature_doc(s) for s in artifact.signatures],
        "attestations": [_attestation_doc(a) for a in getattr(artifact, "attestations", ())],
    }


def _failed_doc(exc: VerificationError) -> dict[str, Any]:
    code = next(c for cls, c in _ERROR_CODES if isinstance(exc, cls))
    return {
        "verified": False,
        "error": code,
        "error_type": type(exc).__name__,
        "message": str(exc),
        "key_ids": [],
        "signers": [],
        "signatures": [],
        "attestations": [],
    }


def _image_doc(given: Reference, host: str, digest: str) -> dict[str, Any]:
    name = f"{host}/{given.repository}" if host else given.repository
    shown = Reference(host=host, repository=given.repository, tag=given.tag, digest=given.digest)
    return {
        "reference": str(shown),
        "registry": host,
        "repository": given.repository,
        "name": name,
        "tag": given.tag,
        "digest": digest,
    }


# -- settings -------------------------------------------------------------------


def _identity_setting(value: Any) -> dict[str, str]:
    item = _jsonable(value)
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


def _check_default_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Validates settings for the default rules: a typo must not disable a check."""
    unknown = sorted(set(settings) - set(_DEFAULT_SETTINGS))
    if unknown:
        raise BundleError(
            f"unknown gate setting(s) {unknown}; the default rules read {list(_DEFAULT_SETTINGS)}"
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


def _with_settings(rules: Bundle, settings: Mapping[str, Any]) -> Bundle:
    data = json.loads(json.dumps(_plain(rules.data)))
    node = data
    for part in _SETTINGS_PATH:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node.update(settings)
    return attrs.evolve(rules, data=data)


@functools.lru_cache(maxsize=1)
def _default_rules() -> Bundle:
    from policysupply import __version__

    return Bundle.from_directory(
        _RULES_DIR, roots=list(_ROOTS), revision=f"policysupply-{__version__}"
    )


# -- compiled rules -------------------------------------------------------------------


class _CompiledRules:
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
        results = self._prepared.query(self._query, _plain(document))
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


def _interpret(result: Any, query: str) -> tuple[bool, list[dict[str, str]]]:
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


_BlobCache = read_cache.BlobCache


def _cached_reads(registry: Registry, cache: _BlobCache, resolved: str) -> Registry:
    """One decision's view of ``registry``: content-addressed reads served from ``cache``.

    See :class:`policysupply._internal.read_cache.CachedReads`.
    """
    return Registry(read_cache.CachedReads(registry, cache, resolved), host=registry.host)


# -- the gate ---------------------------------------------------------------------------


class Gate:
    """Decides whether a container image may be deployed.

    Example:
        >>> gate = Gate(Verifier(TrustPolicy(keys=["cosign.pub"])),   # doctest: +SKIP
        ...             settings={"allowed_registries": ["ghcr.io/acme"]})
        >>> d = gate.decide(Registry.remote("ghcr.io"), "ghcr.io/acme/app:1.4")  # doctest: +SKIP
        >>> d.allowed, d.reasons                                           # doctest: +SKIP
        (False, ('unsigned: no signature on ghcr.io/acme/app:1.4',))

    A gate is safe to share between threads; it keeps the compiled rules and
    a bounded cache of content-addressed signature material.
    """

    def __init__(
        self,
        verifier: Verifier,
        rules: Bundle | None = None,
        *,
        query: str = DEFAULT_QUERY,
        settings: Mapping[str, Any] | None = None,
        require_verification: bool = True,
        attestations: bool | None = None,
        engine: EngineChoice = None,
    ) -> None:
        """Builds a gate and compiles its rules; nothing is fetched until the first decision.

        Args:
            verifier: Checks image signatures against your trust policy.
            rules: The rule bundle; default :meth:`default_rules`. Custom rules
                answer ``query`` with an object ``{"allow": bool, "deny": set}``
                (either key may be missing), a deny set, or a boolean; deny
                entries are strings ``"rule: message"`` or objects
                ``{"rule", "message"}``.
            query: The Rego query the rules answer.
            settings: Overlaid on ``data.policysupply.gate.settings`` in the
                rules' data. The default rules read ``allowed_registries``
                (hosts or ``host/repository`` prefixes), ``required_identities``
                (``{issuer, subject | subject_regex}`` mappings or ``Identity``
                objects) and ``required_attestations`` (predicate types); they
                are validated, so a misspelt key is an error, not a disabled check.
            require_verification: Deny every image whose signatures did not
                verify, whatever the rules say (the default, fail closed).
                ``False`` leaves that to the rules (they see
                ``input.verification``).
            attestations: Verify the image's attestations and put them in
                ``input.verification.attestations``. ``None`` (default): when
                the default rules' ``required_attestations`` is set, or the
                trust policy requires attestations. Custom rules that read
                attestations need ``True`` (it costs one more registry read).
            engine: The Rego engine that decides: ``"opa"``, ``"embedded"``,
                ``"auto"`` (OPA when its binary is found) or an engine object;
                ``None``: ``POLICYSUPPLY_ENGINE``, else ``"auto"``. Every
                :class:`Decision` names it (``evidence["engine"]``).

        Raises:
            BundleError: Invalid settings, settings outside the rules' roots,
                rules that do not compile, or an engine that cannot answer
                for them exactly (``UnsupportedByEngineError``) or is missing
                (``EngineUnavailableError``).
        """
        self.verifier = verifier
        self.query = query
        self.require_verification = require_verification
        base = rules if rules is not None else _default_rules()
        clean: dict[str, Any] = {}
        if settings:
            clean = _check_default_settings(settings) if rules is None else _plain(settings)
            base = _with_settings(base, clean)
        if attestations is None and rules is None and clean.get("required_attestations"):
            attestations = True
        # None lets the verifier decide from its trust policy.
        self.attestations = attestations
        self.rules = base
        self._rules_info: dict[str, Any] = {
            "digest": base.digest,
            "revision": base.manifest.revision,
            "reference": None,
        }
        self._compiled = _CompiledRules(base, query, engine)
        self._cache = _BlobCache()
        self._rules_expire: dt.datetime | None = None

    @property
    def rules_expire(self) -> dt.datetime | None:
        """When rules loaded by :meth:`from_registry` become too old to decide with.

        Their signature's age (``VerifiedArtifact.age_from``) plus the rules
        policy's ``max_signature_age``; ``None`` without a limit (or for
        rules given directly). From then on :meth:`decide` raises
        ``StaleSignatureError``: load fresh rules.
        """
        return self._rules_expire

    @staticmethod
    def default_rules() -> Bundle:
        """The default rule bundle (``policysupply/rules``).

        Rules: ``unsigned``, ``untrusted_signer``, ``signature_threshold``,
        ``verification``, ``required_identities``, ``required_attestations``
        and ``allowed_registries``; each deny reason starts with its rule's name.
        """
        return _default_rules()

    @classmethod
    def from_registry(
        cls,
        registry: Registry,
        ref: str | Reference,
        verifier: Verifier,
        *,
        rules_verifier: Verifier | None = None,
        state: TrustState | None = None,
        query: str = DEFAULT_QUERY,
        settings: Mapping[str, Any] | None = None,
        require_verification: bool = True,
        attestations: bool | None = None,
        engine: EngineChoice = None,
    ) -> Gate:
        """A gate whose rules come from a signed policy image, verified before use.

        Args:
            registry: Where the rule bundle's image lives.
            ref: Its reference (a tag is resolved once, then used by digest).
            verifier: Checks the signatures of the images being gated.
            rules_verifier: Checks the rule bundle's signatures (default:
                ``verifier``); policy authors often hold other keys than
                image builders.
            state: Rollback protection for the rule bundle: refuse an older
                revision than the one last accepted (see ``TrustState``).
            query: As for :class:`Gate`.
            settings: As for :class:`Gate` (not validated: the rules are yours).
            require_verification: As for :class:`Gate`.
            attestations: As for :class:`Gate`.
            engine: As for :class:`Gate`.

        Raises:
            VerificationError: The rule bundle is not trusted (unlike image
                verification in :meth:`decide`, this is an error: there are
                no rules to decide with).
            RegistryError: The rule bundle cannot be fetched.
            BundleError: It is not a valid bundle.
        """
        checker = rules_verifier or verifier
        verified = checker.verify_bundle(registry, ref, state=state)
        gate = cls(
            verifier,
            verified.bundle,
            query=query,
            settings=settings,
            require_verification=require_verification,
            attestations=attestations,
            engine=engine,
        )
        gate._rules_info["reference"] = str(verified.reference)
        limit = checker.policy.max_signature_age
        if limit is not None:
            # Freeze protection for a long-lived gate: its rules age as a served bundle does.
            since = checker.policy.age_from(verified.artifact)
            gate._rules_expire = freeze.deadline(since, limit) or _dt_now()
        return gate

    def __repr__(self) -> str:
        return f"Gate(query={self.query!r}, rules={self.rules!r}, engine={self.engine!r})"

    @property
    def engine(self) -> str:
        """Name of the Rego engine that decides (``"opa"`` or ``"embedded"``)."""
        return self._compiled.engine_name

    def evaluate(self, input: Mapping[str, Any]) -> Any:
        """The rules' raw answer for an input document, without any registry.

        For testing rules against hand-written inputs (same engine and plan
        as :meth:`decide`).

        Raises:
            BundleError: The rules failed to compile or evaluate.
        """
        return self._compiled.evaluate(input)

    def decide(
        self,
        registry: Registry,
        image_ref: str | Reference,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Verifies ``image_ref``'s signatures and judges the result with the rules.

        The tag is resolved once; verification and the decision are about
        that digest. An unsigned, untrusted or otherwise unverifiable image
        is a denying :class:`Decision`, not an exception.

        Args:
            registry: Where the image lives.
            image_ref: ``[host/]repository[:tag][@digest]``.
            context: Anything your rules need (environment, namespace, ticket);
                it becomes ``input.context`` and must be JSON-serialisable.

        Returns:
            The decision, with the Rego input and fired rules as evidence.

        Raises:
            RegistryError: The image cannot be found or the registry cannot be
                read (an operational failure, not a verdict).
            BundleError: The rules do not compile, fail, or answer outside the
                result contract.
            TypeError: ``context`` is not JSON-serialisable.
            StaleSignatureError: The rules (from :meth:`from_registry`) are past
                :attr:`rules_expire`.
        """
        if self._rules_expire is not None and freeze.past(self._rules_expire, _dt_now()):
            raise StaleSignatureError(
                f"the gate's rules {self._rules_info['reference']} are too old to decide with "
                f"since {self._rules_expire.isoformat()} (the rules policy's "
                "max_signature_age); load fresh rules with Gate.from_registry, or suspect a "
                "freeze of the rules image"
            )
        given = Reference.parse(image_ref) if isinstance(image_ref, str) else image_ref
        digest = registry.resolve(given)
        host = registry.host or given.host
        pinned = Reference(host=host, repository=given.repository, digest=digest)
        ctx = dict(context or {})
        from policysupply._internal.engines.rego_source import check_value_nesting

        check_value_nesting(ctx, what="gate context")  # before json.dumps recurses
        try:
            json.dumps(ctx, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"gate context must be JSON-serialisable: {exc}") from None
        verification = self._verification(registry, pinned)
        return self._judge(given, host, digest, verification, ctx)

    def _verification(self, registry: Registry, pinned: Reference) -> dict[str, Any]:
        """``input.verification`` for a digest-pinned image (the registry part of a decision).

        The admission service calls this and :meth:`_judge` separately so that
        it can cache verified results between decisions.
        """
        try:
            artifact = self.verifier.verify(
                _cached_reads(registry, self._cache, str(pinned.digest)),
                pinned,
                attestations=self.attestations,
            )
            return _verified_doc(artifact)
        except VerificationError as exc:
            return _failed_doc(exc)

    def _judge(
        self,
        given: Reference,
        host: str,
        digest: str,
        verification: Mapping[str, Any],
        ctx: Mapping[str, Any],
    ) -> Decision:
        """The rules' verdict on an image whose verification result is known (no I/O)."""
        pinned = Reference(host=host, repository=given.repository, digest=digest)
        document = {
            "schema": INPUT_SCHEMA,
            "image": _image_doc(given, host, digest),
            "verification": verification,
            "context": ctx,
        }
        floor = self.require_verification and not verification["verified"]
        engine_error: dict[str, str] | None = None
        try:
            result = self._compiled.evaluate(document)
        except BundleError as exc:
            if not floor:
                raise
            # Denied whatever the rules say: an engine that cannot judge this
            # input (the embedded one refuses some strings) does not turn a
            # failed verification into an error.
            result = None
            engine_error = {"type": type(exc).__name__, "message": str(exc)}
        if engine_error is None:
            allowed, violations = _interpret(result, self.query)
        else:
            allowed, violations = False, []
        if floor:
            allowed = False
            if not violations:
                # Custom rules that ignore verification still get a reason.
                violations = [{"rule": "verification", "message": verification["message"]}]
        return Decision(
            allowed=allowed,
            reasons=tuple(f"{v['rule']}: {v['message']}" for v in violations),
            reference=str(pinned),
            evidence={
                "input": document,
                "violations": violations,
                "fired": sorted({v["rule"] for v in violations}),
                "query": self.query,
                "result": result,
                "rules": dict(self._rules_info),
                "engine": self._compiled.engine_name,
                **({"engine_error": engine_error} if engine_error else {}),
            },
        )
