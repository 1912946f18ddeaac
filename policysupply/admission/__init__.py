"""The gate as a Kubernetes admission service (``policysupply admission serve``).

An ASGI application answering ``admission.k8s.io/v1`` AdmissionReview
requests (validate, and optionally mutate tags to verified digests) and
Gatekeeper external-data requests with the same :class:`~policysupply.Gate`,
behind a verification cache (in-process, or shared in Redis). Needs the
``admission`` extra: ``pip install 'policysupply[admission]'``.

Example:
    >>> from policysupply.admission import AdmissionConfig, create_app  # doctest: +SKIP
    >>> app = create_app(AdmissionConfig.from_file("admission.yaml"))   # doctest: +SKIP

See docs/howto/admission.md and ADRs 0018 and 0019.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from policysupply._internal.admission.config import AdmissionConfig, LabelSelector, RedisConfig
from policysupply.gate import Gate

__all__ = ["AdmissionConfig", "LabelSelector", "RedisConfig", "create_app", "serve"]


def create_app(config: AdmissionConfig, *, gate: Gate | None = None) -> Any:
    """The ASGI application for ``config``.

    Args:
        config: The service configuration.
        gate: A ready gate (its rules and trust policy); default: built from
            ``config`` at start-up (ASGI lifespan), pulling the rule image if
            one is configured.

    Returns:
        An ASGI 3 application (run it with any ASGI server; :func:`serve`
        uses uvicorn).
    """
    from policysupply._internal import extras

    extras.require("prometheus_client", "the admission service")
    from policysupply._internal.admission.service import Service

    return Service(config, gate=gate)


def serve(config: AdmissionConfig, *, ready: Callable[[int], None] | None = None) -> None:
    """Serves ``config`` with uvicorn until SIGTERM or SIGINT (graceful).

    Args:
        config: The service configuration (``server.*`` says where and how).
        ready: Called with the bound port once the server listens.

    Raises:
        AdmissionConfigError: No certificate and plain HTTP not allowed.
        PolicySupplyError: The trust policy or rules cannot be loaded.
    """
    from policysupply._internal import extras

    extras.require("uvicorn", "the admission service")
    import signal
    import threading

    from policysupply._internal.admission.server import serve_async

    app = create_app(config)
    if threading.current_thread() is threading.main_thread():
        # uvicorn drains on SIGTERM, then raises the signal again with the handler
        # it found: a no-op handler makes that a normal exit (status 0), not a kill.
        signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    asyncio.run(serve_async(app, config, ready=ready))
