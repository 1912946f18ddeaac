"""The admission service's request handling, as a bare ASGI application.

Endpoints: ``POST /validate`` and ``POST /mutate`` (AdmissionReview v1),
``POST /externaldata`` (Gatekeeper ProviderRequest), ``GET /healthz``,
``GET /readyz`` and ``GET /metrics``. See ADR 0018.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from policysupply import trust_state
from policysupply._internal.admission import answers
from policysupply._internal.admission import review as rv
from policysupply._internal.admission.asgi import HTTPError as _HTTPError
from policysupply._internal.admission.asgi import Receive, Scope, Send
from policysupply._internal.admission.asgi import read_body as _read_body
from policysupply._internal.admission.asgi import send_bytes as _send
from policysupply._internal.admission.asgi import send_json as _send_json
from policysupply._internal.admission.config import AdmissionConfig
from policysupply._internal.admission.engine import Engine
from policysupply._internal.admission.metrics import Metrics
from policysupply._internal.admission.namespaces import NamespaceLabels
from policysupply._internal.admission.rules import build_gate
from policysupply.gate import Gate
from policysupply.trust_state import TrustState

log = logging.getLogger("policysupply.admission")


_KIND_GROUPS = {
    "Pod": "",
    "ReplicationController": "",
    "Deployment": "apps",
    "ReplicaSet": "apps",
    "StatefulSet": "apps",
    "DaemonSet": "apps",
    "Job": "batch",
    "CronJob": "batch",
}
_MAX_WARNINGS = 20
_MAX_WARNING_CHARS = 250
_MAX_MESSAGE_CHARS = 4000
_MAX_KEYS = 1000


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Service:
    """The ASGI application: one per process, sharing one :class:`Engine`."""

    def __init__(
        self,
        config: AdmissionConfig,
        *,
        gate: Gate | None = None,
        registry_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self._registry_factory = registry_factory
        self._gate = gate
        self.engine: Engine | None = None
        self.namespaces = NamespaceLabels(
            config.kubernetes_api, timeout=min(2.0, config.deadline / 4)
        )
        self.ready = False
        self.draining = False
        self._tasks: list[asyncio.Task[Any]] = []
        # The rules refresh must never go back to a rule image it has itself
        # replaced: with no rules.state file, that holds for the process's run.
        self._rules_state = (
            TrustState(config.rules_state) if config.rules_state else trust_state.in_memory()
        )
        if gate is not None:
            self._start_engine(gate)

    def _start_engine(self, gate: Gate) -> None:
        redis = None
        if self.config.redis is not None:
            from policysupply._internal.admission.cache import RedisCache

            r = self.config.redis
            redis = RedisCache(
                r.url, hmac_key=r.hmac_key, timeout=r.timeout, retry_after=r.retry_after
            )
        self.engine = Engine(
            self.config,
            gate,
            metrics=self.metrics,
            redis=redis,
            registry_factory=self._registry_factory,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        """Builds the gate (in a thread: it may pull the rule image) and starts refreshes."""
        if self.ready:
            return
        if self.engine is None:
            from policysupply._internal.admission.engine import remote_registry

            config = self.config
            factory = self._registry_factory or (lambda h: remote_registry(config, h))
            loop = asyncio.get_running_loop()
            gate = await loop.run_in_executor(None, build_gate, config, factory, self._rules_state)
            self._start_engine(gate)
        if self.config.rules_image:
            self._tasks.append(asyncio.ensure_future(self._refresh_rules()))
        self.ready = True
        log.info("admission service ready", extra={"mode": self.config.mode})

    async def shutdown(self) -> None:
        """Stops refreshes, closes Redis and the worker threads."""
        self.ready = False
        self.draining = True
        for t in self._tasks:
            t.cancel()
        if self.engine is not None:
            if self.engine.redis is not None:
                await self.engine.redis.close()
            self.engine.close()
        await self.namespaces.close()

    async def _refresh_rules(self) -> None:
        """Follows the signed rule image: a new verified revision replaces the gate."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.rules_refresh)
            engine = self.engine
            if engine is None:
                continue
            try:
                gate = await loop.run_in_executor(
                    None, build_gate, self.config, engine.registry, self._rules_state
                )
            except Exception as exc:  # keep the last good rules
                self.metrics.rules_refresh.labels(result="error").inc()
                log.error(
                    "rules refresh failed; keeping the last good rules", extra={"error": str(exc)}
                )
                continue
            if gate.rules.digest != engine.gate.rules.digest:
                engine.replace_gate(gate)
                self.metrics.rules_refresh.labels(result="updated").inc()
                log.info("rules updated", extra={"rules": gate.rules.digest})
            else:
                self.metrics.rules_refresh.labels(result="unchanged").inc()

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        started = time.perf_counter()
        endpoint = path.strip("/") or "root"
        try:
            if path in ("/healthz", "/livez"):
                await _send(send, 200, b"ok", "text/plain")
                return
            if path == "/readyz":
                ok = self.ready and not self.draining
                await _send(send, 200 if ok else 503, b"ok" if ok else b"not ready", "text/plain")
                return
            if path == "/metrics":
                body, ctype = self.metrics.render()
                await _send(send, 200, body, ctype)
                return
            if path not in ("/validate", "/mutate", "/externaldata"):
                await _send_json(send, 404, {"error": f"no such endpoint {path[:100]}"})
                return
            if method != "POST":
                self.metrics.bad_requests.labels(endpoint=endpoint).inc()
                await _send_json(send, 405, {"error": "use POST"})
                return
            if not self.ready or self.engine is None:
                await _send_json(send, 503, {"error": "not ready"})
                return
            self.metrics.in_flight.inc()
            try:
                body = await self._body(scope, receive)
                if path == "/externaldata":
                    if scope.get("scheme") != "https" and not self.config.allow_http:
                        raise _HTTPError(403, "external data is served over HTTPS only")
                    status, doc = await self.external_data(body)
                else:
                    status, doc = await self.admission(
                        body, mutate=path == "/mutate", endpoint=endpoint
                    )
            except _HTTPError as exc:
                self.metrics.bad_requests.labels(endpoint=endpoint).inc()
                log.warning("bad request", extra={"endpoint": endpoint, "error": str(exc)})
                status, doc = exc.status, {"error": str(exc)}
            finally:
                self.metrics.in_flight.dec()
            await _send_json(send, status, doc)
        finally:
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - started)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        """The request body, which must arrive within the deadline.

        Raises:
            _HTTPError: 408 when it does not (a client trickling a body would
                otherwise hold a request and its connection forever), or the
                body's own errors (413, 400).
        """
        try:
            return await asyncio.wait_for(
                _read_body(scope, receive, self.config.max_request_bytes),
                timeout=self.config.deadline,
            )
        except asyncio.TimeoutError:
            raise _HTTPError(
                408, f"request body not received within {self.config.deadline:g}s"
            ) from None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("startup failed", extra={"error": str(exc)})
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- admission ------------------------------------------------------------------------------

    async def _in_scope(self, namespace: str) -> bool:
        if namespace and namespace in self.config.exclude_namespaces:
            return False
        selector = self.config.namespace_selector
        if selector is None or not namespace:
            return True
        labels = await self.namespaces.get(namespace)
        return True if labels is None else selector.matches(labels)

    async def admission(
        self, body: bytes, *, mutate: bool, endpoint: str
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, AdmissionReview response) for one request body."""
        assert self.engine is not None  # noqa: S101
        started = asyncio.get_running_loop().time()
        try:
            req = rv.parse_review(body)
        except rv.ReviewError as exc:
            raise _HTTPError(400, f"malformed AdmissionReview: {exc}") from None
        mode = self.config.mode
        base = {
            "uid": req.uid,
            "kind": req.kind,
            "namespace": req.namespace,
            "object_name": req.name,
            "operation": req.operation,
            "dry_run": req.dry_run,
            "endpoint": endpoint,
        }

        def answer(resp: dict[str, Any], allowed: bool) -> tuple[int, dict[str, Any]]:
            self.metrics.reviews.labels(
                endpoint=endpoint, mode=mode, allowed=str(allowed).lower()
            ).inc()
            return 200, resp

        if (
            req.operation not in ("CREATE", "UPDATE")
            or req.sub_resource not in rv.IMAGE_SUBRESOURCES
        ):
            return answer(rv.response(req.uid, allowed=True), True)
        if not await self._in_scope(req.namespace):
            log.info("namespace out of scope", extra=base)
            return answer(
                rv.response(req.uid, allowed=True, audit={"decision": "skipped-namespace"}), True
            )
        path = rv.pod_spec_path(req.kind)
        if path is None or _KIND_GROUPS.get(req.kind) != req.group:
            what = f"{req.group + '/' if req.group else ''}{req.kind or '(no kind)'}"
            return answer(
                *self._refuse(
                    req.uid,
                    f"kind {what} is not one policysupply "
                    "admission checks (Pod, Deployment, ReplicaSet, ReplicationController, "
                    "StatefulSet, DaemonSet, Job, CronJob); fix the webhook's rules",
                    unknown=True,
                    base=base,
                )
            )
        try:
            containers = list(rv.container_images(req.obj, path))
        except rv.ReviewError as exc:
            return answer(*self._refuse(req.uid, f"cannot read the {req.kind}: {exc}", base=base))
        if len(containers) > self.config.max_images:
            return answer(
                *self._refuse(
                    req.uid,
                    f"{len(containers)} containers is more than the limit of "
                    f"{self.config.max_images}",
                    base=base,
                )
            )
        if req.operation == "UPDATE":
            # Only what the update brings in is judged. Re-judging images the
            # stored object already has would refuse scale-downs (the
            # Deployment controller updates old ReplicaSets in full), finalizer
            # removal and label edits whenever such an image is denied today,
            # keeping it running; the pods it starts are CREATEs, judged anyway.
            before = answers.images_of(req.old_obj, path)
            containers = [c for c in containers if c.image not in before]
            if not containers:
                log.info("no new images", extra=base)
                return answer(
                    rv.response(req.uid, allowed=True, audit={"decision": "unchanged-images"}),
                    True,
                )
        unique = list(dict.fromkeys(c.image for c in containers))
        ctx = {
            "kubernetes": {"namespace": req.namespace, "kind": req.kind, "operation": req.operation}
        }
        results = await self.engine.decide_all(
            unique, lambda _i: ctx, dry_run=req.dry_run, started=started
        )
        by_image = dict(zip(unique, results, strict=True))
        for r in results:
            self.metrics.decisions.labels(
                endpoint=endpoint, outcome=r.outcome, reason=answers.reason_label(r)
            ).inc()
        denied = [r for r in results if not r.allowed]
        verdict = "deny" if denied else "allow"
        log.info(
            "admission review",
            extra={
                **base,
                "decision": verdict,
                "mode": mode,
                "images": [r.evidence() for r in results],
            },
        )
        audit = {
            "decision": verdict if mode == "enforce" or not denied else f"{verdict}-{mode}",
            "images": answers.evidence_annotation(results),
        }
        patch = None
        if mutate and self.config.mutate:
            patch = [
                {
                    "op": "replace",
                    "path": c.pointer,
                    "value": f"{c.image}@{by_image[c.image].digest}",
                }
                for c in containers
                if by_image[c.image].outcome == "allow"
                and by_image[c.image].digest
                and "@" not in c.image
            ] or None
        if denied and mode == "enforce":
            parts = []
            for r in denied:
                parts.append(
                    f'image "{r.image}" ({answers.where(containers, r.image)}): '
                    + "; ".join(r.reasons or ("denied",))
                )
            target = (
                f"{req.kind} {req.namespace + '/' if req.namespace else ''}{req.name or '(new)'}"
            )
            message = _clip(
                f"policysupply denied {target}: " + " | ".join(parts), _MAX_MESSAGE_CHARS
            )
            return answer(
                rv.response(req.uid, allowed=False, message=message, code=403, audit=audit), False
            )
        notes: list[str] = []
        if denied and mode == "warn":
            notes = [
                f'policysupply: image "{r.image}" would be denied: ' + "; ".join(r.reasons)
                for r in denied
            ]
        if patch is None:
            # Not pinned here: the tag may move to another digest between this
            # answer and the kubelet's pull (policy-controller refuses tags).
            notes += [
                f'policysupply: image "{r.image}" was verified as {r.digest} but is '
                "referenced by tag, which can be moved before it is pulled: reference "
                "it by digest, or enable mutation to pin it"
                for r in results
                if r.outcome == "allow" and r.digest and "@" not in r.image
            ]
        warnings = [_clip(n, _MAX_WARNING_CHARS) for n in notes[:_MAX_WARNINGS]] or None
        return answer(
            rv.response(req.uid, allowed=True, warnings=warnings, audit=audit, patch=patch), True
        )

    def _refuse(
        self, uid: str, message: str, *, base: Mapping[str, Any], unknown: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """A request we cannot judge: denied in enforce mode, else allowed with a warning."""
        log.warning("cannot judge request", extra={**base, "error": message})
        audit = {"decision": "unjudgeable", "error": _clip(message, answers.MAX_AUDIT_CHARS)}
        allow_anyway = self.config.mode != "enforce" or (
            unknown and self.config.unknown_kinds == "allow"
        )
        if allow_anyway:
            return rv.response(
                uid,
                allowed=True,
                warnings=[_clip("policysupply: " + message, _MAX_WARNING_CHARS)],
                audit=audit,
            ), True
        return rv.response(
            uid, allowed=False, message=f"policysupply: {message}", code=400, audit=audit
        ), False

    # -- Gatekeeper external data -----------------------------------------------------------------

    async def external_data(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, ProviderResponse) for a Gatekeeper ProviderRequest."""
        assert self.engine is not None  # noqa: S101
        try:
            doc = json.loads(body)
            keys = doc["request"]["keys"]
            if doc.get("kind") != "ProviderRequest":
                raise ValueError("kind must be ProviderRequest")
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise ValueError("request.keys must be a list of strings")
            if len(keys) > _MAX_KEYS:
                raise ValueError(f"more than {_MAX_KEYS} keys")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            self.metrics.bad_requests.labels(endpoint="externaldata").inc()
            return 400, answers.provider_response(
                [], system_error=f"malformed ProviderRequest: {exc}"
            )
        unique = list(dict.fromkeys(keys))
        ctx = {"gatekeeper": True}
        results = await self.engine.decide_all(unique, lambda _i: ctx, dry_run=False)
        items = []
        for r in results:
            self.metrics.decisions.labels(
                endpoint="externaldata", outcome=r.outcome, reason=answers.reason_label(r)
            ).inc()
            value = {
                "allowed": r.allowed,
                "outcome": r.outcome,
                "reference": r.reference,
                "digest": r.digest,
                "reasons": list(r.reasons),
                "signers": list(r.signers),
            }
            # A template that only counts errors must not admit a denied image.
            error = "" if r.allowed else _clip(f"{r.outcome}: " + "; ".join(r.reasons), 1000)
            items.append({"key": r.image, "value": value, "error": error})
        log.info(
            "external data",
            extra={"keys": len(keys), "denied": sum(not r.allowed for r in results)},
        )
        return 200, answers.provider_response(items)
