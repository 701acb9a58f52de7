"""Membership-inference audit: attack metrics, LiRA scores, and an audit of a real (tiny) run."""

import json

import numpy as np
import pytest

import ember
from ember.cli import main
from ember.responsible.privacy.membership import attack_metrics, audit_run, lira_scores


def test_attack_metrics_against_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    members = np.r_[np.ones(500), np.zeros(500)].astype(bool)
    scores = rng.normal(size=1000) + members * 0.5
    m = attack_metrics(scores, members)
    assert m["auc"] == pytest.approx(roc_auc_score(members, scores))
    assert 0 <= m["tpr@0.001"] <= m["tpr@0.01"] <= 1
    perfect = attack_metrics(members.astype(float), members)
    assert perfect == {"auc": 1.0, "tpr@0.001": 1.0, "tpr@0.01": 1.0}


def test_lira_separates_when_in_and_out_differ() -> None:
    rng = np.random.default_rng(1)
    n, k = 400, 8
    members = np.r_[np.ones(n // 2), np.zeros(n // 2)].astype(bool)
    inside = rng.random((k, n)) < 0.5
    base = rng.normal(size=n) * 3  # per-example difficulty, which LiRA factors out
    shadow = base + 2.0 * inside + rng.normal(size=(k, n)) * 0.5
    target = base + 2.0 * members + rng.normal(size=n) * 0.5
    auc_lira = attack_metrics(lira_scores(target, shadow, inside), members)["auc"]
    auc_raw = attack_metrics(target, members)["auc"]
    assert auc_lira > 0.95 and auc_lira > auc_raw + 0.1


@pytest.mark.slow
def test_audit_run_with_shadows_and_cli(tmp_path) -> None:
    result = ember.fit(
        {"data": {"name": "digits"}},
        {"model.name": "cnn_tiny", "trainer.epochs": 2, "data.batch_size": 128},
    )
    audit = audit_run(result.run_id, n=60, shadows=2)
    assert audit.members == audit.nonmembers == 60
    assert set(audit.attacks) == {"loss", "lira"}
    for metrics in audit.attacks.values():
        assert 0.0 <= metrics["auc"] <= 1.0
    assert audit.privacy == {}  # not a private run
    stored = json.loads((result.run_dir / "audit_privacy.json").read_text())
    assert stored["attacks"]["loss"]["auc"] == pytest.approx(audit.attacks["loss"]["auc"])
    assert main(["audit", "privacy", result.run_id, "--n", "40", "--shadows", "0"]) == 0


def test_cli_audit_errors_in_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["audit", "privacy", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no run 'nope'" in err[0]
