"""Dynamic batching: requests wait briefly in a bounded queue and run together.

A model thread takes the oldest waiting request, then keeps collecting until the batch holds
``max_batch`` items or ``max_wait_ms`` has passed since that oldest request arrived, and runs the
batch function (PyTorch and ONNX Runtime release the GIL, so the event loop keeps accepting
requests meanwhile). Requests that queued while the model was busy are already past their wait and
go at once: under load, batches fill without any added waiting.

Waiting is only worth it while other requests may still join. A server that tells the batcher
when a request arrives and when it has been answered (:meth:`DynamicBatcher.arrive` /
:meth:`DynamicBatcher.depart`) gets a batch that goes at once when every request the server holds
is already waiting in it: a lone client (concurrency 1) pays no ``max_wait_ms`` at all, while under
load the wait still gathers the requests being read or answered.

The waiting happens in the model thread on a ``threading.Condition``, not on the event loop: a
thread wakes within microseconds of its deadline, while asyncio timers round up to the next
millisecond, and the event loop (the busiest part of a server taking many small requests) does only
an append per request and one callback per batch.

Callers either ``await submit(payload)`` or, with no task to spare per request (the server's
HTTP protocol, :mod:`ember.deploy.serve.lane`), ``put(payload, size, waiter)`` with a waiter of
their own: anything with a future's ``done`` / ``set_result`` / ``set_exception``, called on the
event loop.

The queue is bounded (``max_queue`` requests): a full queue raises :class:`QueueFullError` at
once (the server answers 503 with Retry-After). A request whose caller stopped waiting (a timeout)
is dropped before it reaches the model, and gives its slot back as soon as the queue needs it.

Example:
    >>> import asyncio
    >>> async def main():
    ...     batcher = DynamicBatcher(lambda xs: [2 * x for x in xs], max_batch=8, max_wait_ms=1.0)
    ...     try:
    ...         return await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    ...     finally:
    ...         await batcher.close()
    >>> asyncio.run(main())
    [0, 2, 4, 6, 8]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("ember.serve")


class QueueFullError(Exception):
    """The batcher's queue holds ``max_queue`` requests already; try again shortly."""


class BatcherClosedError(RuntimeError):
    """The batcher was closed (the server is shutting down)."""


class Waiter(Protocol):
    """What :meth:`DynamicBatcher.put` answers through: an ``asyncio.Future``, or a stand-in for one."""

    def done(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


@dataclass
class _Pending:
    payload: Any
    size: int
    future: Waiter
    enqueued: float


class DynamicBatcher:
    """Collect concurrent requests into batches for ``fn``, run in one model thread.

    Args:
        fn: runs in the model thread: a list of payloads in, one result per payload out (same order).
        max_batch: the most items (the sum of request sizes) in one batch; 1 disables batching.
        max_wait_ms: how long the oldest waiting request may wait for others to join.
        max_queue: the most requests waiting (not yet running); beyond it ``submit`` raises.
        on_batch: called in the model thread after each batch with ``(items, requests, seconds)``
            (metrics hooks; must be thread-safe).
    """

    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        max_queue: int = 1024,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(
                "need max_batch >= 1, max_queue >= 1, max_wait_ms >= 0; "
                f"got {max_batch}, {max_queue}, {max_wait_ms}"
            )
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._cond = threading.Condition()
        self._pending: deque[_Pending] = deque()
        self._pending_items = 0
        self._running = 0  # requests in the batch now in the model
        self._held = 0  # requests the server announced (arrive) and has not answered yet (depart)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Requests waiting or in the model."""
        return len(self._pending) + self._running

    @property
    def alive(self) -> bool:
        """The batcher takes requests: not closed, and its model thread (once started) runs."""
        return not self._closed and (self._thread is None or self._thread.is_alive())

    def arrive(self) -> None:
        """A request reached the server (call from the event loop, before its body is read)."""
        self._held += 1

    def depart(self) -> None:
        """A request announced by :meth:`arrive` was answered (or failed); it will join no batch."""
        self._held -= 1
        if self._all_here():  # the waiting batch need not wait any more
            with self._cond:
                self._cond.notify()

    def _all_here(self) -> bool:
        # every request the server holds is waiting: nobody else can join (off unless arrive is used)
        return 0 < self._held <= len(self._pending)

    def start(self) -> None:
        """Start the model thread, answering on the running event loop (``submit`` does it when needed)."""
        if self._thread is None or not self._thread.is_alive():
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="ember-model", daemon=True)
            self._thread.start()

    async def submit(self, payload: Any, size: int = 1) -> Any:
        """Queue ``payload`` (``size`` items) and wait for its result.

        Raises:
            QueueFullError: ``max_queue`` requests are waiting already.
            BatcherClosedError: the batcher is closed.
            Exception: whatever ``fn`` raised for the batch holding this request.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.put(payload, size, future)
        return await future

    def put(self, payload: Any, size: int, waiter: Waiter) -> None:
        """Queue ``payload`` (``size`` items) without waiting: ``waiter`` gets its result or error.

        ``waiter`` is an ``asyncio.Future`` or any object with its ``done`` / ``set_result`` /
        ``set_exception`` (called on the event loop); a waiter already done when its batch forms
        is dropped. Call from the event loop.

        Raises:
            QueueFullError: ``max_queue`` requests are waiting already.
            BatcherClosedError: the batcher is closed.
        """
        if self._closed:
            raise BatcherClosedError("the batcher is closed (the server is shutting down)")
        if len(self._pending) >= self.max_queue and self._drop_abandoned() == 0:
            raise QueueFullError(
                f"{len(self._pending)} requests are queued already (max_queue={self.max_queue})"
            )
        if self._thread is None:  # not is_alive() per request: it costs a lock round trip
            self.start()
        with self._cond:
            was_idle = not self._pending
            self._pending.append(_Pending(payload, size, waiter, time.monotonic()))
            self._pending_items += size
            # wake the model thread only when it has something new to decide: a first request, a
            # full batch, or the last request the server holds; otherwise it sleeps until the oldest
            # request's deadline anyway
            if was_idle or self._pending_items >= self.max_batch or self._all_here():
                self._cond.notify()

    def _drop_abandoned(self) -> int:
        """Free the slots of queued requests whose callers stopped waiting (timed out, went away).

        Without this a request answered 504 would hold its slot until the model reached it, and a
        request right after the model recovers would be refused (Triton's queue policy frees them
        too). Runs only when the queue is full, so its O(queue) scan is not paid per request.
        """
        with self._cond:
            live = deque(p for p in self._pending if not p.future.done())
            dropped = len(self._pending) - len(live)
            if dropped:
                self._pending = live
                self._pending_items = sum(p.size for p in live)
            return dropped

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                deadline = self._pending[0].enqueued + self.max_wait
                while self._pending_items < self.max_batch and not self._closed and not self._all_here():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = self._take()
                self._running = len(batch)
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[_Pending]) -> None:
        start = time.perf_counter()
        results: Sequence[Any] | None = None
        error: BaseException | None = None
        try:
            results = self.fn([p.payload for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch function returned {len(results)} results for {len(batch)} requests"
                )
        except Exception as e:  # every caller of this batch gets the error
            error = e
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(_deliver, batch, results, error)
        self._running = 0
        if self.on_batch is not None:
            try:
                self.on_batch(sum(p.size for p in batch), len(batch), time.perf_counter() - start)
            except Exception:
                log.exception("on_batch hook failed")

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        items = 0
        while self._pending:
            head = self._pending[0]
            if head.future.done():  # its caller timed out or went away
                self._pending.popleft()
                self._pending_items -= head.size
                continue
            if batch and items + head.size > self.max_batch:
                break
            self._pending.popleft()
            self._pending_items -= head.size
            batch.append(head)
            items += head.size
        return batch

    async def close(self) -> None:
        """Let the batch in the model finish, fail what is still queued, stop the model thread."""
        with self._cond:
            self._closed = True
            left = list(self._pending)
            self._pending.clear()
            self._pending_items = 0
            self._cond.notify_all()
        for p in left:
            if not p.future.done():
                p.future.set_exception(BatcherClosedError("the server shut down before this request ran"))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)


def _deliver(batch: list[_Pending], results: Sequence[Any] | None, error: BaseException | None) -> None:
    # on the event loop: futures are not thread-safe
    for i, p in enumerate(batch):
        if p.future.done():
            continue
        if error is not None:
            p.future.set_exception(error)
        else:
            assert results is not None
            p.future.set_result(results[i])
