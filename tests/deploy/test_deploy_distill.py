"""Distillation: the KD loss against a plain computation, and a student trained by ember.Trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ember
from ember.deploy.distill import DistillationTask, distill
from ember.tasks.classification import kd_loss
from ember.track import RunStore


def test_kd_loss_matches_hinton_written_out() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    T, alpha = 3.0, 0.7
    p_t = torch.softmax(t / T, dim=1)
    soft = (p_t * (p_t.log() - torch.log_softmax(s / T, dim=1))).sum(1).mean()
    want = alpha * T * T * soft + (1 - alpha) * F.cross_entropy(s, y)
    assert kd_loss(s, t, y, temperature=T, alpha=alpha) == pytest.approx(want.item(), rel=1e-5)
    assert kd_loss(s, t, y, temperature=T, alpha=0.0) == pytest.approx(F.cross_entropy(s, y).item())


def test_task_uses_the_teacher_only_while_training() -> None:
    calls = []
    teacher = nn.Linear(4, 3)
    teacher.register_forward_hook(lambda *a: calls.append(1))
    task = DistillationTask(teacher, temperature=2.0, alpha=0.5)
    student = nn.Linear(4, 3)
    batch = (torch.randn(6, 4), torch.randint(0, 3, (6,)))
    out, target = task.forward(student.train(), batch)
    assert not isinstance(target, torch.Tensor) and len(calls) == 1  # the labels and the teacher's logits
    assert task.loss(out, target).requires_grad
    out, target = task.forward(student.eval(), batch)
    assert isinstance(target, torch.Tensor) and len(calls) == 1
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="alpha"):
        DistillationTask(teacher, alpha=1.5)


def test_any_task_with_a_distill_loss_distills_and_others_say_why_not() -> None:
    from ember import tasks
    from ember.tasks.spec import NotApplicable

    teacher = nn.Linear(4, 1)
    task = DistillationTask(teacher, task=tasks.create("regression"), alpha=0.5)
    student = nn.Linear(4, 1)
    batch = (torch.randn(6, 4), torch.randn(6))
    out, target = task.forward(student.train(), batch)
    loss = task.loss(out, target)
    flat = out.reshape(-1)
    expected = 0.5 * F.mse_loss(flat, teacher(batch[0]).reshape(-1)) + 0.5 * F.mse_loss(flat, batch[1])
    assert loss.requires_grad and float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert task.headline == "mse" and task.evaluation() is not None

    class NoKD:
        headline, mode = "loss", "min"

    with pytest.raises(NotApplicable, match="int8 or prune"):
        DistillationTask(teacher, task=NoKD())


def test_distill_trains_a_smaller_student(
    tmp_path: Path, toy_data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = toy_data
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3))
    ember.Trainer(teacher, lr=3e-2, epochs=20, batch_size=32, runs_dir=tmp_path, progress=False).fit((x, y))
    with torch.no_grad():
        assert (teacher(x).argmax(1) == y).float().mean() > 0.95
    student = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    trained = distill(
        teacher,
        student,
        (x, y),
        (x, y),
        temperature=4.0,
        alpha=0.8,
        lr=3e-2,
        epochs=20,
        batch_size=32,
        runs_dir=tmp_path,
        progress=False,
    )
    assert trained is student
    with torch.no_grad():
        agree = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean()
        acc = (student(x).argmax(1) == y).float().mean()
    assert agree > 0.9 and acc > 0.9
    runs = RunStore(tmp_path).list()
    assert any(r.name.startswith("distill-") for r in runs)  # it is a normal, recorded run
