"""The model server: a FastAPI app around a dynamic batcher, with Prometheus metrics and drift.

Endpoints::

    POST /v1/predict   {"inputs": [item, ...]} -> {"outputs": [...], "predictions": [...], "labels": [...]}
                       an item: a nested list of numbers of the model's input shape; for image
                       models also a base64 string of an image file, or the raw image bytes as
                       the whole body (Content-Type image/*); for text models a string (or text/plain)
    GET  /healthz      the process and its batch worker are alive
    GET  /readyz       the model is loaded and warmed up, and the server is not draining
    GET  /metrics      Prometheus: requests, latency, batch sizes, queue depth, errors, drift, safety
    GET  /v1/model     the model card and the input/output schema
    GET  /v1/drift     drift of the recent window against the reference profile (JSON)

Every error is a 4xx/5xx with ``{"error": "..."}``: 400 unreadable JSON, 413 a body over
``max_body_bytes`` (or too many items), 415 an unsupported content type, 422 wrong shape, type or
range, 503 a full queue (with Retry-After), 504 a request that waited longer than ``timeout_s``.

(The file is over 600 lines because the request path is one piece read top to bottom: the hot
predict handler, the decoder with its fast numeric path and its pydantic fallback, the batch
function and the uvicorn runner that drains on SIGTERM; split, each part would lose the reason for
its shape, which is the others' cost.)

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
import base64
import binascii
import contextlib
import inspect
import io
import json
import logging
import math
import socket
import time
import warnings
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ember.deploy.serve.backends import ServedModel
from ember.deploy.serve.batching import BatcherClosedError, DynamicBatcher, QueueFullError
from ember.deploy.serve.monitor import DriftCollector, DriftMonitor, Thresholds

log = logging.getLogger("ember.serve")

SafetyFilter = Callable[[torch.Tensor], Sequence[Any]]
MAX_IMAGE_PIXELS = 4096 * 4096
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ApiError(Exception):
    """An error answered to the client as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers


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
    metrics = _Metrics(served, monitor)
    decoder = _Decoder(served, max_items)
    state = SimpleNamespace(ready=False, draining=False)  # warmed up; SIGTERM received
    observer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ember-drift") if monitor else None
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
        example = torch.zeros((1, *served.input_shape), dtype=decoder.torch_dtype)
        await asyncio.to_thread(served.runner, example)  # warm up before /readyz says ready
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            await batcher.close()
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

    predict_ok = metrics.requests.labels("predict", "200")

    async def predict(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        batcher.arrive()  # a batch waits for this request only while it is being read
        try:
            await _predict(scope, receive, send)
        finally:
            batcher.depart()

    async def _predict(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        start = time.perf_counter()
        n = 0
        try:
            if scope["method"] != "POST":
                raise ApiError(405, "use POST for /v1/predict", "method", {"Allow": "POST"})
            headers = dict(scope["headers"])
            body = await _read_body(headers.get(b"content-length"), receive, max_body_bytes)
            x = decoder.decode(body, headers.get(b"content-type", b"").decode("latin-1"))
            n = len(x)
            try:
                async with asyncio.timeout(timeout_s):
                    content = await batcher.submit(x, n)
            except QueueFullError as e:
                raise ApiError(
                    503, f"server busy: {e}; retry shortly", "queue_full", {"Retry-After": "1"}
                ) from None
            except TimeoutError:
                raise ApiError(504, f"no answer within timeout_s={timeout_s:g} s", "timeout") from None
            except BatcherClosedError as e:
                raise ApiError(503, str(e), "shutting_down", {"Retry-After": "1"}) from None
        except ApiError as e:
            metrics.errors.labels(e.kind).inc()
            metrics.requests.labels("predict", str(e.status)).inc()
            return await _send_json(send, e.status, json.dumps({"error": e.message}).encode(), e.headers)
        except Exception as e:  # the model or the safety filter failed: a server fault, reported
            log.exception("predict failed")
            metrics.errors.labels("internal").inc()
            metrics.requests.labels("predict", "500").inc()
            message = f"model failed: {type(e).__name__}: {e}"
            return await _send_json(send, 500, json.dumps({"error": message}).encode())
        predict_ok.inc()
        metrics.items.inc(n)
        metrics.latency.observe(time.perf_counter() - start)
        await _send_json(send, 200, content)

    @app.get("/healthz")
    async def healthz() -> Response:
        alive = batcher.alive
        metrics.requests.labels("healthz", "200" if alive else "503").inc()
        return JSONResponse(
            {"status": "ok" if alive else "batch worker stopped"}, status_code=200 if alive else 503
        )

    @app.get("/readyz")
    async def readyz() -> Response:
        ok = state.ready and not state.draining and batcher.alive
        why = "ready" if ok else ("draining" if state.draining else "not ready")
        metrics.requests.labels("readyz", "200" if ok else "503").inc()
        return JSONResponse({"status": why}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        metrics.requests.labels("metrics", "200").inc()
        # drift statistics are computed at scrape time: off the event loop
        text = await asyncio.to_thread(generate_latest, metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model")
    async def model_card() -> Response:
        metrics.requests.labels("model", "200").inc()
        card = {
            "name": served.name,
            "backend": served.runner.backend,
            "artifact": getattr(served.runner, "artifact", None),  # the plan's measured file, if any
            "sha256": served.sha256,
            "classes": served.classes,
            "input": decoder.schema(),
            "output": {
                "outputs": "one list of model outputs (logits for a classifier) per item",
                "predictions": "argmax class index per item (classifiers)",
                "labels": "class name per item (classifiers)",
                "flags": "safety flags per item (when a safety filter is set)",
            },
            "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_queue": max_queue},
            "limits": {"timeout_s": timeout_s, "max_body_bytes": max_body_bytes, "max_items": max_items},
            "plan": served.plan,
            "drift": monitor is not None,
            "card": served.meta or {},
        }
        return JSONResponse(card)

    @app.get("/v1/drift")
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


# --------------------------------------------------------------------------- decoding


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


class _Decoder:
    """Request bodies → a checked ``(n, *input_shape)`` tensor, with pydantic doing the checking."""

    def __init__(self, served: ServedModel, max_items: int) -> None:
        from typing import Annotated, Union

        from annotated_types import Len
        from pydantic import ConfigDict, Discriminator, Field, Strict, Tag, create_model

        self.served, self.max_items = served, max_items
        self.is_int = served.input_dtype == "int64"
        self._kinds = "i" if self.is_int else "if"  # numpy dtype kinds a numeric body may parse to
        self._loads = _json_loads()
        self.torch_dtype = torch.int64 if self.is_int else torch.float32
        lo, hi = served.input_range or (None, None)
        number = int if self.is_int else float
        leaf: Any = Annotated[number, Strict(), Field(ge=lo, le=hi, allow_inf_nan=False)]  # type: ignore[valid-type]
        item: Any = leaf
        for dim in reversed(served.input_shape):
            item = Annotated[list[item], Len(dim, dim)]
        self.accepts_strings = served.is_image or served.tokenizer is not None
        if self.accepts_strings:
            kind = Discriminator(lambda v: "string" if isinstance(v, str) else "array")
            item = Annotated[Union[Annotated[item, Tag("array")], Annotated[str, Tag("string")]], kind]  # noqa: UP007
        self.model = create_model(
            "PredictRequest",
            __config__=ConfigDict(extra="forbid"),
            inputs=(Annotated[list[item], Len(1, None)], ...),
        )

    def schema(self) -> dict[str, Any]:
        s = self.served
        kinds = ["application/json"]
        if s.is_image:
            kinds += ["image/png", "image/jpeg", "image/*", "application/octet-stream"]
        if s.tokenizer is not None:
            kinds += ["text/plain"]
        items = "a nested list of numbers of shape " + str(list(s.input_shape))
        if s.is_image:
            items += ", or a base64 string of an image file"
        if s.tokenizer is not None:
            items += ", or a text string"
        return {
            "shape": list(s.input_shape),
            "dtype": s.input_dtype,
            "range": list(s.input_range) if s.input_range else None,
            "content_types": kinds,
            "request": {"inputs": f"a list of 1 to {self.max_items} items; each item {items}"},
            "json_schema": self.model.model_json_schema(),
        }

    def decode(self, body: bytes, content_type: str) -> torch.Tensor:
        kind = content_type.split(";")[0].strip().lower()
        if kind in ("", "application/json"):
            return self._json(body)
        if self.served.is_image and (kind.startswith("image/") or kind == "application/octet-stream"):
            return self._image(body)[None]
        if self.served.tokenizer is not None and kind == "text/plain":
            return self._text(body.decode("utf-8", errors="replace"))[None]
        raise ApiError(
            415,
            f"unsupported Content-Type {kind!r}; this model takes {self.schema()['content_types']}",
            "content_type",
        )

    def _json(self, body: bytes) -> torch.Tensor:
        fast = self._numbers(body)
        if fast is not None:
            return fast
        from pydantic import ValidationError

        try:
            inputs = self.model.model_validate_json(body).inputs  # type: ignore[attr-defined]
        except ValidationError as e:
            raise _validation_error(e, self.served.input_shape) from None
        if len(inputs) > self.max_items:
            raise ApiError(
                413, f"{len(inputs)} items in one request; at most {self.max_items}", "too_many_items"
            )
        np_dtype = np.int64 if self.is_int else np.float32
        if all(isinstance(i, list) for i in inputs):
            array = np.asarray(inputs, dtype=np_dtype)
        else:
            rows = [
                self._string(i) if isinstance(i, str) else torch.as_tensor(i, dtype=self.torch_dtype)
                for i in inputs
            ]
            return torch.stack(rows)
        if not self.is_int and not np.isfinite(array).all():
            raise ApiError(422, "inputs: values must be finite float32 numbers", "validation")
        return torch.from_numpy(array)

    def _numbers(self, body: bytes) -> torch.Tensor | None:
        """The common request, a list of numeric items, decoded without pydantic (None: anything else).

        Accepts only what the pydantic model accepts, and decodes it to the same tensor: the body is
        ``{"inputs": [...]}`` and numpy reads the list as one int or float array of exactly
        ``(n, *input_shape)``, within range and finite. JSON ``true``/``false`` would pass as 1/0
        in numpy (pydantic's strict numbers refuse them), so a body holding either goes the slow
        way, as does every body this path does not take: pydantic then accepts it or says why not.
        """
        if b"true" in body or b"false" in body:
            return None
        try:
            data = self._loads(body)
        except ValueError:  # orjson's JSONDecodeError is one
            return None
        if type(data) is not dict or len(data) != 1 or type(data.get("inputs")) is not list:
            return None
        try:
            array = np.array(data["inputs"])
        except ValueError:  # ragged nesting
            return None
        if (
            array.dtype.kind not in self._kinds
            or array.shape[1:] != self.served.input_shape
            or not len(array)
        ):
            return None
        if len(array) > self.max_items:
            raise ApiError(
                413, f"{len(array)} items in one request; at most {self.max_items}", "too_many_items"
            )
        lo, hi = self.served.input_range or (None, None)
        if (lo is not None and array.min() < lo) or (hi is not None and array.max() > hi):
            return None
        array = array.astype(np.int64 if self.is_int else np.float32, copy=False)
        if not self.is_int and not np.isfinite(array).all():  # beyond float32's range
            return None
        return torch.from_numpy(array)

    def _string(self, item: str) -> torch.Tensor:
        if self.served.is_image:
            try:
                data = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(
                    422, "inputs: a string item must be a base64-encoded image file", "validation"
                ) from None
            return self._image(data)
        return self._text(item)

    def _image(self, data: bytes) -> torch.Tensor:
        # (C, H, W) float32 in [0, 1], resized to the model's input size
        from PIL import Image

        c, h, w = self.served.input_shape
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                opened = Image.open(io.BytesIO(data))
                if opened.width * opened.height > MAX_IMAGE_PIXELS:
                    raise ApiError(
                        413, f"image of {opened.width}x{opened.height} pixels is too large", "body_too_large"
                    )
                image = opened.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.BILINEAR)
        except ApiError:
            raise
        except Exception as e:  # PIL raises many types for bad files
            raise ApiError(
                422, f"could not decode the image: {type(e).__name__}: {e}", "validation"
            ) from None
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array.reshape(h, w, c).transpose(2, 0, 1).copy())

    def _text(self, text: str) -> torch.Tensor:
        # (T,) token ids, truncated or right-padded to the model's context length
        tok = self.served.tokenizer
        length = self.served.input_shape[0]
        ids = list(tok.encode(text))[:length]
        ids += [int(getattr(tok, "pad_id", 0))] * (length - len(ids))
        return torch.tensor(ids, dtype=torch.int64)


def _json_loads() -> Callable[[bytes], Any]:
    try:
        import orjson
    except ImportError:
        raise ImportError("serving needs orjson: pip install 'ember[serve]'") from None
    return orjson.loads  # type: ignore[no-any-return]


def _validation_error(e: Any, shape: tuple[int, ...]) -> ApiError:
    errors = e.errors(include_url=False, include_input=False)
    if errors and errors[0]["type"] == "json_invalid":
        return ApiError(400, f"body is not valid JSON: {errors[0]['msg']}", "bad_json")
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err["loc"] if p not in ("array", "string"))
        parts.append(f"{loc or 'body'}: {err['msg']}")
    more = f" (and {e.error_count() - 3} more)" if e.error_count() > 3 else ""
    expected = f'expected {{"inputs": [item, ...]}}, each item of shape {list(shape)}'
    return ApiError(422, "; ".join(parts) + more + f"; {expected}", "validation")


def _batch_fn(
    served: ServedModel,
    safety_filter: SafetyFilter | None,
    monitor: DriftMonitor | None,
    observer: ThreadPoolExecutor | None,
    metrics: "_Metrics",
) -> Callable[[list[torch.Tensor]], list[bytes]]:
    """What the model thread runs per batch: one forward, the safety filter, JSON per request.

    Drift observation goes to its own thread so that it never delays this batch's answers.
    """

    import orjson

    numpy_option = orjson.OPT_SERIALIZE_NUMPY
    classes = served.classes or []

    def run(payloads: list[torch.Tensor]) -> list[bytes]:
        x = payloads[0] if len(payloads) == 1 else torch.cat(payloads)
        result = served.runner(x)
        outputs = result.outputs.float()
        preds = outputs.argmax(1) if served.classes and outputs.dim() == 2 else None
        flags = _flags(safety_filter(outputs), len(x)) if safety_filter is not None else None
        for flag in (f for item in flags or [] for f in item):
            metrics.safety.labels(flag).inc()
        if observer is not None and monitor is not None:
            emb = result.outputs if monitor.reference.embedding_kind == "outputs" else result.embeddings
            observer.submit(_observe, monitor, metrics, x, emb, preds)
        # orjson writes numpy rows directly (float32 in shortest round-trip form), ~10x faster than
        # json.dumps on lists: this runs in the model thread, holding the GIL the event loop needs
        rows = np.ascontiguousarray(outputs.numpy())
        pred_rows = preds.tolist() if preds is not None else None
        replies, start = [], 0
        for p in payloads:
            stop = start + len(p)
            reply: dict[str, Any] = {"outputs": rows[start:stop]}
            if pred_rows is not None:
                reply["predictions"] = picked = pred_rows[start:stop]
                reply["labels"] = [classes[i] if i < len(classes) else str(i) for i in picked]
            if flags is not None:
                reply["flags"] = flags[start:stop]
            replies.append(orjson.dumps(reply, option=numpy_option))
            start = stop
        return replies

    return run


def _observe(monitor: DriftMonitor, metrics: "_Metrics", *args: Any) -> None:
    try:
        monitor.observe(*args)
    except Exception:  # drift must never take serving down: counted and logged
        metrics.errors.labels("monitor").inc()
        log.exception("drift monitor failed on a batch")


def _flags(raw: Sequence[Any], n: int) -> list[list[str]]:
    if len(raw) != n:
        raise ValueError(f"safety_filter returned {len(raw)} entries for {n} items")
    return [[] if f is None else [f] if isinstance(f, str) else [str(x) for x in f] for f in raw]


class _Metrics:
    """The app's own Prometheus registry (two apps in one process never share counters)."""

    def __init__(self, served: ServedModel, monitor: DriftMonitor | None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "ember_requests", "HTTP requests by endpoint and status", ["endpoint", "code"], registry=r
        )
        self.latency = Histogram(
            "ember_request_latency_seconds",
            "Latency of answered predict requests",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.items = Counter("ember_items", "Items predicted", registry=r)
        self.batch_size = Histogram(
            "ember_batch_size", "Items per model batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            "ember_batch_latency_seconds", "Model time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.errors = Counter("ember_errors", "Failed requests by kind", ["kind"], registry=r)
        self.safety = Counter(
            "ember_safety_flags", "Safety-filter flags raised on outputs", ["flag"], registry=r
        )
        self.queue_depth = Gauge("ember_queue_depth", "Requests waiting for a batch", registry=r)
        self.in_flight = Gauge("ember_in_flight_requests", "Requests waiting or in the model", registry=r)
        info = Gauge("ember_model_info", "The served model", ["name", "backend", "sha256"], registry=r)
        info.labels(served.name, served.runner.backend, served.sha256).set(1)
        if monitor is not None:
            r.register(DriftCollector(monitor))

    def watch(self, batcher: DynamicBatcher) -> None:
        self.queue_depth.set_function(lambda: batcher.queue_depth)
        self.in_flight.set_function(lambda: batcher.in_flight)

    def on_batch(self, items: int, requests: int, seconds: float) -> None:
        self.batch_size.observe(items)
        self.batch_latency.observe(seconds)


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
    and that CPU is what caps a batching server's requests per second (see BENCHMARKS.md).

    ``switch_interval_s``: the GIL switch interval. Eager PyTorch retakes the GIL after every op, each
    retake can wait a whole interval behind a busy event loop (CPython's 5 ms made a small CNN's batch
    ~4x slower under load here, 1 ms ~3x); ONNX Runtime takes it once per batch and is unaffected.
    """
    import sys

    import uvicorn

    sys.setswitchinterval(switch_interval_s)

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
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(graceful_timeout_s),
        lifespan="on",
        backlog=2048,
    )
    server = DrainingServer(config)
    if announce is not None:
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        announce(f"listening on http://{shown}:{bound}")
    server.run(sockets=[sock])
