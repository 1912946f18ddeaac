"""Prometheus metrics of the admission service (one registry per app)."""

from __future__ import annotations

from typing import Any


class Metrics:
    """The service's counters and histograms, in their own ``CollectorRegistry``."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "policysupply_admission_decisions",
            "Image decisions by endpoint, outcome and first rule that fired",
            ["endpoint", "outcome", "reason"],
            registry=r,
        )
        self.reviews = Counter(
            "policysupply_admission_reviews",
            "Admission reviews answered, by endpoint, mode and whether they were allowed",
            ["endpoint", "mode", "allowed"],
            registry=r,
        )
        self.latency = Histogram(
            "policysupply_admission_request_seconds",
            "Time to answer a request, by endpoint",
            ["endpoint"],
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
            ),
            registry=r,
        )
        self.cache_hits = Counter(
            "policysupply_admission_cache_hits",
            "Lookups answered from a cache, by layer (local, redis, tag)",
            ["layer"],
            registry=r,
        )
        self.cache_misses = Counter(
            "policysupply_admission_cache_misses",
            "Verifications that went to the registry",
            registry=r,
        )
        self.registry_errors = Counter(
            "policysupply_admission_registry_errors",
            "Images not decided because a registry failed",
            registry=r,
        )
        self.redis_errors = Counter(
            "policysupply_admission_redis_errors",
            "Shared-cache operations that failed (the image was verified instead)",
            registry=r,
        )
        self.deadline_exceeded = Counter(
            "policysupply_admission_deadline_exceeded",
            "Images not decided within the request deadline",
            registry=r,
        )
        self.bad_requests = Counter(
            "policysupply_admission_bad_requests",
            "Requests refused as malformed, too large or of the wrong method",
            ["endpoint"],
            registry=r,
        )
        self.rules_refresh = Counter(
            "policysupply_admission_rules_refresh",
            "Rule bundle refreshes from the signed policy image, by result",
            ["result"],
            registry=r,
        )
        self.in_flight = Gauge(
            "policysupply_admission_in_flight", "Requests being answered", registry=r
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        data: Any = generate_latest(self.registry)
        return bytes(data), str(CONTENT_TYPE_LATEST)
