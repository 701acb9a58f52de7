"""Tables: reading (CSV, Parquet, DataFrame), kind inference, and the RowEncoder fitted on training rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ember.data import DataError, load_dataset
from ember.data.csv_table import EncodedTable, TableBundle
from ember.data.table import Table, read_table
from ember.data.tabular import RowEncoder


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_kinds_and_missing_are_inferred(tmp_path: Path) -> None:
    table = read_table(_write(tmp_path / "t.csv", "a,b,c\n1,x,\n2.5,?,3\nNA,y,4\n"))
    assert table.kinds() == {"a": "numeric", "b": "categorical", "c": "numeric"}
    assert table.missing() == {"a": 1, "b": 1, "c": 1}
    assert np.isnan(table.columns["a"][2]) and table.columns["b"][1] is None


def test_header_names_repeated_get_suffixes(tmp_path: Path) -> None:
    table = read_table(_write(tmp_path / "t.csv", "a,a,b\n1,2,3\n"))
    assert table.names == ["a", "a.1", "b"]


def test_encoder_fits_training_rows_only() -> None:
    train = Table(
        {"age": [20.0, 40.0, None, 60.0], "job": ["cook", "clerk", "cook", None], "y": [0, 1, 0, 1]}
    )
    enc = RowEncoder.fit(train, target="y")
    age, job = enc.columns
    assert (age.kind, age.fill, age.indicator) == ("numeric", 40.0, True)
    assert age.mean == pytest.approx(np.mean([20, 40, 40, 60])) and age.std == pytest.approx(
        np.std([20, 40, 40, 60])
    )
    assert job.categories == ("clerk", "cook")  # code 0 stays for missing / unseen
    # a category seen only later (not in training) gets code 0; a number as text is parsed
    x = enc.encode([{"age": "30", "job": "pilot"}, {"job": "cook", "y": 1}])
    assert x.tolist() == [[30.0, 0.0, 0.0], [40.0, 1.0, 2.0]]
    assert enc.feature_names() == ["age", "age_missing", "job"]
    assert enc.model_inputs()["cardinalities"] == [3]


def test_encoder_json_round_trip_and_errors() -> None:
    train = Table({"zip": [1010.0, 2020.0, 1010.0], "size": [1.0, 2.0, 3.0]})
    enc = RowEncoder.fit(train, categorical=["zip"])
    assert enc.categorical[0].categories == ("1010", "2020")  # numbers read as categories when asked
    again = RowEncoder.from_json(enc.to_json())
    rows = [{"zip": 2020, "size": 5}, {"zip": "1010"}]
    assert torch.equal(again.encode(rows), enc.encode(rows))
    json.loads(enc.to_json())  # plain JSON, no NaN
    with pytest.raises(DataError, match="unknown column 'sise'; did you mean 'size'"):
        enc.encode([{"sise": 1}])
    with pytest.raises(DataError, match="column 'size' is 'big', expected a number"):
        enc.encode([{"size": "big"}])
    with pytest.raises(DataError, match="not a row encoder"):
        RowEncoder.from_json('{"format": "other"}')


def test_identifier_columns_are_dropped_with_a_reason() -> None:
    n = 120
    table = Table({"id": [f"u{i}" for i in range(n)], "x": list(range(n))})
    enc = RowEncoder.fit(table)
    assert [c.name for c in enc.columns] == ["x"] and "identifier" in enc.dropped["id"]
    assert [c.name for c in RowEncoder.fit(table, categorical=["id"]).columns] == ["id", "x"]


def test_numeric_columns_get_quantile_bin_edges() -> None:
    gain = np.r_[np.zeros(90), np.linspace(1000, 99999, 10)]
    enc = RowEncoder.fit(Table({"gain": gain, "age": np.linspace(20, 60, 100)}))
    gain_col, age_col = enc.columns
    assert (
        gain_col.mean == pytest.approx(gain.mean())
        and gain_col.edges[0] == 0.0
        and gain_col.edges[-1] == 99999
    )
    assert len(age_col.edges) == 17 and len(gain_col.edges) < 17  # the zeros' quantiles merge


def test_csv_bundle_fits_on_the_split(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "a,color,label\n1,red,yes\n2,blue,no\n3,red,yes\n100,green,no\n")
    bundle = load_dataset("csv", path=path, target="label")
    assert isinstance(bundle, TableBundle) and bundle.classes == ["no", "yes"]
    fitted = bundle.fit(np.array([0, 1, 2]))
    assert isinstance(fitted, EncodedTable) and fitted.encoder is not None
    assert fitted.encoder.columns[0].mean == pytest.approx(2.0)  # row 3 (a=100) is not training data
    assert fitted.encoder.columns[1].categories == ("blue", "red")  # green was never seen in training
    assert fitted.train.x[3].tolist() == [100.0, 0.0]
    assert fitted.model_inputs["num_numeric"] == 1 and fitted.input_shape == (2,)


def test_rows_without_target_are_left_out_and_regression_inferred(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "x,y\n1,0.5\n2,\n3,1.5\n")
    bundle = load_dataset("csv", path=path, target="y")
    assert bundle.task == "regression" and len(bundle.train) == 2
    assert bundle.train.y.tolist() == [0.5, 1.5]
    path.write_text("x,y\n1,10\n2,2\n3,10\n")
    assert load_dataset("csv", path=path, target="y").classes == ["2", "10"]  # numeric order
    assert load_dataset("csv", path=path, target="y", task="regression").task == "regression"


def test_parquet_and_dataframe(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame(
        {"n": [1.0, None, 3.0], "c": ["a", None, "b"], "k": pd.array([1, None, 3], dtype="Int64")}
    )
    frame.to_parquet(tmp_path / "t.parquet")
    for table in (read_table(frame), read_table(tmp_path / "t.parquet")):
        assert table.kinds() == {"n": "numeric", "c": "categorical", "k": "numeric"}
        assert table.missing() == {"n": 1, "c": 1, "k": 1}
    bundle = load_dataset("parquet", path=tmp_path / "t.parquet", target="c")
    assert bundle.classes == ["a", "b"] and len(bundle.train) == 2


def test_a_bad_cell_names_file_row_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.csv", "a,b,label\n1,2,x\n3,y\n")
    with pytest.raises(DataError, match=r"row 2 .*2 fields"):
        load_dataset("csv", path=path, target="label")
    path.write_text("a,b,label\n1,2,x\n")
    with pytest.raises(DataError, match="no target column 'lable'"):
        load_dataset("csv", path=path, target="lable")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_dataset("csv", path=tmp_path / "missing.csv", target="label")
    table = Table({"a": ["1", "2", "three"]})
    with pytest.raises(DataError, match="row 3: column 'a' is 'three', expected a number"):
        RowEncoder.fit(table, numeric=["a"])


def test_bins_follow_the_target_when_it_is_known() -> None:
    x = np.linspace(0, 100, 400)
    y = (x > 37.0).astype(np.int64)
    enc = RowEncoder.fit(Table({"x": x}), y=y)
    edges = enc.columns[0].edges
    assert edges[0] == 0.0 and edges[-1] == 100.0
    assert min(abs(e - 37.0) for e in edges) < 0.3  # a bin boundary where the class changes
    assert len(edges) <= 17
