"""Request bodies → a checked ``(n, *input_shape)`` tensor for the served model, or a 4xx saying why.

A body is JSON ``{"inputs": [item, ...]}`` (an item: a nested list of numbers of the model's input
shape; for image models also a base64 string of an image file; for text models a string; for table
models also an object keyed by column name, :mod:`~ember.deploy.serve.rows`), the raw
image file for image models (``image/*``), or the text for text models (``text/plain``). pydantic
checks each item's shape, type and range and its errors become the 4xx reason; the common body, a
list of numeric items, takes a fast path (orjson + numpy, no pydantic) that accepts exactly what
pydantic accepts and decodes it to the same tensor (``tests/deploy/test_serve_planned.py``).

Example:
    >>> import json
    >>> from ember.deploy.serve.backends import ServedModel
    >>> from ember.models import create
    >>> served = ServedModel.from_module(create("cnn_tiny", in_channels=1, image_size=8), (1, 8, 8),
    ...                                  input_range=(0.0, 1.0))
    >>> decoder = Decoder(served, max_items=64)
    >>> body = json.dumps({"inputs": [[[[0.5] * 8] * 8]] * 3}).encode()
    >>> tuple(decoder.decode(body, "application/json").shape)
    (3, 1, 8, 8)
    >>> try:
    ...     decoder.decode(body.replace(b"0.5", b"1.5", 1), "application/json")
    ... except ApiError as e:
    ...     print(e.status, e.message.split(";")[0])
    422 inputs.0.0.0.0: Input should be less than or equal to 1
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ember._io import require
from ember.deploy.serve.backends import ServedModel
from ember.deploy.serve.lane import ApiError
from ember.deploy.serve.rows import row_decoder

MAX_IMAGE_PIXELS = 4096 * 4096
"""No image above this many pixels is decoded, whatever the model."""
IMAGE_PIXELS_PER_INPUT = 64
"""An image may have this many times the pixels of the model's input (at least 256x256): it is
resized to the input anyway, and decoding a larger one only spends the server's CPU."""


class Decoder:
    """Request bodies → a checked ``(n, *input_shape)`` tensor, with pydantic doing the checking."""

    def __init__(self, served: ServedModel, max_items: int) -> None:
        from typing import Annotated, Union

        from annotated_types import Len
        from pydantic import ConfigDict, Discriminator, Field, Strict, Tag, create_model

        self.served, self.max_items = served, max_items
        try:
            self.rows = row_decoder(served.spec)  # table rows as objects keyed by column name
            self._rows_refused = ""
        except ValueError as e:  # a preprocessing this ember cannot decode: encoded rows still work
            self.rows, self._rows_refused = None, str(e)
        self.is_int = served.input_dtype == "int64"
        self._kinds = "i" if self.is_int else "if"  # numpy dtype kinds a numeric body may parse to
        self._loads = _json_loads()
        self.torch_dtype = torch.int64 if self.is_int else torch.float32
        lo, hi = served.input_range or (None, None)
        # float items within a range that float32 holds cannot overflow when cast
        bounded = lo is not None and hi is not None and max(abs(lo), abs(hi)) < 3e38
        self._may_overflow = not self.is_int and not bounded
        number = int if self.is_int else float
        leaf: Any = Annotated[number, Strict(), Field(ge=lo, le=hi, allow_inf_nan=False)]
        item: Any = leaf
        for dim in reversed(served.input_shape):
            item = Annotated[list[item], Len(dim, dim)]
        if served.is_image:
            h, w = served.input_shape[-2:]
            self.max_pixels = min(MAX_IMAGE_PIXELS, max(IMAGE_PIXELS_PER_INPUT * h * w, 256 * 256))
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
        if self.rows is not None:
            items += ", or an object keyed by column name"
        return {
            "shape": list(s.input_shape),
            "dtype": s.input_dtype,
            "range": list(s.input_range) if s.input_range else None,
            "content_types": kinds,
            "request": {"inputs": f"a list of 1 to {self.max_items} items; each item {items}"},
            "json_schema": self.model.model_json_schema(),
        }

    def decode_fast(self, body: bytes, content_type: str) -> torch.Tensor | None:
        """The common body (a JSON list of numeric items) decoded cheaply, for the event loop; None
        for anything else, which :meth:`decode` takes (off the loop: images, strings, pydantic)."""
        kind = content_type.split(";")[0].strip().lower()
        return self._numbers(body) if kind in ("", "application/json") else None

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
        objects = self._row_objects(body)
        if objects is not None:
            return objects
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
        # a numeric body has no "r" and no "l" (its one key, "inputs", has neither), while "true",
        # "false" and "null" each have one: two single-byte scans rule them out (2 µs less than
        # searching for the words in a small body, 17 µs less in a 28x28 one)
        if b"r" in body or b"l" in body:
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
        if self._may_overflow and not np.isfinite(array).all():  # beyond float32's range
            return None
        return torch.from_numpy(array)

    def _row_objects(self, body: bytes) -> torch.Tensor | None:
        """A table model's rows given as objects keyed by column name (None: the body is not that)."""
        if not (self.rows is not None or self._rows_refused) or b"{" not in body[1:]:
            return None
        try:
            data = self._loads(body)
        except ValueError:
            return None
        items = data.get("inputs") if isinstance(data, dict) and len(data) == 1 else None
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            return None
        if len(items) > self.max_items:
            raise ApiError(
                413, f"{len(items)} items in one request; at most {self.max_items}", "too_many_items"
            )
        if self.rows is None:
            raise ApiError(422, self._rows_refused, "validation")
        try:
            return self.rows(items)
        except ValueError as e:
            raise ApiError(422, str(e), "validation") from None

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
                if opened.width * opened.height > self.max_pixels:
                    raise ApiError(
                        413,
                        f"image of {opened.width}x{opened.height} pixels is over this model's limit of "
                        f"{self.max_pixels} pixels (its input is {w}x{h}); resize it first",
                        "body_too_large",
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
    return require("orjson", "serve", what="serving").loads


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
