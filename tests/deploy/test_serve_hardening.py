"""Serving against slow clients, large images and curious callers: read deadlines, decoding off the
event loop with a pixel limit, an OpenAPI schema that tells the truth, a private admin view."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from typing import Any

import httpx
from fastapi.testclient import TestClient
from test_serve_lane import body, post, raw, running, served

from ember.deploy.serve import create_app


def _read_all(conn: socket.socket, timeout: float) -> bytes:
    conn.settimeout(timeout)
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except TimeoutError:
        return data + b"<still open>"
    return data


def test_half_sent_headers_and_bodies_are_timed_out_with_408(tmp_path: Any) -> None:
    app = create_app(served(), header_timeout_s=0.5, body_timeout_s=0.5)
    with running(app) as url:
        host, port = url.removeprefix("http://").split(":")
        cases = {
            "silent": b"",
            "headers": b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: appl",
            "lane body": post(body(0.5))[:-20],
            "asgi body": post(b"\x89PNG" + b"\0" * 100, kind="image/png")[:-50],
        }
        conns = {name: socket.create_connection((host, int(port))) for name in cases}
        for name, data in cases.items():
            conns[name].sendall(data)
        started = time.monotonic()
        replies = {name: _read_all(conn, timeout=15) for name, conn in conns.items()}
        elapsed = time.monotonic() - started
        for conn in conns.values():
            conn.close()
        ok = raw(url, post(body(0.5)))[0][0]
    assert replies["silent"] == b"" or replies["silent"].startswith(b"HTTP/1.1 408")  # closed
    for name in ("headers", "lane body", "asgi body"):
        assert replies[name].startswith(b"HTTP/1.1 408"), (name, replies[name])
        assert b"<still open>" not in replies[name], name
    assert elapsed < 15 and ok == 200  # 0.5 s deadlines; the rest is a loaded machine's slack


def test_half_sent_requests_add_no_batching_wait_to_others() -> None:
    app = create_app(served(), max_wait_ms=2000.0, body_timeout_s=60)
    with running(app) as url:
        host, port = url.removeprefix("http://").split(":")
        slow = [socket.create_connection((host, int(port))) for _ in range(5)]
        for conn in slow:
            conn.sendall(post(body(0.5))[:-10])
        time.sleep(0.2)
        latencies = []
        for _ in range(3):
            start = time.perf_counter()
            assert raw(url, post(body(0.5)))[0][0] == 200
            latencies.append(time.perf_counter() - start)
        for conn in slow:
            conn.close()
    assert min(latencies) < 1.0, latencies  # not max_wait_ms (2 s): nobody else can join its batch


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return buf.getvalue()


def test_images_are_decoded_off_the_event_loop_within_a_pixel_limit_from_the_input() -> None:
    app = create_app(served())
    decoder_threads: list[str] = []
    lane = app.state.lane
    decode = lane.decode

    def spy(data: bytes, kind: str) -> Any:
        decoder_threads.append(threading.current_thread().name)
        return decode(data, kind)

    lane.decode = spy
    small = base64.b64encode(_png(16, 16)).decode()
    with running(app) as url:
        through_lane = httpx.post(f"{url}/v1/predict", json={"inputs": [small]})
        through_asgi = httpx.post(
            f"{url}/v1/predict", content=_png(16, 16), headers={"content-type": "image/png"}
        )
        big = httpx.post(f"{url}/v1/predict", content=_png(1024, 1024), headers={"content-type": "image/png"})
    assert through_lane.status_code == through_asgi.status_code == 200
    assert decoder_threads and all(name.startswith("ember-decode") for name in decoder_threads)
    # a 8x8 model takes images up to 256x256 (64x its input, at least 256x256): not 16.7 Mpx
    assert big.status_code == 413 and "limit of 65536 pixels" in big.json()["error"]


def test_openapi_describes_predict_with_its_real_request_schema() -> None:
    import jsonschema_rs

    with TestClient(create_app(served(), max_items=8)) as client:
        spec = client.get("/openapi.json").json()
    for path in ("/v1/predict", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/drift"):
        assert path in spec["paths"], path
    operation = spec["paths"]["/v1/predict"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"200", "413", "422", "503", "504"} <= set(operation["responses"])
    validator = jsonschema_rs.validator_for(schema)
    assert validator.is_valid(json.loads(body(0.5)))
    assert not validator.is_valid({"inputs": ["", ""]})  # fit the old schema, then got 422
    assert not validator.is_valid(json.loads(body(*[0.5] * 9)))  # over max_items
    assert not validator.is_valid(json.loads(body(1.5)))  # out of range
    assert "image/png" in operation["requestBody"]["content"]


def test_the_model_card_keeps_machine_and_versions_for_the_admin_view() -> None:
    model = served()
    model.meta = {
        "task": "classification",
        "environment": {"platform": "Linux-6.1.0-secret-kernel", "packages": {"torch": "2.13.0"}},
        "packaged_with": {"torch": "2.13.0", "python": "3.11.7"},
        "code": {"git": "abc123"},
    }
    app = create_app(model, admin_token="s3cret")
    with TestClient(app) as client:
        public = client.get("/v1/model")
        refused = client.get("/v1/admin/model", headers={"authorization": "Bearer wrong"})
        admin = client.get("/v1/admin/model", headers={"authorization": "Bearer s3cret"})
    text = public.text
    assert public.status_code == 200 and public.json()["card"] == {"task": "classification"}
    assert "secret-kernel" not in text and "2.13.0" not in text and "abc123" not in text
    assert refused.status_code == 403
    assert admin.status_code == 200 and "secret-kernel" in admin.text
    with TestClient(create_app(model)) as client:  # no token set: no admin view at all
        assert client.get("/v1/admin/model", headers={"authorization": "Bearer "}).status_code == 403
