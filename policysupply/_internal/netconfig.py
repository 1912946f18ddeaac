"""Network settings as plain values (kept apart from the client so importing them is cheap)."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class Timeout:
    """Per-request timeouts, in seconds (as httpx defines them).

    Attributes:
        connect: Establishing a connection.
        read: Waiting for each chunk of a response.
        write: Sending each chunk of a request body.
        pool: Waiting for a free connection from the pool.
    """

    connect: float = 10.0
    read: float = 60.0
    write: float = 60.0
    pool: float = 10.0


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """The one retry policy for registry traffic.

    Only connection failures, timeouts and HTTP 429/502/503/504 are retried;
    ``Retry-After`` is honoured; every other error is raised at once. Each
    operation (one request, one blob transfer) stops at ``deadline``.

    Attributes:
        deadline: Seconds one operation may take, retries included.
        max_attempts: Upper bound on attempts per operation.
        initial_backoff: First back-off in seconds (exponential with jitter).
        max_backoff: Largest back-off between attempts, in seconds.
        max_refused_attempts: Attempts while the host refuses connections
            (nothing listening, or no such host): enough to ride out a
            restart, not minutes of waiting on a wrong address.
    """

    deadline: float = 120.0
    max_attempts: int = 10
    initial_backoff: float = 0.2
    max_backoff: float = 10.0
    max_refused_attempts: int = 3

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)
