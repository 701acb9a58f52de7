"""Bad values fail when the config loads, before any run exists; every number a user writes is one."""

from pathlib import Path

import numpy as np
import pytest

from ember.cli import main
from ember.config import ConfigError, load_config
from ember.track import RunStore

BAD = {
    "trainer.epochs=0": "trainer.epochs=0 is out of range",
    "trainer.epochs=-1": "trainer.epochs=-1 is out of range",
    "optim.lr=-1.0": "optim.lr=-1.0 is out of range",
    "optim.lr=.nan": "optim.lr=nan: expected a finite number",
    "data.batch_size=0": "data.batch_size=0 is out of range",
    "optim.betas=[0.9, 1.5]": r"optim.betas\[1\]=1.5 is out of range",
    "data.val_fraction=0.9": "leaves no training data",
}


@pytest.mark.parametrize("override", sorted(BAD))
def test_a_bad_value_is_a_config_error_naming_the_key(override: str) -> None:
    with pytest.raises(ConfigError, match=BAD[override]):
        load_config("configs/digits-cnn.yaml" if Path("configs").is_dir() else None, [override])


def test_a_bad_value_on_the_command_line_creates_no_run(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    for override in ("trainer.epochs=0", "optim.lr=.nan", "data.batch_size=0"):
        code = main(["train", str(repo_root / "configs/digits-cnn.yaml"), override, "--runs-dir", str(runs)])
        assert code == 2 and override.split("=")[0] in capsys.readouterr().err
    assert RunStore(runs).list() == []


@pytest.mark.parametrize("text", ["3e-4", "3E-4", "1e3", "+2.5e-1"])
def test_every_number_a_user_writes_is_a_number(text: str) -> None:
    assert load_config(None, [f"optim.lr={text}"]).optim.lr == float(text)


def test_npz_with_nan_or_no_rows_and_a_one_row_csv_are_refused_clearly(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    x[7, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(40) % 2)
    np.savez(
        tmp_path / "nan_y.npz", x=np.ones((40, 4), np.float32), y=np.where(np.arange(40) == 3, np.inf, 1.0)
    )
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64))
    (tmp_path / "one.csv").write_text("a,b,y\n1,2,0\n")
    cases = {
        "data.name=npz data.path=nan.npz": "array 'x' holds NaN or Inf in 1 example(s), the first at index 7",
        "data.name=npz data.path=nan_y.npz": "array 'y' holds NaN or Inf",
        "data.name=npz data.path=empty.npz": "array 'x' holds no examples",
        "data.name=csv data.path=one.csv data.target=y": "too few examples (1) for test_fraction",
    }
    for overrides, message in cases.items():
        args = [
            str(repo_root / "configs/digits-cnn.yaml"),
            *overrides.replace("path=", f"path={tmp_path}/").split(),
        ]
        assert main(["train", *args, "model.name=mlp_tiny", "--runs-dir", str(runs)]) == 2
        assert message in capsys.readouterr().err, overrides
    assert RunStore(runs).list() == []
