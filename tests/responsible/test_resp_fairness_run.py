"""Fairness end to end: mitigation from the config, the run audit, post-processing, the CLI."""

import json

import pytest

from ember.cli import main
from ember.config import ConfigError
from ember.responsible import fairness_run
from ember.responsible.training import train


def test_plain_run_audited_then_postprocessed(tmp_path, capsys, fair_config):
    CONFIG = fair_config
    run = train(CONFIG)
    result = fairness_run.audit_run(
        run.run_id, ["sex", "race"], postprocess="demographic-parity", n_resamples=100
    )
    assert [a.attribute for a in result.audits] == ["sex", "race", "sex & race"]
    assert result.accuracy == pytest.approx(run.metrics["test/accuracy"], abs=1e-6)
    before = result.audits[0].gaps["demographic_parity_difference"].value
    after = result.audits_after[0].gaps["demographic_parity_difference"].value
    assert before > 0.1 and after < before / 2  # the group shifts the labels: the plain model is unfair
    saved = json.loads((run.run_dir / "fairness.json").read_text())
    assert saved["postprocessed"]["accuracy"] == pytest.approx(result.accuracy_after)
    assert (
        main(
            [
                "audit",
                "fairness",
                run.run_id,
                "--sensitive",
                "sex",
                "--resamples",
                "50",
                "-o",
                str(tmp_path / "f"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "demographic_parity_difference" in out and "female" in out
    assert (tmp_path / "f" / "fairness-sex.png").stat().st_size > 1000


@pytest.mark.parametrize("method", ["reweighing", "balanced-sampling", "exponentiated-gradient"])
def test_training_mitigation_narrows_the_gap(method, fair_config):
    CONFIG = fair_config
    plain = train(CONFIG)
    mitigated = train(
        CONFIG,
        [f"fairness.mitigate={method}", "fairness.sensitive=sex", "fairness.window=5", "fairness.eta=1.0"],
    )
    gap = lambda r: fairness_run.audit_run(r.run_id, ["sex"], n_resamples=20, save=False).worst_gap()  # noqa: E731
    # the proxy feature also predicts the label: weights and resampling narrow the gap, the constraint closes it
    assert gap(mitigated) < gap(plain) - (0.1 if method == "exponentiated-gradient" else 0.02)
    if method != "balanced-sampling":  # the validation split carries groups: the gap is logged
        assert "val/dp_difference" in mitigated.metrics
    else:  # the audit's columns default to the run's fairness.sensitive
        assert main(["audit", "fairness", mitigated.run_id, "--resamples", "20"]) == 0


def test_multiclass_constraint_and_clear_errors(capsys, fair_config):
    CONFIG = fair_config
    config = {**CONFIG, "data": {**CONFIG["data"], "classes": 3}}
    plain = train(config)
    fair = train(
        config, ["fairness.mitigate=exponentiated-gradient", "fairness.sensitive=sex", "fairness.window=5"]
    )
    gap = lambda r: fairness_run.audit_run(r.run_id, ["sex"], n_resamples=20, save=False).worst_gap()  # noqa: E731
    assert gap(fair) < gap(plain)
    with pytest.raises(ConfigError, match="needs fairness.sensitive"):
        train(CONFIG, ["fairness.mitigate=reweighing"])
    with pytest.raises(ConfigError, match="no column 'age'"):
        train(CONFIG, ["fairness.mitigate=reweighing", "fairness.sensitive=age"])
    import ember

    with pytest.raises(ConfigError, match="ember.responsible.train"):
        ember.fit(CONFIG, ["fairness.mitigate=reweighing", "fairness.sensitive=sex"])
    assert main(["audit", "fairness", plain.run_id, "--sensitive", "age"]) == 2
    err = capsys.readouterr().err
    assert "no column 'age'" in err and len(err.strip().splitlines()) == 1
