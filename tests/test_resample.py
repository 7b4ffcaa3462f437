"""Resampling to a model's scale and back, and the physical-scale helpers (issue 24.2-3)."""
from __future__ import annotations

import math
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from zoo.errors import InputError
from zoo.runtime.resample import output_shape, rescale_image, rescale_labels, restore_size
from zoo.runtime.scale import anisotropy_factors, diameter_factors, estimate_diameter, scale_factors

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _smooth(shape, seed=0, sigma=4.0):
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma)
    return (field / field.std()).astype(np.float32)


def test_images_are_zoomed_per_axis_one_image_and_channel_at_a_time():
    x = _smooth((2, 3, 50, 41))
    y = rescale_image(x, (0.5, 2.0))
    assert y.shape == (2, 3, 25, 82) and y.dtype == np.float32
    assert np.allclose(y[1, 2], rescale_image(x[1, 2], (0.5, 2.0)))          # leading axes looped
    assert rescale_image(np.ones((3, 7, 5), np.uint16), (1 / 3, 0.5, 2)).shape == (1, 4, 10)
    assert output_shape((37, 10), (0.33, 0.05)) == (12, 1)                  # floor(s f + 0.5), >= 1
    assert np.array_equal(rescale_image(x, (1.0, 1.0)), x)


@pytest.mark.parametrize("order", [1, 3])
def test_the_zoom_is_scipy_ndimage_zoom_on_pixel_areas(order):
    from scipy import ndimage

    x = _smooth((17, 23, 29), sigma=2.0)
    for shape in [(40, 10, 29), (5, 50, 13), (34, 46, 58)]:
        ours = restore_size(x, shape, order, anti_alias=False)
        ref = ndimage.zoom(x, [o / i for o, i in zip(shape, x.shape)], order=order, mode="reflect",
                           grid_mode=True)
        assert ours.shape == shape and np.abs(ours - ref).max() < 1e-5


def test_linear_zoom_with_anti_aliasing_matches_skimage_rescale():
    from skimage.transform import rescale

    x = _smooth((60, 70), sigma=1.5)
    for f in (0.5, 0.4, 2.0, 1.7):
        ours = rescale_image(x, (f, f))
        ref = rescale(x.astype(np.float64), f, order=1, anti_aliasing=f < 1)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref)[2:-2, 2:-2].max() < 1e-3, f                # the borders' mode differs


def test_shrinking_filters_out_what_would_alias():
    checker = (np.indices((90, 90)).sum(0) % 2).astype(np.float32)         # detail at the Nyquist rate
    assert rescale_image(checker, (1 / 3, 1 / 3), anti_alias=False).std() > 0.4
    assert rescale_image(checker, (1 / 3, 1 / 3)).std() < 0.05


@pytest.mark.parametrize("shape, f", [((37, 53), 0.33), ((64, 64), 0.5), ((31, 17), 2.0), ((20, 29), 1.37)])
def test_rescale_and_restore_gives_back_the_exact_shape_and_a_close_image(shape, f):
    x = _smooth(shape, sigma=6.0)
    y = restore_size(rescale_image(x, (f, f)), shape)
    assert y.shape == shape and y.dtype == np.float32
    assert np.abs(y - x).mean() < 0.05 * np.abs(x).mean() + 0.02


def test_no_float64_copy_of_a_large_image():
    x = _smooth((1, 2, 48, 128, 128), sigma=2.0)                           # 6 MiB of float32
    tracemalloc.start()
    try:
        y = rescale_image(x, (0.5, 0.5, 0.5))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert y.shape == (1, 2, 24, 64, 64)
    assert peak < 1.25 * x.nbytes        # the output and ~2 channels of float32 working space (float64: > 2x)


def test_labels_keep_their_ids_and_dtype_and_enlarge_losslessly():
    from zoo.synthetic import touching_objects

    labels = touching_objects((96, 96), n=12, seed=1).astype(np.int64) * 1000 + 7
    labels[labels == 7] = 0
    labels = labels.astype(np.uint32)
    ids = set(np.unique(labels))
    big = rescale_labels(labels, (2.0, 2.0))
    assert big.dtype == np.uint32 and big.shape == (192, 192) and set(np.unique(big)) == ids
    assert np.array_equal(rescale_labels(big, (0.5, 0.5)), labels)          # 2x then 0.5x: exact
    odd = rescale_labels(labels, (0.37, 1.3))
    assert set(np.unique(odd)) <= ids                                       # never a new id
    assert rescale_labels(odd, shape=labels.shape).shape == labels.shape
    stack = rescale_labels(np.stack([labels, labels]), shape=(50, 60))      # leading axes kept
    assert stack.shape == (2, 50, 60) and np.array_equal(stack[0], stack[1])


def test_labels_stay_registered_with_their_image():
    labels = np.zeros((80, 80), np.int32)
    labels[10:30, 12:40], labels[45:70, 50:75] = 1, 2
    for f in (0.5, 1.6, 0.33):
        image = rescale_image((labels > 0).astype(np.float32), (f, f), anti_alias=False)
        mask = rescale_labels(labels, (f, f)) > 0
        assert np.mean(mask != (image > 0.5)) < 0.02, f


def test_real_nuclei_survive_half_and_double_size_round_trips():
    import tifffile

    labels = tifffile.imread(SAMPLES / "dsb_fluo_nuclei_labels.tif")
    ids = np.unique(labels)[1:]
    for f, min_iou in ((0.5, 0.85), (2.0, 1.0), (0.25, 0.75)):
        back = rescale_labels(rescale_labels(labels, (f, f)), shape=labels.shape)
        inter = np.bincount(labels[back == labels], minlength=ids.max() + 1)[ids]
        union = np.bincount(labels.ravel(), minlength=ids.max() + 1)[ids] + \
            np.bincount(back.ravel(), minlength=ids.max() + 1)[ids] - inter
        assert np.isin(ids, back).all() and (inter / union).mean() >= min_iou, f


@pytest.mark.parametrize("call", [lambda: rescale_image(np.ones((4, 4)), (0, 1)),
                                  lambda: rescale_image(np.ones((4, 4)), (math.nan, 1)),
                                  lambda: rescale_image(np.ones((4, 4)), (-2, 1)),
                                  lambda: rescale_image(np.ones((4, 4)), (1, 1, 1)),
                                  lambda: rescale_image(np.ones((4, 4)), 2.0),
                                  lambda: rescale_image(np.ones((4, 4)), (2, 2), order=7),
                                  lambda: restore_size(np.ones((4, 4)), (0, 3)),
                                  lambda: rescale_labels(np.ones((4, 4), int)),
                                  lambda: rescale_labels(np.ones((4, 4), int), (2, 2), shape=(8, 8))])
def test_bad_factors_and_shapes_are_refused(call):
    with pytest.raises(InputError):
        call()


def test_scale_factors_from_pixel_sizes():
    assert scale_factors(0.5, 1.0) == (0.5, 0.5)                            # finer pixels: shrink
    assert scale_factors((2.0, 0.5, 0.5), (1.0, 1.0, 1.0)) == (2.0, 0.5, 0.5)
    assert scale_factors((2.0, 0.25, 0.25), 0.5) == (4.0, 0.5, 0.5)
    assert scale_factors(0.5, 1.0, ndim=3) == (0.5, 0.5, 0.5)
    assert scale_factors((None, 0.5, 0.5), (1.0, 1.0, 1.0)) == (1.0, 0.5, 0.5)  # z unknown: as it is
    assert scale_factors(1.005, 1.0) is None and scale_factors(0.995, (1, 1)) is None
    assert scale_factors(None, 1.0) is None
    with pytest.raises(InputError, match="one size per spatial axis"):
        scale_factors((1.0, 1.0), (1.0, 1.0, 1.0))


@pytest.mark.parametrize("bad", [0, -0.5, math.nan, math.inf, "big", True])
def test_a_bad_pixel_size_is_an_error_naming_it(bad):
    with pytest.raises(InputError, match=r"the image's pixel size .*positive finite number, got " + re.escape(repr(bad))):
        scale_factors(bad, 1.0)
    with pytest.raises(InputError, match="the model's pixel size"):
        scale_factors((1.0, 1.0), (1.0, bad))


def test_diameter_and_anisotropy_factors():
    assert diameter_factors(30, 15) == (0.5, 0.5)                           # objects twice as big: shrink
    assert diameter_factors(10, 30, ndim=3) == (3.0, 3.0, 3.0)
    assert diameter_factors(17, 17.1) is None
    assert anisotropy_factors(2) == (2.0, 1.0, 1.0)
    assert anisotropy_factors(4, model_anisotropy=2) == (2.0, 1.0, 1.0)
    assert anisotropy_factors(1.004) is None
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(InputError, match="positive finite"):
            diameter_factors(bad, 15)
        with pytest.raises(InputError, match="anisotropy"):
            anisotropy_factors(bad)


def test_an_anisotropic_volume_resampled_to_isotropic_and_back():
    """A smooth volume sampled at z spacing 2 (pixel-centred: z = 2k + 1) is brought to the
    isotropic grid (z = j + 0.5) and back to its own shape."""
    def volume(z):
        y, x = np.mgrid[:48, :48] / 48
        return np.stack([np.sin(2.0 * zz / 64 * np.pi + 3 * y) * np.cos(2 * x + zz / 20) for zz in z]).astype(np.float32)

    coarse = volume(2 * np.arange(16) + 1.0)
    factors = anisotropy_factors(2.0)
    iso = rescale_image(coarse, factors)
    assert iso.shape == (32, 48, 48)
    error = np.abs(iso - volume(np.arange(32) + 0.5)).max(axis=(1, 2))    # the true isotropic sampling
    assert error[1:-1].max() < 0.01 and error.max() < 0.05                   # the end slices extrapolate
    back = restore_size(iso, coarse.shape)
    error = np.abs(back - coarse).max(axis=(1, 2))
    assert back.shape == coarse.shape and error[1:-1].max() < 0.01 and error.max() < 0.05
    labels = (coarse > 0.5).astype(np.int32)
    assert rescale_labels(rescale_labels(labels, factors), shape=labels.shape).tolist() == labels.tolist()


def test_estimate_diameter_of_discs_balls_and_a_training_set():
    yy, xx = np.mgrid[:100, :100]
    discs = np.zeros((100, 100), np.int32)
    for i, (cy, cx) in enumerate([(20, 20), (20, 70), (70, 30), (75, 75)], 1):
        discs[(yy - cy) ** 2 + (xx - cx) ** 2 <= 10 ** 2] = i
    assert estimate_diameter(discs) == pytest.approx(20, rel=0.03)
    zz, yy, xx = np.mgrid[:40, :40, :40]
    balls = (((zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2) <= 8 ** 2).astype(np.uint8)
    assert estimate_diameter(balls) == pytest.approx(16, rel=0.03)
    assert estimate_diameter(np.stack([discs, discs * 0]), ndim=2) == pytest.approx(20, rel=0.03)
    assert estimate_diameter([discs, discs[:50]]) == pytest.approx(20, rel=0.03)
    assert estimate_diameter(discs * 10**9) == estimate_diameter(discs)       # sparse ids
    assert estimate_diameter(np.zeros((8, 8), np.int32)) is None
    with pytest.raises(InputError):
        estimate_diameter(np.zeros((8, 8), np.float32))
    with pytest.raises(InputError):
        estimate_diameter(np.zeros((2, 2, 8, 8), np.int32))
