"""`ember serve` and `ember monitor` for real: uvicorn on 127.0.0.1, loopback traffic, SIGTERM drain."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import save

from ember.config import load_config
from ember.deploy.bundle import write_bundle
from ember.deploy.profile import build_profile
from ember.models import create

ROOT = Path(__file__).resolve().parents[2]
KWARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create("cnn_tiny", **KWARGS).eval()
    meta = {
        "name": "digits-tiny",
        "model": {"name": "cnn_tiny", "kwargs": KWARGS},
        "task": "classification",
        "input_shape": [1, 8, 8],
        "input_dtype": "float32",
        "input_range": [0.0, 1.0],
        "classes": [str(i) for i in range(10)],
    }
    folder = tmp_path_factory.mktemp("serve")
    # the plan `ember plan` would leave beside the bundle: `ember serve` picks it up by itself
    plan = {"backend": "eager", "threads": 1, "max_batch": 32, "max_wait_ms": 2.0}
    (folder / "plan.json").write_text(json.dumps(plan))
    return write_bundle(
        folder / "digits.ember",
        weights=save(model.state_dict()),
        config=load_config({"model": {"name": "cnn_tiny"}}),
        meta=meta,
        profile=build_profile(model, torch.rand(300, 1, 8, 8)),
    )


class Server:
    """`ember serve` in a subprocess on a free loopback port."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "ember", "serve", *args, "--port", "0"]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            self.lines.append(line)
            if "listening on http://127.0.0.1:" in line:
                self.url = line.split("listening on ")[1].strip()
                break
            if not line and self.proc.poll() is not None:
                raise AssertionError("ember serve exited:\n" + "".join(self.lines))
        else:
            raise AssertionError("ember serve did not start:\n" + "".join(self.lines))
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("ember serve never became ready")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return "".join(self.lines) + out


@pytest.fixture(scope="module")
def server(bundle: Path) -> Iterator[Server]:
    srv = Server(str(bundle), "--max-body-bytes", "65536")
    assert "backend eager (plan " in srv.lines[0] and "plan.json" in srv.lines[0], srv.lines
    with urllib.request.urlopen(f"{srv.url}/v1/model", timeout=10) as reply:
        assert json.loads(reply.read())["batching"]["max_batch"] == 32
    yield srv
    srv.stop()


def _inputs(n: int, seed: int) -> list[bytes]:
    g = torch.Generator().manual_seed(seed)
    return [json.dumps({"inputs": torch.rand(1, 1, 8, 8, generator=g).tolist()}).encode() for _ in range(n)]


async def _fire(url: str, requests: list[tuple[bytes, str]], concurrency: int) -> tuple[dict[int, int], int]:
    """Send every request with at most ``concurrency`` in flight; count statuses and transport errors."""
    statuses: dict[int, int] = {}
    errors = 0
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def one(body: bytes, kind: str) -> None:
            nonlocal errors
            async with gate:
                try:
                    reply = await client.post("/v1/predict", content=body, headers={"content-type": kind})
                except httpx.TransportError:
                    errors += 1
                    return
                statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1

        await asyncio.gather(*(one(b, k) for b, k in requests))
    return statuses, errors


def _bench() -> Any:
    """benchmarks/serve.py: its lean keep-alive client keeps the load test's own CPU small."""
    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "benchmarks" / "serve.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return module


def _load(server: Server, bodies: list[bytes], total: int, concurrency: int) -> Any:
    bench = _bench()
    port = int(server.url.rsplit(":", 1)[1])
    requests = [bench.http_request(b) for b in bodies]
    return asyncio.run(bench.load(port, requests, total=total, concurrency=concurrency, deadline_s=120))


def test_load_2000_requests_at_concurrency_16_without_errors(server: Server) -> None:
    result = _load(server, _inputs(50, seed=1), total=2000, concurrency=16)
    assert result.statuses == {200: 2000} and result.failures == 0, (result.statuses, result.failures)
    assert len(result.latencies) == 2000


def test_thousand_malformed_requests_over_http_give_no_5xx(server: Server) -> None:
    rng = random.Random(0)
    good = _inputs(1, seed=2)[0]
    makers = [
        lambda: (good[: rng.randrange(1, len(good))], "application/json"),
        lambda: (json.dumps({"inputs": [[[[0.5] * rng.choice([3, 9])] * 8]]}).encode(), "application/json"),
        lambda: (b"x" * 70_000, rng.choice(["application/json", "image/png"])),  # over --max-body-bytes
        lambda: (good, rng.choice(["text/html", "application/xml", "image/gif; x=1"])),
        lambda: (bytes(rng.randrange(256) for _ in range(64)), rng.choice(["application/json", "image/png"])),
        lambda: (json.dumps({"inputs": [[[[2.0] * 8] * 8]]}).encode(), "application/json"),
        lambda: (b'{"inputs": "' + b"[" * 5000 + b'"}', "application/json"),
        lambda: (json.dumps({"inputs": [[[[0.5] * 8] * 8]] * 80}).encode(), "application/json"),
    ]
    requests = [makers[i % len(makers)]() for i in range(1000)]
    statuses, errors = asyncio.run(_fire(server.url, requests, concurrency=16))
    assert errors == 0 and not any(s >= 500 for s in statuses), (statuses, errors)
    assert sum(statuses.values()) == 1000 and 200 not in statuses
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as reply:
        assert reply.status == 200
    statuses, errors = asyncio.run(_fire(server.url, [(good, "application/json")] * 20, concurrency=4))
    assert statuses == {200: 20}


def test_monitor_once_shows_traffic_and_drift(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    from ember.cli import main  # in-process: the server is the real subprocess, the monitor need not be

    assert _load(server, _inputs(200, seed=3), total=200, concurrency=8).ok == 200
    dark = [json.dumps({"inputs": (torch.rand(1, 1, 8, 8) * 0.1).tolist()}).encode() for _ in range(8)]
    assert _load(server, dark, total=150, concurrency=8).ok == 150
    code = main(["monitor", server.url, "--once", "--interval", "0.5", "--fail-on-alert"])
    out = capsys.readouterr().out
    assert code == 1  # --fail-on-alert: the dark images raised drift alerts
    assert "model digits-tiny (eager" in out and "latency   p50" in out and "req/s" in out
    assert "drift     window " in out and "ALERT     input drift" in out
    assert main(["monitor", "http://127.0.0.1:9", "--once"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_sigterm_drains_requests_in_flight(bundle: Path, tmp_path: Path) -> None:
    from ember.track.registry import ModelRegistry

    registry = ModelRegistry(tmp_path / "registry")
    registry.push(bundle, "digits-tiny")
    registry.promote("digits-tiny@1", "production")
    # served by registry reference; a long wait keeps every request in the batcher when SIGTERM comes
    srv = Server("digits-tiny@production", "--registry", str(tmp_path / "registry"), "--max-wait-ms", "400")

    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
            body = _inputs(1, seed=4)[0]
            calls = [
                asyncio.ensure_future(
                    client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
                )
                for _ in range(24)
            ]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # every request reached the server (or is answered)
                text = (await client.get("/metrics")).text
                answered = _sample(text, "ember_requests_total", endpoint="predict")
                held = _sample(text, "ember_in_flight_requests") + answered
                if held >= len(calls):
                    break
                await asyncio.sleep(0.01)
            srv.proc.send_signal(signal.SIGTERM)
            return [r.status_code for r in await asyncio.gather(*calls)]

    statuses = asyncio.run(main())
    try:
        srv.proc.wait(timeout=60)  # it exits by itself once drained
    finally:
        log = srv.stop()
    assert statuses == [200] * 24
    assert srv.proc.returncode == 0 and "stopped after draining" in log, log


def _sample(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples that carry ``labels``, in a /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def test_serve_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ember.cli import main

    assert main(["serve", str(tmp_path / "missing.ember")]) == 2
    assert "no bundle file" in capsys.readouterr().err
    plan = tmp_path / "plan.json"
    plan.write_text('{"backend": "tpu"}')
    assert main(["serve", str(tmp_path / "missing.ember"), "--plan", str(plan)]) == 2


def _make_plan(folder: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> tuple[Path, Path]:
    """A bundle and a real plan beside it choosing ``backend`` (timings faked)."""
    sys.path.insert(0, str(ROOT / "tests" / "deploy"))
    try:
        from test_serve_planned import make_plan
    finally:
        sys.path.remove(str(ROOT / "tests" / "deploy"))
    return make_plan(folder, monkeypatch, backend)


def test_serve_runs_the_backend_the_plan_chose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    bundle, plan_path = _make_plan(tmp_path, monkeypatch, "onnxruntime-int8")
    plan = json.loads(plan_path.read_text())
    srv = Server(str(bundle))  # plan.json beside the bundle: picked up without --plan
    try:
        assert "backend onnxruntime-int8 (plan " in srv.lines[0], srv.lines
        with urllib.request.urlopen(f"{srv.url}/v1/model", timeout=10) as reply:
            card = json.loads(reply.read())
        assert card["backend"] == "onnxruntime-int8" and card["artifact"] == plan["artifact"]
        assert card["plan"]["artifact_sha256"] == plan["artifact_sha256"]
        result = _load(srv, _inputs(20, seed=5), total=200, concurrency=8)
        assert result.statuses == {200: 200} and result.failures == 0
    finally:
        srv.stop()
    # without a plan beside it, the same bundle is served eagerly
    plan_path.unlink()
    srv = Server(str(bundle))
    try:
        assert "backend eager (no plan)" in srv.lines[0], srv.lines
    finally:
        srv.stop()


def test_serve_runs_a_bf16_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, _ = _make_plan(tmp_path, monkeypatch, "bf16")
    srv = Server(str(bundle))  # plan.json beside the bundle: a bf16 copy of the bundle's weights
    try:
        assert "backend bf16 (plan " in srv.lines[0], srv.lines
        x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
        reply = httpx.post(f"{srv.url}/v1/predict", json={"inputs": x.tolist()}, timeout=30)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert len(body["outputs"]) == 3 and len(body["predictions"]) == 3
        result = _load(srv, _inputs(10, seed=6), total=50, concurrency=4)
        assert result.statuses == {200: 50} and result.failures == 0
    finally:
        srv.stop()
