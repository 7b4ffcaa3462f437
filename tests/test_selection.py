"""Weights chosen by what matters (issue 27.3): AP@0.5 for instance models, macro-F1 for
classifiers, PSNR for restoration with targets, on the validation split, recorded in the
package; the validation loss on request."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from conftest import labelled_nuclei_folder
from zoo import spec as specs


def test_macro_f1_and_ap50_from_counts_are_the_textbook_numbers():
    from zoo.trainers.selection import finish, score_one

    truth, predicted = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    rows = sum(score_one("classification", None, np.eye(3)[p], t, (3, 3)) for p, t in zip(predicted, truth))
    f1 = [2 * 2 / (2 * 2 + 0 + 1), 2 * 1 / (2 * 1 + 1 + 1), 2 * 1 / (2 * 1 + 1 + 0)]
    assert finish("classification", rows) == pytest.approx(np.mean(f1))
    assert finish("instance", np.array([3.0, 1.0, 1.0])) == pytest.approx(3 / 5)
    assert finish("restoration", np.array([60.0, 2.0])) == 30.0


def _curve(run, name: str) -> list[tuple[int, float]]:
    with open(run / "metrics.csv", newline="") as f:
        return [(int(r["step"]) + 1, float(r[name])) for r in csv.DictReader(f) if r.get(name)]


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    return labelled_nuclei_folder(tmp_path_factory.mktemp("seg"))


def _unet():
    from zoo import architectures

    bp = specs.load(architectures.get("unet-seg").blueprint_path(2))
    bp.architecture_params.update(base_channels=8, depth=2)
    return bp


@pytest.mark.slow
def test_an_instance_model_keeps_the_weights_with_the_best_ap50_and_says_so(seg_data, tmp_path):
    from zoo.trainers.fit import fit

    images, labels = seg_data
    out = fit(_unet(), images, tmp_path / "seg", target=labels, max_steps=24, steps_per_epoch=6, batch_size=4,
              patch=48, lr=3e-3, progress=False, val_fraction=0.4, checkpoint_every=100)
    training = specs.load(out).training
    selection = training.config["selection"]
    curve = _curve(tmp_path / "seg.run", "val_ap50")
    assert selection["by"] == "val_ap50" and selection["mode"] == "max" and len(curve) == 4
    best_step, best = max(curve, key=lambda c: (c[1], -c[0]))
    assert selection["step"] == training.config["selected_step"] == best_step
    assert training.metrics["val_ap50"] == pytest.approx(best) == pytest.approx(selection["value"])
    assert 0.0 <= best <= 1.0 and "val_loss" in training.metrics


@pytest.mark.slow
def test_selection_by_loss_stays_available(seg_data, tmp_path):
    from zoo.trainers.fit import fit

    images, labels = seg_data
    out = fit(_unet(), images, tmp_path / "seg", target=labels, max_steps=12, steps_per_epoch=6, batch_size=4,
              patch=48, progress=False, val_fraction=0.4, select="loss")
    training = specs.load(out).training
    losses = _curve(tmp_path / "seg.run", "val_loss")
    assert training.config["selection"]["by"] == "val_loss"
    assert training.config["selected_step"] == min(losses, key=lambda c: (c[1], c[0]))[0]
    assert not _curve(tmp_path / "seg.run", "val_ap50")          # not even scored


@pytest.mark.slow
def test_restoration_with_targets_selects_by_psnr_and_noise2void_says_why_it_cannot(tmp_path, image_folder):
    from zoo import architectures
    from zoo.synthetic import nuclei
    from zoo.trainers.fit import fit

    noisy, clean = tmp_path / "noisy", tmp_path / "clean"
    noisy.mkdir()
    clean.mkdir()
    for i in range(4):
        image, truth = nuclei((64, 64), n=8, seed=i, peak=30, read_noise=5)
        tifffile.imwrite(noisy / f"c{i}.tif", image)
        tifffile.imwrite(clean / f"c{i}.tif", truth.astype(np.float32))
    care = specs.load(architectures.get("care").blueprint_path(2))
    care.architecture_params.update(base_channels=8, depth=2)
    out = fit(care, noisy, tmp_path / "care", target=clean, max_steps=8, steps_per_epoch=4, batch_size=4, patch=32,
              progress=False, val_fraction=0.3)
    training = specs.load(out).training
    assert training.config["selection"]["by"] == "val_psnr"
    assert training.metrics["val_psnr"] == max(v for _, v in _curve(tmp_path / "care.run", "val_psnr"))

    n2v = specs.load(architectures.get("n2v").blueprint_path(2))
    n2v.architecture_params["base_channels"] = 8
    out = fit(n2v, image_folder, tmp_path / "n2v", max_steps=2, steps_per_epoch=2, batch_size=2, patch=32,
              progress=False, val_fraction=0.4)
    selection = specs.load(out).training.config["selection"]
    assert selection["by"] == "val_loss" and "self-supervised" in selection["why"]


@pytest.mark.slow
def test_a_classifier_keeps_the_weights_with_the_best_macro_f1(tmp_path):
    from test_classification import tiny_blueprint, write_csv, write_dataset
    from zoo.trainers.classification import fit_classifier

    rows = write_dataset(tmp_path, {"small": 24, "large": 8, "ring": 8}, seed=0)
    labels = write_csv(tmp_path, rows)
    out = fit_classifier(tiny_blueprint(), tmp_path, tmp_path / "pkg", labels=labels, group_column="source",
                         canvas=32, scale=1.0, max_steps=20, val_every=5, batch_size=8, lr=3e-3, progress=False)
    training = specs.load(out).training
    curve = _curve(tmp_path / "pkg.run", "val_macro_f1")
    assert training.config["selection"]["by"] == "val_macro_f1" and len(curve) == 4
    assert training.metrics["val_macro_f1"] == pytest.approx(max(v for _, v in curve))
    assert training.config["selected_step"] == max(curve, key=lambda c: (c[1], -c[0]))[0]
