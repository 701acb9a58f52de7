"""Safetensors files that carry their own sha256, and reading weights that checks every byte.

ember's weights and checkpoints are plain safetensors files whose header metadata also holds
``ember_sha256``: the sha256 of the canonical header (every tensor's name, dtype, shape and
offsets, and the other metadata) followed by the tensor data. Any other safetensors reader loads
them as usual; ember's readers recompute the digest and refuse a file that differs, naming it. A
file with no digest (written by another tool) is read as it is, after the checks that can be made:
a sha256 the caller recorded for it, and a header that safetensors accepts.

The digest is computed from the serialized bytes (:func:`seal`), so it can run on a background
writer's thread: hashlib releases the GIL, and training goes on meanwhile.

Example:
    >>> import torch, tempfile
    >>> from pathlib import Path
    >>> from safetensors.torch import save
    >>> path = Path(tempfile.mkdtemp()) / "w.safetensors"
    >>> _ = path.write_bytes(b"".join(seal(save({"w": torch.ones(2)}))))
    >>> read_safetensors(path)[0]["w"]
    tensor([1., 1.])
    >>> raw = bytearray(path.read_bytes()); raw[-1] ^= 1; _ = path.write_bytes(bytes(raw))
    >>> try:
    ...     read_safetensors(path)
    ... except WeightsError as e:
    ...     print(type(e).__name__)
    WeightsError
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load

__all__ = ["DIGEST_KEY", "WeightsError", "digest_of", "read_safetensors", "seal"]

DIGEST_KEY = "ember_sha256"
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header


class WeightsError(RuntimeError):
    """Weights or a checkpoint that cannot be trusted or read; the message names the file."""


def _split(raw: bytes | memoryview, what: str) -> tuple[dict[str, Any], memoryview]:
    """The header (parsed) and the data section of a safetensors file's bytes."""
    view = memoryview(raw)
    if len(view) < 8:
        raise WeightsError(f"{what} is truncated ({len(view)} bytes; a safetensors file has 8 or more)")
    n = int.from_bytes(view[:8], "little")
    if n > min(_MAX_HEADER, len(view) - 8):
        raise WeightsError(
            f"{what} is truncated or damaged: its header claims {n} bytes, the file has {len(view) - 8}"
        )
    try:
        header = json.loads(bytes(view[8 : 8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{what} is damaged: its header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{what} is damaged: its header is not a JSON object")
    return header, view[8 + n :]


def digest_of(header: dict[str, Any], data: bytes | memoryview) -> str:
    """sha256 over the canonical JSON of ``header`` (without the digest) and the tensor data."""
    canonical = {k: v for k, v in header.items() if k != "__metadata__"}
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != DIGEST_KEY}
    if meta:
        canonical["__metadata__"] = meta
    h = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode())
    h.update(data)
    return h.hexdigest()


def seal(raw: bytes) -> list[bytes | memoryview]:
    """The buffers of ``raw`` (a safetensors file) with its digest added to the header metadata.

    Returns a list to write in order (the data section is not copied).
    """
    header, data = _split(raw, "safetensors bytes")
    header.setdefault("__metadata__", {})[DIGEST_KEY] = digest_of(header, data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data section to 8 bytes
    return [len(text).to_bytes(8, "little"), text, data]


def read_safetensors(
    path: Path, *, sha256: str | None = None, what: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file, every byte checked.

    Args:
        path: the file.
        sha256: the whole file's sha256 as recorded when it was written (e.g. in the run store).
        what: how errors call the file (default ``weights file PATH``).

    Raises:
        WeightsError: the file is missing, truncated, differs from ``sha256`` or from the digest in
            its header, or is not safetensors; the message names the file.
    """
    what = what or f"weights file {path}"
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"{what} does not exist") from None
    except OSError as e:
        raise WeightsError(f"{what} cannot be read: {e}") from None
    if sha256 is not None and (got := hashlib.sha256(raw).hexdigest()) != sha256:
        raise WeightsError(
            f"{what} is damaged or was modified: its sha256 is {got}, recorded {sha256} when it was "
            "written. Restore the file, or train again."
        )
    header, data = _split(raw, what)
    recorded = (header.get("__metadata__") or {}).get(DIGEST_KEY)
    if recorded is not None and (got := digest_of(header, data)) != recorded:
        raise WeightsError(
            f"{what} is damaged: the sha256 of its contents is {got}, the file records {recorded}. "
            "Restore the file, or train again."
        )
    try:
        tensors = load(raw)
    except (SafetensorError, ValueError, TypeError) as e:
        raise WeightsError(f"{what} is not a readable safetensors file: {e}") from None
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != DIGEST_KEY}
    return tensors, meta
