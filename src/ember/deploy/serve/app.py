"""The model server: a FastAPI app around a dynamic batcher, with Prometheus metrics and drift.

Endpoints::

    POST /v1/predict   {"inputs": [item, ...]} -> per item, the fields the model's task answers
                       (a classifier: {"outputs", "predictions", "labels"}; a detector:
                       {"detections"}; a segmenter: {"masks"}; others: {"outputs"})
                       an item: a nested list of numbers of the model's input shape; for image
                       models also a base64 string of an image file, or the raw image bytes as
                       the whole body (Content-Type image/*); for text models a string (or text/plain)
    POST /v1/generate  {"prompt": "...", ...} -> {"text": "..."}, or JSON lines as the text decodes
                       (language models, translators; see ``ember.deploy.serve.generate``)
    POST /v1/generate  {"n": 4, "class": 7} -> PNG images, for a model whose task makes images
                       (see ``ember.deploy.serve.generate_images``)
    GET  /healthz      the process and its batch worker are alive
    GET  /readyz       the model is loaded and warmed up, and the server is not draining
    GET  /metrics      Prometheus: requests, latency, batch sizes, queue depth, errors, drift, safety
    GET  /v1/model     the model card and the input/output schema (no machine or version details)
    GET  /v1/admin/model  the same with the training environment, package and code versions
                       (``Authorization: Bearer <admin_token>``; off without a token)
    GET  /v1/drift     drift of the recent window against the reference profile (JSON)
    GET  /openapi.json every endpoint above with its request schema and statuses

Every error is a 4xx/5xx with ``{"error": "..."}``: 400 unreadable JSON (or a model whose task
answers no /v1/predict: a language model, with the advice to call /v1/generate), 408 headers or
body sent too slowly, 413 a body over ``max_body_bytes`` (or too many items, or an image over the
pixel limit), 415 an unsupported content type, 422 wrong shape, type or range, 503 a full queue
(with Retry-After), 504 a request that waited longer than ``timeout_s``.

The pieces of a request's path each have their module: bodies are decoded by
:mod:`~ember.deploy.serve.decode`, queued by :mod:`~ember.deploy.serve.batching`, counted by
:mod:`~ember.deploy.serve.metrics`; under :func:`serve`, POST /v1/predict is answered by the HTTP
protocol itself (:mod:`~ember.deploy.serve.lane`), and by the ASGI handler here otherwise (the
test client, other ASGI servers, bodies the lane does not take), with the same answers.

Example:
    >>> from fastapi.testclient import TestClient
    >>> from ember.models import create
    >>> served = ServedModel.from_module(create("cnn_tiny", in_channels=1, image_size=8), (1, 8, 8),
    ...                                  input_range=(0.0, 1.0), classes=[str(i) for i in range(10)])
    >>> with TestClient(create_app(served)) as client:
    ...     reply = client.post("/v1/predict", json={"inputs": [[[[0.5] * 8] * 8]]})
    >>> reply.status_code, len(reply.json()["outputs"][0])
    (200, 10)
"""

# No ``from __future__ import annotations``: FastAPI resolves endpoint annotations imported in create_app.
import asyncio
import contextlib
import hmac
import inspect
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ember.deploy.serve.backends import ServedModel
from ember.deploy.serve.batching import DynamicBatcher
from ember.deploy.serve.decode import Decoder
from ember.deploy.serve.generate import add_generate
from ember.deploy.serve.generate_images import generate_route
from ember.deploy.serve.lane import ApiError, Lane, lane_protocol
from ember.deploy.serve.metrics import Metrics
from ember.deploy.serve.monitor import DriftCollector, DriftMonitor, Thresholds
from ember.deploy.serve.openapi import predict_operation, responses
from ember.tasks import contract
from ember.tasks.spec import NotApplicable

log = logging.getLogger("ember.serve")

SafetyFilter = Callable[[torch.Tensor], Sequence[Any]]
PRIVATE_META = ("environment", "packaged_with", "code")
"""meta.json sections that only GET /v1/admin/model shows: the training machine (kernel, CPU),
package and code versions. Public, they tell an attacker which known flaws to try."""


def create_app(
    model: ServedModel | Any,
    *,
    max_batch: int = 64,
    max_wait_ms: float = 2.0,
    max_queue: int = 1024,
    timeout_s: float = 10.0,
    max_body_bytes: int = 1 << 20,
    max_items: int | None = None,
    safety_filter: SafetyFilter | None = None,
    drift_window: int = 1000,
    drift_thresholds: Thresholds | None = None,
    header_timeout_s: float = 10.0,
    body_timeout_s: float = 30.0,
    admin_token: str | None = None,
    max_new_tokens: int = 512,
    max_images: int = 64,
    generate_workers: int = 2,
) -> Any:
    """The FastAPI app serving ``model``.

    Args:
        model: a :class:`ServedModel`, or an opened bundle (``ember.deploy.bundle.open_bundle``),
            served with the eager backend.
        max_batch: the most items run together (1: no dynamic batching).
        max_wait_ms: how long a request may wait for others to join its batch; a batch that holds
            every request the server has goes at once (no one else can join).
        max_queue: the most requests waiting; beyond it, 503 with Retry-After.
        timeout_s: a request not answered within this many seconds gets 504.
        max_body_bytes: a larger request body gets 413.
        max_items: the most items in one request (default ``max(max_batch, 64)``); more gets 413.
        safety_filter: ``filter(outputs) -> one entry per item`` (None, a flag string or a list of
            flags); flags are returned with the outputs and counted in /metrics.
        drift_window: examples in the drift window (drift needs a reference: ``model.reference``).
        drift_thresholds: when drift alerts.
        header_timeout_s: a request's headers must arrive within this long, else 408 (under
            :func:`serve`; slow clients cannot hold connections open).
        body_timeout_s: a request's body must arrive within this long after its headers, else 408.
        admin_token: the bearer token of ``GET /v1/admin/model`` (the card with environment, package
            and code versions); default ``$EMBER_SERVE_ADMIN_TOKEN``; with neither, that view is off.
        max_new_tokens: the most tokens a /v1/generate request may ask for.
        max_images: the most images a /v1/generate request may ask of a model that makes images.
        generate_workers: threads decoding /v1/generate requests (each request has its own
            KV cache and generator; ``max_queue`` bounds the requests at once).

    Returns:
        A FastAPI app; run it with :func:`serve` (uvicorn) or test it with ``TestClient``.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    served = model if isinstance(model, ServedModel) else ServedModel.from_bundle(model)
    max_items = max_items or max(max_batch, 64)
    monitor = (
        DriftMonitor(
            served.reference, window=drift_window, features=served.features, thresholds=drift_thresholds
        )
        if served.reference is not None
        else None
    )
    collector = DriftCollector(monitor) if monitor is not None else None
    metrics = Metrics(served.name, served.runner.backend, served.sha256, collector)
    decoder = Decoder(served, max_items)
    # warmed up; SIGTERM received; what /v1/predict answers (the fields, or why it does not apply)
    state = SimpleNamespace(ready=False, draining=False, predict={})
    observer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ember-drift") if monitor else None
    # images and anything pydantic checks are decoded here, off the event loop
    decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ember-decode")
    batcher = DynamicBatcher(
        _batch_fn(served, safety_filter, monitor, observer, metrics),
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        on_batch=metrics.on_batch,
    )
    metrics.watch(batcher)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        # warm up before /readyz says ready; the task's answer to it says whether /v1/predict applies
        warm = await asyncio.to_thread(served.runner, *served.example(1))
        refusal, state.predict = predict_refusal(served, warm.outputs)
        if refusal is not None:
            lane.decode = lane.decode_fast = refusal
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            await batcher.close()
            decode_pool.shutdown(wait=True)
            await asyncio.to_thread(generation.close)
            if observer is not None:
                observer.shutdown(wait=True)

    class App(FastAPI):
        async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            # POST /v1/predict goes straight to its plain ASGI handler: FastAPI's per-request
            # machinery (telemetry checks, middleware, router, dependency solving, Request and
            # Response objects) cost as much event-loop time as the whole predict path, and that
            # time caps the requests per second a batching server can take.
            if scope["type"] == "http" and scope["path"] == "/v1/predict":
                await predict(scope, receive, send)
            else:
                await super().__call__(scope, receive, send)

    # /metrics is the server's telemetry; FastAPI's OpenTelemetry checks on every request are not
    # wanted here (FastAPI versions before native telemetry have no such argument)
    quiet = {"tracing": False, "metrics": False, "logs": False}
    extra: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        extra["telemetry"] = quiet
    app = App(title=f"ember serve: {served.name}", lifespan=lifespan, docs_url=None, redoc_url=None, **extra)
    app.state.ember = state
    app.state.monitor = monitor

    lane = Lane(
        decoder.decode,
        batcher,
        metrics,
        timeout_s=timeout_s,
        max_body_bytes=max_body_bytes,
        decode_fast=decoder.decode_fast,
        decode_pool=decode_pool,
        header_timeout_s=header_timeout_s,
        body_timeout_s=body_timeout_s,
        max_decoding=max_queue,
    )
    app.state.lane = lane  # serve() answers most predict requests in the HTTP protocol through it
    generation = generate_route(
        served, metrics, read_body=_read_body, error=lane.error, timeout_s=timeout_s,
        max_body_bytes=max_body_bytes, max_new_tokens=max_new_tokens, max_requests=max_queue,
        workers=generate_workers, max_images=max_images,
    )  # fmt: skip
    add_generate(app, generation)

    async def predict(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        start = time.perf_counter()
        arrived = False
        try:
            if scope["method"] != "POST":
                raise ApiError(405, "use POST for /v1/predict", "method", {"Allow": "POST"})
            headers = dict(scope["headers"])
            body = await _read_body(headers.get(b"content-length"), receive, max_body_bytes)
            batcher.arrive()  # counted once its body is in: a half-sent request holds no batch back
            arrived = True
            x = await lane.decode_async(body, headers.get(b"content-type", b"").decode("latin-1"))
            async with asyncio.timeout(timeout_s):
                content = await batcher.submit(x, len(x))
        except Exception as e:
            error = lane.error(e)
            metrics.failed(error.kind, error.status)
            return await _send_json(send, error.status, error.body, error.headers)
        finally:
            if arrived:
                batcher.depart()
        metrics.answered(len(x), time.perf_counter() - start)
        await _send_json(send, 200, content)

    extra = predict_operation(decoder, max_items=max_items)

    @app.post("/v1/predict", responses=extra.pop("responses"), openapi_extra=extra)
    async def predict_documented() -> Response:  # the schema's entry: App.__call__ answers first
        raise RuntimeError("POST /v1/predict is answered before the router")

    @app.get("/healthz", responses=responses(200, 503))
    async def healthz() -> Response:
        alive = batcher.alive
        metrics.requests.labels("healthz", "200" if alive else "503").inc()
        return JSONResponse(
            {"status": "ok" if alive else "batch worker stopped"}, status_code=200 if alive else 503
        )

    @app.get("/readyz", responses=responses(200, 503))
    async def readyz() -> Response:
        ok = state.ready and not state.draining and batcher.alive
        why = "ready" if ok else ("draining" if state.draining else "not ready")
        metrics.requests.labels("readyz", "200" if ok else "503").inc()
        return JSONResponse({"status": why}, status_code=200 if ok else 503)

    @app.get("/metrics", responses=responses(200, media="text/plain"))
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        metrics.requests.labels("metrics", "200").inc()
        metrics.flush()  # the predict answers tallied since the last fold
        # drift statistics are computed at scrape time: off the event loop
        text = await asyncio.to_thread(generate_latest, metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    def card(full: bool) -> dict[str, Any]:
        meta = served.meta or {}
        return {
            "name": served.name,
            "backend": served.runner.backend,
            "artifact": getattr(served.runner, "artifact", None),  # the plan's measured file, if any
            "sha256": served.sha256,
            "classes": served.classes,
            "task": served.spec.task if served.spec is not None else None,
            "input": decoder.schema(),
            "output": {
                **state.predict,
                "flags": "safety flags per item (when a safety filter is set)",
            },
            "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_queue": max_queue},
            "limits": {"timeout_s": timeout_s, "max_body_bytes": max_body_bytes, "max_items": max_items},
            "plan": served.plan,
            "drift": monitor is not None,
            # what was trained on what machine, with which code and packages, is for operators only
            "card": meta if full else {k: v for k, v in meta.items() if k not in PRIVATE_META},
        }

    token = admin_token if admin_token is not None else os.environ.get("EMBER_SERVE_ADMIN_TOKEN")

    @app.get("/v1/model", responses=responses(200))
    async def model_card() -> Response:
        metrics.requests.labels("model", "200").inc()
        return JSONResponse(card(full=False))

    @app.get("/v1/admin/model", responses=responses(200, 403))
    async def admin_model_card(request: Request) -> Response:
        given = request.headers.get("authorization", "")
        if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            metrics.requests.labels("admin", "403").inc()
            why = (
                "send Authorization: Bearer <token>" if token else "set EMBER_SERVE_ADMIN_TOKEN to enable it"
            )
            return JSONResponse(
                {"error": f"the admin view needs the server's admin token ({why})"}, status_code=403
            )
        metrics.requests.labels("admin", "200").inc()
        return JSONResponse(card(full=True))

    @app.get("/v1/drift", responses=responses(200))
    async def drift() -> Response:
        metrics.requests.labels("drift", "200").inc()
        if monitor is None:
            return JSONResponse({"enabled": False, "reason": "the model has no reference profile"})
        report = await asyncio.to_thread(monitor.report)
        return JSONResponse({"enabled": True, **report.to_dict()})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        metrics.requests.labels("other", str(exc.status_code)).inc()
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    return app


# --------------------------------------------------------------------------- ASGI bodies


async def _read_body(length: bytes | None, receive: Any, limit: int) -> bytes:
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, f"bad Content-Length header {length!r}", "bad_request")
        if int(length) > limit:
            raise ApiError(
                413, f"body of {int(length)} bytes is over the limit of {limit} bytes", "body_too_large"
            )
    chunks, total, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client disconnected before sending the whole body", "disconnected")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"body is over the limit of {limit} bytes", "body_too_large")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _send_json(send: Any, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def predict_refusal(
    served: ServedModel, outputs: Any
) -> tuple[Callable[[bytes, str], Any] | None, dict[str, Any]]:
    """What the served model's task answers /v1/predict with, from its decoding of ``outputs``:
    ``(None, {"fields": [...]})``, or a decode function refusing every request and the reason,
    when it answers none (a language model: its advice says to call /v1/generate)."""
    assert served.spec is not None  # ServedModel fills it
    try:
        fields = contract.decode(served.task, outputs, served.spec)
    except NotApplicable as e:
        error = ApiError(400, str(e), "not_applicable")

        def refuse(body: bytes, content_type: str) -> Any:
            raise error

        return refuse, {"refused": str(e)}
    return None, {"fields": list(fields)}


def _batch_fn(
    served: ServedModel,
    safety_filter: SafetyFilter | None,
    monitor: DriftMonitor | None,
    observer: ThreadPoolExecutor | None,
    metrics: Metrics,
) -> Callable[[list[torch.Tensor]], list[bytes]]:
    """What the model thread runs per batch: one forward, the task's decoding, the safety filter,
    JSON per request (each request's slice of every decoded field).

    Drift observation goes to its own thread so that it never delays this batch's answers.
    """

    import orjson

    numpy_option = orjson.OPT_SERIALIZE_NUMPY
    task, spec = served.task, served.spec
    assert spec is not None  # ServedModel fills it

    def run(payloads: list[torch.Tensor]) -> list[bytes]:
        x = payloads[0] if len(payloads) == 1 else torch.cat(payloads)
        result = served.runner(x)
        try:
            fields = contract.decode(task, result.outputs, spec)
        except NotApplicable as e:
            raise ApiError(400, str(e), "not_applicable") from None
        flags = _flags(safety_filter(result.outputs), len(x)) if safety_filter is not None else None
        for flag in (f for item in flags or [] for f in item):
            metrics.safety.labels(flag).inc()
        if observer is not None and monitor is not None:
            emb = result.outputs if monitor.reference.embedding_kind == "outputs" else result.embeddings
            preds = fields.get("predictions")
            observer.submit(
                _observe, monitor, metrics, x, emb, np.asarray(preds) if preds is not None else None
            )
        # orjson writes numpy rows directly (float32 in shortest round-trip form), ~10x faster than
        # json.dumps on lists: this runs in the model thread, holding the GIL the event loop needs
        replies, start = [], 0
        for p in payloads:
            stop = start + len(p)
            reply = {name: values[start:stop] for name, values in fields.items()}
            if flags is not None:
                reply["flags"] = flags[start:stop]
            replies.append(orjson.dumps(reply, option=numpy_option))
            start = stop
        return replies

    return run


def _observe(monitor: DriftMonitor, metrics: Metrics, *args: Any) -> None:
    try:
        monitor.observe(*args)
    except Exception:  # drift must never take serving down: counted and logged
        metrics.errors.labels("monitor").inc()
        log.exception("drift monitor failed on a batch")


def _flags(raw: Sequence[Any], n: int) -> list[list[str]]:
    if len(raw) != n:
        raise ValueError(f"safety_filter returned {len(raw)} entries for {n} items")
    return [[] if f is None else [f] if isinstance(f, str) else [str(x) for x in f] for f in raw]


# --------------------------------------------------------------------------- running


def serve(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    graceful_timeout_s: float = 30.0,
    log_level: str = "warning",
    announce: Callable[[str], None] | None = print,
    switch_interval_s: float = 0.001,
) -> None:
    """Run ``app`` with uvicorn until SIGTERM/SIGINT, then drain: requests in flight complete.

    On the signal /readyz turns 503 at once, the listening socket closes, requests already
    received finish (up to ``graceful_timeout_s``), then the batch worker stops. ``port=0`` picks a
    free port; ``announce`` gets ``"listening on http://HOST:PORT"`` once the socket is bound.

    uvicorn runs on uvloop with the httptools parser when they are installed (``ember[serve]``
    installs both): they cut the event loop's CPU per request several-fold against asyncio + h11,
    and that CPU is what caps a batching server's requests per second (see BENCHMARKS.md). With
    httptools, predict requests take the lane (:mod:`ember.deploy.serve.lane`): answered in the
    HTTP protocol itself, without ASGI's per-request machinery.

    ``switch_interval_s``: the GIL switch interval. Eager PyTorch retakes the GIL after every op, each
    retake can wait a whole interval behind a busy event loop (CPython's 5 ms made a small CNN's batch
    ~4x slower under load here, 1 ms ~3x); ONNX Runtime takes it once per batch and is unaffected.
    """
    import sys

    sys.setswitchinterval(switch_interval_s)
    server, sock = make_server(
        app, host=host, port=port, graceful_timeout_s=graceful_timeout_s, log_level=log_level
    )
    if announce is not None:
        bound = sock.getsockname()[1]
        announce(f"listening on http://{f'[{host}]' if ':' in host else host}:{bound}")
    server.run(sockets=[sock])


def make_server(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    graceful_timeout_s: float = 30.0,
    log_level: str = "warning",
) -> tuple[Any, socket.socket]:
    """The uvicorn server :func:`serve` runs, and its bound, listening socket.

    Run it with ``server.run(sockets=[sock])`` (a thread will do: signals are then the caller's
    business, and ``server.should_exit = True`` stops it with the same drain).
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.ember.draining = True
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after its graceful shutdown (exit 143); a completed drain
            # is a normal exit here, so the caller's code after serve() runs and the status is 0.
            getattr(self, "_captured_signals", []).clear()

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets whose proto says TCP; with Nagle on,
    # uvicorn's separate header and body writes wait out the client's delayed ACK (~40 ms a response)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections made before uvicorn starts wait in the backlog, none are refused
    lane = getattr(app.state, "lane", None)
    protocol = lane_protocol(lane) if isinstance(lane, Lane) else None
    config = uvicorn.Config(
        app,
        http=protocol or "auto",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(graceful_timeout_s),
        lifespan="on",
        backlog=2048,
    )
    return DrainingServer(config), sock
