"""The sanity check on the digits CNN: guided backprop is flagged, saliency and Grad-CAM pass."""

import pytest

from ember.recipe import train
from ember.responsible.explain_run import explain_run


@pytest.mark.slow
def test_digits_cnn_sanity_check_and_completeness(repo_root):
    run = train(repo_root / "configs/digits-cnn.yaml", ["trainer.epochs=5", "trainer.threads=1"])
    assert run.metrics["test/accuracy"] > 0.9
    result = explain_run(run.run_id, list(range(16)), steps=200)
    verdict = {name: m.sanity.passed for name, m in result.methods.items() if m.sanity is not None}
    assert verdict["guided backprop"] is False
    assert verdict["saliency"] and verdict["Grad-CAM"]
    assert "guided backprop" in result.flagged()
    assert float(result.methods["integrated gradients"].completeness_error.max()) < 0.005
