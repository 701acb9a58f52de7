"""The LR range test, the batch-size finder and Optuna sweeps, on tiny recipes through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ember.cli import main
from ember.recipe.find import _steepest, find_lr
from ember.recipe.sweep import parse_space
from ember.track import RunStore

TINY = ["model.name=cnn_tiny", "trainer.epochs=2"]


def test_the_suggestion_is_the_steepest_fall_before_the_minimum() -> None:
    lrs = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    losses = [2.3, 2.2, 1.4, 1.0, 0.9, 5.0]
    assert _steepest(lrs, losses) == 1e-4  # 2.2 -> 1.4 is the steepest drop, not the blow-up after 0.9


def test_lr_range_test_ramps_and_stops_on_divergence(repo_root: Path) -> None:
    finding = find_lr(repo_root / "configs/digits-cnn.yaml", ["model.name=cnn_tiny"], steps=40, end_lr=1e4)
    assert finding.lrs == sorted(finding.lrs) and finding.lrs[0] == pytest.approx(1e-7)
    assert finding.stopped  # 1e4 is far past where any CNN diverges
    assert finding.lrs[0] < finding.suggestion < finding.lrs[-1]


def test_find_lr_cli_writes_the_curve(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "curve.png"
    args = ["find", "lr", str(repo_root / "configs/digits-cnn.yaml"), "model.name=cnn_tiny"]
    assert main([*args, "--steps", "20", "--plot", str(plot)]) == 0
    assert "suggested learning rate" in capsys.readouterr().out and plot.stat().st_size > 1000
    assert main(["find", "batch-size", str(repo_root / "configs/digits-cnn.yaml")]) == 2
    assert "--memory-mb" in capsys.readouterr().err


@pytest.mark.slow
def test_batch_size_finder_measures_children_and_respects_the_budget(repo_root: Path) -> None:
    from ember.recipe.find import find_batch_size

    big = find_batch_size(repo_root / "configs/digits-cnn.yaml", TINY, memory_mb=1e6, start=256, limit=1024)
    assert big.batch_size == 1024 and set(big.peak_mb) == {256, 512, 1024}
    assert all(0 < v < 1e6 for v in big.peak_mb.values())
    none = find_batch_size(repo_root / "configs/digits-cnn.yaml", TINY, memory_mb=1.0, start=8)
    assert none.batch_size is None  # the interpreter alone is over a megabyte


def test_search_spaces_are_parsed_and_typos_named() -> None:
    assert parse_space(["model.width=int:8,32"]) == {"model.width": ("int", 8, 32)}
    for bad, words in [
        ("optim.lr=lgo:1e-4,1", "did you mean 'log'"),
        ("optim.lr=log:0,1", "LOW > 0"),
        ("optim.lr=float:1,0", "LOW < HIGH"),
        ("optim.lr", "KEY=KIND:VALUES"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_space([bad])


@pytest.mark.slow
def test_a_two_worker_sweep_shares_one_study_and_each_trial_is_a_run(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    args = ["sweep", str(repo_root / "configs/digits-cnn.yaml"), *TINY, "--param", "optim.lr=log:1e-3,1e-1"]
    assert main([*args, "--trials", "4", "--workers", "2", "--runs-dir", str(runs), "--study", "s1"]) == 0
    out = capsys.readouterr().out
    assert "best: trial" in out
    names = [r.name for r in RunStore(runs).list()]
    assert sorted(names) == [f"s1-t{i}" for i in range(4)]
    for record in RunStore(runs).list():
        linked = json.loads((record.folder / "sweep.json").read_text())
        assert linked["study"] == "s1" and "optim.lr" in linked["params"]
    # the same command continues the study: two more trials, not four
    assert main([*args, "--trials", "6", "--runs-dir", str(runs), "--study", "s1"]) == 0
    assert len(RunStore(runs).list()) == 6
    assert main([*args, "--trials", "1", "--runs-dir", str(runs), "--param", "optim.lrr=log:1e-3,1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
