"""The serving hot path and the planned backend: numeric JSON decoded without pydantic, same answers;
a plan from ``ember plan`` served from the very artifact it measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save

from ember.config import load_config
from ember.deploy import bench, placement, quantize
from ember.deploy.bundle import open_bundle, write_bundle
from ember.deploy.profile import build_profile
from ember.deploy.serve import ApiError, ServedModel, create_app, load_plan
from ember.deploy.serve.decode import Decoder
from ember.models import create

KWARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create("cnn_tiny", **KWARGS).eval()


def _decode(decoder: Decoder, body: bytes) -> tuple[int, Any]:
    try:
        return 200, decoder.decode(body, "application/json")
    except ApiError as e:
        return e.status, e.message


BODIES = [
    {"inputs": [[[[0.5] * 8] * 8]]},
    {"inputs": [[[[1] * 8] * 8], [[[0.25] * 8] * 8]]},  # JSON ints are numbers for a float model
    {"inputs": [[[[0.0, 1.0, 0.5, 0.125, 1e-30, 0, 1, 0.75]] * 8]] * 3},
    {"inputs": [[[[1.5] * 8] * 8]]},  # out of range
    {"inputs": [[[[-0.0001] * 8] * 8]]},
    {"inputs": [[[[True] * 8] * 8]]},  # booleans are not numbers
    {"inputs": [[[[0.5] * 7 + [False]] * 8]]},
    {"inputs": [[[[None] * 8] * 8]]},
    {"inputs": [[[["0.5"] * 8] * 8]]},
    {"inputs": [[[[0.5] * 9] * 8]]},  # wrong shape
    {"inputs": [[[0.5] * 8] * 8]},
    {"inputs": [[[[0.5] * 8] * 8], [[[0.5] * 8] * 7]]},  # ragged
    {"inputs": []},
    {"inputs": [[[[0.5] * 8] * 8]] * 70},  # too many items
    {"inputs": [[[[0.5] * 8] * 8]], "extra": 1},
    {"input": [[[[0.5] * 8] * 8]]},
    [[[[0.5] * 8] * 8]],
    {"inputs": [[[[{"a": 1}] * 8] * 8]]},
]


@pytest.mark.parametrize("input_dtype", ["float32", "int64"])
def test_the_fast_json_path_answers_exactly_what_pydantic_answers(
    input_dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = ServedModel.from_module(
        _model() if input_dtype == "float32" else torch.nn.Flatten(),
        (1, 8, 8),
        input_dtype=input_dtype,
        input_range=(0.0, 1.0),
    )
    decoder = Decoder(served, max_items=64)
    bodies = [json.dumps(b).encode() for b in BODIES]
    bodies += [b"not json", b'{"inputs": [[[[NaN]]]]}', b'{"inputs": [[[[1e400]]]]}', b"[" * 3000]
    fast = [_decode(decoder, b) for b in bodies]

    def taken(body: bytes) -> bool:
        try:
            return decoder._numbers(body) is not None
        except ApiError:  # too many items: answered by the fast path too
            return True

    # 3 valid bodies and the one with too many items; int models take JSON integers only
    assert sum(map(taken, bodies)) == (4 if input_dtype == "float32" else 0)
    monkeypatch.setattr(decoder, "_numbers", lambda body: None)  # pydantic for everything
    slow = [_decode(decoder, b) for b in bodies]
    for body, (fs, fv), (ss, sv) in zip(bodies, fast, slow):
        assert fs == ss, body[:80]
        if fs == 200:
            assert fv.dtype == sv.dtype and torch.equal(fv, sv), body[:80]
        else:
            assert fv == sv
    assert {s for s, _ in fast} >= ({200, 400, 413, 422} if input_dtype == "float32" else {400, 422})


def test_the_fast_path_takes_integer_ids_for_token_models() -> None:
    served = ServedModel.from_module(torch.nn.Identity(), (4,), input_dtype="int64")
    decoder = Decoder(served, max_items=8)
    got = decoder._numbers(b'{"inputs": [[1, 2, 3, 0], [5, 6, 0, 0]]}')
    assert got is not None and got.dtype == torch.int64 and got.tolist() == [[1, 2, 3, 0], [5, 6, 0, 0]]
    assert decoder._numbers(b'{"inputs": [[1, 2, 3, 0.5]]}') is None  # pydantic says why


def test_replies_carry_float32_outputs_that_round_trip() -> None:
    served = ServedModel.from_module(_model(), (1, 8, 8), input_range=(0.0, 1.0), classes=list("abcdefghij"))
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with TestClient(create_app(served)) as client:
        reply = client.post("/v1/predict", content=json.dumps({"inputs": x.tolist()}))
    with torch.no_grad():
        want = _model()(x)
    body = reply.json()
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    assert np.array_equal(np.asarray(body["outputs"], dtype=np.float32), want.numpy())
    assert body["predictions"] == want.argmax(1).tolist()
    assert body["labels"] == ["abcdefghij"[i] for i in body["predictions"]]


def _bundle(folder: Path, model: torch.nn.Module) -> Path:
    meta = {
        "name": "digits-tiny",
        "model": {"name": "cnn_tiny", "kwargs": KWARGS},
        "task": "classification",
        "input_shape": [1, 8, 8],
        "input_dtype": "float32",
        "input_range": [0.0, 1.0],
        "classes": [str(i) for i in range(10)],
    }
    return write_bundle(
        folder / "digits.ember",
        weights=save(model.state_dict()),
        config=load_config({"model": {"name": "cnn_tiny"}}),
        meta=meta,
        profile=build_profile(model, torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(1))),
    )


def make_plan(
    folder: Path, monkeypatch: pytest.MonkeyPatch, backend: str = "onnxruntime-int8"
) -> tuple[Path, Path]:
    """A bundle and the ``plan.json`` beside it, choosing ``backend`` (timings faked: the choice is
    not what is tested here, serving it is; quality is checked for real)."""
    if backend.startswith("onnxruntime"):
        pytest.importorskip("onnxruntime")

    def measure(variants, example, *, batch_sizes, baseline, threads, rounds, round_s):  # type: ignore[no-untyped-def]
        rows = []
        for key in variants:
            name = key.rsplit("@", 1)[0]
            r = 1.0 if name == "eager" else 0.3 if name == backend else 0.9
            for b in batch_sizes:
                rows.append(bench.Latency(key, b, threads, r * b, r * b, r * b, 10, r, (r, r), [r * b]))
        return rows

    monkeypatch.setattr(placement.bench, "measure", measure)
    model = _model()
    bundle = _bundle(folder, model)
    x = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    chosen = placement.plan(
        model, x[:64], backends=[backend], threads=(1,), batch_sizes=(1, 8), workdir=folder / "w"
    )
    assert chosen.backend == backend and (chosen.artifact is not None) == backend.startswith("onnxruntime")
    return bundle, chosen.save(folder / "plan.json")


def test_a_plan_is_served_from_the_artifact_it_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, plan_path = make_plan(tmp_path, monkeypatch)
    plan = load_plan(plan_path)
    served = ServedModel.from_bundle(open_bundle(bundle), plan=plan, plan_folder=plan_path.parent)
    assert served.runner.backend == "onnxruntime-int8"
    artifact = plan_path.parent / plan["artifact"]
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    want = placement.runner(plan, _model(), folder=plan_path.parent)(x)
    with TestClient(create_app(served)) as client:
        card = client.get("/v1/model").json()
        got = client.post("/v1/predict", json={"inputs": x.tolist()}).json()["outputs"]
    assert card["backend"] == "onnxruntime-int8" and card["artifact"] == artifact.name
    assert card["plan"]["artifact_sha256"] == plan["artifact_sha256"]
    assert np.array_equal(np.asarray(got, dtype=np.float32), want.numpy())  # the int8 file itself
    with torch.no_grad():
        assert not torch.equal(want, _model()(x))  # ... which is not the eager model
    # an explicit --backend other than the plan's is built afresh; a tampered artifact is refused
    eager = ServedModel.from_bundle(open_bundle(bundle), plan=plan, backend="eager", plan_folder=tmp_path)
    assert eager.runner.backend == "eager"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="sha256"):
        ServedModel.from_bundle(open_bundle(bundle), plan=plan, plan_folder=plan_path.parent)


def test_a_bf16_plan_is_served_in_bf16_with_float32_replies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, plan_path = make_plan(tmp_path, monkeypatch, backend="bf16")
    plan = load_plan(plan_path)
    assert plan["precision"] == "bf16" and plan["quality"]["bf16"]["relative_error"] <= 0.02
    served = ServedModel.from_bundle(open_bundle(bundle), plan=plan, plan_folder=plan_path.parent)
    assert served.runner.backend == "bf16"
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    out = served.runner(x)
    assert out.outputs.dtype == torch.float32 and out.embeddings is not None  # drift still sees embeddings
    assert out.embeddings.dtype == torch.float32
    with TestClient(create_app(served)) as client:
        card = client.get("/v1/model").json()
        reply = client.post("/v1/predict", json={"inputs": x.tolist()})
    assert reply.status_code == 200 and card["backend"] == "bf16"
    got = torch.tensor(reply.json()["outputs"])
    with torch.no_grad():
        want, eager = quantize.bf16(_model())(x), _model()(x)
    assert torch.equal(got, want)  # the bf16 copy of the bundle's weights itself ...
    assert not torch.equal(got, eager)  # ... which is not the fp32 model,
    assert float((got - eager).norm() / eager.norm()) < 0.02  # but within bf16's bound of it
