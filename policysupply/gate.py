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
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from policysupply._decision import Decision
from policysupply._internal import freeze, read_cache
from policysupply._internal.gate_input import failed_doc as _failed_doc
from policysupply._internal.gate_input import image_doc as _image_doc
from policysupply._internal.gate_input import plain as _plain
from policysupply._internal.gate_input import verified_doc as _verified_doc
from policysupply._internal.gate_rules import CompiledRules as _CompiledRules
from policysupply._internal.gate_rules import check_default_settings as _check_default_settings
from policysupply._internal.gate_rules import default_rules as _default_rules
from policysupply._internal.gate_rules import interpret as _interpret
from policysupply._internal.gate_rules import with_settings as _with_settings
from policysupply._internal.oci import Reference
from policysupply.bundle import Bundle
from policysupply.errors import BundleError, StaleSignatureError, VerificationError
from policysupply.registry import Registry
from policysupply.trust_state import TrustState
from policysupply.verifier import Verifier

if TYPE_CHECKING:
    from policysupply._internal.engines import EngineChoice

__all__ = ["DEFAULT_QUERY", "INPUT_SCHEMA", "Decision", "Gate"]

DEFAULT_QUERY = "data.policysupply.gate.decision"
"""The query the default rules answer: ``{"allow": bool, "deny": [{rule, message}]}``."""

INPUT_SCHEMA = "policysupply.gate/v1"
"""Value of ``input.schema``; changes only when the input layout does."""


def _dt_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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
        self._check_rules_fresh()
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

    def _check_rules_fresh(self) -> None:
        """Refuses to decide with rules past :attr:`rules_expire` (a frozen rules image)."""
        if self._rules_expire is not None and freeze.past(self._rules_expire, _dt_now()):
            raise StaleSignatureError(
                f"the gate's rules {self._rules_info['reference']} are too old to decide with "
                f"since {self._rules_expire.isoformat()} (the rules policy's "
                "max_signature_age); load fresh rules with Gate.from_registry, or suspect a "
                "freeze of the rules image"
            )

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
        """The rules' verdict on an image whose verification result is known (no I/O).

        Raises:
            StaleSignatureError: The rules are past :attr:`rules_expire`.
        """
        self._check_rules_fresh()  # also for the admission service, which calls this directly
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
