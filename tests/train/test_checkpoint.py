import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ember.train import checkpoint as ck


def _trained() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(3):
        model(torch.randn(8, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def test_round_trip_restores_model_optimizer_and_rng(tmp_path: Path) -> None:
    model, opt = _trained()
    path = tmp_path / "step-000003.safetensors"
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    ck.save_checkpoint(path, model=model, optimizer=opt, meta={"position": {"step": 3}})
    expected = (torch.rand(3), random.random(), np.random.rand())

    model2 = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.5)
    c = ck.load_checkpoint(path)
    # after restore the RNG streams continue exactly as they did right after the save
    ck.restore(c, model=model2, optimizer=opt2)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(again[0], expected[0]) and again[1:] == expected[1:]
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 0.01
    for k in s1["state"]:
        for name, v in s1["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][k][name]))
    assert c.meta["position"]["step"] == 3


def test_tied_weights_are_saved(tmp_path: Path) -> None:
    emb = nn.Embedding(5, 3)
    head = nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    ck.save_checkpoint(tmp_path / "t.safetensors", model=model)
    c = ck.load_checkpoint(tmp_path / "t.safetensors")
    assert torch.equal(c.model["emb.weight"], c.model["head.weight"])


def test_interrupted_save_leaves_previous_checkpoint_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, opt = _trained()
    path = tmp_path / "step-000001.safetensors"
    ck.save_checkpoint(path, model=model, optimizer=opt, meta={"v": 1})
    before = path.read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk died mid-write")

    monkeypatch.setattr(os, "fsync", crash)  # the bytes are written, the commit never happens
    with pytest.raises(OSError, match="disk died"):
        ck.save_checkpoint(path, model=nn.Linear(2, 2), meta={"v": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert ck.load_checkpoint(path).meta["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_corrupt_file_is_named_and_latest_falls_back(tmp_path: Path) -> None:
    model, _ = _trained()
    ck.save_checkpoint(tmp_path / "step-000001.safetensors", model=model, meta={"v": 1})
    bad = tmp_path / "step-000002.safetensors"
    bad.write_bytes(b"\x10\x00garbage")
    with pytest.raises(ck.CheckpointError, match="step-000002.safetensors"):
        ck.load_checkpoint(bad)
    assert ck.latest_checkpoint(tmp_path).meta["v"] == 1  # type: ignore[union-attr]


def test_prune_keeps_last_and_protected(tmp_path: Path) -> None:
    for step in range(1, 6):
        (tmp_path / f"step-{step:06d}.safetensors").write_bytes(b"x")
    ck.prune_checkpoints(tmp_path, keep_last=2, protect={tmp_path / "step-000001.safetensors"})
    assert [s for s, _ in ck.step_checkpoints(tmp_path)] == [1, 4, 5]


def test_background_writer_runs_jobs_in_order_and_reports_errors() -> None:
    writer = ck.BackgroundWriter(depth=2)
    done: list[int] = []
    for i in range(5):
        writer.submit(done.append, i)
    writer.wait()
    assert done == [0, 1, 2, 3, 4]

    def boom() -> None:
        raise OSError("disk full")

    writer.submit(boom)
    writer.submit(done.append, 99)  # skipped: a failed write stops later ones
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert 99 not in done
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(done.append, 1)


def test_encoded_checkpoint_is_independent_of_later_training(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = ck.encode(model=model, optimizer=opt, meta={"step": 1})
    model(torch.randn(4, 3)).sum().backward()
    opt.step()  # mutates weights and Adam's moments in place
    ck.atomic_write_bytes(tmp_path / "s.safetensors", data)
    loaded = ck.load_checkpoint(tmp_path / "s.safetensors")
    assert all(torch.equal(loaded.model[k], before[k]) for k in before)
    assert int(loaded.optimizer_state()["state"][0]["step"]) == 1


def test_bf16_and_tied_weights_take_the_torch_path(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False)).to(torch.bfloat16)
    model[1].weight = model[0].weight  # tied: one storage, two names
    ck.save_checkpoint(tmp_path / "t.safetensors", model=model)
    loaded = ck.load_checkpoint(tmp_path / "t.safetensors")
    assert loaded.model["0.weight"].dtype == torch.bfloat16
    assert torch.equal(loaded.model["0.weight"], loaded.model["1.weight"])
