"""StarDist post-processing recovers known star-convex objects exactly from perfect outputs."""
import numpy as np
import pytest

from zoo.errors import InputError
from zoo.segmentation.stardist import instances, object_probability, star_distances
from zoo.segmentation.metrics import evaluate, iou_matrix


def ellipses(shape=(128, 128), seed=0, n=12):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    k = 0
    while k < n:
        cy, cx = rng.uniform(10, shape[0] - 10), rng.uniform(10, shape[1] - 10)
        a, b, t = rng.uniform(4, 10), rng.uniform(4, 10), rng.uniform(0, np.pi)
        u = (yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)
        v = -(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1
        if (labels[inside] == 0).all():        # no overlaps; touching is allowed
            k += 1
            labels[inside] = k
    return labels


def test_distances_of_a_disk_are_its_radius():
    yy, xx = np.mgrid[:41, :41]
    disk = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 15 ** 2).astype(np.int32)
    d = star_distances(disk, n_rays=16)
    assert d.shape == (41, 41, 16) and np.all(d[0, 0] == 0)
    np.testing.assert_allclose(d[20, 20], 15.0, atol=0.5 + 1e-6)   # the digitised edge, to half a pixel


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perfect_outputs_give_back_every_object(seed):
    truth = ellipses(seed=seed)
    labels = instances(object_probability(truth), star_distances(truth, n_rays=32))
    scores = evaluate([truth], [labels], thresholds=[0.5, 0.8])
    assert scores[0]["ap"] == scores[1]["ap"] == 1.0               # every object, no duplicate
    iou = iou_matrix(truth, labels)
    assert iou.max(axis=1).min() > 0.9                              # each one drawn closely


def test_mismatched_outputs_are_clear():
    with pytest.raises(InputError, match="do not match"):
        instances(np.zeros((8, 8)), np.zeros((8, 9, 32)))
    with pytest.raises(InputError, match="2D label image"):
        star_distances(np.zeros((2, 8, 8), np.int32))
