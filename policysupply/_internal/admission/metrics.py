"""Prometheus metrics of the admission service (one registry per app)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound="MetricWrapperBase")


_PREFIX = "policysupply_admission_"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """The service's counters and histograms, in their own ``CollectorRegistry``."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = self._declare(
            Counter,
            "decisions",
            "Image decisions by endpoint, outcome and first rule that fired",
            ("endpoint", "outcome", "reason"),
        )
        self.reviews = self._declare(
            Counter,
            "reviews",
            "Admission reviews answered, by endpoint, mode and whether they were allowed",
            ("endpoint", "mode", "allowed"),
        )
        self.latency = self._declare(
            Histogram,
            "request_seconds",
            "Time to answer a request, by endpoint",
            ("endpoint",),
            buckets=_LATENCY_BUCKETS,
        )
        self.cache_hits = self._declare(
            Counter,
            "cache_hits",
            "Lookups answered from a cache, by layer (local, redis, tag)",
            ("layer",),
        )
        self.cache_misses = self._declare(
            Counter, "cache_misses", "Verifications that went to the registry"
        )
        self.registry_errors = self._declare(
            Counter, "registry_errors", "Images not decided because a registry failed"
        )
        self.redis_errors = self._declare(
            Counter,
            "redis_errors",
            "Shared-cache operations that failed (the image was verified instead)",
        )
        self.deadline_exceeded = self._declare(
            Counter, "deadline_exceeded", "Images not decided within the request deadline"
        )
        self.bad_requests = self._declare(
            Counter,
            "bad_requests",
            "Requests refused as malformed, too large or of the wrong method",
            ("endpoint",),
        )
        self.rules_refresh = self._declare(
            Counter,
            "rules_refresh",
            "Rule bundle refreshes from the signed policy image, by result",
            ("result",),
        )
        self.registry_work_dropped = self._declare(
            Counter,
            "registry_work_dropped",
            "Registry calls never started: their requester's deadline passed while they waited "
            "for a worker (the share of one registry host or one request was in use)",
        )
        self.in_flight = self._declare(Gauge, "in_flight", "Requests being answered")

    def _declare(
        self, kind: type[M], name: str, doc: str, labels: tuple[str, ...] = (), **options: Any
    ) -> M:
        """A ``policysupply_admission_<name>`` metric of ``kind`` in this registry."""
        return kind(_PREFIX + name, doc, labels, registry=self.registry, **options)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        data: Any = generate_latest(self.registry)
        return bytes(data), str(CONTENT_TYPE_LATEST)
