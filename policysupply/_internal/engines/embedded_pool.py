"""The embedded engine's worker processes: a pool of idle ones, and check()'s own.

See docs/adr/0012-embedded-engine-isolation.md.
"""

from __future__ import annotations

import threading

from policysupply._internal.engines._worker_client import WorkerDiedError, WorkerProcess

# Idle workers, reset and ready for the next preparation: starting a Python
# process with regopy costs ~100-400 ms, a reset well under 1 ms.
_POOL: list[WorkerProcess] = []


_POOL_LOCK = threading.Lock()


_POOL_SIZE = 2


def _take_worker() -> WorkerProcess:
    with _POOL_LOCK:
        while _POOL:
            worker = _POOL.pop()
            if worker.running:
                return worker
    return WorkerProcess()


def _give_back(worker: WorkerProcess, timeout: float | None) -> None:
    """Resets a worker into the pool, or kills it."""
    with worker.lock:
        if worker.running:
            try:
                ok = worker.request({"op": "reset"}, timeout=timeout).get("ok")
            except WorkerDiedError:
                ok = False
            if ok:
                with _POOL_LOCK:
                    if len(_POOL) < _POOL_SIZE:
                        _POOL.append(worker)
                        return
        worker.close()


# The worker used by check(): parses each module in a fresh interpreter.
_CHECK_WORKER: WorkerProcess | None = None


_CHECK_LOCK = threading.Lock()


def _check_worker() -> WorkerProcess:
    global _CHECK_WORKER
    with _CHECK_LOCK:
        if _CHECK_WORKER is None:
            _CHECK_WORKER = WorkerProcess()
        return _CHECK_WORKER
