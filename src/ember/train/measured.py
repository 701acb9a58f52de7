"""Measurements of this machine that stay true between runs: taken once, then kept.

Three of a fit's choices come from timing a few kernels rather than from a flag: ``precision:
auto`` (does a bf16 matmul beat fp32 here, `ember.train.precision`), the peak behind MFU (the best
matmul FLOP/s in the run's dtype, `ember.train.flops`) and the optimizer's update implementation
(for-loop, foreach or fused, `ember.train.optim`). Together they took 0.1–0.3 s of every new
process's first fit. Their answers depend only on the device, torch's build and the number of
threads torch uses, so each is kept under a key naming exactly those:

- in the process, so a later fit, or another Trainer, does not measure again;
- across processes, in a small JSON file (:func:`cache_file`: ``$EMBER_MEASURE_CACHE``, default
  ``~/.cache/ember/measured.json``). The key names the measurement and its arguments, the device
  (the CPU's model name, or the GPU's name and CUDA version), torch's version and the thread
  count, so a file carried to another CPU, read by another torch or under another thread count
  finds no entry and measures anew: a kept answer is only used where it was measured.

A timing taken while other work crowded the CPUs reads low, and a kept one would stay low, so each
answer is kept with the load it was measured under (runnable threads per CPU, the one-minute load
average): one measured on an oversubscribed machine (over one per CPU) is measured again by a
later process that finds the load less than half of that. A file that cannot be read, is of
another format, or holds a value its measurement's check refuses (not a positive number, an
unknown implementation) is measured over and rewritten; it is never trusted and never an error.
A file that cannot be written leaves the answer kept in the process. To refresh:
``EMBER_REMEASURE=1`` measures again and keeps the new answers; deleting the file forgets them
all; ``EMBER_MEASURE_CACHE=off`` keeps nothing on disk.

Example:
    >>> measured("answer", torch.device("cpu"), lambda: 42.0, check=lambda v: v > 0)
    42.0
    >>> forget()  # as a new process: the answer comes from the file, nothing is measured
    >>> measured("answer", torch.device("cpu"), lambda: 0.0, check=lambda v: v > 0)
    42.0
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from ember._io import atomic_write_bytes

T = TypeVar("T")
FORMAT = 1
"""The file's format version; a file of another is measured over."""

_memory: dict[tuple[str, str], Any] = {}  # (file, key) -> answer: this process's measured or read answers


def cache_file() -> Path | None:
    """The file answers are kept in across processes, or None when ``EMBER_MEASURE_CACHE=off``."""
    value = os.environ.get("EMBER_MEASURE_CACHE", "")
    if value.lower() in {"off", "0", "none"}:
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "ember" / "measured.json"


def key(name: str, device: torch.device, args: tuple[Any, ...] = ()) -> str:
    """What an answer is valid for: the measurement, its arguments, the device, torch, the threads."""
    return (
        f"{name}{list(args)} on {device_identity(device)}; torch {torch.__version__}; "
        f"{torch.get_num_threads()} threads"
    )


def measured(
    name: str,
    device: torch.device,
    measure: Callable[[], T],
    *,
    check: Callable[[Any], bool],
    args: tuple[Any, ...] = (),
) -> T:
    """``measure()``'s answer for this device, torch and thread count: kept, or measured and kept.

    Args:
        name: the measurement (``"matmul_peak"``); with ``args``, what the answer is of.
        device: the device it is measured on (part of the key).
        measure: takes the measurement; its answer must be JSON (a number or a string).
        check: whether a kept answer is one ``measure`` could give (read answers are checked).
        args: the measurement's arguments (part of the key).
    """
    file = cache_file()
    entry = key(name, device, args)
    slot = (str(file), entry)
    if slot in _memory:
        return _memory[slot]
    remeasure = os.environ.get("EMBER_REMEASURE", "") not in {"", "0"}
    if file is not None and not remeasure:
        kept = _read(file).get(entry)
        if isinstance(kept, dict) and _passes(check, kept.get("value")) and not _crowded(kept.get("load")):
            _memory[slot] = kept["value"]
            return kept["value"]
    answer = measure()
    _memory[slot] = answer
    if file is not None:
        entries = _read(file)
        entries[entry] = {"value": answer, "measured": round(time.time()), "load": round(load(), 2)}
        try:
            data = json.dumps({"format": FORMAT, "entries": entries}, indent=1, sort_keys=True)
            atomic_write_bytes(file, (data + "\n").encode())
        except (OSError, TypeError, ValueError):
            pass  # a read-only home, an answer that is not JSON: kept in this process only
    return answer


def forget() -> None:
    """Forget this process's answers (the file stays): the next call reads the file, as a new
    process would."""
    _memory.clear()


def positive(value: Any) -> bool:
    """A finite number above zero (a FLOP/s, a speed-up): the check for timed answers."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def load() -> float:
    """Runnable threads per CPU over the last minute (0 where the system does not say)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return 0.0


def _crowded(then: Any) -> bool:
    """Whether an answer measured under load ``then`` should be measured again now (see above)."""
    return isinstance(then, int | float) and then > 1.0 and load() < then / 2


def _passes(check: Callable[[Any], bool], value: Any) -> bool:
    try:
        return bool(check(value))
    except Exception:  # a check that cannot even look at the value: the value is not trusted
        return False


def _read(file: Path) -> dict[str, Any]:
    """The file's entries; empty when it is missing, unreadable or of another format."""
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or not isinstance(data.get("entries"), dict)
    ):
        return {}
    return dict(data["entries"])


@functools.cache
def device_identity(device: torch.device) -> str:
    """The hardware an answer was measured on: the CPU's model name, or the GPU's name and CUDA."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda {torch.cuda.get_device_name(index)} (CUDA {torch.version.cuda})"
    if device.type == "cpu":
        return f"cpu {cpu_model()} ({os.cpu_count()} logical CPUs)"
    return device.type


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


__all__ = ["cache_file", "device_identity", "forget", "key", "load", "measured", "positive"]
