"""The standard segmentation packages on a real DSB2018 validation image shipped in samples/
(never trained on): better than the classical baseline, the same objects whether the image is
predicted whole, in small tiles or streamed to disk, and `zoo evaluate` for segmentation."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

import zoo
from zoo.cli import main as cli
from zoo.imageio import read_image
from zoo.segmentation.baseline import otsu_watershed
from zoo.segmentation.metrics import evaluate

from conftest import REPO
from test_segmentation_post import same_partition

SAMPLE = REPO / "samples" / "dsb_fluo_nuclei.tif"
LABELS = REPO / "samples" / "dsb_fluo_nuclei_labels.tif"
# AP@0.5 each must reach on the sample, above the baseline's 0.31 (latest versions; measured 0.73,
# 0.64, 0.40; unet-dsb-2d 0.1.0 reached only 0.23 on this dense image)
PACKAGES = {"stardist-dsb-fluo-2d": 0.65, "cellpose-dsb-2d": 0.55, "unet-dsb-2d": 0.35}


def ap(truth, labels, threshold=0.5):
    return evaluate([truth], [labels], thresholds=[threshold])[0]["ap"]


@pytest.mark.parametrize("name", PACKAGES)
def test_standard_package_segments_the_sample_and_ignores_tile_seams(zoo_home, name, tmp_path):
    model = zoo.load(name)
    image, truth = read_image(SAMPLE), tifffile.imread(LABELS)
    labels = model.predict(image)
    assert labels.shape == image.shape and labels.dtype == np.int32
    assert ap(truth, otsu_watershed(image)) < 0.35 and ap(truth, labels) > PACKAGES[name]
    tiled = model.predict(image, tile=128)              # many seams through the 369 nuclei
    assert ap(labels, tiled, 0.9) > 0.98                 # the same objects (blending may move a pixel)
    model.predict_file(SAMPLE, tmp_path / "labels.tif")
    assert same_partition(labels, tifffile.imread(tmp_path / "labels.tif"))


def test_zoo_evaluate_reports_segmentation_metrics(zoo_home, tmp_path, capsys):
    images, targets = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    targets.mkdir()
    (images / "nuclei.tif").write_bytes(SAMPLE.read_bytes())
    (targets / "nuclei.tif").write_bytes(LABELS.read_bytes())
    assert cli(["evaluate", "stardist-dsb-fluo-2d", "--data", str(images), "--target", str(targets),
                "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "AP@0.5" in out and "baseline" in out
    import json

    row = json.loads((tmp_path / "eval" / "metrics.json").read_text())["all"]
    assert row["images"] == 1 and row["ap50"] > row["baseline_ap50"]


def test_an_rgb_image_to_the_grey_stardist_model_is_a_clear_error(zoo_home):
    from zoo.errors import InputError

    rgb = np.repeat(read_image(SAMPLE)[..., None], 3, axis=-1)
    with pytest.raises(InputError, match="single-channel"):
        zoo.load("stardist-dsb-fluo-2d").predict(rgb)


def test_the_fine_tuned_h_and_e_package_beats_its_parent_and_its_lineage_verifies(zoo_home):
    """stardist-dsb-he-2d is stardist-dsb-fluo-2d fine-tuned on 25 H&E images (scripts/bench_finetune.py):
    on an H&E validation image (measured: 0.38 against the parent's 0.03 on the grey image and the
    baseline's 0.32) it segments, and its recorded parent is the published one."""
    from zoo.lineage import chain
    from zoo.registry import default_registry

    image, truth = read_image(REPO / "samples" / "dsb_he_nuclei.tif"), tifffile.imread(REPO / "samples" / "dsb_he_nuclei_labels.tif")
    child, parent = zoo.load("stardist-dsb-he-2d"), zoo.load("stardist-dsb-fluo-2d")
    assert ap(truth, child.predict(image)) > 0.33
    assert ap(truth, parent.predict(image.mean(axis=-1))) < 0.1
    links = chain(default_registry(), "stardist-dsb-he-2d")
    assert [(link.ref, link.status) for link in links] == [("stardist-dsb-he-2d@0.1.2", "package"),   # 0.1.0 + shift check + scale
                                                           ("stardist-dsb-fluo-2d@0.1.0", "verified")]
