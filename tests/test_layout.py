"""Natural layouts in, the same layout out; wrong dimensions get a clear error."""
import numpy as np
import pytest

from zoo.errors import InputError
from zoo.runtime.layout import from_tensor, to_tensor


@pytest.mark.parametrize("shape, axes", [((30, 40), "yx"), ((1, 30, 40), "cyx"), ((5, 30, 40), "byx"),
                                         ((2, 1, 30, 40), "bcyx")])
def test_single_channel_layouts_round_trip(shape, axes):
    image = np.random.default_rng(0).random(shape)
    x, natural = to_tensor(image, None, "yx", 1)
    assert natural == axes and x.ndim == 4 and x.shape[1] == 1 and x.dtype == np.float32
    back = from_tensor(x, natural, "yx")
    assert back.shape == image.shape
    np.testing.assert_allclose(back, image.astype(np.float32))


def test_multichannel_yxc_and_cyx():
    rgb = np.random.default_rng(0).random((30, 40, 3))
    x, natural = to_tensor(rgb, None, "yx", 3)
    assert natural == "yxc" and x.shape == (1, 3, 30, 40)
    np.testing.assert_allclose(x[0, 2], rgb[..., 2].astype(np.float32))
    assert from_tensor(x, natural, "yx").shape == (30, 40, 3)
    x, natural = to_tensor(np.moveaxis(rgb, -1, 0), None, "yx", 3)
    assert natural == "cyx"


def test_explicit_axes():
    image = np.zeros((40, 30))
    x, _ = to_tensor(image, "xy", "yx", 1)
    assert x.shape == (1, 1, 30, 40)


@pytest.mark.parametrize("shape, message", [
    ((30, 40, 3), "looks like RGB"),
    ((2, 3, 4, 5, 6), "expects a 2D image"),
    ((0, 10), "empty"),
])
def test_wrong_dimensions_are_clear(shape, message):
    with pytest.raises(InputError, match=message):
        to_tensor(np.zeros(shape), None, "yx", 1)


def test_non_numeric_and_bad_axes():
    with pytest.raises(InputError, match="numeric"):
        to_tensor(np.array([["a"]]), None, "yx", 1)
    with pytest.raises(InputError, match="axes .zyx."):
        to_tensor(np.zeros((3, 4, 5)), "zyx", "yx", 1)


def test_two_channel_image_for_a_grey_model_is_refused():
    with pytest.raises(InputError, match="multi-channel"):
        to_tensor(np.zeros((512, 512, 2)), None, "yx", 1)


def test_per_channel_normalisation_broadcasts_over_channels():
    from zoo.runtime.ops import zero_mean_unit_variance

    x = np.ones((1, 2, 4, 2), np.float32) * np.array([1.0, 3.0], np.float32).reshape(1, 2, 1, 1)
    y = zero_mean_unit_variance(x, {"mean": [1.0, 3.0], "std": [1.0, 2.0]}, {}, "raw")
    np.testing.assert_allclose(y, 0.0)
