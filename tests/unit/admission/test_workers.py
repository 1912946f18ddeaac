"""Fair sharing of the registry workers: hosts and requests get at most their share."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from policysupply._internal.admission.workers import CURRENT, FairWorkers, begin_request
from policysupply.errors import RegistryError


def _blocked(release: threading.Event, started: list[str], name: str) -> Callable[[], str]:
    def call() -> str:
        started.append(name)
        release.wait(5)
        return name

    return call


async def _started(started: list[str], n: int) -> None:
    """Waits until ``n`` calls have started in threads (then a moment for any extra one)."""
    for _ in range(500):
        if len(started) >= n:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)


def _as_request(deadline_in: float, coro_fn: Callable[[], object]) -> asyncio.Future[object]:
    """Runs ``coro_fn()`` as one request's task, its deadline ``deadline_in`` seconds away."""
    loop = asyncio.get_running_loop()
    token = begin_request(loop.time() + deadline_in)
    try:
        return asyncio.ensure_future(coro_fn())  # type: ignore[arg-type]
    finally:
        CURRENT.reset(token)


def test_a_slow_host_cannot_starve_a_fast_one() -> None:
    async def go() -> None:
        workers = FairWorkers(4, 2, default_deadline=5)
        release = threading.Event()
        started: list[str] = []
        try:
            # Separate requests: only the host's share holds them back.
            slow = [
                _as_request(
                    5, lambda i=i: workers.run(_blocked(release, started, f"s{i}"), host="slow")
                )
                for i in range(6)
            ]
            await _started(started, 2)
            assert sorted(started) == ["s0", "s1"]  # the host's share; the rest wait
            assert workers.queued == 4
            t0 = time.monotonic()
            fast = await _as_request(5, lambda: workers.run(lambda: "fast", host="fast"))
            assert fast == "fast"
            assert time.monotonic() - t0 < 1
            release.set()
            assert sorted(await asyncio.gather(*slow)) == [f"s{i}" for i in range(6)]
        finally:
            release.set()
            workers.close()

    asyncio.run(go())


def test_one_request_naming_many_hosts_gets_its_share_only() -> None:
    async def go() -> None:
        workers = FairWorkers(2, 1, default_deadline=5)
        release = threading.Event()
        started: list[str] = []

        async def flood() -> list[str]:
            return list(
                await asyncio.gather(
                    *(
                        workers.run(_blocked(release, started, f"h{i}"), host=f"h{i}.example")
                        for i in range(4)
                    )
                )
            )

        try:
            first = _as_request(5, flood)
            await _started(started, 1)
            assert started == ["h0"]
            other = await _as_request(5, lambda: workers.run(lambda: "ok", host="good.example"))
            assert other == "ok"
            release.set()
            assert sorted(await first) == ["h0", "h1", "h2", "h3"]  # type: ignore[arg-type]
        finally:
            release.set()
            workers.close()

    asyncio.run(go())


def test_a_queued_call_whose_deadline_passed_never_starts() -> None:
    async def go() -> None:
        dropped: list[int] = []
        workers = FairWorkers(1, 1, default_deadline=5, on_dropped=lambda: dropped.append(1))
        release = threading.Event()
        started: list[str] = []
        try:
            holder = _as_request(5, lambda: workers.run(_blocked(release, started, "a"), host="r"))
            await _started(started, 1)
            late = _as_request(0.1, lambda: workers.run(_blocked(release, started, "b"), host="r"))
            with pytest.raises(RegistryError, match="before the deadline"):
                await late
            assert dropped == [1]
            assert workers.dropped == 1
            assert workers.queued == 0
            release.set()
            assert await holder == "a"
            await asyncio.sleep(0.05)
            assert started == ["a"]  # "b" was never called
        finally:
            release.set()
            workers.close()

    asyncio.run(go())


def test_a_queued_call_whose_caller_gave_up_never_starts() -> None:
    async def go() -> None:
        workers = FairWorkers(1, 1, default_deadline=5)
        release = threading.Event()
        started: list[str] = []
        try:
            holder = _as_request(5, lambda: workers.run(_blocked(release, started, "a"), host="r"))
            await _started(started, 1)
            gone = _as_request(5, lambda: workers.run(_blocked(release, started, "b"), host="r"))
            await asyncio.sleep(0.05)
            gone.cancel()
            release.set()
            assert await holder == "a"
            after = await _as_request(5, lambda: workers.run(lambda: "c", host="r"))
            assert after == "c"
            assert started == ["a"]
            assert workers.queued == 0
        finally:
            release.set()
            workers.close()

    asyncio.run(go())


def test_rules_calls_are_not_held_to_a_host_share() -> None:
    async def go() -> None:
        workers = FairWorkers(3, 1, default_deadline=5)
        release = threading.Event()
        started: list[str] = []
        try:
            calls = [
                asyncio.ensure_future(workers.run(_blocked(release, started, f"j{i}")))
                for i in range(3)
            ]
            await _started(started, 3)
            assert sorted(started) == ["j0", "j1", "j2"]
            release.set()
            await asyncio.gather(*calls)
        finally:
            release.set()
            workers.close()

    asyncio.run(go())


def test_an_exception_in_the_call_reaches_the_caller_and_frees_the_worker() -> None:
    async def go() -> None:
        workers = FairWorkers(1, 1, default_deadline=5)

        def fail() -> None:
            raise RegistryError("boom")

        try:
            with pytest.raises(RegistryError, match="boom"):
                await workers.run(fail, host="r")
            assert await workers.run(lambda: 1, host="r") == 1
        finally:
            workers.close()

    asyncio.run(go())
