"""The predict lane under a real uvicorn: the same answers as ASGI, in order, every error path."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from ember.deploy.serve import RunOutput, ServedModel, create_app, make_server
from ember.deploy.serve.lane import lane_protocol
from ember.models import create

CLASSES = [str(i) for i in range(10)]


def served(runner: Any = None) -> ServedModel:
    if runner is not None:
        return ServedModel(runner=runner, input_shape=(1, 8, 8), input_range=(0.0, 1.0), classes=CLASSES)
    torch.manual_seed(0)
    model = create("cnn_tiny", in_channels=1, num_classes=10, image_size=8).eval()
    return ServedModel.from_module(model, (1, 8, 8), input_range=(0.0, 1.0), classes=CLASSES)


@contextmanager
def running(app: Any) -> Iterator[str]:
    """uvicorn with the lane, in a thread, on a free loopback port; its URL."""
    server, sock = make_server(app, port=0, graceful_timeout_s=5)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def body(*items: float) -> bytes:
    return json.dumps({"inputs": [[[[v] * 8] * 8] for v in items]}).encode()


def raw(
    url: str, data: bytes, *, replies: int = 1, timeout: float = 10
) -> list[tuple[int, dict[str, str], bytes]]:
    """Send ``data`` as-is on one connection; read ``replies`` responses (status, headers, body)."""
    host, port = url.removeprefix("http://").split(":")
    out: list[tuple[int, dict[str, str], bytes]] = []
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(data)
        buffer = b""
        while len(out) < replies:
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    return out
                buffer += chunk
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
            length = int(headers["content-length"])
            while len(buffer) < length:
                buffer += conn.recv(65536)
            out.append((int(lines[0].split()[1]), headers, buffer[:length]))
            buffer = buffer[length:]
    return out


def post(content: bytes, *, kind: str = "application/json", extra: str = "") -> bytes:
    return (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(content)}\r\n{extra}\r\n"
    ).encode() + content


def test_the_lane_answers_what_the_asgi_path_answers() -> None:
    app = create_app(served())
    payload = body(0.1, 0.7)
    with TestClient(create_app(served())) as client:
        asgi = client.post("/v1/predict", content=payload, headers={"content-type": "application/json"})
    with running(app) as url:
        reply = httpx.post(f"{url}/v1/predict", content=payload, headers={"content-type": "application/json"})
    assert app.state.lane.taken == 1  # it came through the lane, not FastAPI
    assert reply.status_code == asgi.status_code == 200
    assert reply.json() == asgi.json()
    assert reply.headers["content-type"] == "application/json" and "date" in reply.headers


def test_pipelined_requests_are_answered_in_order_across_both_paths() -> None:
    app = create_app(served(), max_wait_ms=20.0)
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    image = post(b"\x89PNG not really", kind="image/png")  # through ASGI: 422
    data = post(body(0.1)) + post(body(0.9)) + get + image + post(body(0.5))
    with running(app) as url:
        replies = raw(url, data, replies=5)
        alone = [raw(url, post(body(v)))[0][2] for v in (0.1, 0.9, 0.5)]
    assert [r[0] for r in replies] == [200, 200, 200, 422, 200]
    assert [replies[i][2] for i in (0, 1, 4)] == alone  # each answer on its own request
    assert json.loads(replies[2][2]) == {"status": "ok"}


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (post(b'{"inputs": [[1, 2'), 400, "not valid JSON"),
        (post(json.dumps({"inputs": [[[0.5] * 3]]}).encode()), 422, "inputs"),
        (post(body(2.0)), 422, "less than or equal to 1"),
        (post(body(0.5) + b"]"), 400, "not valid JSON"),  # trailing bytes after the JSON
        (post(b"x" * 5000), 413, "over the limit"),  # declared over --max-body-bytes: ASGI's 413
        (post(body(0.5), kind="text/html"), 415, "unsupported Content-Type"),
    ],
)
def test_bad_requests_get_the_same_4xx_json_errors(data: bytes, status: int, words: str) -> None:
    app = create_app(served(), max_body_bytes=4096)
    with running(app) as url:
        (code, headers, content), *_ = raw(url, data)
        healthy = raw(url, post(body(0.5)))[0][0]
    assert code == status and words in json.loads(content)["error"], content
    assert headers["content-type"] == "application/json" and healthy == 200


class Gate:
    """A runner that blocks each batch until released (the warm-up passes)."""

    backend = "gate"

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.sizes: list[int] = []
        self.fail = fail

    def __call__(self, x: torch.Tensor) -> RunOutput:
        if self.sizes:
            self.release.wait(10)
            if self.fail:
                raise RuntimeError("shape mismatch inside the model")
        self.sizes.append(len(x))
        return RunOutput(torch.zeros(len(x), 10))


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def in_order(calls: list[Callable[[], Any]], reached: list[Callable[[], bool]]) -> list[Any]:
    """Start ``calls[i]`` in a thread once ``reached[i - 1]()`` holds; their results, in order."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for i, t in enumerate(threads):
        t.start()
        if i < len(reached):
            until(reached[i])
    for t in threads:
        t.join(30)
    return results


def test_a_full_queue_gets_503_a_slow_model_504_and_the_server_recovers() -> None:
    gate = Gate()
    app = create_app(served(gate), max_batch=8, max_wait_ms=1.0, max_queue=2, timeout_s=0.5)
    batcher = app.state.lane.batcher
    with running(app) as url:
        first, *queued, refused = in_order(
            [lambda: raw(url, post(body(0.5)))[0] for _ in range(4)],
            [  # the first in the model, then two in the queue: the fourth finds it full
                lambda: batcher.in_flight == 1 and batcher.queue_depth == 0,
                lambda: batcher.queue_depth == 1,
                lambda: batcher.queue_depth == 2,
            ],
        )
        # the queued two timed out (504) while the model held the first: their slots are free at
        # once, before the model gets to them
        after, _ = in_order(
            [lambda: raw(url, post(body(0.5)))[0][0], gate.release.set],
            [lambda: batcher.queue_depth == 1],  # taken while the model still holds the first
        )
    assert refused[0] == 503 and refused[1]["retry-after"] == "1" and b"busy" in refused[2]
    assert first[0] == 504 and b"timeout" in first[2]  # the batch held it past timeout_s
    assert [q[0] for q in queued] == [504, 504]
    assert after == 200
    assert app.state.lane.taken == 5


def test_a_failing_model_gets_500_and_connection_close_is_honoured() -> None:
    gate = Gate(fail=True)
    gate.release.set()
    app = create_app(served(gate))
    with running(app) as url:
        code, headers, content = raw(url, post(body(0.5), extra="Connection: close\r\n"))[0]
        healthy = httpx.get(f"{url}/healthz").status_code
    assert code == 500 and "shape mismatch" in json.loads(content)["error"]
    assert headers["connection"] == "close" and healthy == 200


def test_a_client_gone_mid_body_leaves_nothing_behind() -> None:
    app = create_app(served())
    batcher = app.state.lane.batcher
    with running(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(post(body(0.5))[:-20])  # the headers and part of the body
            time.sleep(0.2)
            assert batcher._held == 0  # a request counts for batching only once its body is in
        until(lambda: batcher._held == 0)  # arrive and depart balanced: no batch waits for a ghost
        ok = raw(url, post(body(0.5)))[0][0]
    assert ok == 200


def test_lane_answers_are_counted_in_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    app = create_app(served())
    with running(app) as url:
        for v in (0.1, 0.2, 0.3):
            raw(url, post(body(v, v)))
        raw(url, post(body(3.0)))
        text = httpx.get(f"{url}/metrics").text
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert values[("ember_requests_total", (("code", "200"), ("endpoint", "predict")))] == 3
    assert values[("ember_requests_total", (("code", "422"), ("endpoint", "predict")))] == 1
    assert values[("ember_items_total", ())] == 6
    assert values[("ember_request_latency_seconds_count", ())] == 3


def test_without_httptools_there_is_no_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn.protocols.http.httptools_impl", None)
    assert lane_protocol(create_app(served()).state.lane) is None
