"""Registry work in worker threads, shared fairly between registry hosts and requests.

A thread cannot be cancelled, and single-flight work outlives the request
that started it; so one request naming cold images on a slow registry (its
own) could hold every worker past its deadline and make every other cold
image in the cluster miss its own. Here no registry host and no request holds
more than ``share`` workers at once. Work beyond that waits, in arrival
order, and is dropped without starting once its requester's deadline has
passed (a denial: fail closed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import itertools
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from policysupply.errors import RegistryError

T = TypeVar("T")

_ids = itertools.count(1)


@attrs.frozen(kw_only=True)
class Budget:
    """Whose work this is and until when it is worth starting.

    Attributes:
        request: Identifies the request (its share of the workers is counted by it).
        deadline: The request's deadline, in the event loop's clock.
    """

    request: int
    deadline: float


#: The request the running task works for (tasks copy it when created, so
#: single-flight work counts for the request that started it).
CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "policysupply_admission_budget", default=None
)


def begin_request(deadline: float) -> contextvars.Token[Budget | None]:
    """Marks the current context as one request's, until ``deadline`` (loop time)."""
    return CURRENT.set(Budget(request=next(_ids), deadline=deadline))


class _Job:
    __slots__ = ("deadline", "fn", "future", "host", "request", "timer")

    def __init__(
        self,
        fn: Callable[[], Any],
        host: str | None,
        request: int | None,
        deadline: float,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.host = host
        self.request = request
        self.deadline = deadline
        self.future = future
        self.timer: asyncio.TimerHandle | None = None


class FairWorkers:
    """At most ``workers`` calls in threads; at most ``share`` per registry host and per request.

    Used from one event loop. Calls given no host (the rules) are counted in
    ``workers`` only. Queued work is held at most until its deadline.
    """

    def __init__(
        self,
        workers: int,
        share: int,
        *,
        default_deadline: float,
        on_dropped: Callable[[], None] | None = None,
    ) -> None:
        self.workers = workers
        self.share = max(1, min(share, workers))
        self._default_deadline = default_deadline
        self._on_dropped = on_dropped
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="admission-registry"
        )
        self._running = 0
        self._by_host: Counter[str] = Counter()
        self._by_request: Counter[int] = Counter()
        self._queue: deque[_Job] = deque()
        self._started: set[_Job] = set()
        self.dropped = 0

    @property
    def queued(self) -> int:
        """Calls waiting for a worker."""
        return len(self._queue)

    async def run(self, fn: Callable[[], T], *, host: str | None = None) -> T:
        """``fn()`` in a worker thread, once the shares allow it.

        Raises:
            RegistryError: The requester's deadline passed before a worker was free
                (``fn`` was not called).
        """
        loop = asyncio.get_running_loop()
        budget = CURRENT.get()
        deadline = budget.deadline if budget else loop.time() + self._default_deadline
        job = _Job(fn, host, budget.request if budget else None, deadline, loop.create_future())
        # After each finish every waiting call that the shares allow was started: one
        # allowed now overtakes only calls that still must wait.
        if self._may_start(job):
            self._start(job, loop)
        else:
            self._queue.append(job)
            job.timer = loop.call_at(deadline, self._expire, job)
        result: T = await job.future
        return result

    def _may_start(self, job: _Job) -> bool:
        if self._running >= self.workers:
            return False
        if job.host is None:
            return True
        if self._by_host[job.host] >= self.share:
            return False
        return job.request is None or self._by_request[job.request] < self.share

    def _start(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        if job.timer is not None:
            job.timer.cancel()
        self._running += 1
        self._started.add(job)
        if job.host is not None:
            self._by_host[job.host] += 1
            if job.request is not None:
                self._by_request[job.request] += 1
        done = loop.run_in_executor(self._pool, job.fn)
        done.add_done_callback(lambda f: self._finished(job, f, loop))

    def _finished(
        self, job: _Job, done: asyncio.Future[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._running -= 1
        self._started.discard(job)
        if job.host is not None:
            _decrement(self._by_host, job.host)
            if job.request is not None:
                _decrement(self._by_request, job.request)
        if done.cancelled():  # the pool shut down
            job.future.cancel()
        elif not job.future.done():  # else the caller gave up (cancelled)
            exc = done.exception()
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(done.result())
        else:
            done.exception()  # retrieved: nobody waits for it
        self._pump(loop)

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        """Starts waiting work, oldest first, that the shares now allow."""
        if not self._queue or self._running >= self.workers:
            return
        now = loop.time()
        kept: deque[_Job] = deque()
        while self._queue:
            job = self._queue.popleft()
            if job.future.done():  # its caller gave up
                if job.timer is not None:
                    job.timer.cancel()
                continue
            if job.deadline <= now:
                self._drop(job)
                continue
            if self._may_start(job):
                self._start(job, loop)
                if self._running >= self.workers:
                    break
            else:
                kept.append(job)
        kept.extend(self._queue)
        self._queue = kept

    def _expire(self, job: _Job) -> None:
        try:
            self._queue.remove(job)
        except ValueError:
            return
        self._drop(job)

    def _drop(self, job: _Job) -> None:
        if job.timer is not None:
            job.timer.cancel()
        self.dropped += 1
        if self._on_dropped is not None:
            self._on_dropped()
        if not job.future.done():
            where = f" for {job.host}" if job.host else ""
            job.future.set_exception(
                RegistryError(f"no worker free{where} before the deadline (not started)")
            )

    def close(self) -> None:
        """Stops the threads (running calls finish unawaited; queued ones never start)."""
        for job in (*self._queue, *self._started):
            if job.timer is not None:
                job.timer.cancel()
            if not job.future.done():
                job.future.cancel()
        self._queue.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _decrement(counts: Counter[Any], key: Any) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
