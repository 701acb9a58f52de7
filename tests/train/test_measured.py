"""Kept hardware measurements: measured once, read back in a new process, remeasured when stale or damaged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from ember import Trainer
from ember.train import measured as kept
from ember.train.flops import matmul_peak
from ember.train.optim import fastest_implementation

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    file = tmp_path / "measured.json"
    monkeypatch.setenv("EMBER_MEASURE_CACHE", str(file))
    monkeypatch.delenv("EMBER_REMEASURE", raising=False)
    return file


class Counter:
    def __init__(self, answer: object) -> None:
        self.answer, self.calls = answer, 0

    def __call__(self) -> object:
        self.calls += 1
        return self.answer


def test_measured_once_then_read_back_by_a_new_process(cache: Path) -> None:
    measure = Counter(3.5)
    assert kept.measured("m", CPU, measure, check=kept.positive) == 3.5
    assert kept.measured("m", CPU, measure, check=kept.positive) == 3.5  # in the process
    kept.forget()  # a new process
    assert kept.measured("m", CPU, measure, check=kept.positive) == 3.5
    assert measure.calls == 1
    entries = json.loads(cache.read_text())["entries"]
    assert list(entries) == [kept.key("m", CPU)] and "torch " + torch.__version__ in kept.key("m", CPU)


def test_another_thread_count_torch_or_argument_measures_again(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measure = Counter(2.0)
    kept.measured("m", CPU, measure, check=kept.positive, args=(1,))
    kept.measured("m", CPU, measure, check=kept.positive, args=(2,))
    assert measure.calls == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        kept.measured("m", CPU, measure, check=kept.positive, args=(1,))
    finally:
        torch.set_num_threads(threads)
    assert measure.calls == 3
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    kept.measured("m", CPU, measure, check=kept.positive, args=(1,))
    assert measure.calls == 4


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff not json",
        b'{"format": 1, "entries": [1, 2]}',
        b'{"format": 99, "entries": {}}',
        b"[]",
    ],
)
def test_a_damaged_file_is_measured_over_not_an_error(cache: Path, content: bytes) -> None:
    cache.write_bytes(content)
    measure = Counter(7.0)
    assert kept.measured("m", CPU, measure, check=kept.positive) == 7.0
    assert measure.calls == 1
    kept.forget()
    assert kept.measured("m", CPU, Counter(0.0), check=kept.positive) == 7.0  # rewritten whole


@pytest.mark.parametrize("value", [-1.0, 0, float("nan"), "fast", None, True, [1.0]])
def test_a_kept_value_its_check_refuses_is_measured_again(cache: Path, value: object) -> None:
    entry = kept.key("m", CPU)
    cache.write_text(json.dumps({"format": kept.FORMAT, "entries": {entry: {"value": value}}}))
    measure = Counter(5.0)
    assert kept.measured("m", CPU, measure, check=kept.positive) == 5.0 and measure.calls == 1


def test_an_unknown_implementation_is_never_used(cache: Path) -> None:
    entry = kept.key("optimizer_implementation", CPU, ("adamw", 5))
    cache.write_text(json.dumps({"format": kept.FORMAT, "entries": {entry: {"value": "turbo"}}}))
    assert fastest_implementation("adamw", CPU) in {"for-loop", "foreach", "fused"}


def test_remeasure_refreshes_and_off_keeps_nothing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept.measured("m", CPU, Counter(1.0), check=kept.positive)
    kept.forget()
    monkeypatch.setenv("EMBER_REMEASURE", "1")
    assert kept.measured("m", CPU, Counter(2.0), check=kept.positive) == 2.0
    monkeypatch.delenv("EMBER_REMEASURE")
    kept.forget()
    assert kept.measured("m", CPU, Counter(3.0), check=kept.positive) == 2.0  # the refreshed answer
    monkeypatch.setenv("EMBER_MEASURE_CACHE", "off")
    assert kept.cache_file() is None
    assert kept.measured("m", CPU, Counter(4.0), check=kept.positive) == 4.0


def test_an_unwritable_file_keeps_the_answer_in_the_process(cache: Path) -> None:
    cache.mkdir()  # a folder where the file should be: it can be neither read nor written
    measure = Counter(6.0)
    assert kept.measured("m", CPU, measure, check=kept.positive) == 6.0
    assert kept.measured("m", CPU, measure, check=kept.positive) == 6.0 and measure.calls == 1


def test_fit_uses_the_kept_peak(cache: Path) -> None:
    entry = kept.key("matmul_peak", CPU, (str(torch.float32), 1024, 5))
    cache.write_text(json.dumps({"format": kept.FORMAT, "entries": {entry: {"value": 1.25e12}}}))
    kept.forget()
    assert matmul_peak(CPU, torch.float32) == 1.25e12
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    result = Trainer(nn.Linear(4, 2), epochs=1, batch_size=16, progress=False).fit((x, y))
    from ember.track import RunStore

    assert RunStore(result.run_dir.parent).get(result.run_id).summary["peak_flops"] == 1.25e12


def test_an_answer_measured_on_a_crowded_machine_is_measured_again_when_it_is_quieter(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpus = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (4.0 * cpus, 0.0, 0.0))  # four threads a CPU
    kept.measured("m", CPU, Counter(1.0), check=kept.positive)
    assert json.loads(cache.read_text())["entries"][kept.key("m", CPU)]["load"] == 4.0
    kept.forget()
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0 * cpus, 0.0, 0.0))  # still crowded: kept
    assert kept.measured("m", CPU, Counter(2.0), check=kept.positive) == 1.0
    kept.forget()
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5 * cpus, 0.0, 0.0))  # quiet: measured again
    assert kept.measured("m", CPU, Counter(3.0), check=kept.positive) == 3.0
    kept.forget()
    assert kept.measured("m", CPU, Counter(4.0), check=kept.positive) == 3.0  # and kept
