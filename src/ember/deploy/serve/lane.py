"""The predict lane: POST /v1/predict answered inside uvicorn's HTTP protocol, without ASGI.

Under load, the event loop is what caps a batching server's requests per second: the model
thread runs ~30 requests as one batch, but each request still costs the loop its parsing,
decoding and reply. Through ASGI a request costs uvicorn a scope dict, a ``RequestResponseCycle``,
an asyncio task, receive/send message dicts and several coroutine steps, and the handler a future
and an ``asyncio.timeout``: about 160 µs of loop CPU per small request on a Zen 4 core, against a
model that needs 40–75 µs per item. Through the lane the loop spends 50–95 µs (BENCHMARKS.md,
serving).

:class:`LaneProtocol` is uvicorn's own httptools protocol with one path taken early. A POST to
``/v1/predict`` with a JSON body of declared length within the limit is read by the protocol
itself, decoded, and queued in the batcher with a :class:`_Reply` as its waiter; the batcher's
delivery callback writes the answer straight to the socket. Everything else (other routes, image
and text bodies, chunked bodies, ``Expect: 100-continue``, a body over the limit, a request
pipelined behind another on the same connection) goes through uvicorn and FastAPI as before.
Both paths share :class:`Lane`: the decoder, the batcher, the error mapping and the metrics, so a
request gets the same answer either way.

To uvicorn, a request in the lane looks like any other: the :class:`_Reply` stands in for its
``RequestResponseCycle`` (``response_complete``, ``keep_alive``), so keep-alive timers, pipelining
and the graceful shutdown (close idle connections, wait for those with a reply due) work
unchanged. A request still unanswered after ``timeout_s`` gets 504 from a sweep that runs while
requests wait (one timer for all of them, not one per request), so within a quarter of
``timeout_s`` (at most 0.25 s) after its time is up.

Slow clients are bounded for every request, in the lane or not: a request's headers must arrive
within ``header_timeout_s`` of its first byte (of the connection, for the first request) and its
body within ``body_timeout_s`` of its headers, else 408 and the connection closes. A request counts
for the batcher (:meth:`DynamicBatcher.arrive`) only once its body is in, so a half-sent request
never makes a batch wait for it. A body the fast numeric path does not take (base64 images,
strings, anything pydantic must check) is decoded on a small thread pool, off the event loop.

Example:
    >>> from ember.deploy.serve.batching import DynamicBatcher
    >>> from ember.deploy.serve.metrics import Metrics
    >>> lane = Lane(lambda body, kind: None, DynamicBatcher(len), Metrics("demo", "eager", "0"),
    ...             timeout_s=1.0, max_body_bytes=1024)
    >>> lane.error(TimeoutError()).status, lane.error(ApiError(422, "bad", "validation")).status
    (504, 422)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from ember.deploy.serve.batching import BatcherClosedError, DynamicBatcher, QueueFullError
from ember.deploy.serve.metrics import Metrics

log = logging.getLogger("ember.serve")

PATH = b"/v1/predict"


class ApiError(Exception):
    """An error answered to the client as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers

    @property
    def body(self) -> bytes:
        return json.dumps({"error": self.message}).encode()


class Lane:
    """What answering a predict request takes, shared by the ASGI handler and :class:`LaneProtocol`.

    Args:
        decode: ``decode(body, content_type) -> (n, *input_shape) tensor``, raising :class:`ApiError`.
        batcher: the server's batcher.
        metrics: the app's metrics (answers and errors are counted there).
        timeout_s: a request not answered within this many seconds gets 504.
        max_body_bytes: the lane takes bodies up to this size (larger ones get 413 through ASGI).
        decode_fast: the cheap decoder run on the event loop, returning None for a body it does
            not take; those go to ``decode`` on ``decode_pool`` (None: everything on the loop).
        decode_pool: threads for ``decode``.
        header_timeout_s: a request's headers must arrive within this long (else 408).
        body_timeout_s: a request's body must arrive within this long after its headers (else 408).
        max_decoding: bodies waiting for the decode pool at most; beyond, 503.
    """

    def __init__(
        self,
        decode: Callable[[bytes, str], Any],
        batcher: DynamicBatcher,
        metrics: Metrics,
        *,
        timeout_s: float,
        max_body_bytes: int,
        decode_fast: Callable[[bytes, str], Any] | None = None,
        decode_pool: Executor | None = None,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 30.0,
        max_decoding: int = 256,
    ) -> None:
        self.decode, self.batcher, self.metrics = decode, batcher, metrics
        self.decode_fast, self.decode_pool = decode_fast, decode_pool
        self.timeout_s, self.max_body_bytes = timeout_s, max_body_bytes
        self.header_timeout_s, self.body_timeout_s = header_timeout_s, body_timeout_s
        self.max_decoding = max_decoding
        self.decoding = 0  # bodies on the decode pool now
        self.taken = 0  # requests that came through the lane (the rest went through ASGI)
        self._waiting: deque[_Reply] = deque()  # in the batcher, oldest first
        self._sweep_period = min(0.25, max(timeout_s / 4, 0.005))
        self._sweeper: asyncio.TimerHandle | None = None
        self._headers_from: Any = None  # the default header list the cached bytes were built from
        self._headers = b""

    # ------------------------------------------------------------------ outcomes, both paths

    def error(self, exc: BaseException) -> ApiError:
        """The answer for a request that failed with ``exc``."""
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, QueueFullError):
            return ApiError(503, f"server busy: {exc}; retry shortly", "queue_full", {"Retry-After": "1"})
        if isinstance(exc, TimeoutError):
            return ApiError(504, f"no answer within timeout_s={self.timeout_s:g} s", "timeout")
        if isinstance(exc, BatcherClosedError):
            return ApiError(503, str(exc), "shutting_down", {"Retry-After": "1"})
        # the model or the safety filter failed: a server fault, reported
        log.error("predict failed", exc_info=exc)
        return ApiError(500, f"model failed: {type(exc).__name__}: {exc}", "internal")

    # ------------------------------------------------------------------ the protocol's path

    def start(self, reply: _Reply, body: bytes) -> None:
        """Decode ``body`` and queue it in the batcher; ``reply`` gets the answer (now, on a bad body)."""
        self.taken += 1
        reply.arrived = True
        self.batcher.arrive()
        try:
            x = self.decode_fast(body, "application/json") if self.decode_fast is not None else None
            if x is None and self.decode_pool is not None:
                self._decode_off_loop(reply, body)
                return
            if x is None:
                x = self.decode(body, "application/json")
        except Exception as e:
            reply.set_exception(e)
            return
        self._queue(reply, x)

    def _decode_off_loop(self, reply: _Reply, body: bytes) -> None:
        if self.decoding >= self.max_decoding:
            raise QueueFullError(f"{self.decoding} request bodies are being decoded")
        self.decoding += 1
        assert self.decode_pool is not None
        future = asyncio.get_running_loop().run_in_executor(
            self.decode_pool, self.decode, body, "application/json"
        )

        def decoded(done: asyncio.Future[Any]) -> None:
            self.decoding -= 1
            if reply.done():
                return  # timed out (408/disconnect) meanwhile
            error = done.exception()
            if error is not None:
                reply.set_exception(error)
            else:
                self._queue(reply, done.result())

        future.add_done_callback(decoded)

    async def decode_async(self, body: bytes, content_type: str) -> Any:
        """The ASGI path's decode: the fast path here, anything else on the decode pool."""
        x = self.decode_fast(body, content_type) if self.decode_fast is not None else None
        if x is not None:
            return x
        if self.decode_pool is None:
            return self.decode(body, content_type)
        if self.decoding >= self.max_decoding:
            raise QueueFullError(f"{self.decoding} request bodies are being decoded")
        self.decoding += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.decode_pool, self.decode, body, content_type
            )
        finally:
            self.decoding -= 1

    def _queue(self, reply: _Reply, x: Any) -> None:
        try:
            reply.items = x.shape[0]  # not len(): a tensor's __len__ costs a Python call
            self.batcher.put(x, reply.items, reply)
        except Exception as e:
            reply.set_exception(e)
            return
        self._waiting.append(reply)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_period, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        waiting = self._waiting
        cutoff = time.perf_counter() - self.timeout_s
        while waiting and (waiting[0].done() or waiting[0].started <= cutoff):
            reply = waiting.popleft()
            if not reply.done():
                reply.set_exception(TimeoutError())  # the batcher drops it if it has not run yet
        if waiting:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_period, self._sweep)

    def head(self, status: int, length: int, default_headers: list[tuple[bytes, bytes]]) -> bytes:
        """The status line and headers of a JSON reply of ``length`` bytes (uvicorn's default headers
        first, as uvicorn writes them)."""
        if default_headers is not self._headers_from:  # uvicorn swaps the list when the date changes
            self._headers_from = default_headers
            self._headers = b"".join(b"%s: %s\r\n" % (k, v) for k, v in default_headers)
        return b"%s%scontent-type: application/json\r\ncontent-length: %d\r\n" % (
            _STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status,
            self._headers,
            length,
        )


class _NoEvent:
    """uvicorn sets its cycle's message event on disconnect; a lane request has none to wake."""

    def set(self) -> None:
        pass


class _Reply:
    """One request in the lane: the batcher's waiter, and to uvicorn the request's cycle."""

    __slots__ = (
        "protocol",
        "lane",
        "keep_alive",
        "response_complete",
        "disconnected",
        "started",
        "items",
        "arrived",
        "_done",
    )
    message_event = _NoEvent()

    def __init__(self, protocol: LaneProtocol, lane: Lane, keep_alive: bool) -> None:
        self.protocol, self.lane, self.keep_alive = protocol, lane, keep_alive
        self.response_complete = self.disconnected = self._done = self.arrived = False
        self.started = time.perf_counter()
        self.items = 0

    # the waiter interface the batcher calls, on the event loop (an asyncio.Future's subset)
    def done(self) -> bool:
        return self._done

    def set_result(self, content: bytes) -> None:
        if self._done:
            return
        self._done = True
        self.lane.batcher.depart()  # a result comes only for a request that arrived
        self.lane.metrics.answered(self.items, time.perf_counter() - self.started)
        self._write(200, content)

    def set_exception(self, exc: BaseException) -> None:
        if self._done:
            return
        self._done = True
        if self.arrived:
            self.lane.batcher.depart()
        error = self.lane.error(exc)
        self.lane.metrics.failed(error.kind, error.status)
        self._write(error.status, error.body, error.headers)

    def _write(self, status: int, content: bytes, headers: dict[str, str] | None = None) -> None:
        self.response_complete = True
        protocol = self.protocol
        transport = protocol.transport
        if self.disconnected or transport.is_closing():
            return
        head = self.lane.head(status, len(content), protocol.server_state.default_headers)
        if headers or not self.keep_alive:
            extra = [b"%s: %s\r\n" % (k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
            head += b"".join(extra) + (b"" if self.keep_alive else b"connection: close\r\n")
        transport.write(b"%s\r\n%s" % (head, content))
        if not self.keep_alive:
            transport.close()
        protocol.on_response_complete()  # keep-alive timer, pipelined requests, request count


def lane_protocol(lane: Lane) -> type | None:
    """uvicorn's httptools protocol with ``lane`` taking predict requests (None: httptools missing)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # uvicorn without httptools: plain ASGI serving
        return None
    return type("LaneProtocol", (LaneProtocol, HttpToolsProtocol), {"lane": lane})


class LaneProtocol:
    """The predict lane's overrides of uvicorn's ``HttpToolsProtocol`` (combined by :func:`lane_protocol`).

    Written against uvicorn 0.54's protocol (``constraints.txt`` pins it); the e2e serving tests
    run it for real.
    """

    lane: Lane
    # uvicorn's HttpToolsProtocol provides these
    transport: Any
    parser: Any
    url: bytes
    headers: list[tuple[bytes, bytes]]
    cycle: Any
    expect_100_continue: bool
    limit_concurrency: int | None
    server_state: Any
    on_response_complete: Callable[[], None]
    loop: asyncio.AbstractEventLoop
    _body: bytearray | None = None  # the lane is reading this request's body
    _reply: _Reply | None = None
    _deadline: asyncio.TimerHandle | None = None  # the headers or the body must be in by then
    _reading: str = ""  # "headers" or "body" while a deadline runs

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm("headers", self.lane.header_timeout_s)  # a connection that sends nothing is closed

    def _arm(self, what: str, seconds: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._reading = what
        self._deadline = self.loop.call_later(seconds, self._read_timeout)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._reading = ""

    def _read_timeout(self) -> None:
        """The headers or body came too slowly: 408, and the connection closes."""
        self._deadline = None
        what, self._reading = self._reading, ""
        transport = self.transport
        if transport.is_closing():
            return
        seconds = self.lane.header_timeout_s if what == "headers" else self.lane.body_timeout_s
        error = ApiError(408, f"the request's {what} did not arrive within {seconds:g} s", "read_timeout")
        reply = self._reply
        if self._body is not None and reply is not None and not reply.done():
            self._body = None  # the lane's own request: answered through its reply, then closed
            reply.keep_alive = False
            reply.set_exception(error)
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not getattr(cycle, "response_started", False):
            head = self.lane.head(408, len(error.body), self.server_state.default_headers)
            transport.write(b"%sconnection: close\r\n\r\n%s" % (head, error.body))
            self.lane.metrics.failed(error.kind, error.status)
        transport.close()  # an ASGI request waiting for its body sees a disconnect

    def on_message_begin(self) -> None:
        self._body = None
        self._arm("headers", self.lane.header_timeout_s)
        super().on_message_begin()  # type: ignore[misc]

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade() or not _has_body(self.headers):
            self._disarm()
        else:
            self._arm("body", self.lane.body_timeout_s)
        if not self._takes():
            super().on_headers_complete()  # type: ignore[misc]
            return
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        self.cycle = self._reply = _Reply(self, self.lane, keep_alive)
        self._body = bytearray()

    def _takes(self) -> bool:
        url = self.url
        if url != PATH and not url.startswith(PATH + b"?"):
            return False
        if self.parser.get_method() != b"POST" or self.expect_100_continue or self.parser.should_upgrade():
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # pipelined behind a request not answered yet: uvicorn queues it in order
        if self.limit_concurrency is not None:
            return False  # uvicorn's own concurrency limit answers 503 on its path
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                if value.split(b";")[0].strip().lower() != b"application/json":
                    return False
            elif name == b"transfer-encoding":
                return False
        return length is not None and length.isdigit() and int(length) <= self.lane.max_body_bytes

    def on_body(self, body: bytes) -> None:
        if self._body is None:
            super().on_body(body)  # type: ignore[misc]
        else:
            self._body += body

    def on_message_complete(self) -> None:
        self._disarm()
        if self._body is None:
            super().on_message_complete()  # type: ignore[misc]
            return
        body, self._body = bytes(self._body), None
        assert self._reply is not None
        self.lane.start(self._reply, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        reply = self._reply
        if reply is not None and not reply.done():
            reply.disconnected = True
            if self._body is not None:  # gone before its body came: it never reaches the batcher
                self._body = None
                reply.set_exception(ApiError(400, "client disconnected", "disconnected"))
        super().connection_lost(exc)  # type: ignore[misc]


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


def _status_lines() -> dict[int, bytes]:
    from http import HTTPStatus

    return {int(s): b"HTTP/1.1 %d %s\r\n" % (s, s.phrase.encode()) for s in HTTPStatus}


_STATUS_LINES = _status_lines()
