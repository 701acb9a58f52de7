"""Table rows as JSON objects keyed by column name: decoded by the spec's columns, or by the
decoder registered for its preprocessing kind; anything else is a 422 saying why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from fastapi.testclient import TestClient

from ember.deploy.serve import ServedModel, create_app
from ember.deploy.serve.rows import ROW_DECODERS
from ember.tasks.spec import InputSpec, ModelSpec

COLUMNS = ("age", "income", "score")


def _client(preprocess: dict[str, object] | None = None) -> TestClient:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).eval()
    spec = ModelSpec(
        task="classification", inputs=InputSpec("table", (3,), columns=COLUMNS), classes=["no", "yes"],
        preprocess=preprocess,
    )  # fmt: skip
    return TestClient(create_app(ServedModel.from_module(model, (3,), spec=spec, classes=spec.classes)))


def test_rows_by_column_name_give_the_answer_of_the_same_numbers() -> None:
    rows = [{"income": 2.0, "age": 1.0, "score": -1.5}, {"age": 0, "income": 0.5, "score": 3}]
    with _client() as client:
        by_name = client.post("/v1/predict", json={"inputs": rows}).json()
        by_number = client.post("/v1/predict", json={"inputs": [[1.0, 2.0, -1.5], [0.0, 0.5, 3.0]]}).json()
        card = client.get("/v1/model").json()
    assert by_name == by_number and by_name["labels"][0] in ("no", "yes")
    assert "an object keyed by column name" in card["input"]["request"]["inputs"]
    assert card["output"]["fields"] == ["outputs", "predictions", "labels"]


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ({"age": 1, "income": 2}, "missing columns ['score']"),
        ({"age": 1, "income": 2, "score": 3, "zip": 4}, "unknown columns ['zip']"),
        ({"age": 1, "income": "high", "score": 3}, "inputs.0.income: expected a finite number"),
        ({"age": True, "income": 2, "score": 3}, "inputs.0.age: expected a finite number"),
    ],
)
def test_a_bad_row_is_a_422_naming_the_column(row: dict[str, object], says: str) -> None:
    with _client() as client:
        reply = client.post("/v1/predict", json={"inputs": [row]})
    assert reply.status_code == 422 and says in reply.json()["error"], reply.text


@pytest.fixture
def doubling() -> Iterator[None]:
    """A preprocessing kind registered the way an encoder plugs in: ``kind`` → factory(spec)."""

    def factory(spec: ModelSpec) -> object:
        scale = float(spec.preprocess["scale"])  # type: ignore[index]
        return lambda rows: torch.tensor([[scale * r[c] for c in COLUMNS] for r in rows], dtype=torch.float32)

    ROW_DECODERS["doubling"] = factory  # type: ignore[assignment]
    yield
    del ROW_DECODERS["doubling"]


def test_a_preprocessing_decodes_its_rows_through_its_registered_decoder(doubling: None) -> None:
    with _client({"kind": "doubling", "scale": 2.0}) as client:
        encoded = client.post("/v1/predict", json={"inputs": [{"age": 1, "income": 2, "score": 3}]}).json()
        numbers = client.post("/v1/predict", json={"inputs": [[2.0, 4.0, 6.0]]}).json()
    assert encoded == numbers


def test_an_unknown_preprocessing_refuses_rows_but_takes_encoded_numbers() -> None:
    with _client({"kind": "row_encoder_v9"}) as client:
        rows = client.post("/v1/predict", json={"inputs": [{"age": 1, "income": 2, "score": 3}]})
        numbers = client.post("/v1/predict", json={"inputs": [[1.0, 2.0, 3.0]]})
    assert rows.status_code == 422 and "'row_encoder_v9' preprocessing" in rows.json()["error"]
    assert numbers.status_code == 200
