"""The examples in the responsible package's docstrings run and say what they show."""

import doctest
import importlib

import pytest

MODULES = [
    "ember.responsible", "ember.responsible.fairness", "ember.responsible.mitigation", "ember.responsible.thresholds",
    "ember.responsible.attribution", "ember.responsible.gradcam", "ember.responsible.rollout",
    "ember.responsible.sanity", "ember.responsible.pii", "ember.responsible.pii_samples",
    "ember.responsible.content", "ember.responsible.prompts", "ember.responsible.selective",
    "ember.responsible.columns",
]  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
