"""The server app in-process: predictions, inputs, every error path, metrics, drift and backends."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import save

from ember.config import load_config
from ember.deploy.bundle import open_bundle, write_bundle
from ember.deploy.profile import build_profile
from ember.deploy.serve import RunOutput, ServedModel, create_app, load_plan
from ember.models import create

CLASSES = [str(i) for i in range(10)]
KWARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8}


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create("cnn_tiny", **KWARGS).eval()


def served_model(**fields: Any) -> ServedModel:
    return ServedModel.from_module(tiny_model(), (1, 8, 8), input_range=(0.0, 1.0), classes=CLASSES, **fields)


def item(value: float = 0.5) -> list[list[list[float]]]:
    return [[[value] * 8 for _ in range(8)]]


def metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_predict_matches_the_model_and_batches_items() -> None:
    model = tiny_model()
    x = torch.rand(3, 1, 8, 8)
    with TestClient(create_app(served_model())) as client:
        reply = client.post("/v1/predict", json={"inputs": x.tolist()})
    assert reply.status_code == 200
    body = reply.json()
    with torch.no_grad():
        want = model(x)
    np.testing.assert_allclose(body["outputs"], want.numpy(), atol=1e-5)
    assert body["predictions"] == want.argmax(1).tolist()
    assert body["labels"] == [CLASSES[i] for i in body["predictions"]]


def test_raw_image_bytes_and_base64_images() -> None:
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, "PNG")
    png = buf.getvalue()
    x = torch.from_numpy(pixels.astype(np.float32) / 255.0)[None, None]
    with torch.no_grad():
        want = tiny_model()(x)[0].numpy()
    with TestClient(create_app(served_model())) as client:
        raw = client.post("/v1/predict", content=png, headers={"content-type": "image/png"})
        b64 = client.post("/v1/predict", json={"inputs": [base64.b64encode(png).decode(), item()]})
        big = io.BytesIO()
        Image.new("RGB", (40, 30), (255, 255, 255)).save(big, "JPEG")
        resized = client.post("/v1/predict", content=big.getvalue(), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200 and b64.status_code == 200 and resized.status_code == 200
    np.testing.assert_allclose(raw.json()["outputs"][0], want, atol=1e-5)
    np.testing.assert_allclose(b64.json()["outputs"][0], want, atol=1e-5)


class CharTokenizer:
    pad_id = 0

    def encode(self, text: str) -> list[int]:
        return [1 + (ord(c) % 30) for c in text]


def test_text_models_take_strings() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(32, 4), torch.nn.Flatten(), torch.nn.Linear(24, 2)).eval()
    served = ServedModel.from_module(
        model,
        (6,),
        input_dtype="int64",
        input_range=(0, 31),
        classes=["neg", "pos"],
        tokenizer=CharTokenizer(),
    )
    ids = torch.tensor([CharTokenizer().encode("hello") + [0]])
    with TestClient(create_app(served)) as client:
        text = client.post("/v1/predict", content=b"hello", headers={"content-type": "text/plain"})
        mixed = client.post("/v1/predict", json={"inputs": ["hello", ids[0].tolist()]})
        bad = client.post("/v1/predict", json={"inputs": [[0, 1, 2, 3, 4, 99]]})
    with torch.no_grad():
        want = model(ids)[0].numpy()
    assert text.status_code == 200 and mixed.status_code == 200
    np.testing.assert_allclose(text.json()["outputs"][0], want, atol=1e-6)
    np.testing.assert_allclose(mixed.json()["outputs"][1], want, atol=1e-6)
    assert bad.status_code == 422 and "less than or equal to 31" in bad.json()["error"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b'{"inputs": [', {}, 400, "not valid JSON"),
        (b"[1, 2]", {}, 422, "object"),
        (b'{"input": []}', {}, 422, "inputs"),
        (b'{"inputs": []}', {}, 422, "at least 1"),
        (json.dumps({"inputs": [item()], "extra": 1}).encode(), {}, 422, "extra"),
        (json.dumps({"inputs": [[[0.5] * 8] * 8]}).encode(), {}, 422, "shape [1, 8, 8]"),
        (json.dumps({"inputs": [item(1.5)]}).encode(), {}, 422, "less than or equal to 1"),
        (json.dumps({"inputs": [item(-0.1)]}).encode(), {}, 422, "greater than or equal to 0"),
        (json.dumps({"inputs": [[[["0.5"] * 8] * 8]]}).encode(), {}, 422, "valid number"),
        (json.dumps({"inputs": [[[[True] * 8] * 8]]}).encode(), {}, 422, "valid number"),
        (b'{"inputs": [[[[NaN, 0, 0, 0, 0, 0, 0, 0]]]]}', {}, 422, "finite"),
        (json.dumps({"inputs": ["not base64!"]}).encode(), {}, 422, "base64"),
        (json.dumps({"inputs": [item()] * 65}).encode(), {}, 413, "at most 64"),
        (b"x" * 50_000, {}, 413, "over the limit"),
        (b"hello", {"content-type": "text/plain"}, 415, "Content-Type"),
        (b"\x89PNG broken", {"content-type": "image/png"}, 422, "decode the image"),
        (b"{}", {"content-length": "abc"}, 400, "Content-Length"),
    ],
)
def test_bad_requests_get_4xx_json_errors(
    body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    with TestClient(create_app(served_model(), max_body_bytes=40_000)) as client:
        reply = client.post(
            "/v1/predict", content=body, headers={"content-type": "application/json", **headers}
        )
    assert reply.status_code == status, reply.text
    assert says in reply.json()["error"]


def test_thousand_malformed_requests_leave_the_server_healthy() -> None:
    rng = random.Random(0)
    good = json.dumps({"inputs": [item()]}).encode()
    makers = [
        lambda: (good[: rng.randrange(1, len(good))], "application/json"),  # truncated JSON
        lambda: (
            json.dumps({"inputs": [[[[0.1] * rng.choice([1, 7, 9, 12])] * 8]]}).encode(),
            "application/json",
        ),
        lambda: (
            json.dumps({"inputs": rng.choice([None, 3, "x", {}, [[]], [[[[]]]]])}).encode(),
            "application/json",
        ),
        lambda: (bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))), "application/json"),
        lambda: (b"x" * 3000, rng.choice(["application/json", "image/png"])),  # over the 2 KiB limit
        lambda: (good, rng.choice(["text/html", "application/xml", "multipart/form-data", "video/mp4"])),
        lambda: (bytes(rng.randrange(256) for _ in range(100)), "image/png"),
        lambda: (json.dumps({"inputs": [item(rng.choice([2.0, -1.0, 1e40]))]}).encode(), "application/json"),
    ]
    requests = [makers[i % len(makers)]() for i in range(1000)]
    app = create_app(served_model(), max_body_bytes=2048)

    async def body(client: Any) -> tuple[dict[int, int], list[int], str]:
        statuses: dict[int, int] = {}
        for payload, kind in requests:
            reply = await client.post("/v1/predict", content=payload, headers={"content-type": kind})
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
        after = [
            (await client.get("/healthz")).status_code,
            (await client.get("/readyz")).status_code,
            (
                await client.post("/v1/predict", content=good, headers={"content-type": "application/json"})
            ).status_code,
        ]
        return statuses, after, (await client.get("/metrics")).text

    statuses, after, text = asyncio.run(_with_app(app, body))
    assert not any(s >= 500 for s in statuses), statuses
    assert sum(v for s, v in statuses.items() if 400 <= s < 500) == 1000, statuses
    assert after == [200, 200, 200]
    assert metric(text, "ember_errors_total") == 1000
    assert metric(text, "ember_requests_total", endpoint="predict", code="413") == statuses[413]


def test_endpoints_model_card_metrics_and_safety_flags() -> None:
    def flag_low_confidence(outputs: torch.Tensor) -> list[str | None]:
        return ["low_confidence" if p < 0.5 else None for p in outputs.softmax(1).amax(1).tolist()]

    app = create_app(
        served_model(meta={"name": "tiny", "metrics": {"accuracy": 0.5}}), safety_filter=flag_low_confidence
    )
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
        card = client.get("/v1/model").json()
        reply = client.post("/v1/predict", json={"inputs": [item(), item(0.1)]}).json()
        text = client.get("/metrics").text
        assert client.get("/v1/drift").json()["enabled"] is False
        missing = client.get("/nope")
        wrong_method = client.get("/v1/predict")
    assert card["input"]["shape"] == [1, 8, 8] and card["input"]["range"] == [0.0, 1.0]
    assert card["card"]["metrics"] == {"accuracy": 0.5} and card["backend"] == "eager"
    assert "image/png" in card["input"]["content_types"] and card["batching"]["max_batch"] == 64
    assert reply["flags"] == [["low_confidence"], ["low_confidence"]]  # an untrained model is unsure
    assert metric(text, "ember_safety_flags_total", flag="low_confidence") == 2
    assert metric(text, "ember_items_total") == 2 and metric(text, "ember_batch_size_count") >= 1
    assert metric(text, "ember_request_latency_seconds_count") == 1
    for name in ("ember_queue_depth", "ember_in_flight_requests", "ember_model_info"):
        assert name in text
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    assert wrong_method.status_code == 405 and "POST" in wrong_method.json()["error"]


class SlowRunner:
    """A runner that blocks until released, recording its batch sizes."""

    backend = "slow"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sizes: list[int] = []

    def __call__(self, x: torch.Tensor) -> RunOutput:
        if len(self.sizes) > 0:  # the warm-up call at startup passes at once
            self.release.wait(10)
        self.sizes.append(len(x))
        return RunOutput(torch.zeros(len(x), 10))


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


async def _with_app(app: Any, body: Any) -> Any:
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await body(client)


def test_concurrent_requests_are_batched_and_a_full_queue_gets_503() -> None:
    runner = SlowRunner()
    app = create_app(
        ServedModel(runner=runner, input_shape=(1, 8, 8), classes=CLASSES),
        max_batch=8,
        max_wait_ms=1.0,
        max_queue=4,
    )
    batcher = app.state.lane.batcher

    async def body(client: Any) -> tuple[list[int], Any]:
        payload = {"inputs": [item()]}
        first = asyncio.ensure_future(client.post("/v1/predict", json=payload))
        await until(lambda: batcher.in_flight == 1 and batcher.queue_depth == 0)  # in the model, blocked
        queued = [asyncio.ensure_future(client.post("/v1/predict", json=payload)) for _ in range(4)]
        await until(lambda: batcher.queue_depth == 4)
        refused = await client.post("/v1/predict", json=payload)
        runner.release.set()
        replies = await asyncio.gather(first, *queued)
        return [r.status_code for r in replies], refused

    statuses, refused = asyncio.run(_with_app(app, body))
    assert statuses == [200] * 5
    assert (
        refused.status_code == 503
        and refused.headers["retry-after"] == "1"
        and "busy" in refused.json()["error"]
    )
    assert runner.sizes[1:] == [1, 4]  # the four queued requests ran as one batch


def test_a_slow_model_gets_504_and_the_server_recovers() -> None:
    runner = SlowRunner()
    app = create_app(ServedModel(runner=runner, input_shape=(1, 8, 8)), timeout_s=0.2)

    async def body(client: Any) -> tuple[Any, Any]:
        late = await client.post("/v1/predict", json={"inputs": [item()]})
        runner.release.set()
        return late, await client.post("/v1/predict", json={"inputs": [item()]})

    late, after = asyncio.run(_with_app(app, body))
    assert late.status_code == 504 and "timeout" in late.json()["error"]
    assert after.status_code == 200


def test_a_failing_model_gets_500_with_a_json_error() -> None:
    def broken(x: torch.Tensor) -> RunOutput:
        if len(x) > 1:
            raise RuntimeError("shape mismatch inside the model")
        return RunOutput(torch.zeros(1, 10))

    broken.backend = "broken"  # type: ignore[attr-defined]
    with TestClient(create_app(ServedModel(runner=broken, input_shape=(1, 8, 8)))) as client:  # type: ignore[arg-type]
        reply = client.post("/v1/predict", json={"inputs": [item(), item()]})
        assert client.get("/healthz").status_code == 200
    assert reply.status_code == 500 and "shape mismatch" in reply.json()["error"]


def _bundle(tmp_path: Path) -> Path:
    model = tiny_model()
    meta = {
        "name": "digits-tiny",
        "model": {"name": "cnn_tiny", "kwargs": KWARGS},
        "task": "classification",
        "input_shape": [1, 8, 8],
        "input_dtype": "float32",
        "input_range": [0.0, 1.0],
        "classes": CLASSES,
    }
    reference = torch.rand(400, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return write_bundle(
        tmp_path / "digits.ember",
        weights=save(model.state_dict()),
        config=load_config({"model": {"name": "cnn_tiny"}}),
        meta=meta,
        profile=build_profile(model, reference),
    )


def test_a_bundle_is_served_with_drift_against_its_profile(tmp_path: Path) -> None:
    bundle = open_bundle(_bundle(tmp_path))
    app = create_app(bundle, drift_window=200)
    g = torch.Generator().manual_seed(2)
    with TestClient(app) as client:
        for _ in range(10):
            assert (
                client.post(
                    "/v1/predict", json={"inputs": torch.rand(20, 1, 8, 8, generator=g).tolist()}
                ).status_code
                == 200
            )
        same = _settled_drift(app, client, lambda r: r.window == 200)
        for _ in range(10):  # dark images: the inputs have shifted
            dark = (torch.rand(20, 1, 8, 8, generator=g) * 0.2).tolist()
            assert client.post("/v1/predict", json={"inputs": dark}).status_code == 200
        drifted = _settled_drift(app, client, lambda r: r.window == 200 and r.drift_score > 0.25)
        text = client.get("/metrics").text
        card = client.get("/v1/model").json()
    assert same["enabled"] and same["window"] == 200 and same["alerts"] == []
    assert drifted["drift_score"] > 0.25 and any("input drift" in a for a in drifted["alerts"])
    assert drifted["embedding_mmd2"] is not None and drifted["prediction_hist"] is not None
    assert metric(text, "ember_drift_score") == pytest.approx(drifted["drift_score"])
    assert metric(text, "ember_drift_alerts") == len(drifted["alerts"]) > 0
    assert metric(text, "ember_drift_feature_psi", feature="mean_c0") > 0.25
    assert card["sha256"] == bundle.sha256 and card["drift"] is True and card["name"] == "digits-tiny"


def _settled_drift(app: Any, client: Any, done: Any) -> Any:
    # observations land on the drift thread just after each reply: wait for them, then read /v1/drift
    import time

    for _ in range(500):
        if done(app.state.monitor.report(force=True)):
            break
        time.sleep(0.02)
    return client.get("/v1/drift").json()


def test_plan_backends(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"backend": "int8-dynamic", "threads": 1, "max_batch": 16, "why": "measured"}))
    loaded = load_plan(plan)
    served = ServedModel.from_bundle(open_bundle(_bundle(tmp_path)), plan=loaded)
    assert served.runner.backend == "int8-dynamic" and served.plan == loaded
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        want = tiny_model()(x)
    with TestClient(create_app(served)) as client:
        got = client.post("/v1/predict", json={"inputs": x.tolist()}).json()["outputs"]
    np.testing.assert_allclose(got, want.numpy(), atol=0.05)  # int8 weights in the head
    plan.write_text(json.dumps({"backend": "tensorrt"}))
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        load_plan(plan)
    plan.write_text(json.dumps({"backend": "eager", "threads": "two"}))
    with pytest.raises(ValueError, match="'threads'"):
        load_plan(plan)


@pytest.mark.slow
def test_onnxruntime_int8_backend_serves_close_to_eager(tmp_path: Path) -> None:
    served = served_model(backend="onnxruntime-int8")
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        want = tiny_model()(x)
    out = served.runner(x)
    assert served.runner.backend == "onnxruntime-int8" and out.embeddings is not None
    np.testing.assert_allclose(out.outputs.numpy(), want.numpy(), atol=0.05)
    with TestClient(create_app(served)) as client:
        reply = client.post("/v1/predict", json={"inputs": x.tolist()})
    assert reply.status_code == 200
    np.testing.assert_allclose(reply.json()["outputs"], out.outputs.numpy(), atol=1e-5)
