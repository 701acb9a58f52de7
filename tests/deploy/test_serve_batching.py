"""DynamicBatcher: order, batch limits, the wait, a bounded queue, timeouts and errors."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from ember.deploy.serve import BatcherClosedError, DynamicBatcher, QueueFullError


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def until(condition: Any, timeout: float = 10.0) -> None:
    """Yield to the loop until ``condition()`` holds (a condition, not a guess of how long it takes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def test_results_keep_order_and_batches_respect_max_batch() -> None:
    sizes: list[int] = []

    def fn(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        time.sleep(0.005)  # requests queue while the model is busy, as under load
        return [x * 10 for x in xs]

    async def main() -> list[int]:
        batcher = DynamicBatcher(fn, max_batch=8, max_wait_ms=5.0)
        try:
            return list(await asyncio.gather(*(batcher.submit(i) for i in range(50))))
        finally:
            await batcher.close()

    assert run(main()) == [i * 10 for i in range(50)]
    assert max(sizes) == 8 and sum(sizes) == 50
    assert len(sizes) <= 8  # batched, not one call per request


def test_request_sizes_count_items_and_batch_one_disables_batching() -> None:
    seen: list[list[int]] = []

    def fn(xs: list[int]) -> list[int]:
        seen.append(xs)
        return xs

    async def main(max_batch: int) -> None:
        batcher = DynamicBatcher(fn, max_batch=max_batch, max_wait_ms=2.0)
        try:
            await asyncio.gather(*(batcher.submit(3, size=3) for _ in range(4)))
        finally:
            await batcher.close()

    run(main(7))  # 3 + 3 fit, a third would not
    assert all(sum(b) <= 7 for b in seen) and sum(len(b) for b in seen) == 4
    seen.clear()
    run(main(1))  # a request larger than max_batch still runs, alone
    assert [len(b) for b in seen] == [1, 1, 1, 1]


def test_a_lone_request_waits_max_wait_then_runs() -> None:
    async def main(wait_ms: float) -> float:
        batcher = DynamicBatcher(lambda xs: xs, max_batch=64, max_wait_ms=wait_ms)
        try:
            await batcher.submit(0)  # starts the worker
            start = time.perf_counter()
            await batcher.submit(1)
            return time.perf_counter() - start
        finally:
            await batcher.close()

    waited = run(main(30.0))
    assert 0.025 <= waited < 0.5
    assert run(main(0.0)) < 0.025


def test_a_batch_goes_at_once_when_every_request_the_server_holds_is_in_it() -> None:
    batches: list[list[int]] = []

    def fn(xs: list[int]) -> list[int]:
        batches.append(list(xs))
        return xs

    async def served(batcher: DynamicBatcher, x: int, delay: float = 0.0) -> int:
        batcher.arrive()  # what the server does when a request comes in, before reading its body
        try:
            await asyncio.sleep(delay)  # the body still arriving
            return int(await batcher.submit(x))
        finally:
            batcher.depart()

    async def lone() -> int:
        batcher = DynamicBatcher(fn, max_batch=64, max_wait_ms=10_000.0)  # a wait no test survives
        try:  # concurrency 1: no wait at all, since nobody else can join (else the 5 s timeout fails)
            return await asyncio.wait_for(served(batcher, 1), timeout=5.0)
        finally:
            await batcher.close()

    assert run(lone()) == 1
    assert batches == [[1]]

    async def two() -> list[int]:
        batcher = DynamicBatcher(fn, max_batch=64, max_wait_ms=10_000.0)
        try:
            # the second request is still being read when the first is queued: the batch waits for it
            return list(
                await asyncio.wait_for(asyncio.gather(served(batcher, 2), served(batcher, 3, 0.05)), 5.0)
            )
        finally:
            await batcher.close()

    batches.clear()
    assert run(two()) == [2, 3]
    assert batches == [[2, 3]]


def test_full_queue_is_refused_at_once() -> None:
    release = threading.Event()

    def fn(xs: list[int]) -> list[int]:
        release.wait(5)
        return xs

    async def main() -> None:
        batcher = DynamicBatcher(fn, max_batch=1, max_wait_ms=0.0, max_queue=2)
        first = asyncio.ensure_future(batcher.submit(0))
        await until(lambda: batcher.in_flight == 1 and batcher.queue_depth == 0)  # in the model
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
        await until(lambda: batcher.queue_depth == 2)
        with pytest.raises(QueueFullError):
            await batcher.submit(3)
        assert batcher.queue_depth == 2 and batcher.in_flight == 3
        release.set()
        assert await asyncio.gather(first, *queued) == [0, 1, 2]
        await batcher.close()

    run(main())


def test_timed_out_requests_never_reach_the_model() -> None:
    ran: list[int] = []
    release = threading.Event()

    def fn(xs: list[int]) -> list[int]:
        ran.extend(xs)
        release.wait(5)
        return xs

    async def main() -> None:
        batcher = DynamicBatcher(fn, max_batch=1, max_wait_ms=0.0)
        first = asyncio.ensure_future(batcher.submit(0))
        await until(lambda: batcher.in_flight == 1 and batcher.queue_depth == 0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await batcher.submit(1)
        release.set()
        assert await first == 0
        assert await batcher.submit(2) == 2
        await batcher.close()

    run(main())
    assert ran == [0, 2]


def test_a_timed_out_request_gives_its_queue_slot_back_before_the_model_reaches_it() -> None:
    release = threading.Event()

    def fn(xs: list[int]) -> list[int]:
        release.wait(5)
        return xs

    async def main() -> None:
        batcher = DynamicBatcher(fn, max_batch=1, max_wait_ms=0.0, max_queue=2)
        first = asyncio.ensure_future(batcher.submit(0))
        await until(lambda: batcher.in_flight == 1 and batcher.queue_depth == 0)
        for i in (1, 2):  # both wait in the queue past their callers' patience
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    await batcher.submit(i)
        assert batcher.queue_depth == 2  # not reached by the model yet
        late = asyncio.ensure_future(batcher.submit(3))  # taken: the abandoned slots are freed
        await until(lambda: batcher.queue_depth == 1)
        release.set()
        assert await asyncio.gather(first, late) == [0, 3]
        await batcher.close()

    run(main())


class Callback:
    """A waiter that is not a future: what the server's HTTP protocol hands ``put``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, given_up: bool = False) -> None:
        self.loop, self.given_up = loop, given_up
        self.answered = asyncio.Event()
        self.result: Any = None
        self.on_loop = False

    def done(self) -> bool:
        return self.given_up or self.answered.is_set()

    def set_result(self, result: Any) -> None:
        self.on_loop = asyncio.get_running_loop() is self.loop  # called on the loop, not the model thread
        self.result = result
        self.answered.set()

    def set_exception(self, exception: BaseException) -> None:
        self.set_result(exception)


def test_put_answers_any_waiter_on_the_loop_and_skips_those_done_already() -> None:
    ran: list[int] = []

    def fn(xs: list[int]) -> list[int]:
        ran.extend(xs)
        return [x + 100 for x in xs]

    async def main() -> list[Callback]:
        loop = asyncio.get_running_loop()
        batcher = DynamicBatcher(fn, max_batch=8, max_wait_ms=20.0)
        waiters = [Callback(loop), Callback(loop, given_up=True), Callback(loop)]
        for i, w in enumerate(waiters):
            batcher.put(i, 1, w)
        await asyncio.wait_for(asyncio.gather(waiters[0].answered.wait(), waiters[2].answered.wait()), 5)
        await batcher.close()
        return waiters

    first, skipped, last = run(main())
    assert (first.result, last.result) == (100, 102) and first.on_loop and last.on_loop
    assert ran == [0, 2] and skipped.result is None  # the waiter done before its batch never ran


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on() -> None:
    def fn(xs: list[int]) -> list[int]:
        if 13 in xs:
            raise ValueError("unlucky batch")
        return xs

    async def main() -> None:
        batcher = DynamicBatcher(fn, max_batch=1, max_wait_ms=0.0)
        with pytest.raises(ValueError, match="unlucky"):
            await batcher.submit(13)
        assert await batcher.submit(7) == 7 and batcher.alive
        await batcher.close()
        assert not batcher.alive
        with pytest.raises(BatcherClosedError, match="closed"):
            await batcher.submit(1)

    run(main())


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(lambda xs: xs, max_batch=0)
