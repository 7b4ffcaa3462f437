"""Trust: the dataset-shift check (stable, low on training-like inputs, high and explained on
shifted ones, pinned in the package) and uncertainty maps (the input's shape and axes)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile

from conftest import REPO, synthetic_nuclei


@pytest.fixture(scope="module")
def trusted(tmp_path_factory, tiny_package):
    """The tiny N2V package with a shift check calibrated on synthetic nuclei images."""
    from zoo.trust.calibrate import calibrate

    root = tmp_path_factory.mktemp("trust")
    package = root / "pkg"
    shutil.copytree(tiny_package, package)
    paths = []
    for seed in range(100, 130):
        paths.append(root / f"img_{seed}.tif")
        tifffile.imwrite(paths[-1], synthetic_nuclei(seed=seed)[0])
    calibrate(package, paths[:20], paths[20:])
    return package


def test_the_score_is_stable_and_low_on_training_like_images(trusted):
    import zoo

    model = zoo.load(trusted)
    image = synthetic_nuclei(seed=7)[0]
    first, again = model.check_shift(image), model.check_shift(image.copy())
    assert first.shift_score == again.shift_score and first.parts == again.parts
    fresh = [model.check_shift(synthetic_nuclei(seed=s)[0]) for s in range(200, 210)]
    assert sum(r.shift_warning for r in fresh) <= 3, [r.shift_score for r in fresh]    # 20 images calibrate it
    assert np.median([r.shift_score for r in fresh]) < fresh[0].shift_threshold


@pytest.mark.parametrize("change, words", [
    ("noise", "noisier"), ("inverted", "brighter"), ("blur", "smoother"),
])
def test_shifted_images_score_high_and_say_what_differs(trusted, change, words):
    from scipy import ndimage

    import zoo

    model = zoo.load(trusted)
    image = synthetic_nuclei(seed=7)[0].astype(np.float32)
    shifted = {"noise": image + np.random.default_rng(0).normal(0, 60, image.shape),
               "inverted": image.max() - image,
               "blur": ndimage.gaussian_filter(image, 2.5)}[change]
    plain, report = model.check_shift(image), model.check_shift(shifted)
    assert report.shift_warning and report.shift_score > 2 * plain.shift_score
    assert any(words in m for m in report.messages), report.messages


def test_the_check_is_pinned_in_the_package(trusted, tmp_path):
    import zoo
    from zoo import spec as specs
    from zoo.errors import IntegrityError
    from zoo.registry import LocalRegistry

    spec = specs.load(trusted)
    assert {f.file for f in spec.package_files()} >= {"trust/shift.npz", "trust/encoder.onnx"}
    LocalRegistry(tmp_path / "registry").publish(trusted)
    copy = tmp_path / "copy"
    shutil.copytree(trusted, copy)
    data = bytearray((copy / "trust" / "shift.npz").read_bytes())
    data[len(data) // 2] ^= 1
    (copy / "trust" / "shift.npz").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="trust/shift.npz"):
        zoo.load(copy)


def test_predict_reports_and_warns_on_the_command_line(trusted, tmp_path, capsys):
    from zoo.cli import main as cli

    image = synthetic_nuclei(seed=8)[0]
    tifffile.imwrite(tmp_path / "ok.tif", image)
    noisy = image.astype(np.float32) + np.random.default_rng(1).normal(0, 80, image.shape).astype(np.float32)
    tifffile.imwrite(tmp_path / "noisy.tif", noisy)
    assert cli(["predict", str(trusted), str(tmp_path / "ok.tif"), "-o", str(tmp_path / "ok_out.tif"),
                "--report", str(tmp_path / "ok.json")]) == 0
    ok = json.loads((tmp_path / "ok.json").read_text())
    assert {"shift_score", "shift_threshold", "shift_warning"} <= set(ok) and ok["shift_warning"] is False
    capsys.readouterr()
    assert cli(["predict", str(trusted), str(tmp_path / "noisy.tif"), "-o", str(tmp_path / "noisy_out.tif"),
                "--report", str(tmp_path / "noisy.json")]) == 0
    assert "noisier than training data" in capsys.readouterr().err
    assert json.loads((tmp_path / "noisy.json").read_text())["shift_warning"] is True


def test_a_package_without_a_check_says_so(tmp_path, zoo_home):
    """A version published before shift checks (every latest standard version now has one)."""
    from zoo.cli import main as cli

    tifffile.imwrite(tmp_path / "img.tif", synthetic_nuclei(seed=9)[0])
    assert cli(["predict", "n2v-w2s-2d@0.1.0", str(tmp_path / "img.tif"), "-o", str(tmp_path / "out.tif"),
                "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["shift_score"] is None and "no shift check" in report["shift_messages"][0]


def test_uncertainty_maps_have_the_input_shape_and_axes(tiny_package, tmp_path):
    import zoo
    from zoo.cli import main as cli
    from zoo.trust.uncertainty import predict_with_uncertainty

    model = zoo.load(tiny_package)
    image = synthetic_nuclei(shape=(72, 88), seed=3)[0]
    result = predict_with_uncertainty([model], image)
    assert result.uncertainty.shape == image.shape == result.prediction.shape and result.members == 8
    assert result.uncertainty.min() >= 0 and result.uncertainty.max() > 0
    stack = np.stack([image, image[::-1]])                           # a batch along t: maps per image
    assert predict_with_uncertainty([model], stack, axes="tyx").uncertainty.shape == stack.shape
    tifffile.imwrite(tmp_path / "img.tif", image)
    assert cli(["predict", str(tiny_package), str(tmp_path / "img.tif"), "-o", str(tmp_path / "out.tif"),
                "--uncertainty"]) == 0
    assert tifffile.imread(tmp_path / "out_uncertainty.tif").shape == image.shape


def test_instance_uncertainty_gives_a_confidence_per_object(tmp_path, zoo_home):
    import csv

    from zoo.cli import main as cli

    crop = tifffile.imread(REPO / "samples" / "dsb_fluo_nuclei.tif")[100:260, 200:392]
    tifffile.imwrite(tmp_path / "crop.tif", crop)
    assert cli(["predict", "stardist-dsb-fluo-2d@0.1.0", str(tmp_path / "crop.tif"), "-o", str(tmp_path / "l.tif"),
                "--uncertainty", "--measure"]) == 0
    labels = tifffile.imread(tmp_path / "l.tif")
    spread = tifffile.imread(tmp_path / "l_uncertainty.tif")
    assert spread.shape == labels.shape and 0 <= spread.min() and spread.max() <= 1
    with open(tmp_path / "l_objects.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(np.unique(labels)) - 1 > 5
    confidences = [float(r["confidence"]) for r in rows]
    assert all(0 <= c <= 1 for c in confidences) and np.median(confidences) > 0.5
