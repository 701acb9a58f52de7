"""Batched augmentation: shapes, soft targets, and RandomCrop against a per-sample reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ember.data import CutMix, Cutout, Mixup, RandomCrop, RandomFlip, build_augment


def images(batch: int = 6, channels: int = 2, size: int = 8) -> torch.Tensor:
    # all values distinct and non-zero, so zero padding and shifts are recognisable
    return torch.arange(1, batch * channels * size * size + 1, dtype=torch.float32).reshape(
        batch, channels, size, size
    )


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_crop_is_a_shifted_copy_matching_a_loop_reference() -> None:
    x, y = images(), torch.arange(6)
    out, y_out = RandomCrop(padding=2)(x, y, gen(5))
    assert out.shape == x.shape and torch.equal(y_out, y)
    # reference: the same offsets, drawn in the same order, cut one sample at a time
    g = gen(5)
    top = torch.randint(0, 5, (6,), generator=g)
    left = torch.randint(0, 5, (6,), generator=g)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(6):
        window = padded[i, :, top[i] : top[i] + 8, left[i] : left[i] + 8]
        assert torch.equal(out[i], window)
    assert len({(int(t), int(s)) for t, s in zip(top, left)}) > 1  # offsets differ per sample


def test_flip_mirrors_some_samples() -> None:
    x = images(batch=32)
    out, _ = RandomFlip()(x, torch.zeros(32), gen())
    flipped = [torch.equal(o, s.flip(-1)) for o, s in zip(out, x)]
    kept = [torch.equal(o, s) for o, s in zip(out, x)]
    assert all(f != k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 32


def test_cutout_zeroes_at_most_a_square() -> None:
    x = images()
    out, _ = Cutout(size=4)(x, torch.zeros(6), gen())
    zeroed = (out == 0).all(dim=1).sum(dim=(1, 2))  # pixels zeroed in every channel, per sample
    assert out.shape == x.shape and bool((zeroed > 0).all()) and bool((zeroed <= 16).all())


@pytest.mark.parametrize("mix", [Mixup(alpha=0.4, num_classes=5), CutMix(alpha=1.0, num_classes=5)])
def test_mixes_give_soft_targets_summing_to_one(mix: Mixup | CutMix) -> None:
    x, y = images(), torch.tensor([0, 1, 2, 3, 4, 0])
    out, soft = mix(x, y, gen(3))
    assert out.shape == x.shape and soft.shape == (6, 5) and soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(6))
    F.cross_entropy(torch.randn(6, 5), soft)  # accepted as class probabilities


def test_build_augment_by_name() -> None:
    augment = build_augment(["crop", "flip", "cutout", "mixup", "cutmix"], num_classes=3, image_size=8)
    assert augment is not None
    out, soft = augment(images(batch=4), torch.tensor([0, 1, 2, 0]), gen())
    assert out.shape == (4, 2, 8, 8) and soft.shape == (4, 3)
    assert build_augment([], num_classes=3, image_size=8) is None
    with pytest.raises(KeyError, match="did you mean 'cutout'"):
        build_augment(["cutuot"], num_classes=3, image_size=8)
    with pytest.raises(ValueError, match="num_classes"):
        build_augment(["mixup"], num_classes=None, image_size=8)
