"""One task table (issue 22.4): what each family of model gives and how the Predictor runs it."""
from __future__ import annotations

import json
import re

import pytest

from zoo import tasks
from zoo.errors import SpecError
from zoo.registry import standard_store
from zoo.runtime.predictor import Predictor
from conftest import REPO


def test_every_family_the_schema_allows_has_a_task():
    schema = json.loads((REPO / "specs" / "model.schema.json").read_text())
    families = re.match(r"\^\(([^)]*)\)", schema["properties"]["task"]["pattern"]).group(1).split("|")
    assert sorted(families) == sorted(tasks.TASKS)


def test_the_predictor_runs_a_task_by_its_strategy_not_by_its_name(monkeypatch):
    """A classifier predicts through its strategy; renaming the family in the table changes nothing else."""
    import zoo

    model = zoo.load(standard_store() / "packages" / "classifier-bccd" / "0.1.2")
    assert isinstance(model.predictor, Predictor) and model.predictor.task.per_image
    calls = []
    strategy = model.predictor._strategy
    monkeypatch.setattr(model.predictor, "_strategy", type("Spy", (), {
        "predict": staticmethod(lambda p, image, axes: calls.append("predict") or strategy.predict(p, image, axes)),
        "predict_tensor": staticmethod(lambda p, x, raw: calls.append("tensor") or strategy.predict_tensor(p, x, raw)),
    })())
    from zoo.imageio import read_image

    label, probabilities = model.predict(read_image(REPO / "samples" / "bccd_rbc.jpg"))
    assert calls[0] == "predict" and label == "RBC" and probabilities.shape == (3,)
    dense = zoo.load(standard_store() / "packages" / "n2v-w2s" / "0.1.0")
    assert dense.predictor._strategy is None and not dense.predictor.task.per_image


def test_an_unknown_family_is_a_spec_error_naming_the_known_ones():
    spec = type("Spec", (), {"task": "telepathy/mind-reading", "name": "odd"})()
    with pytest.raises(SpecError, match="known families: classification, detection"):
        tasks.of(spec)
