"""Small in-process caches of the admission service: one call per key, an expiring LRU."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class SingleFlight:
    """Concurrent callers for one key share one call (in the event loop).

    The call runs as its own task: a caller that gives up (its deadline)
    does not cancel the work the others wait for.
    """

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[Any]] = {}
        self.shared = 0

    async def do(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()``, or the result of the call for ``key`` already running."""
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(fn())
            self._running[key] = task

            def done(t: asyncio.Future[Any]) -> None:
                if self._running.get(key) is t:
                    del self._running[key]
                if not t.cancelled():
                    t.exception()  # retrieved, even when every caller gave up

            task.add_done_callback(done)
        else:
            self.shared += 1
        result: T = await asyncio.shield(task)
        return result


class TTLMap:
    """A small LRU with per-entry expiry (tags, judgements, namespace labels)."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> Any:
        """The live value for ``key``, or ``None``."""
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: str, value: Any, ttl: float) -> None:
        """Keeps ``value`` for ``ttl`` seconds (not at all when ``ttl`` <= 0)."""
        if ttl <= 0 or self._max <= 0:
            return
        self._items[key] = (time.monotonic() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def clear(self) -> None:
        """Forgets everything."""
        self._items.clear()
