"""Dynamic batching vs batch-1 serving, against the offline batch-64 throughput of the same model.

For each model and serving backend: write a bundle (random weights; speed does not depend on them)
and start ``ember serve`` on 127.0.0.1 twice — dynamic batching (``--max-batch 64 --max-wait-ms W``)
and batch-1 (``--max-batch 1 --max-wait-ms 0``). Then, for ``--rounds`` rounds, these phases take
turns (the order rotated each round):

- offline: the backend's runner (the one the server uses, embeddings included) at batch 64 in this
  process, with the server's thread count;
- dynamic and batch-1 at concurrency 64: 64 keep-alive connections, one single-item request in
  flight on each;
- dynamic and batch-1 at concurrency 1: sequential requests on one connection.

Each round gives the ratios (dynamic c64 items/s over offline items/s; dynamic over batch-1) and
the median latency the dynamic server adds at concurrency 1; the report gives their medians over
rounds (load from other processes moves both sides of one round together) and p50/p99 latencies
over every request. Every phase is bounded in requests and seconds.

The load generator is this process, separate from the servers, and as cheap as a Python client gets:
raw ``asyncio.Protocol`` connections (uvloop when installed), requests prebuilt as bytes, responses
parsed only for status and length.

Targets (the issue): at concurrency 64 the dynamic server reaches >= 0.8x the offline batch-64
throughput; at concurrency 1 it adds <= 0.2 ms + the configured wait to the batch-1 server's median.

    python benchmarks/serve.py                      # every model, eager and ORT
    python benchmarks/serve.py --models cnn-28 --backends eager --threads 2 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, also when the tests load this file
import _common

# digits-cnn: the default recipe's model on 8x8 digits (40-70 µs of compute per item at batch 64 on
# one Zen 4 core, so HTTP dominates); cnn-28: the same network on 28x28 inputs (0.5-0.8 ms per item,
# compute dominates); encoder: the compression benchmark's text classifier (4 layers, d 256, 128
# tokens per request); linear-8x8: a linear model on digits-cnn's inputs (~1 µs per item), so its
# served rate is the most requests per second the server takes on this machine, whatever the model.
MODELS: dict[str, tuple[str, dict[str, Any], tuple[int, ...], str]] = {
    "linear-8x8": (
        "mlp",
        {"in_channels": 1, "image_size": 8, "num_classes": 10, "depth": 0},
        (1, 8, 8),
        "float32",
    ),
    "digits-cnn": ("cnn", {"in_channels": 1, "image_size": 8, "num_classes": 10}, (1, 8, 8), "float32"),
    "cnn-28": ("cnn", {"in_channels": 1, "image_size": 28, "num_classes": 10}, (1, 28, 28), "float32"),
    "encoder": (
        "transformer_encoder",
        {"vocab_size": 1000, "num_classes": 4, "max_len": 128, "dropout": 0.0},
        (128,),
        "int64",
    ),
}


# --------------------------------------------------------------------------- a lean loopback client


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0  # connection errors, timeouts, unparsable responses
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1e3 if self.latencies else float("nan")


def http_request(body: bytes, path: str = "/v1/predict", content_type: str = "application/json") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending requests one after another until the shared counter ends."""

    def __init__(self, shared: _Shared) -> None:
        self.shared = shared
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.buffer = bytearray()
        self.need = -1  # bytes of the whole response, once its head is read
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._send_next()

    def _send_next(self) -> None:
        s = self.shared
        i = next(s.counter, None)
        if i is None or time.perf_counter() > s.stop_at:
            self._finish()
            return
        self.buffer.clear()
        self.need = -1
        self.started = time.perf_counter()
        self.transport.write(s.requests[i % len(s.requests)])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            try:
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                self.status = int(head[9:12])
            except (IndexError, ValueError):
                self.shared.result.failures += 1
                self._finish()
                return
            self.need = end + 4 + length
        if len(self.buffer) >= self.need:
            r = self.shared.result
            r.statuses[self.status] = r.statuses.get(self.status, 0) + 1
            if self.status == 200:
                r.latencies.append(time.perf_counter() - self.started)
            self._send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.shared.result.failures += 1
            self.done.set_result(None)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()


@dataclass
class _Shared:
    requests: list[bytes]
    counter: Any
    stop_at: float
    result: LoadResult


async def load(
    port: int,
    requests: list[bytes],
    *,
    total: int,
    concurrency: int,
    deadline_s: float,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Send ``total`` requests (cycling through ``requests``) over ``concurrency`` keep-alive connections.

    No new request starts after ``deadline_s``; a request still unanswered ``timeout_s`` later counts
    as a failure.
    """
    result = LoadResult()
    shared = _Shared(requests, iter(range(total)), time.perf_counter() + deadline_s, result)
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    connections: list[_Connection] = []
    for _ in range(concurrency):
        try:
            _, conn = await loop.create_connection(lambda: _Connection(shared), "127.0.0.1", port)
        except OSError:
            result.failures += 1
            continue
        connections.append(conn)
    pending = [c.done for c in connections]
    _, late = await asyncio.wait(pending, timeout=deadline_s + timeout_s) if pending else (set(), set())
    for conn in connections:
        if not conn.done.done():
            result.failures += 1
            conn._finish()
    del late
    result.seconds = time.perf_counter() - start
    return result


def run_load(port: int, requests: list[bytes], **kwargs: Any) -> LoadResult:
    """:func:`load` on a fresh event loop (uvloop's when installed: a cheaper client)."""
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(load(port, requests, **kwargs))
    return asyncio.run(load(port, requests, **kwargs))


# --------------------------------------------------------------------------- server and bundle


def write_bundle(
    name: str, folder: Path, seed: int = 0
) -> tuple[Path, torch.nn.Module, tuple[int, ...], str]:
    from safetensors.torch import save

    from ember.config import load_config
    from ember.deploy.bundle import write_bundle as write
    from ember.deploy.profile import build_profile
    from ember.models import create

    zoo, kwargs, shape, dtype = MODELS[name]
    torch.manual_seed(seed)
    model = create(zoo, **kwargs).eval()
    classes = int(kwargs["num_classes"])
    reference = sample(name, 256, seed)
    meta = {
        "name": f"bench-{name}",
        "model": {"name": zoo, "kwargs": kwargs},
        "task": "classification",
        "input_shape": list(shape),
        "input_dtype": dtype,
        "classes": [str(i) for i in range(classes)],
    }
    if dtype == "float32":
        meta["input_range"] = [0.0, 1.0]
    path = write(
        folder / f"{name}.ember",
        weights=save(model.state_dict()),
        config=load_config({"model": {"name": zoo}}),
        meta=meta,
        profile=build_profile(model, reference),
    )
    return path, model, shape, dtype


def sample(name: str, n: int, seed: int) -> torch.Tensor:
    """``n`` inputs for model ``name``: images in [0, 1], or right-padded token ids."""
    _, kwargs, shape, dtype = MODELS[name]
    g = torch.Generator().manual_seed(seed)
    if dtype == "float32":
        return torch.rand(n, *shape, generator=g)
    (length,) = shape
    ids = torch.randint(1, int(kwargs["vocab_size"]), (n, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (n,), generator=g)
    ids[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    return ids


def start_server(
    bundle: Path, *, max_batch: int, max_wait_ms: float, threads: int, backend: str = "eager"
) -> tuple[subprocess.Popen[str], int]:
    plan = bundle.parent / f"plan-{backend}-{max_batch}.json"
    plan.write_text(json.dumps({"backend": backend, "threads": threads}))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "ember", "serve", str(bundle), "--port", "0", "--plan", str(plan)]
    cmd += ["--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on http://" in line:
            port = int(line.rsplit(":", 1)[1])
            _wait_ready(port)
            return proc, port
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"server did not start: {proc.stdout.read()}")


def _wait_ready(port: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("server never became ready")


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of process ``pid``: all its threads, and its main thread (uvicorn's event loop)."""
    import psutil

    proc = psutil.Process(pid)
    times = proc.cpu_times()
    main = next((t.user_time + t.system_time for t in proc.threads() if t.id == pid), float("nan"))
    return float(times.user + times.system), float(main)


def _batches(port: int) -> tuple[float, float]:
    """(items, batches) the server has run so far, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    value = {ln.split()[0]: float(ln.split()[1]) for ln in lines if ln.startswith("ember_batch_size_")}
    return value.get("ember_batch_size_sum", 0.0), value.get("ember_batch_size_count", 0.0)


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- measurements


def offline(runner: Any, x: torch.Tensor, seconds: float) -> tuple[float, float]:
    """Items per second of ``runner`` on batch ``x`` over ``seconds`` (at least 3 calls), and CPU
    seconds per item (which other processes' load skews far less than wall time)."""
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while calls < 3 or time.perf_counter() - start < seconds:
        runner(x)
        calls += 1
    items = calls * len(x)
    return items / (time.perf_counter() - start), (time.process_time() - cpu) / items


@dataclass
class _Server:
    mode: str
    proc: subprocess.Popen[str]
    port: int
    c64: list[LoadResult] = field(default_factory=list)
    c1: list[LoadResult] = field(default_factory=list)
    cpu_s: float = 0.0
    loop_s: float = 0.0
    items: float = 0.0
    batches: float = 0.0


def bench_model(name: str, backend: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from ember.deploy.serve import build_runner

    _common.set_threads(args.threads)
    bundle, model, shape, _ = write_bundle(name, folder)
    x64 = sample(name, 64, seed=1)
    runner = build_runner(model, backend, example=x64[:2], threads=args.threads)
    for _ in range(3):
        runner(x64)
    bodies = [
        http_request(json.dumps({"inputs": row[None].tolist()}).encode()) for row in sample(name, 32, 2)
    ]
    servers = {}
    try:
        for mode, max_batch, wait in (("dynamic", 64, args.max_wait_ms), ("batch-1", 1, 0.0)):
            proc, port = start_server(
                bundle, max_batch=max_batch, max_wait_ms=wait, threads=args.threads, backend=backend
            )
            servers[mode] = _Server(mode, proc, port)
            run_load(port, bodies, total=100, concurrency=8, deadline_s=20)  # warm up
        offline_rate: list[float] = []
        offline_cpu: list[float] = []
        phases = ["offline", "dynamic c64", "batch-1 c64", "dynamic c1", "batch-1 c1"]
        for r in range(args.rounds):
            for phase in _common.rotate(phases, r):
                if phase == "offline":
                    items_per_s, cpu_per_item = offline(runner, x64, args.offline_seconds)
                    offline_rate.append(items_per_s)
                    offline_cpu.append(cpu_per_item)
                    continue
                srv = servers[phase.split()[0]]
                if phase.endswith("c64"):
                    # scrape outside the CPU window: /metrics computes the drift statistics
                    items, batches = _batches(srv.port)
                    cpu = _cpu_seconds(srv.proc.pid)
                    srv.c64.append(
                        run_load(
                            srv.port, bodies, total=args.requests, concurrency=64, deadline_s=args.seconds
                        )
                    )
                    cpu2 = _cpu_seconds(srv.proc.pid)
                    items2, batches2 = _batches(srv.port)
                    srv.cpu_s += cpu2[0] - cpu[0]
                    srv.loop_s += cpu2[1] - cpu[1]
                    srv.items += items2 - items
                    srv.batches += batches2 - batches
                else:
                    srv.c1.append(
                        run_load(
                            srv.port, bodies, total=args.requests_c1, concurrency=1, deadline_s=args.seconds
                        )
                    )
    finally:
        for srv in servers.values():
            stop_server(srv.proc)
    dyn, one = servers["dynamic"], servers["batch-1"]

    def rate(res: LoadResult) -> float:
        return res.ok / res.seconds

    def pooled(results: list[LoadResult]) -> LoadResult:
        out = LoadResult()
        for res in results:
            out.latencies += res.latencies
        return out

    vs_offline = [rate(d) / o for d, o in zip(dyn.c64, offline_rate)]
    vs_batch1 = [rate(d) / rate(b) for d, b in zip(dyn.c64, one.c64)]
    added = [d.percentile(50) - b.percentile(50) for d, b in zip(dyn.c1, one.c1)]
    errors = sum(
        sum(v for k, v in res.statuses.items() if k != 200) + res.failures
        for srv in (dyn, one)
        for res in srv.c64 + srv.c1
    )
    requests = sum(
        sum(res.statuses.values()) + res.failures for srv in (dyn, one) for res in srv.c64 + srv.c1
    )
    server_us = 1e6 * dyn.cpu_s / max(sum(r.ok for r in dyn.c64), 1)
    loop_us = 1e6 * dyn.loop_s / max(sum(r.ok for r in dyn.c64), 1)
    return {
        "model": name,
        "backend": backend,
        "threads": args.threads,
        "offline b64 items/s": statistics.median(offline_rate),
        "dynamic c64 items/s": statistics.median(rate(r) for r in dyn.c64),
        "batch-1 c64 items/s": statistics.median(rate(r) for r in one.c64),
        "dynamic vs offline": statistics.median(vs_offline),
        "dynamic vs offline spread": _common.spread(vs_offline),
        "dynamic vs batch-1": statistics.median(vs_batch1),
        "added p50 c1 ms": statistics.median(added),
        "added spread": f"{min(added):+.2f}..{max(added):+.2f}",
        "budget ms": 0.2 + args.max_wait_ms,
        "dynamic c1 p50/p99 ms": (pooled(dyn.c1).percentile(50), pooled(dyn.c1).percentile(99)),
        "batch-1 c1 p50/p99 ms": (pooled(one.c1).percentile(50), pooled(one.c1).percentile(99)),
        "dynamic c64 p50/p99 ms": (pooled(dyn.c64).percentile(50), pooled(dyn.c64).percentile(99)),
        "mean batch": dyn.items / max(dyn.batches, 1.0),
        "offline cpu us/item": 1e6 * statistics.median(offline_cpu),
        "server cpu us/req c64": server_us,
        "loop cpu us/req c64": loop_us,  # the event loop's share: HTTP, decoding, replies
        # offline CPU per item over the dynamic server's CPU per request (HTTP, batching, model,
        # drift): the throughput ratio the server would reach with the CPU it needs to itself
        "cpu ratio": 1e6 * statistics.median(offline_cpu) / server_us,
        "errors": errors,
        "requests": requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"], help="serving backends")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch / ORT threads, offline and in the server"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000, help="requests per round at concurrency 64")
    parser.add_argument("--requests-c1", type=int, default=100, help="requests per round at concurrency 1")
    parser.add_argument("--seconds", type=float, default=30.0, help="time bound of each load phase")
    parser.add_argument("--offline-seconds", type=float, default=2.0, help="offline phase per round")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    print(_common.machine(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for backend in args.backends:
                rows.append(bench_model(name, backend, args, Path(tmp)))
                if not args.json:
                    print(json.dumps(rows[-1]), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    print(
        f"\nthreads={args.threads}  http={http}  loop={loop}  rounds={args.rounds}  after: {_common.machine()}"
    )
    head = [
        "model / backend",
        "offline b64 items/s",
        "dynamic c64 items/s (x offline)",
        "batch-1 c64 items/s",
        "dynamic x batch-1",
        "added p50 c1 ms (budget)",
        "c1 p50/p99 ms dynamic",
        "c1 p50/p99 ms batch-1",
        "c64 p50/p99 ms dynamic",
        "mean batch",
        "cpu us: offline item / server request (ratio)",
        "loop cpu us/request",
        "errors",
    ]
    table = [
        [
            f"{r['model']} {r['backend']}",
            f"{r['offline b64 items/s']:.0f}",
            f"{r['dynamic c64 items/s']:.0f} ({r['dynamic vs offline']:.2f}, {r['dynamic vs offline spread']})",
            f"{r['batch-1 c64 items/s']:.0f}",
            f"{r['dynamic vs batch-1']:.1f}x",
            f"{r['added p50 c1 ms']:+.2f} ({r['budget ms']:.1f})",
            "{:.2f} / {:.2f}".format(*r["dynamic c1 p50/p99 ms"]),
            "{:.2f} / {:.2f}".format(*r["batch-1 c1 p50/p99 ms"]),
            "{:.1f} / {:.1f}".format(*r["dynamic c64 p50/p99 ms"]),
            f"{r['mean batch']:.1f}",
            f"{r['offline cpu us/item']:.0f} / {r['server cpu us/req c64']:.0f} ({r['cpu ratio']:.2f})",
            f"{r['loop cpu us/req c64']:.0f}",
            f"{r['errors']}/{r['requests']}",
        ]
        for r in rows
    ]
    print(_common.table(head, table))


if __name__ == "__main__":
    main()
