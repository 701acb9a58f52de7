"""Every metric against its reference: scikit-learn, sacrebleu, pycocotools or plain PyTorch."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from ember import metrics as M


def _case(seed: int, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g) * 2 + F.one_hot(y, k) * 1.5  # better than chance, not perfect
    return logits, y


HAND = (  # a hand-made 3-class case with a class never predicted and one never true
    torch.tensor([[3.0, 0, 0], [0, 2, 0], [0, 2, 0], [1, 0, 0], [0, 1, 0]]),
    torch.tensor([0, 1, 0, 0, 2]),
)
CASES = [HAND, _case(0, 200, 2), _case(1, 150, 3), _case(2, 300, 7), _case(3, 60, 10)]


@pytest.mark.parametrize("logits,y", CASES)
def test_classification_metrics_match_sklearn(logits: torch.Tensor, y: torch.Tensor) -> None:
    k = logits.shape[1]
    pred = logits.argmax(1).numpy()
    t = y.numpy()
    assert M.accuracy(logits, y) == pytest.approx(skm.accuracy_score(t, pred), abs=1e-6)
    for average in ("macro", "micro"):
        for ours, ref in (
            (M.precision, skm.precision_score),
            (M.recall, skm.recall_score),
            (M.f1, skm.f1_score),
        ):
            assert ours(logits, y, average=average) == pytest.approx(
                ref(t, pred, average=average, zero_division=0), abs=1e-6
            ), (ours.__name__, average)
    table = M.per_class(logits, y)
    labels = list(range(k))
    p, r, f, s = skm.precision_recall_fscore_support(t, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(table["precision"].numpy(), p, atol=1e-6)
    np.testing.assert_allclose(table["recall"].numpy(), r, atol=1e-6)
    np.testing.assert_allclose(table["f1"].numpy(), f, atol=1e-6)
    np.testing.assert_array_equal(table["support"].numpy(), s)
    np.testing.assert_array_equal(
        M.confusion_matrix(logits, y).numpy(), skm.confusion_matrix(t, pred, labels=labels)
    )
    for top in (1, 2):
        if top < k and k > 2:  # sklearn takes 1-d scores for binary problems
            assert M.top_k_accuracy(logits, y, top) == pytest.approx(
                skm.top_k_accuracy_score(t, logits.numpy(), k=top, labels=labels), abs=1e-6
            )


@pytest.mark.parametrize("logits,y", CASES)
def test_auroc_matches_sklearn_over_present_classes(logits: torch.Tensor, y: torch.Tensor) -> None:
    probs = logits.softmax(1).numpy()
    t = y.numpy()
    if logits.shape[1] == 2:
        ref = skm.roc_auc_score(t, probs[:, 1])
    else:
        present = [c for c in range(logits.shape[1]) if 0 < (t == c).sum() < len(t)]
        ref = np.mean([skm.roc_auc_score(t == c, probs[:, c]) for c in present])
        if len(present) == logits.shape[1]:  # all classes present: sklearn's own multiclass AUROC agrees
            assert ref == pytest.approx(skm.roc_auc_score(t, probs, multi_class="ovr", average="macro"))
    assert M.auroc(logits, y) == pytest.approx(ref, abs=1e-5)


def test_auroc_with_tied_scores_and_one_class() -> None:
    scores = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([1, 0, 0, 1])
    assert M.auroc(scores, y) == pytest.approx(skm.roc_auc_score(y.numpy(), scores.softmax(1)[:, 1].numpy()))
    assert math.isnan(M.auroc(scores, torch.zeros(4, dtype=torch.long)))


@pytest.mark.parametrize("logits,y", CASES[1:])
def test_calibration_matches_sklearn_calibration_curve(logits: torch.Tensor, y: torch.Tensor) -> None:
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == y).numpy().astype(float)
    n_bins = 10
    prob_true, prob_pred = calibration_curve(correct, conf.numpy(), n_bins=n_bins, strategy="uniform")
    counts = np.histogram(conf.numpy(), bins=np.linspace(0, 1, n_bins + 1))[0]
    counts = counts[counts > 0]
    rel = M.reliability(logits, y, n_bins=n_bins)
    filled = rel.count > 0
    np.testing.assert_allclose(rel.accuracy[filled].numpy(), prob_true, atol=1e-6)
    np.testing.assert_allclose(rel.confidence[filled].numpy(), prob_pred, atol=1e-6)
    np.testing.assert_array_equal(rel.count[filled].numpy(), counts)
    ece = float(np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred)))
    assert M.calibration_error(logits, y, n_bins=n_bins) == pytest.approx(ece, abs=1e-6)
    mce = float(np.max(np.abs(prob_true - prob_pred)))
    assert M.calibration_error(logits, y, n_bins=n_bins, norm="max") == pytest.approx(mce, abs=1e-6)


def test_task_metrics_are_these_functions() -> None:
    logits, y = CASES[3]
    out = M.classification_metrics(logits, y, top_k=5)
    assert out["accuracy"] == pytest.approx(M.accuracy(logits, y))
    assert out["top5_accuracy"] == pytest.approx(M.top_k_accuracy(logits, y, 5))
    assert out["f1_macro"] == pytest.approx(skm.f1_score(y, logits.argmax(1), average="macro"), abs=1e-6)
    recall = skm.recall_score(y, logits.argmax(1), average=None, labels=range(7), zero_division=0)
    for c in range(7):
        assert out[f"accuracy/class_{c}"] == pytest.approx(recall[c], abs=1e-6)
    soft = F.one_hot(y, 7).float() * 0.9 + 0.1 / 7  # mixup-style soft targets score as their arg-max
    assert M.classification_metrics(logits, soft)["accuracy"] == out["accuracy"]


REGRESSION = [
    (torch.tensor([3.0, -0.5, 2.0, 7.0]), torch.tensor([2.5, 0.0, 2.0, 8.0])),  # sklearn's docs example
    (
        torch.randn(200, generator=torch.Generator().manual_seed(0)),
        torch.randn(200, generator=torch.Generator().manual_seed(1)),
    ),
    (
        torch.tensor([[0.5, 1.0], [-1.0, 1.0], [7.0, -6.0]]),
        torch.tensor([[0.0, 2.0], [-1.0, 2.0], [8.0, -5.0]]),
    ),
]


def _far_and_small() -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(0)
    t = 1e4 + rng.normal(size=500)  # far from 0: float32 sums of squares lose everything
    s = 1e-3 * rng.normal(size=100)  # tiny scale: torchmetrics' absolute 1e-4 tolerance bites
    return [
        (
            torch.tensor(t + 0.3 * rng.normal(size=500), dtype=torch.float32),
            torch.tensor(t, dtype=torch.float32),
        ),
        (torch.tensor(s + 1e-3 * rng.normal(size=100)), torch.tensor(s)),
    ]


@pytest.mark.parametrize("pred,target", REGRESSION + _far_and_small())
def test_regression_metrics_match_sklearn(pred: torch.Tensor, target: torch.Tensor) -> None:
    p, t = pred.double().numpy(), target.double().numpy()
    assert M.mse(pred, target) == pytest.approx(skm.mean_squared_error(t, p), rel=1e-6)
    assert M.mae(pred, target) == pytest.approx(skm.mean_absolute_error(t, p), rel=1e-6)
    assert M.r2(pred, target) == pytest.approx(skm.r2_score(t, p), abs=1e-6)
    assert set(M.regression_metrics(pred, target)) == {"mse", "mae", "r2"}


def test_r2_of_a_constant_target_follows_force_finite() -> None:
    t = torch.full((5,), 2.0)
    assert M.r2(t, t) == skm.r2_score(t.numpy(), t.numpy()) == 1.0
    assert M.r2(t + torch.arange(5.0), t) == skm.r2_score(t.numpy(), (t + torch.arange(5.0)).numpy()) == 0.0


def test_perplexity_is_exp_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(3, 9, 11, generator=g), torch.randint(0, 11, (3, 9), generator=g)
    ref = F.cross_entropy(logits.reshape(-1, 11), target.reshape(-1)).exp()
    assert M.perplexity(logits, target) == pytest.approx(float(ref), rel=1e-5)
    target[0, :4] = -100
    ref = F.cross_entropy(logits.reshape(-1, 11), target.reshape(-1), ignore_index=-100).exp()
    assert M.perplexity(logits, target, ignore_index=-100) == pytest.approx(float(ref), rel=1e-5)
    uniform = torch.zeros(1, 5, 11)
    assert M.perplexity(uniform, target[1:2, :5]) == pytest.approx(11.0, rel=1e-5)  # by hand: |V|


def test_bleu_and_chrf_match_sacrebleu() -> None:
    import sacrebleu

    hyps = ["the cat is on the mat", "a quick brown fox jumps over the dog", "hello there world"]
    refs = ["the cat sat on the mat", "the quick brown fox jumps over the lazy dog", "hello world"]
    refs2 = ["there is a cat on the mat", "a fast brown fox leaps over the lazy dog", "hello there, world"]
    assert M.bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert M.chrf(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    multi = [[a, b] for a, b in zip(refs, refs2)]
    assert M.bleu(hyps, multi) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs, refs2]).score)
    assert M.bleu(refs, refs) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="hypotheses"):
        M.bleu(hyps, multi[:2])


def _coco_reference(preds: list[dict], targets: list[dict]) -> list[float]:
    """pycocotools driven directly, from JSON written by hand in COCO's own xywh layout."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i})
        for (x1, y1, x2, y2), c in zip(t["boxes"].tolist(), t["labels"].tolist()):
            w, h = x2 - x1, y2 - y1
            anns.append({"id": len(anns) + 1, "image_id": i, "bbox": [x1, y1, w, h], "area": w * h,
                         "category_id": c, "iscrowd": 0})  # fmt: skip
        for (x1, y1, x2, y2), c, s in zip(p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist()):
            dets.append({"image_id": i, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s, "category_id": c})
    cats = sorted({a["category_id"] for a in anns} | {d["category_id"] for d in dets})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(ev.stats[i]) for i in (0, 1, 2, 8)]


def _random_detection(seed: int, images: int = 6) -> tuple[list[dict], list[dict]]:
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(images):
        n = int(torch.randint(1, 5, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 80
        wh = torch.rand(n, 2, generator=g) * 30 + 5
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(0, 3, (n,), generator=g)
        targets.append({"boxes": boxes, "labels": labels})
        jitter = boxes + torch.randn(n, 4, generator=g) * 3  # found, a little off
        extra = torch.cat([torch.rand(2, 2, generator=g) * 80, torch.rand(2, 2, generator=g) * 80 + 90], 1)
        preds.append({
            "boxes": torch.cat([jitter, extra]),
            "scores": torch.rand(n + 2, generator=g),
            "labels": torch.cat([labels, torch.randint(0, 3, (2,), generator=g)]),
        })  # fmt: skip
    return preds, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detection_map_matches_pycocotools(seed: int) -> None:
    preds, targets = _random_detection(seed)
    ours = M.detection_map(preds, targets)
    ref = _coco_reference(preds, targets)
    assert [ours["map"], ours["map50"], ours["map75"], ours["mar100"]] == pytest.approx(ref, abs=1e-9)
    assert 0 < ours["map"] <= ours["map50"] <= 1


def test_detection_map_hand_made() -> None:
    box = torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 90.0, 90.0]])
    labels = torch.tensor([1, 1])
    perfect = M.detection_map([{"boxes": box, "scores": torch.tensor([0.9, 0.8]), "labels": labels}],
                              [{"boxes": box, "labels": labels}])  # fmt: skip
    assert perfect["map"] == perfect["map50"] == 1.0
    half = M.detection_map([{"boxes": box[:1], "scores": torch.tensor([0.9]), "labels": labels[:1]}],
                           [{"boxes": box, "labels": labels}])  # fmt: skip
    # one of two objects found, at precision 1: recall 0.5, so 51 of COCO's 101 recall points score 1
    assert half["map"] == pytest.approx(51 / 101)
    assert M.detection_map([{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}],
                           [{"boxes": box, "labels": labels}])["map"] == 0.0  # fmt: skip
    assert math.isnan(M.detection_map([{"boxes": box, "scores": torch.tensor([0.9, 0.8]), "labels": labels}],
                                      [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}])["map"])  # fmt: skip
    # only the highest-scoring detection counts with max_detections=1: one of two objects found
    assert M.detection_map([{"boxes": box, "scores": torch.tensor([0.9, 0.8]), "labels": labels}],
                           [{"boxes": box, "labels": labels}], max_detections=1)["map"] == pytest.approx(51 / 101)  # fmt: skip


def test_mean_iou_matches_sklearn_jaccard() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (3, 16, 16), generator=g)
    noise = torch.randint(0, 4, (3, 16, 16), generator=g)
    pred = torch.where(torch.rand(3, 16, 16, generator=g) < 0.7, target, noise)
    t, p = target.flatten().numpy(), pred.flatten().numpy()
    assert M.mean_iou(pred, target, num_classes=4) == pytest.approx(skm.jaccard_score(t, p, average="macro"))
    np.testing.assert_allclose(
        M.per_class_iou(pred, target, num_classes=4).numpy(), skm.jaccard_score(t, p, average=None), atol=1e-6
    )
    scores = F.one_hot(pred, 4).permute(0, 3, 1, 2).float()  # (N, K, H, W) scores give the same answer
    assert M.mean_iou(scores, target, num_classes=4) == pytest.approx(
        skm.jaccard_score(t, p, average="macro")
    )
    void = target.clone()
    void[:, :4] = 255  # ignored pixels
    keep = void.flatten().numpy() != 255
    assert M.mean_iou(pred, void, num_classes=4, ignore_index=255) == pytest.approx(
        skm.jaccard_score(t[keep], p[keep], average="macro")
    )
    # a class absent from both predictions and targets is left out of the mean, as sklearn does
    assert M.mean_iou(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), num_classes=3) == pytest.approx(
        skm.jaccard_score([0, 1, 1], [0, 0, 1], average="macro")
    )


def test_perfect_macro_f1_is_exactly_one() -> None:
    torch.manual_seed(0)
    y = torch.randint(0, 10, (359,))
    logits = F.one_hot(y, 10).float() * 5
    assert M.f1(logits, y, average="macro", num_classes=10) == 1.0
