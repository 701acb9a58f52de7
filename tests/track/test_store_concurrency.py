"""Processes that open a new run store or registry at the same moment (the ranks of a new torchrun
job do) all get it: none is told "database is locked" while another turns the file to WAL."""

import multiprocessing
import tempfile
import time
from multiprocessing.queues import Queue
from pathlib import Path

import pytest

from ember.track import RunStore
from ember.track.registry import ModelRegistry

STORES = {"run store": RunStore, "registry": ModelRegistry}


def _open(kind: str, root: str, at: float, answers: "Queue[str]") -> None:
    while time.time() < at:  # both processes start their first statement together
        pass
    try:
        STORES[kind](root)
        answers.put("")
    except Exception as error:  # the answer is the test's
        answers.put(f"{type(error).__name__}: {error}")


@pytest.mark.parametrize("kind", STORES)
def test_two_processes_open_a_new_store_at_once(kind: str, tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    errors = []
    for _ in range(20):  # before the fix, 7 tries in 10 failed
        root = tempfile.mkdtemp(dir=tmp_path)
        answers: Queue[str] = context.Queue()
        at = time.time() + 0.05
        processes = [context.Process(target=_open, args=(kind, root, at, answers)) for _ in range(2)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
            assert process.exitcode == 0
        errors += [answer for answer in (answers.get(timeout=5) for _ in processes) if answer]
    assert errors == []
