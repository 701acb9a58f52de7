"""``POST /v1/generate`` for models whose task makes images (VAE, GAN, diffusion): PNG images, with
the limits, metrics and error shapes of ``/v1/predict`` and of the text route
(`ember.deploy.serve.generate`, whose reading, limits and errors this route shares).

Request (JSON; unknown keys are refused)::

    {"n": 4,                    # images, 1 .. the server's cap (default 1)
     "class": 7,                # a class id or name, for a class-conditional model (default: none)
     "prompt": "a seven",       # a phrase, for a text-conditioned model (default: none)
     "seed": 0,                 # the same request gives the same images
     "format": "png",           # png: one PNG (a grid when n > 1); json: {"images": [base64 PNG ...]}
     "sampler": "ddim", "steps": 50, "eta": 0.0, "guidance": 3.0}   # a diffusion model's options

Answer: ``image/png`` (headers ``X-Ember-Images``: n, ``X-Ember-Seconds``), or with ``"format":
"json"`` ``{"images": [...], "seconds": s}``. Errors are ``{"error": "..."}``: 400 a model that
makes no images (the advice says what to call), 413, 415, 422 a field out of range, a class the
model does not have or an option its sampler does not take, 503 too many requests at once, 504 no
answer within ``timeout_s``. ``/metrics`` counts requests (``ember_requests{endpoint="generate"}``),
images (``ember_generate_images_total``) and latency.

Example:
    >>> Request = image_request_model(16)
    >>> Request.model_validate_json('{"n": 2, "class": "seven"}').label
    'seven'
"""

# No ``from __future__ import annotations``: FastAPI resolves endpoint annotations.
import asyncio
import base64
import time
from typing import Annotated, Any, Literal

import torch

from ember.deploy.serve.backends import ServedModel
from ember.deploy.serve.generate import GenerateRoute, _dumps
from ember.deploy.serve.lane import ApiError
from ember.deploy.serve.metrics import Metrics
from ember.tasks import contract
from ember.tasks.spec import NotApplicable


def image_request_model(cap: int) -> Any:
    """The pydantic model of an image request, ``n`` capped at ``cap``."""
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

    number = Annotated[float, Field(strict=True, allow_inf_nan=False)]

    class ImageRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

        n: Annotated[StrictInt, Field(ge=1, le=cap)] = 1
        label: Annotated[StrictInt | StrictStr | None, Field(alias="class")] = None
        prompt: Annotated[StrictStr, Field(min_length=1)] | None = None
        seed: Annotated[StrictInt, Field(ge=0, lt=1 << 63)] = 0
        format: Literal["png", "json"] = "png"
        sampler: Literal["ddpm", "ddim"] | None = None
        steps: Annotated[StrictInt, Field(ge=1, le=1000)] | None = None
        eta: Annotated[number, Field(ge=0.0, le=1.0)] | None = None
        guidance: Annotated[number, Field(ge=0.0, le=20.0)] | None = None

    return ImageRequest


def make_images(served: ServedModel, request: Any) -> torch.Tensor:
    """The images ``request`` asks of the served model: (n, C, H, W) in [0, 1] (NotApplicable: it
    makes none; ValueError: a class, prompt or option it does not take)."""
    from ember.generative.runs import parse_class

    if served.model is None:
        raise NotApplicable(
            "this bundle serves its ONNX graph, without the model's code, and sampling runs the PyTorch "
            "model; package a run whose model can be rebuilt (a zoo model or an entry point)"
        )
    task, model = served.task, served.model
    options = {k: getattr(request, k) for k in ("sampler", "steps", "eta", "guidance")}
    options = {k: v for k, v in options.items() if v is not None}
    labels = None
    if request.label is not None:
        if not contract.image_classes(task, model):
            raise ValueError("this model is not class-conditional: it takes no class")
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        label = parse_class(str(request.label), served.classes)
        labels = torch.full((request.n,), label, device=device)
    return contract.generate_images(
        task, model, request.n, labels=labels, prompt=request.prompt, seed=request.seed, **options
    )


class ImageRoute(GenerateRoute):
    """``POST /v1/generate`` answering images (see the module docstring)."""

    expected = 'expected {"n": 4, "class": ..., "seed": 0, ...} (see /openapi.json)'

    def __init__(
        self, served: ServedModel, metrics: Metrics, *, max_images: int = 64, **options: Any
    ) -> None:
        from prometheus_client import Counter

        super().__init__(served, metrics, **{**options, "max_new_tokens": 1})
        self.model = image_request_model(max_images)
        self.images = Counter(
            "ember_generate_images", "Images /v1/generate answered", registry=metrics.registry
        )

    def openapi(self) -> dict[str, Any]:
        spec = super().openapi()
        spec["requestBody"]["content"]["application/json"]["schema"] = self.model.model_json_schema(
            by_alias=True
        )
        spec["responses"]["200"] = {
            "description": "the images: one PNG (a grid when n > 1), or JSON with one base64 PNG each",
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "images": {"type": "array", "items": {"type": "string"}},
                            "seconds": {"type": "number"},
                        },
                    }
                },
            },
        }
        spec["responses"]["400"]["description"] = "unreadable JSON, or a model that makes no images"
        return spec

    async def __call__(self, request: Any) -> Any:
        from fastapi.responses import Response

        from ember.generative.images import grid, png_bytes

        start = time.perf_counter()
        try:
            parsed = await self._admit(request)
        except Exception as e:
            return self._failed(e)
        try:
            work = asyncio.wrap_future(self.pool.submit(make_images, self.served, parsed))
            remaining = max(start + self.timeout_s - time.perf_counter(), 0.0)
            try:
                images = await asyncio.wait_for(work, timeout=remaining)
            except TimeoutError:
                raise ApiError(
                    504, f"no images within {self.timeout_s:g}s; ask for fewer images or steps", "timeout"
                ) from None
            seconds = time.perf_counter() - start
            self.images.inc(len(images))
            self.latency.observe(seconds)
            self.metrics.requests.labels("generate", "200").inc()
            if parsed.format == "json":
                encoded = [base64.b64encode(png_bytes(image)).decode() for image in images]
                body = _dumps({"images": encoded, "seconds": round(seconds, 6)})
                return Response(body, media_type="application/json")
            picture = grid(images, padding=0) if len(images) == 1 else grid(images)
            headers = {"X-Ember-Images": str(len(images)), "X-Ember-Seconds": f"{seconds:.6f}"}
            return Response(png_bytes(picture), media_type="image/png", headers=headers)
        except Exception as e:
            return self._failed(e)
        finally:
            self.in_flight -= 1


def generate_route(
    served: ServedModel, metrics: Metrics, *, max_images: int, **options: Any
) -> GenerateRoute:
    """The route of ``/v1/generate`` for ``served``: images for a task that makes them
    (`ember.tasks.contract.makes_images`), text otherwise."""
    if served.task is not None and contract.makes_images(served.task):
        return ImageRoute(served, metrics, max_images=max_images, **options)
    return GenerateRoute(served, metrics, **options)


__all__ = ["ImageRoute", "generate_route", "image_request_model", "make_images"]
