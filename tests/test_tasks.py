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


# ------------------------------------------------------------------ training dispatches through the architecture
TRAINER_MODULE = '''
from pathlib import Path
from zoo.trainers.dispatch import Trainer

CALLS = []

def fit(spec, data, out, *, patch=32, max_steps=10, canvas=None, **lightning):
    CALLS.append(("fit", spec.architecture_id, patch, max_steps, canvas, sorted(lightning)))
    return Path(out)

def finetune(parent, data, out, policy, options, *, name=None):
    CALLS.append(("finetune", name))
    return Path(out)

TRAINER = Trainer(kind="a test model", learns_from="nothing at all", fit="my_trainer:fit",
                  finetune="my_trainer:finetune")
'''


@pytest.fixture()
def own_trainer(tmp_path, monkeypatch):
    """An architecture that names its own trainer (a module on the path), registered in-process."""
    from zoo import architectures

    (tmp_path / "my_trainer.py").write_text(TRAINER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    unet = architectures.get("unet-seg")
    arch = architectures.Architecture(id="own-trainer", package=unet.package, network=unet.network,
                                      training=unet.training, task="segmentation", trainer_target="my_trainer:TRAINER")
    monkeypatch.setitem(architectures._extra, arch.id, arch)
    spec_text = unet.blueprint_path().read_text().replace("id: unet-seg", "id: own-trainer")
    assert "id: own-trainer" in spec_text
    blueprint = tmp_path / "spec.yaml"
    blueprint.write_text(spec_text)
    import my_trainer

    my_trainer.CALLS.clear()
    return blueprint, my_trainer


def test_training_goes_to_the_trainer_the_architecture_names(own_trainer, tmp_path):
    """No branch on task names: the architecture's trainer gets the options it takes; None is its default."""
    from zoo.trainers.fit import fit

    blueprint, module = own_trainer
    fit(blueprint, tmp_path, tmp_path / "out", patch=48, canvas=None)
    assert module.CALLS == [("fit", "own-trainer", 48, 10, None,
                             ["accelerator", "devices", "precision", "strategy"])]


def test_an_option_the_trainer_does_not_take_is_refused_with_what_it_learns_from(own_trainer, tmp_path):
    from zoo.errors import InputError
    from zoo.trainers.fit import fit

    blueprint, module = own_trainer
    with pytest.raises(InputError, match=r"is a test model, which learns from nothing at all: "
                                         r"labels, val_every do not apply"):
        fit(blueprint, tmp_path, tmp_path / "out", labels=tmp_path / "labels.csv", val_every=5)
    assert module.CALLS == []


def test_a_classifier_refuses_dense_options_before_any_work(tmp_path):
    """The built-in trainers say what they learn from (a classifier: labelled images)."""
    from zoo import api
    from zoo.errors import InputError

    with pytest.raises(InputError, match=r"a classifier, which learns from labelled images.*: target does not apply"):
        api.train("classifier", tmp_path, tmp_path / "out", target=tmp_path / "masks")
    with pytest.raises(InputError, match=r"a dense model .*: labels does not apply"):
        api.train("unet-seg", tmp_path, tmp_path / "out", labels=tmp_path / "labels.csv")
    assert not (tmp_path / "out").exists()


def test_every_builtin_architecture_has_a_trainer_with_both_functions():
    from zoo import architectures

    for arch in architectures.available().values():
        trainer = architectures.import_target(arch.trainer)
        assert callable(architectures.import_target(trainer.fit)), arch.id
        assert callable(architectures.import_target(trainer.finetune)), arch.id
