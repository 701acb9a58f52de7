"""Scoring pieces against plain computations: Fréchet distance, precision/recall, the mixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ember.generative.baselines import GaussianMixture, uniform_noise
from ember.generative.images import grid, png_bytes, read_image, save_grid
from ember.generative.score import check_options, frechet_distance, precision_recall


def _fd_reference(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance as FID papers compute it (scipy's matrix square root)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_frechet_distance_equals_the_scipy_computation() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g)
    b = torch.randn(400, 6, generator=g) * 1.5 + 0.3
    assert frechet_distance(a, b) == pytest.approx(_fd_reference(a.numpy(), b.numpy()), rel=1e-4)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-3)


def test_precision_and_recall_see_a_missing_mode() -> None:
    g = torch.Generator().manual_seed(0)
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    reference = modes[torch.arange(400) % 2] + torch.randn(400, 2, generator=g)
    one_mode = modes[0] + torch.randn(400, 2, generator=g)  # covers half the data
    precision, recall = precision_recall(reference, one_mode)
    assert precision > 0.9 and 0.35 < recall < 0.65
    far = torch.randn(400, 2, generator=g) + 50  # nothing like the data
    assert precision_recall(reference, far) == (0.0, 0.0)


def test_the_mixture_fits_each_class_and_samples_it() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(600) % 3
    images = (labels.float()[:, None, None, None] / 3 + 0.05 * torch.randn(600, 1, 2, 2, generator=g)).clamp(
        0, 1
    )
    mixture = GaussianMixture.fit(images, labels)
    torch.testing.assert_close(
        mixture.means.float(), torch.stack([images[labels == k].flatten(1).mean(0) for k in range(3)])
    )
    drawn = mixture.sample(300, labels=torch.full((300,), 2), generator=torch.Generator().manual_seed(1))
    assert drawn.shape == (300, 1, 2, 2) and abs(float(drawn.mean()) - 2 / 3) < 0.02
    assert torch.equal(
        mixture.sample(5, generator=torch.Generator().manual_seed(3)),
        mixture.sample(5, generator=torch.Generator().manual_seed(3)),
    )
    assert uniform_noise(4, (1, 2, 2)).shape == (4, 1, 2, 2)


def test_sampler_options_are_checked_against_the_task() -> None:
    from ember.tasks import GAN, Diffusion

    check_options(Diffusion().sample, {"guidance": 3.0, "steps": 10}, "r")
    with pytest.raises(ValueError, match="has no option --guidance"):
        check_options(GAN().sample, {"guidance": 3.0}, "r")
    with pytest.raises(ValueError, match="--stpes; did you mean 'steps'"):
        check_options(Diffusion().sample, {"stpes": 3}, "r")


def test_grids_and_pngs_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    images = torch.rand(5, 1, 4, 4)
    assert grid(images, nrow=2).shape == (1, 3 * 6 + 2, 2 * 6 + 2)
    assert png_bytes(torch.rand(3, 4, 4)).startswith(b"\x89PNG")
    path = save_grid(images[:1], tmp_path / "one.png", nrow=1, scale=1)
    back = read_image(path, channels=1, size=8)  # the 8x8 grid (2 px of padding around 4x4)
    torch.testing.assert_close(back[0, :, 2:6, 2:6], images[0], atol=1 / 255, rtol=0)
    with pytest.raises(ValueError, match="not an image"):
        (tmp_path / "x.png").write_text("no")
        read_image(tmp_path / "x.png", channels=1, size=8)


def test_classes_are_named_by_id_or_name() -> None:
    from ember.generative.runs import parse_class

    classes = ["T-shirt/top", "Trouser", "Ankle boot"]
    assert parse_class("2", classes) == parse_class("ankle boot", classes) == 2
    with pytest.raises(ValueError, match="out of range"):
        parse_class("3", classes)
    with pytest.raises(ValueError, match="neither a class id nor a class name; the classes: T-shirt/top"):
        parse_class("boot", classes)


def test_the_default_scorer_is_the_most_accurate_classifier_on_the_data(tmp_path: Path) -> None:
    """Not merely the newest: a private model trained after the data's classifier scores worse."""
    import time

    from ember.generative.score import find_classifier
    from ember.track import RunStore

    store = RunStore(tmp_path)

    def run(
        name: str, data: str, task: str, headline: str | None, best: float | None, done: bool = True
    ) -> str:
        config = f"name: {name}\ndata:\n  name: {data}\ntask:\n  name: {task}\n"
        made = store.create(name, config_yaml=config)
        (made.dir / "model.safetensors").write_bytes(b"weights")
        made.update(status="completed" if done else "failed", headline=headline, best=best)
        time.sleep(0.01)  # created in this order
        return made.id

    with pytest.raises(ValueError, match="no completed classification run on 'fashion-mnist'"):
        find_classifier(None, "fashion-mnist", (1, 28, 28), runs_dir=tmp_path)
    lossy = run("lossy", "fashion-mnist", "classification", "val/loss", 0.3)
    assert find_classifier(None, "fashion-mnist", (1, 28, 28), runs_dir=tmp_path) == lossy
    good = run("classifier", "fashion-mnist", "classification", "val/accuracy", 0.914)
    run("private", "fashion-mnist", "classification", "val/accuracy", 0.865)
    run("broken", "fashion-mnist", "classification", "val/accuracy", 0.99, done=False)
    run("other-data", "mnist-10k", "classification", "val/accuracy", 0.995)
    run("a-gan", "fashion-mnist", "gan", "val/accuracy", 0.999)
    assert find_classifier(None, "fashion-mnist", (1, 28, 28), runs_dir=tmp_path) == good
    assert find_classifier(lossy, "fashion-mnist", (1, 28, 28), runs_dir=tmp_path) == lossy  # named: as asked
