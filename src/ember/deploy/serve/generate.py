"""``POST /v1/generate``: text in, text out, for models whose task writes text (language models,
translators), with the limits, metrics and error shapes of ``/v1/predict``.

Request (JSON; unknown keys are refused)::

    {"prompt": "ROMEO:",        # required: the text to continue (a translator: the sentence)
     "max_new_tokens": 128,     # 1 .. the server's cap (default: 128 or the cap when lower)
     "temperature": 1.0,        # >= 0; 0 takes the most likely token each step
     "top_p": 1.0,              # (0, 1]: nucleus sampling
     "top_k": 0,                # >= 0; 0: every token
     "stop": ["\\n\\n"],          # a string or up to 16: the text ends before the first
     "seed": 0,                 # the sampling's seed: the same request gives the same text
     "stream": false}

Answer: ``{"text": "...", "tokens": n, "seconds": s}``, where ``tokens`` counts the tokens of the
text answered. With ``"stream": true`` the answer is JSON lines (``application/x-ndjson``,
chunked): one ``{"text": piece}`` per piece of text as soon as it is decoded, then
``{"done": true, "text": whole, "tokens": n, "seconds": s}``; an error after the first line is a
last line ``{"error": "..."}``. Sampling options do not apply to a translator (it answers with its
beam search, in one piece).

The decoding runs in worker threads (``workers``), never on the event loop, each request with its
own KV cache and random generator, so concurrent requests do not disturb each other. Errors are
``{"error": "..."}``: 400 unreadable JSON or a model that does not write text (the advice says what
to call), 413 a body over ``max_body_bytes``, 415 not JSON, 422 a field out of range, 503 more
requests than ``max_requests`` at once, 504 no answer within ``timeout_s`` (a streamed answer then
ends with an error line). ``/metrics`` counts requests (``ember_requests{endpoint="generate"}``),
tokens (``ember_generate_tokens_total``), latency and time to the first piece.
"""

# No ``from __future__ import annotations``: FastAPI resolves endpoint annotations.
import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import torch

from ember.deploy.serve.backends import ServedModel
from ember.deploy.serve.lane import ApiError
from ember.deploy.serve.metrics import LATENCY_BUCKETS, Metrics
from ember.tasks import contract
from ember.tasks.spec import NotApplicable

MEDIA_TYPE = "application/x-ndjson"
MAX_STOPS = 16
_END = object()  # the producer's last item


def request_model(cap: int) -> Any:
    """The pydantic model of a generate request, ``max_new_tokens`` capped at ``cap``."""
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

    number = Annotated[float, Field(strict=True, allow_inf_nan=False)]

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        prompt: Annotated[StrictStr, Field(min_length=1)]
        max_new_tokens: Annotated[StrictInt, Field(ge=1, le=cap)] = min(128, cap)
        temperature: Annotated[number, Field(ge=0.0, le=100.0)] = 1.0
        top_p: Annotated[number, Field(gt=0.0, le=1.0)] = 1.0
        top_k: Annotated[StrictInt, Field(ge=0)] = 0
        stop: StrictStr | Annotated[list[StrictStr], Field(max_length=MAX_STOPS)] = []
        seed: Annotated[StrictInt, Field(ge=0, lt=1 << 63)] = 0
        stream: StrictBool = False

    return GenerateRequest


def sampling_options(request: Any) -> dict[str, Any]:
    """``contract.generate_text`` options of a validated request."""
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop)
    return {
        "max_new_tokens": request.max_new_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "stop": [s for s in stop if s],
        "generator": torch.Generator().manual_seed(request.seed),
    }


def text_pieces(served: ServedModel, prompt: str, options: dict[str, Any]) -> Iterator[str]:
    """The pieces of text the served model's task writes for ``prompt`` (NotApplicable: it writes none)."""
    if served.model is None:
        raise NotApplicable(
            "this bundle serves its ONNX graph, without the model's code, and text generation runs the "
            "PyTorch model; package a run whose model can be rebuilt (a zoo model or an entry point)"
        )
    if served.tokenizer is None:
        contract.require(
            served.task, "generate_text", "text generation", contract.NO_TEXT
        )  # advice of a non-text task
        raise NotApplicable("text generation needs the model's tokenizer, and this bundle has none")
    return contract.generate_text(served.task, served.model, served.tokenizer, prompt, **options)


class GenerateRoute:
    """``POST /v1/generate`` on an app (see the module docstring); built by :func:`add_generate`."""

    expected = 'expected {"prompt": "...", "max_new_tokens": n, ...} (see /openapi.json)'
    """What a 422 answer says a request looks like."""

    def __init__(
        self,
        served: ServedModel,
        metrics: Metrics,
        *,
        read_body: Callable[..., Any],
        error: Callable[[BaseException], ApiError],
        timeout_s: float,
        max_body_bytes: int,
        max_new_tokens: int,
        max_requests: int,
        workers: int,
    ) -> None:
        from prometheus_client import Counter, Histogram

        self.served, self.metrics = served, metrics
        self.read_body, self.error = read_body, error
        self.timeout_s, self.max_body_bytes, self.max_requests = timeout_s, max_body_bytes, max_requests
        self.model = request_model(max_new_tokens)
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ember-generate")
        self.in_flight = 0
        r = metrics.registry
        self.tokens = Counter("ember_generate_tokens", "Tokens of the text /v1/generate answered", registry=r)
        self.latency = Histogram(
            "ember_generate_latency_seconds", "Latency of answered generate requests", buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.first_piece = Histogram(
            "ember_generate_first_piece_seconds", "Time to the first piece of text of a generate request",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def openapi(self) -> dict[str, Any]:
        """The route's OpenAPI request body and answers (the handler reads the body itself)."""
        schema = self.model.model_json_schema()
        line = {"type": "object", "description": '{"text": piece} ... then {"done": true, "text": ...}'}
        error = {
            "application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}
        }
        return {
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {
                "200": {
                    "description": "the text (or, streamed, JSON lines as it decodes)",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "text": {"type": "string"},
                                    "tokens": {"type": "integer"},
                                    "seconds": {"type": "number"},
                                },
                            }
                        },
                        MEDIA_TYPE: {"schema": line},
                    },
                },
                **{
                    code: {"description": why, "content": error}
                    for code, why in (
                        (
                            "400",
                            "unreadable JSON, or a model that does not write text (the advice says what to call)",
                        ),
                        ("413", "a body over the size limit"),
                        ("415", "not application/json"),
                        ("422", "a field out of range"),
                        ("503", "too many generate requests at once (Retry-After)"),
                        ("504", "no answer within the timeout"),
                    )
                },
            },
        }

    async def _admit(self, request: Any) -> Any:
        """The parsed request, or 503 when ``max_requests`` are in flight (then counted in flight)."""
        if self.in_flight >= self.max_requests:
            raise ApiError(
                503, f"server busy: {self.in_flight} generate requests in flight; retry shortly", "queue_full",
                {"Retry-After": "1"},
            )  # fmt: skip
        parsed = await self._parse(request)
        self.in_flight += 1
        return parsed

    async def __call__(self, request: Any) -> Any:
        from fastapi.responses import Response, StreamingResponse

        start = time.perf_counter()
        try:
            parsed = await self._admit(request)
        except Exception as e:
            return self._failed(e)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        options = sampling_options(parsed)

        def produce() -> None:
            try:
                for piece in text_pieces(self.served, parsed.prompt, options):
                    if cancel.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
            except BaseException as e:  # handed to the request, answered there
                loop.call_soon_threadsafe(queue.put_nowait, e)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        deadline = start + self.timeout_s

        async def next_item() -> Any:
            item = await asyncio.wait_for(queue.get(), timeout=max(deadline - time.perf_counter(), 0.0))
            if isinstance(item, BaseException):
                raise item
            return item

        self.pool.submit(produce)
        streaming = False
        try:
            first = await next_item()  # an error before any text is an error status, not a stream
            self.first_piece.observe(time.perf_counter() - start)
            if parsed.stream:
                streaming = True
                lines = self._lines(first, next_item, start, cancel)
                return StreamingResponse(lines, media_type=MEDIA_TYPE)
            pieces = []
            while first is not _END:
                pieces.append(first)
                first = await next_item()
            text = "".join(pieces)
            body = _dumps({"text": text, **self._done(text, start)})
            return Response(body, media_type="application/json")
        except Exception as e:
            return self._failed(e)
        finally:
            if not streaming:
                cancel.set()
                self.in_flight -= 1

    async def _lines(
        self, item: Any, next_item: Callable[[], Any], start: float, cancel: threading.Event
    ) -> AsyncIterator[bytes]:
        pieces: list[str] = []
        try:
            while item is not _END:
                pieces.append(item)
                yield _dumps({"text": item}) + b"\n"
                item = await next_item()
            text = "".join(pieces)
            yield _dumps({"done": True, "text": text, **self._done(text, start)}) + b"\n"
        except Exception as e:  # the status line went out already: the error is the last line
            error = self._error(e)
            self.metrics.errors.labels(error.kind).inc()
            yield _dumps({"error": error.message}) + b"\n"
        finally:
            cancel.set()
            self.in_flight -= 1

    async def _parse(self, request: Any) -> Any:
        from pydantic import ValidationError

        kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if kind not in ("", "application/json"):
            raise ApiError(
                415, f"unsupported Content-Type {kind!r}; /v1/generate takes application/json", "content_type"
            )
        length = request.headers.get("content-length")
        body = await self.read_body(
            length.encode() if length is not None else None, request.receive, self.max_body_bytes
        )
        try:
            return self.model.model_validate_json(body)
        except ValidationError as e:
            errors = e.errors(include_url=False, include_input=False)
            if errors and errors[0]["type"] == "json_invalid":
                raise ApiError(400, f"body is not valid JSON: {errors[0]['msg']}", "bad_json") from None
            parts = [f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in errors[:3]]
            raise ApiError(422, "; ".join(parts) + f"; {self.expected}", "validation") from None

    def _done(self, text: str, start: float) -> dict[str, Any]:
        """The closing fields of an answer, counted in the metrics."""
        seconds = time.perf_counter() - start
        tokens = len(self.served.tokenizer.encode(text)) if text and self.served.tokenizer is not None else 0
        self.tokens.inc(tokens)
        self.latency.observe(seconds)
        self.metrics.requests.labels("generate", "200").inc()
        return {"tokens": tokens, "seconds": round(seconds, 6)}

    def _error(self, e: BaseException) -> ApiError:
        if isinstance(e, NotApplicable):
            return ApiError(400, str(e), "not_applicable")
        if isinstance(e, ValueError) and not isinstance(e, ApiError):  # e.g. a prompt of no tokens
            return ApiError(422, str(e), "validation")
        return self.error(e)

    def _failed(self, e: BaseException) -> Any:
        from fastapi.responses import Response

        error = self._error(e)
        self.metrics.errors.labels(error.kind).inc()
        self.metrics.requests.labels("generate", str(error.status)).inc()
        return Response(
            error.body, status_code=error.status, headers=error.headers, media_type="application/json"
        )


def _dumps(value: Any) -> bytes:
    import orjson  # ember[serve]; the app that routes here has it already

    return orjson.dumps(value)


def add_generate(app: Any, route: GenerateRoute) -> None:
    """Add ``POST /v1/generate`` answered by ``route`` to a FastAPI ``app``."""
    from fastapi import Request

    async def generate(request: Request) -> Any:
        return await route(request)

    app.add_api_route(
        "/v1/generate",
        generate,
        methods=["POST"],
        summary="Continue a prompt (language models) or translate it (translators)",
        openapi_extra=route.openapi(),
    )


__all__ = ["MEDIA_TYPE", "GenerateRoute", "add_generate", "request_model", "sampling_options", "text_pieces"]
