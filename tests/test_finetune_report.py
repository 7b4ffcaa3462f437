"""Fine-tuning tells the truth about its result (issue 21.12): progress while it runs, Lightning's
info lines once, and at the end the child's validation metric beside the parent's and the
classical baseline's, with a warning when the child is below either; `zoo evaluate --compare`
scores a model and its parent on the same data, converting it for each."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from zoo import spec as specs
from zoo.synthetic import labelled_nuclei

from test_cli import zoo_cli
from test_segmentation_models import small_blueprint

LUMINANCE = "RGB made grey by luminance"


@pytest.fixture(scope="module")
def stained(tmp_path_factory):
    """Grey nuclei, the same as stained RGB (distinct channels), and their labels."""
    root = tmp_path_factory.mktemp("stained")
    for folder in ("grey", "rgb", "labels"):
        (root / folder).mkdir()
    for i in range(4):
        image, labels = labelled_nuclei((64, 64), n=10, seed=200 + i, radius=(4, 7))
        tifffile.imwrite(root / "grey" / f"n{i}.tif", image)
        rgb = np.stack([image.max() - image, image // 2, image.max() - image // 3], axis=-1)
        tifffile.imwrite(root / "rgb" / f"n{i}.tif", rgb, photometric="rgb")
        tifffile.imwrite(root / "labels" / f"n{i}.tif", labels)
    return root


@pytest.fixture(scope="module")
def grey_parent(tmp_path_factory, stained):
    """A tiny grey StarDist: a few steps, so the Otsu baseline beats it on these clean nuclei."""
    from zoo.trainers.fit import fit

    bp = small_blueprint("stardist")
    bp.name = "stardist-grey"
    return fit(bp, stained / "grey", tmp_path_factory.mktemp("parent") / "stardist-grey", target=stained / "labels",
               max_steps=10, steps_per_epoch=5, batch_size=4, patch=48, lr=3e-3, progress=False, val_fraction=0.25)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, stained, grey_parent):
    """`zoo finetune` of the grey parent on the RGB images, its stderr not a terminal:
    (child package, the completed process)."""
    work = tmp_path_factory.mktemp("ft")
    out = work / "stardist-rgb"
    run = zoo_cli("finetune", grey_parent, "--data", stained / "rgb", "--target", stained / "labels", "--out", out,
                  "--name", "stardist-rgb", "--max-steps", 6, "--val-every", 3, "--batch-size", 4, "--patch", 48,
                  "--val-fraction", 0.25, env_home=work / "home")
    return out, run


def test_finetune_prints_child_parent_and_baseline_and_warns_below_the_baseline(finetuned):
    _, run = finetuned
    headline = [line for line in run.stdout.splitlines() if line.startswith("AP@0.5 on 1 image(s)")]
    assert len(headline) == 1, run.stdout
    assert "fine-tuned " in headline[0] and "parent " in headline[0] and "(Otsu threshold + watershed)" in headline[0]
    warnings = [line for line in run.stderr.splitlines() if line.startswith("WARNING") and "below" in line]
    assert any("stardist-rgb@0.1.0" in w and "classical baseline" in w for w in warnings), run.stderr


def test_finetune_prints_lightnings_info_lines_at_most_once(finetuned):
    _, run = finetuned
    for line in ("GPU available", "TPU available", "`Trainer.fit` stopped"):
        assert run.stderr.count(line) <= 1, run.stderr


def test_finetune_without_a_terminal_prints_plain_progress_lines(finetuned):
    _, run = finetuned
    steps = [line for line in run.stderr.splitlines() if line.startswith("step ")]
    assert any(line.startswith("step 6/6") for line in steps) and len(steps) <= 12, run.stderr
    assert "\r" not in run.stderr                     # no progress bar redrawn into a log


def test_finetune_records_the_comparison_in_the_child(finetuned):
    child, _ = finetuned
    metrics = specs.load(child).training.metrics
    report = metrics["finetune_report"]
    assert report["metric"] == "ap50" and report["baseline"] == "Otsu threshold + watershed"
    assert {type(report[k]) for k in ("model", "parent", "baseline_value")} == {float}
    assert report["baseline_value"] > report["model"] and any("baseline" in w for w in report["warnings"])
    assert LUMINANCE in report["conversions"]["parent"][0]       # the grey parent saw the RGB images as grey
    assert set(metrics["parent_vs_child"]["ap50"]) == {"parent", "child", "baseline"}


def test_evaluate_compare_scores_a_grey_parent_on_rgb_data(finetuned, grey_parent, stained, tmp_path, capsys):
    from zoo.cli import main

    child, _ = finetuned
    assert main(["evaluate", str(child), "--data", str(stained / "rgb"), "--target", str(stained / "labels"),
                 "--compare", str(grey_parent), "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    headline = out.splitlines()[0]
    assert headline.startswith("AP@0.5 on 4 image(s): stardist-rgb@0.1.0 ") and "stardist-grey@0.1.0 " in headline
    assert f"converted for stardist-grey@0.1.0: {LUMINANCE}" in out
    assert (tmp_path / "eval" / "comparison.json").is_file()


def test_evaluate_compare_repeats_grey_data_for_an_rgb_model(finetuned, grey_parent, stained, tmp_path, capsys):
    from zoo.cli import main

    child, _ = finetuned
    assert main(["evaluate", str(grey_parent), "--data", str(stained / "grey"), "--target", str(stained / "labels"),
                 "--compare", str(child), "--out", str(tmp_path / "eval")]) == 0
    assert "converted for stardist-rgb@0.1.0: grey repeated into its 3 channels" in capsys.readouterr().out
