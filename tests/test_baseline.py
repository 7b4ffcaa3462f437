"""The classical baseline finds well-separated synthetic nuclei and splits touching ones."""
import numpy as np

from zoo.segmentation.baseline import otsu_watershed
from zoo.segmentation.metrics import evaluate


def disks(centres, radius, shape=(96, 96)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = k
    return labels


def test_baseline_recovers_separate_and_touching_nuclei():
    truth = disks([(20, 20), (20, 70), (70, 30), (70, 48)], radius=9)      # the last two touch
    rng = np.random.default_rng(0)
    image = 20 + 180 * (truth > 0) + rng.normal(0, 8, truth.shape)
    labels = otsu_watershed(image)
    row = evaluate([truth], [labels], thresholds=[0.5])[0]
    assert row["tp"] == 4 and row["fp"] == 0
    dark = otsu_watershed(255 - image)                                      # brightfield-like: dark nuclei
    assert evaluate([truth], [dark], thresholds=[0.5])[0]["tp"] == 4
