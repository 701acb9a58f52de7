"""Every family from train to serve: package → registry push → pull → export onnx → serve.

Each family trains one tiny real run (module-scoped: once per family), then goes through the real
command line (``ember package``, ``ember registry push/pull``, ``ember export``) and a real HTTP
server (uvicorn with the predict lane, in a thread) answering one request. The ONNX file is checked
again here, independently, in a fresh ONNX Runtime session against the bundle's eager model on an
input the exporter never saw. No step may print a traceback.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch

import ember
from ember import models
from ember.cli import main
from ember.deploy.bundle import open_bundle
from ember.deploy.serve import ServedModel, create_app, make_server
from ember.recipe import load_run
from ember.tasks import contract

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
QUICK = {"trainer.epochs": 1, "trainer.max_steps": 2}
TEXT = {"data.name": "text", "data.block_size": 16, "data.chunk_size": 48, "data.windows_per_epoch": 32,
        "data.eval_batch_size": 16}  # fmt: skip
SCENES = {"data.source": "digits", "data.num_train": 48, "data.num_test": 16, "data.canvas_size": 32,
          "data.batch_size": 16}  # fmt: skip
BROWN_GPT = {"model.num_layers": 1, "model.num_heads": 2, "model.embed_dim": 32}
BROWN_GENRE = {**BROWN_GPT, "data.max_len": 32, "data.eval_batch_size": 512}


@dataclass
class Workspace:
    root: Path
    runs: Path
    registry: Path
    corpus: Path
    cache: dict[str, str]
    fetched: Callable[[str], None]


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory, fetched: Callable[[str], None]) -> Workspace:
    root = tmp_path_factory.mktemp("lifecycle")
    corpus = root / "plays.txt"
    corpus.write_text(
        "".join(
            f"ROMEO {i}:\nBut soft, what light through yonder window {i % 7} breaks?\n\n" for i in range(300)
        )
    )
    return Workspace(root, root / "runs", root / "registry", corpus, {}, fetched)


def _fit(space: Workspace, config: str | dict[str, Any], overrides: dict[str, Any]) -> str:
    source = CONFIGS / config if isinstance(config, str) else config
    return ember.fit(source, {**QUICK, **overrides}, runs_dir=space.runs, progress=False).run_id


def _brown_pretrained(space: Workspace) -> str:
    if "brown-lm" not in space.cache:
        space.fetched("brown")
        space.cache["brown-lm"] = _fit(
            space, "pretrain-brown-lm.yaml",
            {**BROWN_GPT, "data.tokenizer": "char", "data.block_size": 32, "data.windows_per_epoch": 32,
             "data.eval_batch_size": 64},
        )  # fmt: skip
    return space.cache["brown-lm"]


def _genre(space: Workspace, lora: bool) -> str:
    pretrained = _brown_pretrained(space)
    extra = {"model.lora.rank": 2, "model.unfreeze": ["head"]} if lora else {}
    return _fit(space, "finetune-brown-genre.yaml", {**BROWN_GENRE, "model.pretrained": pretrained, **extra})


def _python_tensors(space: Workspace) -> str:
    """``ember.Trainer(...).fit(...)`` on the user's own tensors (its spec and data kept in the run)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    x = torch.randn(3, 6, generator=g)[y] * 2 + torch.randn(120, 6, generator=g)
    model = models.create("mlp_tiny", in_channels=6, image_size=1, num_classes=3)
    trainer = ember.Trainer(
        model, task="classification", epochs=1, batch_size=32, runs_dir=space.runs, progress=False
    )
    trainer.fit((x[:80], y[:80]), (x[80:100], y[80:100]))
    trainer.test((x[100:], y[100:]))
    assert trainer.run is not None
    return trainer.run.id


def _csv(space: Workspace, target: str, task: str) -> str:
    path = space.root / f"{task}.csv"
    g = np.random.default_rng(0)
    rows = ["a,b,c,label"]
    for _ in range(90):
        a, b, c = g.normal(size=3)
        label = int(a + b > 0) if task == "classification" else round(2 * a - b + 0.1 * c, 4)
        rows.append(f"{a:.4f},{b:.4f},{c:.4f},{label}")
    path.write_text("\n".join(rows) + "\n")
    return _fit(
        space, {"name": f"csv-{task}", "data": {"name": "csv", "path": str(path), "target": target, "task": task},
                "model": {"name": "tabular_mlp_tiny"}, "task": {"name": task}}, {},
    )  # fmt: skip


FAMILIES: dict[str, Callable[[Workspace], str]] = {
    "image": lambda s: _fit(s, "digits-cnn.yaml", {"model.name": "cnn_tiny"}),
    "tabular": lambda s: _csv(s, "label", "classification"),
    "regression": lambda s: _csv(s, "label", "regression"),
    "char-gpt": lambda s: _fit(
        s, "shakespeare-char-gpt.yaml", {**TEXT, "data.path": str(s.corpus), "model.name": "gpt_tiny"}
    ),
    "bpe-gpt": lambda s: _fit(
        s,
        "shakespeare-char-gpt.yaml",
        {
            **TEXT,
            "data.path": str(s.corpus),
            "model.name": "gpt_tiny",
            "data.tokenizer": "bpe",
            "data.vocab_size": 300,
        },
    ),  # fmt: skip
    "rnn-lm": lambda s: _fit(
        s,
        {"name": "rnn-lm", "model": {"name": "rnn_lm_tiny"}, "task": {"name": "language_model"}},
        {**TEXT, "data.path": str(s.corpus)},
    ),  # fmt: skip
    "translation": lambda s: (
        s.fetched("en-es-verses"),
        _fit(
            s,
            "translate-en-es.yaml",
            {
                "model.name": "encoder_decoder_tiny",
                "data.tokenizer": "char",
                "data.max_len": 24,
                "data.val_books": ["Phlm"],
                "data.test_books": ["Jude"],
                "task.beam_size": 2,
                "task.max_len_a": 0.0,
                "task.max_len_b": 6,
                "task.val_decode_fraction": 0.0,
            },
        ),
    )[1],  # fmt: skip
    "detection": lambda s: _fit(s, "digit-detect.yaml", {**SCENES, "model.name": "centernet_tiny"}),
    "segmentation": lambda s: _fit(s, "digit-segment.yaml", {**SCENES, "model.name": "unet_tiny"}),
    "finetuned": lambda s: _genre(s, lora=False),
    "lora": lambda s: _genre(s, lora=True),
    "python": _python_tensors,
}
TEXT_OUT = {"char-gpt", "bpe-gpt", "rnn-lm", "translation"}


@pytest.fixture(scope="module")
def trained(space: Workspace) -> Callable[[str], str]:
    runs: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in runs:
            runs[family] = FAMILIES[family](space)
        return runs[family]

    return get


def _ember(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The real command line, in this process; it must succeed with no traceback."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in out + err, f"ember {' '.join(args)} exited {code}:\n{out}\n{err}"
    return out


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """uvicorn with the predict lane, in a thread, on a free loopback port; its URL."""
    server, sock = make_server(app, port=0, graceful_timeout_s=5)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


def _check_onnx(path: Path, bundle: Any) -> None:
    """The exported file in a fresh ORT session against the bundle's eager model, on new inputs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = bundle.module()
    inputs = contract.example_inputs(bundle.task, bundle.spec, 5, seed=11)
    if bundle.spec.inputs.kind == "tokens":  # a length the exporter never traced
        inputs = tuple(x[:, : max(1, x.shape[1] - 3)] for x in inputs)
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})
    with torch.no_grad():
        want = module(*inputs)
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=0)


def _cli_server() -> Any:
    """test_cli_serve's ``Server``: ``ember serve`` in a subprocess on a free port."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "e2e_cli_serve", Path(__file__).with_name("test_cli_serve.py")
    )
    assert spec is not None and spec.loader is not None
    if spec.name not in sys.modules:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules[spec.name].Server


def _predict_body(bundle: Any) -> dict[str, Any]:
    return {"inputs": bundle.spec.inputs.example(2, seed=5).tolist()}


SLOW = {"translation", "finetuned", "lora"}  # the real verse pairs and Brown corpus, a pretraining first


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=pytest.mark.slow) if f in SLOW else f for f in FAMILIES]
)
def test_family_packages_pushes_exports_and_serves(
    family: str, trained: Callable[[str], str], space: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = trained(family)
    runs, reg = str(space.runs), str(space.registry)
    path = space.root / f"{family}.ember"
    out = _ember(capsys, "package", run_id, "-o", str(path), "--runs-dir", runs)
    assert f"bundle {path}" in out and "model.safetensors" in out
    out = _ember(capsys, "registry", "push", str(path), "--name", family, "--registry", reg)
    assert out.startswith(f"pushed {family}@1")
    pulled = space.root / f"{family}-pulled.ember"
    _ember(capsys, "registry", "pull", f"{family}@1", "-o", str(pulled), "--registry", reg)
    assert pulled.read_bytes() == path.read_bytes()
    onnx_path = space.root / f"{family}.onnx"
    out = _ember(capsys, "export", f"{family}@1", "--format", "onnx", "-o", str(onnx_path), "--registry", reg)
    assert "max abs error" in out and "batch sizes 1, 4, 7" in out, out
    bundle = open_bundle(pulled)
    assert bundle.spec == load_run(run_id, runs_dir=runs, data=False).spec
    profiled = bundle.meta["profile"]
    if bundle.spec.inputs.kind in ("image", "table"):  # drift profile of the run's own training split
        assert profiled["split"] == "train" and bundle.profile is not None and profiled["rows"] > 0
    else:
        assert bundle.profile is None and "no reference profile" in profiled["note"]
    assert (bundle.tokenizer is not None) == (family in TEXT_OUT or family in ("finetuned", "lora"))
    _check_onnx(onnx_path, bundle)

    served = ServedModel.from_bundle(bundle)
    with serving(create_app(served)) as url, httpx.Client(base_url=url, timeout=60) as client:
        if family in TEXT_OUT:
            refused = client.post("/v1/predict", json=_predict_body(bundle))
            assert refused.status_code == 400 and "/v1/generate" in refused.json()["error"]
            reply = client.post("/v1/generate", json={"prompt": "But soft", "max_new_tokens": 8, "seed": 1})
            assert reply.status_code == 200, reply.text
            assert isinstance(reply.json()["text"], str) and reply.json()["tokens"] >= 0
        else:
            reply = client.post("/v1/predict", json=_predict_body(bundle))
            assert reply.status_code == 200, reply.text
            _assert_answer(family, reply.json(), bundle)
            if bundle.tokenizer is not None:  # a text classifier reads text through its tokenizer
                said = client.post(
                    "/v1/predict", json={"inputs": ["The jury said the election was conducted."]}
                )
                assert said.status_code == 200 and said.json()["labels"][0] in bundle.classes, said.text
            if bundle.spec.preprocess is not None:  # a table run: raw rows through its fitted encoder
                rows = [{"a": 0.5, "b": -1.0, "c": 2.0}, {"a": None, "b": 0.3}]  # a gap, a column left out
                said = client.post("/v1/predict", json={"inputs": rows})
                assert said.status_code == 200, said.text
                assert np.asarray(said.json()["outputs"]).shape[0] == 2
                typo = client.post("/v1/predict", json={"inputs": [{"aa": 1.0}]})
                assert typo.status_code == 422 and "unknown column 'aa'" in typo.json()["error"], typo.text
            refused = client.post("/v1/generate", json={"prompt": "hello"})
            assert refused.status_code == 400 and "/v1/predict" in refused.json()["error"]


def _assert_answer(family: str, answer: dict[str, Any], bundle: Any) -> None:
    if family == "detection":
        assert len(answer["detections"]) == 2
        for found in answer["detections"]:
            assert all(len(d["box"]) == 4 and 0 <= d["score"] <= 1 for d in found)
    elif family == "segmentation":
        masks = np.asarray(answer["masks"])
        assert masks.shape == (2, *bundle.input_shape[1:]) and masks.max() < len(bundle.classes)
    elif family == "regression":
        assert np.asarray(answer["outputs"]).shape == (2, 1)
    else:
        assert len(answer["labels"]) == 2 and set(answer["labels"]) <= set(bundle.classes)
        assert np.asarray(answer["outputs"]).shape == (2, len(bundle.classes))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


# --------------------------------------------------------------------------- a user's own nn.Module

USER_CODE = '''
import torch
from torch import nn


class UserNet(nn.Module):
    """A user's own classifier of 6 numbers: not from ember's zoo."""

    def __init__(self, in_features: int = 6, hidden: int = 12, num_classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * 2.0


def build(**kwargs):
    return UserNet(**kwargs)
'''


@pytest.fixture(scope="module")
def user_code(space: Workspace) -> Iterator[Path]:
    """An importable module of the user's (``usernet``), as a user's project would have it."""
    folder = space.root / "project"
    folder.mkdir()
    (folder / "usernet.py").write_text(USER_CODE)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("usernet", None)


def _user_run(space: Workspace, *, entry_point: bool) -> tuple[str, Any]:
    import usernet  # type: ignore[import-not-found]

    from ember.tasks.spec import InputSpec, ModelSpec

    g = torch.Generator().manual_seed(1)
    y = torch.arange(90) % 3
    x = torch.randn(3, 6, generator=g)[y] * 2 + torch.randn(90, 6, generator=g)
    spec = None
    if entry_point:
        spec = ModelSpec(task="classification", inputs=InputSpec("table", (6,)), entry_point="usernet:build",
                         kwargs={"hidden": 12}, classes=["a", "b", "c"])  # fmt: skip
    trainer = ember.Trainer(
        usernet.build(hidden=12), task="classification", epochs=1, batch_size=30, runs_dir=space.runs,
        progress=False, spec=spec,
    )  # fmt: skip
    trainer.fit((x[:60], y[:60]), (x[60:], y[60:]))
    assert trainer.run is not None
    return trainer.run.id, x[60:]


def test_a_users_module_with_an_entry_point_is_rebuilt_from_it(
    space: Workspace, user_code: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, x = _user_run(space, entry_point=True)
    path = space.root / "user-entry.ember"
    out = _ember(capsys, "package", run_id, "-o", str(path), "--runs-dir", str(space.runs), "--onnx")
    assert "entry point usernet:build: named, not sealed" in out and "model.onnx" in out
    bundle = open_bundle(path)
    assert type(bundle.model).__name__ == "UserNet" and bundle.onnx is not None
    assert bundle.meta["profile"]["split"] == "train"  # its kept training split
    with serving(create_app(ServedModel.from_bundle(bundle))) as url:
        reply = httpx.post(f"{url}/v1/predict", json={"inputs": x[:3].tolist()}, timeout=60)
    assert reply.status_code == 200 and set(reply.json()["labels"]) <= {"a", "b", "c"}
    with torch.no_grad():
        want = bundle.model(x[:3])
    np.testing.assert_allclose(reply.json()["outputs"], want.numpy(), atol=1e-6)


def test_a_users_module_without_code_is_served_from_its_onnx_graph(
    space: Workspace, user_code: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import usernet

    from ember.deploy import package

    run_id, x = _user_run(space, entry_point=False)
    capsys.readouterr()
    assert main(["package", run_id, "-o", str(space.root / "no.ember"), "--runs-dir", str(space.runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model=YourModule(...)" in err, err
    path = package(
        run_id, space.root / "user-onnx.ember", runs_dir=space.runs, model=usernet.UserNet(hidden=12)
    )
    reg = str(space.registry)
    _ember(capsys, "registry", "push", str(path), "--name", "user-onnx", "--registry", reg)
    out = _ember(
        capsys,
        "export",
        "user-onnx@1",
        "--format",
        "onnx",
        "-o",
        str(space.root / "u.onnx"),
        "--registry",
        reg,
    )
    assert "verified against the eager model when packaged" in out
    # served by `ember serve` in a process that cannot import the user's code
    server = _cli_server()(str(path))
    try:
        reply = httpx.post(f"{server.url}/v1/predict", json={"inputs": x[:4].tolist()}, timeout=60)
    finally:
        server.stop()
    assert reply.status_code == 200, reply.text
    graph = ember.load(path)  # the ONNX graph in ONNX Runtime, as a module
    np.testing.assert_allclose(reply.json()["outputs"], graph(x[:4]).numpy(), atol=1e-6)
    assert len(reply.json()["labels"]) == 4


# --------------------------------------------------------------------------- /v1/generate


@pytest.fixture(scope="module")
def gpt_bundle(space: Workspace, trained: Callable[[str], str]) -> Path:
    from ember.deploy import package

    return package(trained("char-gpt"), space.root / "gpt-generate.ember", runs_dir=space.runs)


def test_generate_streams_its_first_piece_before_the_answer_is_done(gpt_bundle: Path) -> None:
    body = {"prompt": "ROMEO", "max_new_tokens": 400, "temperature": 1.0, "seed": 3, "stream": True}
    with serving(create_app(open_bundle(gpt_bundle), max_new_tokens=400)) as url:
        arrivals, lines = [], []
        with httpx.Client(base_url=url, timeout=60) as client:
            start = time.perf_counter()
            with client.stream("POST", "/v1/generate", json=body) as reply:
                assert reply.status_code == 200 and reply.headers["content-type"] == "application/x-ndjson"
                for line in reply.iter_lines():
                    arrivals.append(time.perf_counter() - start)
                    lines.append(json.loads(line))
            whole = client.post("/v1/generate", json={**body, "stream": False}).json()
    *pieces, done = lines
    assert done["done"] is True and len(pieces) >= 10
    assert "".join(p["text"] for p in pieces) == done["text"] == whole["text"]  # same seed, same text
    # the first piece came while the server was still decoding: before the whole answer took
    assert arrivals[0] < done["seconds"] / 2 and arrivals[0] < arrivals[-1], (arrivals[0], done["seconds"])


def test_generate_requests_at_once_do_not_disturb_each_other(gpt_bundle: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def body(seed: int) -> dict[str, Any]:
        return {"prompt": "But soft", "max_new_tokens": 40, "seed": seed, "top_k": 20, "stop": ["\n\n"]}

    with (
        serving(create_app(open_bundle(gpt_bundle), generate_workers=3)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        alone = {seed: client.post("/v1/generate", json=body(seed)).json()["text"] for seed in range(4)}
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda s: client.post("/v1/generate", json=body(s % 4)), range(16)))
        metrics = client.get("/metrics").text
    assert all(r.status_code == 200 for r in together)
    assert [r.json()["text"] for r in together] == [alone[s % 4] for s in range(16)]
    assert len(set(alone.values())) > 1  # the seeds matter
    assert 'ember_requests_total{code="200",endpoint="generate"} 20.0' in metrics
    tokens = next(ln for ln in metrics.splitlines() if ln.startswith("ember_generate_tokens_total"))
    assert float(tokens.split()[-1]) > 0 and "ember_generate_latency_seconds_count 20.0" in metrics


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"prompt": ', 400, "not valid JSON"),
        (b'{"prompt": ""}', 422, "prompt"),
        (b'{"text": "hi"}', 422, "prompt"),
        (b'{"prompt": "hi", "max_new_tokens": 100000}', 422, "max_new_tokens"),
        (b'{"prompt": "hi", "temperature": -1}', 422, "temperature"),
        (b'{"prompt": "hi", "top_p": 0}', 422, "top_p"),
        (b'{"prompt": "hi", "top_k": 1.5}', 422, "top_k"),
        (b'{"prompt": "hi", "stream": "yes"}', 422, "stream"),
        (b'{"prompt": "hi", "seed": -2}', 422, "seed"),
        (b'{"prompt": "hi", "stop": [1]}', 422, "stop"),
        (b'{"prompt": "hi", "extra": 1}', 422, "extra"),
        (b'{"prompt": "' + b"x" * 5000 + b'"}', 413, "over the limit"),
    ],
)
def test_generate_refuses_bad_requests_with_the_errors_of_predict(
    gpt_bundle: Path, body: bytes, status: int, says: str
) -> None:
    app = create_app(open_bundle(gpt_bundle), max_body_bytes=4096, max_new_tokens=64)
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        reply = client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
        kind = client.post("/v1/generate", content=b"hi", headers={"content-type": "text/plain"})
    assert reply.status_code == status and says in reply.json()["error"], reply.text
    assert kind.status_code == 415 and "application/json" in kind.json()["error"]


def test_openapi_documents_generate_and_the_cli_generates_from_a_bundle(
    gpt_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(open_bundle(gpt_bundle))) as client:
        schema = client.get("/openapi.json").json()
        card = client.get("/v1/model").json()
    body = schema["paths"]["/v1/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"prompt", "max_new_tokens", "temperature", "top_p", "top_k", "stop", "seed", "stream"} <= set(
        body["properties"]
    )
    assert body["required"] == ["prompt"] and card["task"] == "language_model"
    out = _ember(
        capsys, "generate", str(gpt_bundle), "--prompt", "ROMEO", "--max-new-tokens", "12", "--seed", "1"
    )
    assert out.startswith("ROMEO") and len(out.strip()) > len("ROMEO")


# --------------------------------------------------------------------------- compress and plan


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=pytest.mark.slow) if f in SLOW else f for f in FAMILIES]
)
def test_family_compresses_and_plans(
    family: str, trained: Callable[[str], str], space: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every variant is scored on the metric the run's task protects, in its own units, and timed in
    the task's export form; the plan measures the same form; what does not apply says why."""
    run_id = trained(family)
    runs = str(space.runs)
    loaded = load_run(run_id, runs_dir=runs, data=False)
    metric, _ = contract.protected_metric(loaded.task)
    timing = ("--threads", "1", "--rounds", "1", "--round-s", "0.005")
    out = _ember(capsys, "compress", run_id, "--try", "int8,prune", "--runs-dir", runs, "--json", *timing)
    report = json.loads(out)
    assert report["metric"] == metric
    variants = {v["variant"]: v for v in report["variants"]}
    assert {"fp32", "prune-magnitude-50"} <= set(variants), (variants, report["skipped"])
    for name in ("int8-dynamic", "onnx", "prune-channels-50"):  # built, or skipped with the reason
        assert any(v.startswith(name) for v in variants) or report["skipped"].get(name), (name, report)
    assert variants["fp32"]["score"] is not None and np.isfinite(variants["fp32"]["score"])
    assert all(set(v["latency"]) == {"1", "64"} for v in variants.values())
    out = _ember(
        capsys, "plan", run_id, "--backends", "eager,int8-dynamic,onnxruntime", "--batch-sizes", "1,4",
        "--runs-dir", runs, "--json", *timing,
    )  # fmt: skip
    plan = json.loads(out)
    assert plan["backend"] in {"eager", "int8-dynamic", "onnxruntime"} and plan["max_batch"] in (1, 4)
    assert {m["backend"] for m in plan["measurements"]} >= {"eager"}
