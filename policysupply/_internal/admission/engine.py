"""Decisions for the admission service: scope, tag resolution, cached verification, rules.

Each image goes through:

1. the image reference as Kubernetes reads it (``nginx`` is
   ``docker.io/library/nginx:latest``) and the configured image patterns;
2. its digest: given, or the tag resolved (cached ``tag_ttl`` seconds; the
   digest is what is verified and, with mutation, what runs);
3. its verification: in-process cache, then Redis, then the registry
   (one fetch per subject shared by concurrent requests, at most
   ``registry_concurrency`` registry calls at once, in worker threads, and
   at most ``registry_share`` of them for one registry host or one request,
   so a slow registry cannot hold every worker; see workers.py);
4. the gate's rules on the result (compiled once; answers for the same
   input document are reused).

Every step is bounded by the request's deadline; a timeout, a registry
failure or broken rules is an answer ("could not decide"), which enforce
mode turns into a denial.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from policysupply._internal.admission import cache as vcache
from policysupply._internal.admission.config import AdmissionConfig
from policysupply._internal.admission.memo import SingleFlight as _SingleFlight
from policysupply._internal.admission.memo import TTLMap as _TTLMap
from policysupply._internal.admission.metrics import Metrics
from policysupply._internal.admission.workers import CURRENT, FairWorkers, begin_request
from policysupply._internal.oci import Reference
from policysupply.errors import PolicySupplyError, RegistryError
from policysupply.gate import Gate
from policysupply.registry import Registry

log = logging.getLogger("policysupply.admission")
T = TypeVar("T")

DOCKER_HUB = "docker.io"
_DOCKER_HUB_API = "registry-1.docker.io"


def normalize(image: str) -> Reference:
    """``image`` as the container runtime reads it (Docker Hub defaults applied).

    Raises:
        RegistryError: Not an image reference.
    """
    if len(image) > 4096 or not image.strip() or image != image.strip():
        raise RegistryError(f"invalid image reference {image[:80]!r}")
    first, _, rest = image.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        name = image if rest else f"library/{image}"
        ref = Reference.parse(name, default_host=DOCKER_HUB)
    else:
        ref = Reference.parse(image)
    if ref.host == DOCKER_HUB and "/" not in ref.repository:
        ref = attrs.evolve(ref, repository=f"library/{ref.repository}")
    if ref.tag is None and ref.digest is None:
        ref = attrs.evolve(ref, tag="latest")
    return ref


def remote_registry(config: AdmissionConfig, host: str) -> Registry:
    """The registry client for ``host``: timeouts and retries inside the request deadline."""
    from policysupply._internal.netconfig import RetryPolicy, Timeout

    d = config.deadline
    return Registry.remote(
        _DOCKER_HUB_API if host == DOCKER_HUB else host,
        insecure=host in config.insecure_registries,
        docker_config=config.docker_config,
        ca_file=config.registry_ca_file,
        timeout=Timeout(connect=min(2.0, d), read=d, write=d, pool=d),
        retry=RetryPolicy(
            deadline=d * 0.8, max_attempts=3, initial_backoff=0.05, max_refused_attempts=1
        ),
    )


@attrs.frozen(kw_only=True)
class ImageResult:
    """The answer for one image.

    Attributes:
        image: The image string as given.
        allowed: Whether the gate allowed it (``False`` also when undecided).
        reasons: Why not (rules that fired, or why no decision was made).
        reference: Pinned ``host/repository@digest``, when resolved.
        digest: The digest, when resolved.
        outcome: ``allow``, ``deny``, ``error`` (no decision: registry,
            deadline, rules), ``skipped`` (out of scope) or ``invalid``.
        cache: Where verification came from: ``local``, ``redis``, ``registry``.
        signers: Who signed it (key ids or identities), when verified.
    """

    image: str
    allowed: bool
    reasons: tuple[str, ...] = ()
    reference: str | None = None
    digest: str | None = None
    outcome: str
    cache: str | None = None
    signers: tuple[str, ...] = ()

    def evidence(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "outcome": self.outcome,
            "reference": self.reference,
            "signers": list(self.signers),
            "reasons": list(self.reasons),
            "cache": self.cache,
        }


class _Undecided(Exception):
    """No decision for an image (registry failure, rules failure)."""


class Engine:
    """Turns images plus context into :class:`ImageResult` values, with caches.

    One per service process. Sync library calls (registry, verification)
    run in a bounded thread pool; everything else runs on the event loop.
    """

    def __init__(
        self,
        config: AdmissionConfig,
        gate: Gate,
        *,
        metrics: Metrics,
        redis: vcache.RedisCache | None = None,
        registry_factory: Callable[[str], Registry] | None = None,
    ) -> None:
        self.config = config
        self.gate = gate
        self.metrics = metrics
        self.redis = redis
        self._registries: dict[str, Registry] = {}
        self._registry_factory = registry_factory or (lambda h: remote_registry(config, h))
        self.workers = FairWorkers(
            config.registry_concurrency,
            registry_share(config),
            default_deadline=config.deadline,
            on_dropped=metrics.registry_work_dropped.inc,
        )
        self.local = vcache.LocalCache(config.cache_entries)
        self._tags = _TTLMap(config.cache_entries)
        self._judged = _TTLMap(config.cache_entries)
        self._flight = _SingleFlight()
        self._set_gate_keys(gate)
        self._allowed_prefixes = _allowed_prefixes(config)

    def _set_gate_keys(self, gate: Gate) -> None:
        policy = gate.verifier.policy
        self._policy_hash = vcache.policy_hash(policy)
        self._root_version = vcache.trust_root_version(self.config.trusted_root)
        self._rules_digest = gate.rules.digest
        self._max_age = policy.max_signature_age
        self._witnessed = policy.insecure_witnessed_age
        self._threshold = policy.threshold

    def replace_gate(self, gate: Gate) -> None:
        """Uses new rules or a new trust policy from now on (cache keys follow).

        The old gate's rule engine is released when the last decision holding
        it finishes and it is garbage-collected (preparations are cached per
        bundle and may be shared, so they are not closed here).
        """
        self.gate = gate
        self._set_gate_keys(gate)
        self._judged.clear()

    # -- registries ------------------------------------------------------------------------

    def registry(self, host: str) -> Registry:
        reg = self._registries.get(host)
        if reg is None:
            reg = self._registries[host] = self._registry_factory(host)
        return reg

    async def _in_thread(self, fn: Callable[[], T], *, host: str | None = None) -> T:
        """``fn()`` in a worker thread; with ``host``, within its and this request's share."""
        return await self.workers.run(fn, host=host)

    # -- scope -----------------------------------------------------------------------------

    def image_in_scope(self, ref: Reference) -> bool:
        """Whether the image patterns select ``ref`` (``host/repository[:tag]``).

        Included when any reading of the name matches an include pattern (more
        checks is the safe side). Excluded only by what the runtime pulls: the
        tag of ``repo:tag@digest`` is ignored by the runtime (and need not
        exist), so it does not count; and a pattern's host part must match the
        host, so ``*.corp.example/*`` does not match ``evil.example/a.corp.example/x``.
        """
        tagged = str(attrs.evolve(ref, digest=None))
        names = {ref.name, tagged}
        if not any(fnmatch.fnmatchcase(n, p) for n in names for p in self.config.include_images):
            return False
        pulled = (ref.name,) if ref.digest else (ref.name, tagged)
        excluded = self.config.exclude_images
        return not any(_excludes(p, ref.host, n) for n in pulled for p in excluded)

    def _outside_allowed_registries(self, ref: Reference) -> str | None:
        """The default rules' ``allowed_registries`` refusal, decided before any registry I/O.

        An image the rules will refuse whatever its signatures must not cost
        registry calls: a tenant could otherwise name a slow registry of
        their own and hold every registry worker. Same test and message as
        ``allowed_registries`` in policysupply/rules/gate.rego.
        """
        prefixes = self._allowed_prefixes
        if prefixes is None:
            return None
        name = ref.name
        if any(name == p or name.startswith(p + "/") for p in prefixes):
            return None
        listed = ", ".join(self.config.settings["allowed_registries"])
        return f"allowed_registries: {name} is not from an allowed registry (allowed: {listed})"

    # -- steps -----------------------------------------------------------------------------

    async def _digest(self, ref: Reference) -> str:
        if ref.digest:
            return ref.digest
        key = str(ref)
        hit = self._tags.get(key)
        if hit is not None:
            self.metrics.cache_hits.labels(layer="tag").inc()
            return str(hit)

        async def resolve() -> str:
            reg = self.registry(ref.host)
            digest = await self._in_thread(lambda: reg.resolve(ref), host=ref.host)
            self._tags.put(key, digest, self.config.tag_ttl)
            return digest

        return await self._flight.do("tag:" + key, resolve)

    async def _verification(
        self, ref: Reference, digest: str, *, dry_run: bool
    ) -> tuple[Mapping[str, Any], str, str | None]:
        """(verification document, where it came from, cache key if it is cached)."""
        name = ref.name
        key = vcache.cache_key(
            name,
            digest,
            policy=self._policy_hash,
            root=self._root_version,
            attestations=self.gate.attestations,
        )
        entry = self.local.get(key)
        if entry is not None:
            self.metrics.cache_hits.labels(layer="local").inc()
            return entry.verification, "local", f"{key}:{entry.expires}"

        async def fetch() -> tuple[Mapping[str, Any], str, str | None]:
            if self.redis is not None:
                try:
                    shared = await self.redis.get(key)
                except vcache.CacheUnavailableError:
                    self.metrics.redis_errors.inc()
                    shared = None
                if shared is not None:
                    self.metrics.cache_hits.labels(layer="redis").inc()
                    self.local.put(key, shared)
                    return shared.verification, "redis", f"{key}:{shared.expires}"
            self.metrics.cache_misses.inc()
            pinned = Reference(host=ref.host, repository=ref.repository, digest=digest)
            reg = self.registry(ref.host)
            doc = await self._in_thread(lambda: self.gate._verification(reg, pinned), host=ref.host)
            if not doc.get("verified"):
                return doc, "registry", None
            fresh = vcache.Entry(
                verification=doc,
                expires=vcache.expiry(
                    doc,
                    ttl=self.config.cache_ttl,
                    max_age=self._max_age,
                    witnessed=self._witnessed,
                    threshold=self._threshold,
                ),
            )
            self.local.put(key, fresh)
            if self.redis is not None and not dry_run:
                try:
                    await self.redis.put(key, fresh)
                except vcache.CacheUnavailableError:
                    self.metrics.redis_errors.inc()
            return doc, "registry", f"{key}:{fresh.expires}"

        return await self._flight.do("verify:" + key, fetch)

    async def _judge(
        self,
        ref: Reference,
        digest: str,
        verification: Mapping[str, Any],
        cached_as: str | None,
        context: Mapping[str, Any],
    ) -> Any:
        """The gate's decision; answers for the same input are reused while it is cached."""
        given = attrs.evolve(ref, digest=ref.digest)
        jkey = None
        if cached_as is not None:
            text = json.dumps(
                [self._rules_digest, str(given), digest, cached_as, context],
                sort_keys=True,
                separators=(",", ":"),
            )
            jkey = hashlib.sha256(text.encode()).hexdigest()
            hit = self._judged.get(jkey)
            if hit is not None:
                return hit
        gate = self.gate
        try:
            # The engine is another process (OPA, or the embedded worker): off the loop.
            decision = await self._in_thread(
                lambda: gate._judge(given, ref.host, digest, verification, dict(context))
            )
        except PolicySupplyError as exc:
            raise _Undecided(f"rules failed: {exc}") from None
        if jkey is not None and gate is self.gate:
            ttl = float(cached_as.rsplit(":", 1)[1]) - time.time() if cached_as else 0.0
            if gate.rules_expire is not None:  # no verdict outlives the rules that gave it
                ttl = min(ttl, gate.rules_expire.timestamp() - time.time())
            self._judged.put(jkey, decision, min(ttl, self.config.cache_ttl))
        return decision

    async def decide(
        self, image: str, context: Mapping[str, Any], *, dry_run: bool = False
    ) -> ImageResult:
        """The result for one image; never raises for a bad image or a failing registry."""
        try:
            ref = normalize(image)
        except RegistryError as exc:
            return ImageResult(image=image, allowed=False, outcome="invalid", reasons=(str(exc),))
        if not self.image_in_scope(ref):
            return ImageResult(image=image, allowed=True, outcome="skipped")
        refused = self._outside_allowed_registries(ref)
        if refused is not None:
            return ImageResult(image=image, allowed=False, outcome="deny", reasons=(refused,))
        digest: str | None = None
        try:
            digest = await self._digest(ref)
            verification, source, cached_as = await self._verification(ref, digest, dry_run=dry_run)
            decision = await self._judge(ref, digest, verification, cached_as, context)
        except RegistryError as exc:
            self.metrics.registry_errors.inc()
            return ImageResult(
                image=image,
                allowed=False,
                outcome="error",
                digest=digest,
                reasons=(f"registry: {exc}",),
            )
        except _Undecided as exc:
            return _error_result(image, str(exc))
        signers = tuple(str(s) for s in verification.get("signers") or ())
        return ImageResult(
            image=image,
            allowed=decision.allowed,
            reasons=decision.reasons,
            reference=decision.reference,
            digest=digest,
            outcome="allow" if decision.allowed else "deny",
            cache=source,
            signers=signers,
        )

    async def decide_all(
        self,
        images: list[str],
        context: Callable[[int], Mapping[str, Any]],
        *,
        dry_run: bool,
        started: float | None = None,
    ) -> list[ImageResult]:
        """Results for ``images`` (decided concurrently), within the deadline.

        An image not decided by the deadline gets outcome ``error``.
        """
        loop = asyncio.get_running_loop()
        # The deadline counts from when the request arrived (scope lookups included).
        elapsed = loop.time() - started if started is not None else 0.0
        remaining = max(0.0, self.config.deadline - elapsed)
        # The tasks (and single-flight work they start) copy the request's budget.
        token = begin_request(loop.time() + remaining)
        try:
            tasks = [
                asyncio.ensure_future(self.decide(img, context(i), dry_run=dry_run))
                for i, img in enumerate(images)
            ]
        finally:
            CURRENT.reset(token)
        done, pending = await asyncio.wait(tasks, timeout=remaining)
        for t in pending:
            t.cancel()
        out = []
        for img, t in zip(images, tasks, strict=True):
            if t in done and not t.cancelled() and t.exception() is None:
                out.append(t.result())
            elif t in done and t.exception() is not None:
                exc = t.exception()
                log.error("decision failed", extra={"image": img, "error": repr(exc)})
                out.append(_error_result(img, f"internal error ({type(exc).__name__})"))
            else:
                self.metrics.deadline_exceeded.inc()
                out.append(
                    _error_result(img, f"no decision within the {self.config.deadline:g}s deadline")
                )
        return out

    def close(self) -> None:
        self.workers.close()


def registry_share(config: AdmissionConfig) -> int:
    """Most registry workers one registry host, or one request, may hold: half by default."""
    share = config.registry_share or config.registry_concurrency // 2
    return max(1, min(share, config.registry_concurrency))


def _allowed_prefixes(config: AdmissionConfig) -> tuple[str, ...] | None:
    """The default rules' ``allowed_registries`` prefixes, or ``None`` if they do not apply.

    One trailing ``/`` is trimmed, as the rules' ``trim_suffix`` does; ``None``
    when custom rules judge or no list is set.
    """
    if config.rules_directory or config.rules_bundle or config.rules_image:
        return None
    entries = config.settings.get("allowed_registries")
    if not isinstance(entries, (list, tuple)) or not entries:
        return None
    if not all(isinstance(e, str) for e in entries):
        return None  # the gate refuses such settings at start
    return tuple(e[:-1] if e.endswith("/") else e for e in entries)


def _excludes(pattern: str, host: str, name: str) -> bool:
    """Whether exclude ``pattern`` matches ``name`` (``host/...``), its host part on the host only.

    ``fnmatch``'s ``*`` also matches ``/``: without anchoring, a ``*`` in the
    pattern's host could swallow another registry's host and part of its path.
    """
    if "/" not in pattern:
        return fnmatch.fnmatchcase(name, pattern)
    host_pattern, path_pattern = pattern.split("/", 1)
    path = name[len(host) + 1 :] if name.startswith(host + "/") else None
    return (
        path is not None
        and fnmatch.fnmatchcase(host, host_pattern)
        and fnmatch.fnmatchcase(path, path_pattern)
    )


def _error_result(image: str, reason: str) -> ImageResult:
    """An image refused because no decision was made (``outcome="error"``)."""
    return ImageResult(image=image, allowed=False, outcome="error", reasons=(reason,))
