"""Stitching 2D instance labels across z (or t) into 3D objects (issue 24.3)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from zoo.errors import InputError
from zoo.segmentation.stitch import stitch


def _ball(shape, centre, radii):
    """An ellipsoid without its poles (slices of a ball's tip overlap too little to join by IoU)."""
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return ((sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1)
            & (np.abs(grid[0] - centre[0]) <= 0.8 * radii[0]))


def _scene(shape=(40, 64, 64)):
    """Balls, a slanted tube through all of z, two balls touching side by side in every slice
    they share, and two discs stacked at the same yx with an empty slice between them."""
    truth = np.zeros(shape, np.int32)
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    truth[_ball(shape, (9, 12, 12), (8, 6, 6))] = 1
    truth[_ball(shape, (28, 14, 48), (10, 7, 7))] = 2
    truth[((y - 30 - z * 0.3) ** 2 + (x - 10 - z * 0.2) ** 2 <= 16)] = 3          # a tube along z
    twins = _ball(shape, (22, 50, 22), (9, 6, 6))
    truth[twins & (x < 22)] = 4                                                     # touching in 2D,
    truth[twins & (x >= 22)] = 5                                                    # two objects in 3D
    truth[(z >= 2) & (z < 8) & ((y - 50) ** 2 + (x - 50) ** 2 <= 25)] = 6            # same yx,
    truth[(z >= 9) & (z < 15) & ((y - 50) ** 2 + (x - 50) ** 2 <= 25)] = 7           # a gap in z
    return truth


def _shuffle_per_slice(truth, seed=0):
    """Each slice's objects under fresh random ids (large, sparse, unrelated between slices)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(truth.shape, np.int64)
    for k, s in enumerate(truth):
        ids = rng.choice(10**9, size=int(s.max()) + 1, replace=False) + 1
        ids[0] = 0
        out[k] = ids[s]
    return out


def _same_objects(a, b):
    """True when ``a`` and ``b`` partition the foreground into the same objects."""
    fg = (a > 0) | (b > 0)
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[fg])) == len(np.unique(b[fg]))


def test_slices_with_random_ids_are_stitched_back_into_the_3d_objects():
    truth = _scene()
    stitched = stitch(_shuffle_per_slice(truth), 0.25)
    assert stitched.shape == truth.shape and stitched.dtype == np.int32
    assert set(np.unique(stitched)) == set(range(0, 8))                   # 7 objects, ids 1..7
    assert _same_objects(stitched, truth)


def test_touching_in_2d_and_stacked_across_a_gap_stay_separate():
    truth = _scene()
    stitched = stitch(_shuffle_per_slice(truth, seed=1), 0.1)
    for a, b in ((4, 5), (6, 7)):
        assert len({*np.unique(stitched[truth == a]), *np.unique(stitched[truth == b])}) == 2


def test_threshold_one_joins_only_identical_masks():
    truth = np.zeros((4, 16, 16), np.int32)
    truth[:2, 4:8, 4:8] = 1                                                 # the same square twice,
    truth[2:, 4:8, 4:9] = 1                                                 # then a wider one
    assert list(np.unique(stitch(truth, 1.0)[:, 5, 5])) == [1, 2]
    assert len(np.unique(stitch(truth, 0.5))) == 2                          # IoU 0.8 joins at 0.5


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.2, float("nan"), float("inf"), "a", None, True])
def test_a_threshold_outside_0_1_is_refused(bad):
    with pytest.raises(InputError, match=r"stitch threshold is an IoU in \(0, 1\].*got"):
        stitch(np.zeros((2, 4, 4), np.int32), bad)


def test_bad_labels_are_refused():
    with pytest.raises(InputError, match="integer label"):
        stitch(np.zeros((2, 4, 4), np.float32), 0.5)
    with pytest.raises(InputError, match="non-negative"):
        stitch(-np.ones((2, 4, 4), np.int32), 0.5)
    with pytest.raises(InputError, match="axis"):
        stitch(np.zeros((2, 4, 4), np.int32), 0.5, axis=3)


def test_time_and_other_axes():
    truth = _scene((12, 64, 64))
    slices = _shuffle_per_slice(truth)
    along_t = stitch(slices, 0.25)                                          # tyx: the same function
    moved = stitch(np.moveaxis(slices, 0, 2), 0.25, axis=2)                 # stitch axis elsewhere
    assert np.array_equal(np.moveaxis(moved, 2, 0), along_t)
    assert stitch(np.zeros((3, 5, 5), np.uint8), 0.5).max() == 0            # empty stacks
    assert np.array_equal(stitch(np.ones((1, 3, 3), np.uint16) * 7, 0.5), np.ones((1, 3, 3)))


def _cellpose_stitch3d(masks, threshold):
    """Cellpose's stitch3D (cellpose/utils.py), dense IoU matrices: the reference."""
    masks = masks.copy()
    mmax = masks[0].max()
    empty = 0
    for i in range(len(masks) - 1):
        a, b = masks[i + 1], masks[i]
        overlap = np.zeros((a.max() + 1, b.max() + 1))
        np.add.at(overlap, (a.ravel(), b.ravel()), 1)
        union = overlap.sum(0, keepdims=True) + overlap.sum(1, keepdims=True) - overlap
        iou = (overlap / np.maximum(union, 1))[1:, 1:]
        if not iou.size and empty == 0:
            mmax = a.max()
        elif not iou.size and not empty == 0:
            icount = a.max()
            masks[i + 1] = np.where(a > 0, a + mmax, 0)
            mmax += icount
        else:
            iou[iou < threshold] = 0.0
            iou[iou < iou.max(axis=0)] = 0.0
            istitch = iou.argmax(axis=1) + 1
            ino = np.nonzero(iou.max(axis=1) == 0.0)[0]
            istitch[ino] = np.arange(mmax + 1, mmax + len(ino) + 1, 1, int)
            mmax += len(ino)
            masks[i + 1] = np.append(np.array(0), istitch)[a]
            empty = 1
    return masks


def test_agrees_with_cellpose_stitch3d_on_crowded_random_labels():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    field = ndimage.gaussian_filter(rng.normal(size=(24, 96, 96)), (2, 3, 3))
    stack = np.stack([ndimage.label(s > 0.02)[0] for s in field])           # many blobs, ids 1..m per slice
    for threshold in (0.1, 0.3, 0.6):
        ours = stitch(stack, threshold)
        assert _same_objects(ours, _cellpose_stitch3d(stack, threshold))
        assert set(np.unique(ours)) == set(range(int(ours.max()) + 1))       # contiguous from 1


def test_a_large_stack_is_fast():
    rng = np.random.default_rng(0)
    stack = _shuffle_per_slice(np.repeat(rng.integers(0, 400, (1, 16, 16)).repeat(32, 1).repeat(32, 2), 32, 0))
    start = time.perf_counter()
    stitched = stitch(stack, 0.5)                                            # 32 x 512 x 512, ~250 objects a slice
    assert time.perf_counter() - start < 5
    assert stitched.max() == len(np.unique(stack[0])) - (0 in stack[0])


def test_sparse_and_dense_ids_and_many_tiny_objects_give_the_same_objects():
    rng = np.random.default_rng(5)
    pixels = rng.permutation(1 + np.arange(24 * 24)).reshape(24, 24)       # every pixel its own object
    stack = np.stack([pixels, pixels, np.where(rng.random((24, 24)) < 0.5, pixels, 0)])
    stitched = stitch(stack, 1.0)                                           # pairs counted by sorting
    assert stitched.max() == 24 * 24 and np.array_equal(stitched[1], stitched[0])
    assert np.array_equal(stitch(stack.astype(np.uint64) * 10**12, 1.0), stitched)
