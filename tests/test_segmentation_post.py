"""Segmentation targets and post-processing: exact recovery from perfect network outputs (2D and
3D), augmentation that transforms targets like the image, and band-wise labelling that finds
every object on a seam once."""
import numpy as np
import pytest

from zoo.errors import InputError
from zoo.runtime import ops
from zoo.runtime.layout import Layout
from zoo.runtime.stream import _Sink, label_bands
from zoo.segmentation import cellpose, semantic
from zoo.segmentation.stardist import object_probability, star_distances
from zoo.segmentation.metrics import evaluate, iou_matrix
from zoo.spec import Op
from zoo.synthetic import touching_objects
from zoo.trainers.segmentation import transform_targets


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """The two label images split the pixels into the same objects (ids may differ)."""
    if a.shape != b.shape or ((a > 0) != (b > 0)).any():
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def perfect_classes(labels):
    c = semantic.classes(labels)
    return np.stack([(c == k).astype(np.float32) for k in range(3)])


@pytest.mark.parametrize("shape,n", [((128, 128), 15), ((32, 64, 64), 12)])
def test_flows_and_classes_give_back_every_object(shape, n):
    truth = touching_objects(shape, n, seed=3, radius=(4, 9))
    for labels in (cellpose.instances(cellpose.flows(truth), (truth > 0).astype(np.float32), min_size=5),
                   semantic.instances(perfect_classes(truth), min_size=5)):
        scores = evaluate([truth], [labels], thresholds=[0.5, 0.9])
        assert scores[0]["ap"] == scores[1]["ap"] == 1.0
        assert iou_matrix(truth, labels).max(axis=1).min() > 0.95


def test_flows_point_to_the_object_centre():
    yy, xx = np.mgrid[:41, :41]
    disk = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 12 ** 2).astype(np.int32)
    f = cellpose.flows(disk)
    assert f.shape == (2, 41, 41) and np.all(f[:, 0, 0] == 0)
    off_centre = (disk > 0) & ((yy != 20) | (xx != 20))
    np.testing.assert_allclose(np.hypot(*f)[off_centre], 1.0, atol=1e-5)   # unit vectors
    assert np.all(f[:, 20, 20] == 0)                                      # the sink
    np.testing.assert_allclose(f[:, 20, 28], [0, -1], atol=0.05)           # right of centre: points left
    np.testing.assert_allclose(f[:, 12, 20], [1, 0], atol=0.05)            # above centre: points down


@pytest.mark.parametrize("shape,n", [((160, 192), 40), ((24, 48, 48), 10)])
def test_flows_are_followed_in_chunks_with_the_same_ends(monkeypatch, shape, n):
    """Following every foreground pixel at once held ~60 B each of torch temporaries; chunks of
    pixels (here 1000, the last one short) give the same end points bit for bit."""
    truth = touching_objects(shape, n, seed=5, radius=(4, 9))
    flow, mask = cellpose.flows(truth), truth > 0
    monkeypatch.setattr(cellpose, "FOLLOW_CHUNK", 1 << 30)
    whole = cellpose.follow(flow, mask, n_steps=50)
    monkeypatch.setattr(cellpose, "FOLLOW_CHUNK", 1000)
    chunked = cellpose.follow(flow, mask, n_steps=50)
    assert mask.sum() % 1000 and whole.shape == (mask.sum(), len(shape))
    assert np.array_equal(whole, chunked)
    assert np.abs(whole - np.argwhere(mask)).max() > 3       # the pixels moved


def augmented(array, flips, k):
    for a in flips:
        array = np.flip(array, a)
    return np.rot90(array, k, axes=(-2, -1))


@pytest.mark.parametrize("flips,k", [((), 1), ((0,), 0), ((1,), 0), ((0, 1), 3), ((1,), 2), ((0,), 1)])
def test_targets_transform_like_the_image(flips, k):
    truth = touching_objects((64, 64), 8, seed=1)
    moved = augmented(truth, flips, k)
    rays = np.moveaxis(star_distances(truth, 16), -1, 0)
    expected = np.moveaxis(star_distances(moved, 16), -1, 0)
    got = transform_targets(augmented(rays, [a + 1 for a in flips], k), [("ray", i, 16) for i in range(16)], flips, k)
    assert np.mean(np.abs(got - expected) < 0.01) > 0.99        # ties in pixel rounding may differ
    flow = cellpose.flows(truth)
    got = transform_targets(augmented(flow, [a + 1 for a in flips], k), [("vector", 0), ("vector", 1)], flips, k)
    assert np.mean(np.abs(got - cellpose.flows(moved)) < 0.05) > 0.97  # centres may tie differently


def test_post_processing_rejects_mismatched_outputs():
    with pytest.raises(InputError, match="do not match"):
        cellpose.instances(np.zeros((2, 8, 8)), np.zeros((8, 9)))
    with pytest.raises(InputError, match="shape \\(3, \\*spatial\\)"):
        semantic.instances(np.zeros((2, 8, 8)))
    with pytest.raises(InputError, match="2 flow channels"):
        ops.POSTPROCESSING["cellpose_instances"](np.zeros((1, 2, 8, 8), np.float32), {}, {}, "labels")


def seam_objects(shape=(160, 96)):
    """Touching objects, several straddling rows 40, 80 and 120 (the band seams below)."""
    labels = touching_objects(shape, 30, seed=7, radius=(4, 9))
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    k = labels.max()
    for row in (40, 80, 120):
        for col in (15, 50, 80):
            disk = ((yy - row) ** 2 + (xx - col) ** 2 <= 7 ** 2) & (labels == 0)
            if disk.sum() > 60:
                k += 1
                labels[disk] = k
    return labels


@pytest.mark.parametrize("op,outputs", [
    ("cellpose_instances", lambda t: np.concatenate([cellpose.flows(t), (t > 0)[None].astype(np.float32)])),
    ("semantic_instances", perfect_classes),
    ("stardist_instances", lambda t: np.concatenate([object_probability(t)[None],
                                                     np.moveaxis(star_distances(t, 32), -1, 0)])),
])
def test_band_seams_neither_split_nor_duplicate_objects(tmp_path, op, outputs):
    truth = seam_objects()
    raw = outputs(truth).astype(np.float32)
    whole = ops.POSTPROCESSING[op](raw[None], {}, {}, "labels")[0, 0]
    layout = Layout("cyx", "yx", raw.shape)
    sink = _Sink(tmp_path / "labels.tif", Layout("yx", "yx", truth.shape))
    band_bytes = raw.shape[0] * raw.shape[2] * 4 * (40 + 2 * 24)       # bands of 40 rows, 24 of overlap
    label_bands(raw, layout, [Op(op)], sink, max_object_size=24, band_bytes=band_bytes)
    banded = np.asarray(sink.array).copy()
    sink.commit()
    assert same_partition(whole, banded)
    assert len(np.unique(banded)) - 1 == len(np.unique(whole)) - 1 >= truth.max() - 2
    ids = np.unique(banded)[1:]
    assert ids[0] == 1 and ids[-1] == len(ids)                          # unique, consecutive across bands
