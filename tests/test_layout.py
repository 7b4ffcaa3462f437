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
    assert natural.axes == axes and x.ndim == 4 and x.shape[1] == 1 and x.dtype == np.float32
    back = from_tensor(x, natural)
    assert back.shape == image.shape
    np.testing.assert_allclose(back, image.astype(np.float32))


def test_multichannel_yxc_and_cyx():
    rgb = np.random.default_rng(0).random((30, 40, 3))
    x, natural = to_tensor(rgb, None, "yx", 3)
    assert natural.axes == "yxc" and x.shape == (1, 3, 30, 40)
    np.testing.assert_allclose(x[0, 2], rgb[..., 2].astype(np.float32))
    assert from_tensor(x, natural).shape == (30, 40, 3)
    x, natural = to_tensor(np.moveaxis(rgb, -1, 0), None, "yx", 3)
    assert natural.axes == "cyx"


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
    with pytest.raises(InputError, match="axes .qyx."):
        to_tensor(np.zeros((3, 4, 5)), "qyx", "yx", 1)
    with pytest.raises(InputError, match="lack spatial axes"):
        to_tensor(np.zeros((3, 4, 5)), "tyx", "zyx", 1)
    with pytest.raises(InputError, match="one letter per dimension"):
        to_tensor(np.zeros((3, 4, 5)), "yx", "yx", 1)


def test_two_channel_image_for_a_grey_model_is_refused():
    with pytest.raises(InputError, match="multi-channel"):
        to_tensor(np.zeros((512, 512, 2)), None, "yx", 1)


def test_per_channel_normalisation_broadcasts_over_channels():
    from zoo.runtime.ops import zero_mean_unit_variance

    x = np.ones((1, 2, 4, 2), np.float32) * np.array([1.0, 3.0], np.float32).reshape(1, 2, 1, 1)
    y = zero_mean_unit_variance(x, {"mean": [1.0, 3.0], "std": [1.0, 2.0]}, {}, "raw")
    np.testing.assert_allclose(y, 0.0)


@pytest.mark.parametrize("shape, axes, spatial, channels", [
    ((4, 30, 40), "tyx", "yx", 1),           # a time lapse, frame by frame
    ((5, 30, 40), "zyx", "yx", 1),           # a stack through a 2D model, slice by slice
    ((3, 5, 2, 30, 40), "tzcyx", "yx", 2),   # ImageJ hyperstack order, two channels
    ((3, 6, 30, 40), "tzyx", "zyx", 1),      # a 3D time lapse through a 3D model
    ((30, 2, 40), "ycx", "yx", 2),           # channel in the middle
    ((40, 30), "xy", "yx", 1),               # transposed
])
def test_every_axes_layout_round_trips(shape, axes, spatial, channels):
    image = np.random.default_rng(1).random(shape)
    x, layout = to_tensor(image, axes, spatial, channels)
    assert x.shape[1:] == (channels,) + tuple(shape[axes.index(a)] for a in spatial)
    assert x.shape[0] == layout.n_images == np.prod([shape[axes.index(a)] for a in axes if a not in "c" + spatial])
    np.testing.assert_allclose(from_tensor(x, layout), image.astype(np.float32))


def test_lazy_reads_and_writes_match_whole_arrays():
    image = np.random.default_rng(2).random((3, 2, 20, 30)).astype(np.float32)   # t c y x
    x, layout = to_tensor(image, "tcyx", "yx", 2)
    region = (slice(5, 12), slice(3, 30, 2))
    np.testing.assert_array_equal(layout.read(image, 2, region), x[2][(slice(None),) + region])
    out = layout.output(1)
    assert out.axes == "tyx" and out.shape == (3, 20, 30)
    target = np.zeros(out.shape, np.float32)
    out.write(target, (slice(0, 20), slice(0, 30)), x[:, :1])
    np.testing.assert_array_equal(target, image[:, 0])


def test_multichannel_output_of_a_grey_image_gains_a_channel_axis():
    _, layout = to_tensor(np.zeros((4, 30, 40)), "tyx", "yx", 1)
    assert layout.output(3).axes == "tcyx" and layout.output(3).shape == (4, 3, 30, 40)
