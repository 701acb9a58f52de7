"""What ``/openapi.json`` says of each endpoint: the real request schema of ``/v1/predict`` and
every status an endpoint answers, so schema-driven tools (schemathesis) can test the server.

``POST /v1/predict`` is answered before FastAPI's router (``app.App.__call__``), so FastAPI knows
nothing of it; :func:`predict_operation` describes it from the decoder itself: the items' shape,
type and range as pydantic checks them, at most ``max_items`` of them, base64 image files or
text where the model takes them, and the raw ``image/*`` or ``text/plain`` bodies.

Example:
    >>> sorted(responses(200, 503))
    [200, 503]
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["ERROR", "predict_operation", "responses"]

ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
"""Every error body: ``{"error": "what went wrong and what to do"}``."""

_WHY = {
    200: "answered",
    400: "the body is not valid JSON, or the client left before sending it",
    403: "no valid admin token",
    408: "the request's headers or body came too slowly",
    413: "the body, the number of items, or an image's pixels are over the limit",
    415: "a content type this model does not take",
    422: "valid JSON that does not fit the model: shape, type, range, or an image or text that cannot be decoded",
    503: "busy (queue full) or shutting down; retry after Retry-After",
    504: "no answer within timeout_s",
}


def responses(
    *codes: int, ok: dict[str, Any] | None = None, media: str = "application/json"
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``codes``: 2xx with ``ok`` (any JSON object by default) in
    ``media``, errors with :data:`ERROR`."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        if code < 300:
            schema = (
                ok
                if ok is not None
                else ({"type": "object"} if media == "application/json" else {"type": "string"})
            )
            out[code] = {"description": _WHY[code], "content": {media: {"schema": schema}}}
        else:
            out[code] = {
                "description": _WHY.get(code, "error"),
                "content": {"application/json": {"schema": ERROR}},
            }
    return out


PREDICT_OK = {
    "type": "object",
    "properties": {
        "outputs": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        "predictions": {"type": "array", "items": {"type": "integer"}},
        "labels": {"type": "array", "items": {"type": "string"}},
        "flags": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
    },
    "required": ["outputs"],
}


def predict_operation(decoder: Any, *, max_items: int) -> dict[str, Any]:
    """The ``openapi_extra`` of ``POST /v1/predict``: its request bodies and responses."""
    schema = copy.deepcopy(decoder.model.model_json_schema())
    inputs = schema["properties"]["inputs"]
    inputs["maxItems"] = max_items
    served = decoder.served
    for choice in inputs["items"].get("oneOf", []):
        if choice.get("type") == "string":
            choice["minLength"] = 1
            if served.is_image:  # a base64-encoded image file (PNG, JPEG ...)
                choice.update(contentEncoding="base64", contentMediaType="image/*", format="byte")
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if served.is_image:
        for kind in ("image/png", "image/jpeg", "application/octet-stream"):
            content[kind] = {"schema": {"type": "string", "format": "binary"}}
    if served.tokenizer is not None:
        content["text/plain"] = {"schema": {"type": "string"}}
    return {
        "requestBody": {"required": True, "content": content},
        "responses": responses(200, 400, 408, 413, 415, 422, 503, 504, ok=PREDICT_OK),
    }
