"""Dynamic batching vs batch-1 serving, against the offline batch-64 throughput of the same model.

For each model and serving backend (eager PyTorch, ONNX Runtime): write a bundle (random weights;
speed does not depend on them), measure the backend runner's offline throughput at batch 64 and
latency at batch 1 in this process (same threads), then start ``ember serve`` on
127.0.0.1 twice — dynamic batching (``--max-batch 64 --max-wait-ms W``) and batch-1
(``--max-batch 1 --max-wait-ms 0``) — and load each over loopback with a small keep-alive HTTP/1.1
client: sequential requests (concurrency 1) and 64 concurrent single-item clients. Every phase is
bounded in requests and seconds.

Targets (the issue): at concurrency 64 the dynamic server reaches >= 0.8x the offline batch-64
throughput; at concurrency 1 it adds <= 0.2 ms + the configured wait to the batch-1 server's median.

    python benchmarks/serve.py                      # digits-cnn (1x8x8), cnn-28 (1x28x28); eager, ORT
    python benchmarks/serve.py --models digits-cnn --requests 3000 --threads 1 --max-wait-ms 2
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# digits-cnn: the default recipe's model on 8x8 digits (~0.25 ms of compute per item at batch 64,
# so HTTP dominates); cnn-28: the same network on 28x28 inputs (~3 ms per item, compute dominates).
MODELS = {
    "digits-cnn": ("cnn", {"in_channels": 1, "image_size": 8, "num_classes": 10}, (1, 8, 8)),
    "cnn-28": ("cnn", {"in_channels": 1, "image_size": 28, "num_classes": 10}, (1, 28, 28)),
}


# --------------------------------------------------------------------------- a lean loopback client


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0  # connection errors, timeouts
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


async def load(
    port: int,
    requests: list[bytes],
    *,
    total: int,
    concurrency: int,
    deadline_s: float,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Send ``total`` requests (cycling through ``requests``) over ``concurrency`` keep-alive connections."""
    result = LoadResult()
    counter = iter(range(total))
    stop_at = time.perf_counter() + deadline_s

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                if time.perf_counter() > stop_at:
                    break
                start = time.perf_counter()
                writer.write(requests[i % len(requests)])
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await asyncio.wait_for(reader.readexactly(length), timeout_s)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError):
                    result.failures += 1
                    return
                status = int(head[9:12])
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == 200:
                    result.latencies.append(time.perf_counter() - start)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------- server and bundle


def write_bundle(name: str, folder: Path, seed: int = 0) -> tuple[Path, torch.nn.Module, tuple[int, ...]]:
    from safetensors.torch import save

    from ember.config import load_config
    from ember.deploy.bundle import write_bundle as write
    from ember.deploy.profile import build_profile
    from ember.models import create

    zoo, kwargs, shape = MODELS[name]
    torch.manual_seed(seed)
    model = create(zoo, **kwargs).eval()
    reference = torch.rand(512, *shape)
    meta = {
        "name": f"bench-{name}",
        "model": {"name": zoo, "kwargs": kwargs},
        "task": "classification",
        "input_shape": list(shape),
        "input_dtype": "float32",
        "input_range": [0.0, 1.0],
        "classes": [str(i) for i in range(10)],
    }
    path = write(
        folder / f"{name}.ember",
        weights=save(model.state_dict()),
        config=load_config({"model": {"name": zoo}}),
        meta=meta,
        profile=build_profile(model, reference),
    )
    return path, model, shape


def start_server(
    bundle: Path, *, max_batch: int, max_wait_ms: float, threads: int, backend: str = "eager"
) -> tuple[subprocess.Popen, int]:
    plan = bundle.parent / f"plan-{backend}-{max_batch}.json"
    plan.write_text(json.dumps({"backend": backend, "threads": threads}))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "ember", "serve", str(bundle), "--port", "0", "--plan", str(plan)]
    cmd += ["--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
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


def _wait_ready(port: int, timeout_s: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server never became ready")


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _mean_batch(port: int) -> float:
    """Mean items per model batch over the server's life, from its /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    value = {ln.split()[0]: float(ln.split()[1]) for ln in lines if ln.startswith("ember_batch_size_")}
    return value.get("ember_batch_size_sum", 0.0) / max(value.get("ember_batch_size_count", 0.0), 1.0)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- measurements


def offline(runner: Any, shape: tuple[int, ...], batch: int, seconds: float) -> tuple[float, float]:
    """Median seconds per batch of the runner the server uses (embeddings included), and CPU
    seconds per item (a measure that other work on the machine skews less than wall time)."""
    x = torch.rand(batch, *shape)
    for _ in range(3):
        runner(x)
    times = []
    cpu = time.process_time()
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < 5:
        start = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), (time.process_time() - cpu) / (len(times) * batch)


def bench_model(name: str, backend: str, args: argparse.Namespace, folder: Path) -> list[dict[str, object]]:
    from ember.deploy.serve import build_runner

    torch.set_num_threads(args.threads)
    bundle, model, shape = write_bundle(name, folder)
    runner = build_runner(model, backend, example=torch.rand(2, *shape), threads=args.threads)
    b64, cpu64 = offline(runner, shape, 64, args.offline_seconds)
    b1, _ = offline(runner, shape, 1, args.offline_seconds)
    g = torch.Generator().manual_seed(1)
    bodies = [
        http_request(json.dumps({"inputs": torch.rand(1, *shape, generator=g).tolist()}).encode())
        for _ in range(32)
    ]
    rows: list[dict[str, object]] = [
        {
            "model": f"{name} {backend}",
            "mode": "offline batch-64",
            "items/s": 64 / b64,
            "p50 c1 ms": b1 * 1e3,
            "cpu us/item": cpu64 * 1e6,
        },
    ]
    for mode, max_batch, wait in (("dynamic", 64, args.max_wait_ms), ("batch-1", 1, 0.0)):
        proc, port = start_server(
            bundle, max_batch=max_batch, max_wait_ms=wait, threads=args.threads, backend=backend
        )
        try:
            asyncio.run(load(port, bodies, total=50, concurrency=4, deadline_s=10))  # warm up
            c1 = asyncio.run(
                load(port, bodies, total=args.requests_c1, concurrency=1, deadline_s=args.seconds)
            )
            cpu = _cpu_seconds(proc.pid)
            c64 = asyncio.run(
                load(port, bodies, total=args.requests, concurrency=64, deadline_s=args.seconds)
            )
            server_cpu = (_cpu_seconds(proc.pid) - cpu) / max(c64.ok, 1)
            mean_batch = _mean_batch(port)
        finally:
            stop_server(proc)
        rows.append(
            {
                "model": f"{name} {backend}",
                "mode": f"{mode} (max_batch {max_batch}, wait {wait:g} ms)",
                "items/s": c64.ok / c64.seconds,
                "vs offline": (c64.ok / c64.seconds) / (64 / b64),
                "p50 c1 ms": c1.percentile(50),
                "p99 c1 ms": c1.percentile(99),
                "p50 c64 ms": c64.percentile(50),
                "p99 c64 ms": c64.percentile(99),
                "mean batch": mean_batch,
                "server cpu us/req c64": server_cpu * 1e6,
                "errors": sum(v for k, v in {**c1.statuses, **c64.statuses}.items() if k != 200)
                + c1.failures
                + c64.failures,
                "requests": c1.ok + c64.ok,
            }
        )
    dyn, one = rows[1], rows[2]
    added = float(dyn["p50 c1 ms"]) - float(one["p50 c1 ms"])  # type: ignore[arg-type]
    rows.append(
        {
            "model": f"{name} {backend}",
            "mode": "verdict",
            "dynamic vs batch-1 (c64)": float(dyn["items/s"]) / float(one["items/s"]),  # type: ignore[arg-type]
            "dynamic vs offline b64": dyn["vs offline"],
            # offline batch-64 CPU per item over the whole dynamic server's (HTTP, batching, model):
            # roughly the throughput ratio it would reach with a core of its own for each thread
            "cpu ratio": float(rows[0]["cpu us/item"]) / float(dyn["server cpu us/req c64"]),  # type: ignore[arg-type]
            "added p50 c1 ms": added,
            "budget ms": 0.2 + args.max_wait_ms,
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--requests", type=int, default=3000, help="requests at concurrency 64 (per server)")
    parser.add_argument("--requests-c1", type=int, default=400, help="requests at concurrency 1 (per server)")
    parser.add_argument("--seconds", type=float, default=30.0, help="time bound of each load phase")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"], help="serving backends")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, offline and in the server")
    parser.add_argument("--offline-seconds", type=float, default=2.0)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other work on the machine skews every number here
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for backend in args.backends:
                rows += bench_model(name, backend, args, Path(tmp))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    print(
        f"benchmarks/serve.py  threads={args.threads}  cpus={os.cpu_count()}  torch={torch.__version__}"
        f"  http={http}  load average before={load_before:.1f}"
    )
    for row in rows:
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
