"""Out-of-core prediction: file to file, band by band, equal to the in-memory prediction."""
import numpy as np
import pytest
import tifffile

import zoo
from zoo.errors import InputError
from zoo.imageio import open_lazy
from zoo.omezarr import create_omezarr, open_omezarr
from conftest import synthetic_nuclei


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(np.ptp(b), 1e-6))


@pytest.mark.parametrize("shape, tile", [((700, 500), 128), ((97, 301), 64), ((1, 40), 64), ((1, 1), 64)])
def test_streamed_equals_in_memory(tmp_path, tiny_package, shape, tile):
    """A TIFF many tiles large, odd sizes, one row, one pixel."""
    model = zoo.load(tiny_package)
    image = synthetic_nuclei(shape=shape, n=20, seed=3)[0] if min(shape) > 1 else \
        np.random.default_rng(0).integers(0, 500, shape).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", image)
    out_shape = model.predict_file(tmp_path / "in.tif", tmp_path / "out.tif", tile=tile, batch_size=2)
    streamed = tifffile.imread(tmp_path / "out.tif")
    whole = model.predict(image, tile=tile)
    assert out_shape == shape and streamed.shape == shape and streamed.dtype == np.float32
    _close(streamed, whole)


def test_npy_input_and_output_are_memory_mapped(tmp_path, tiny_package):
    image = synthetic_nuclei(shape=(200, 150), seed=5)[0].astype(np.float32)
    np.save(tmp_path / "in.npy", image)
    model = zoo.load(tiny_package)
    model.predict_file(tmp_path / "in.npy", tmp_path / "out.npy", tile=96)
    _close(np.load(tmp_path / "out.npy"), model.predict(image, tile=96))


def test_time_lapse_is_predicted_frame_by_frame_with_its_axes_kept(tmp_path, tiny_package):
    frames = np.stack([synthetic_nuclei(shape=(90, 120), seed=s, peak=200 * (s + 1))[0] for s in range(3)])
    tifffile.imwrite(tmp_path / "movie.ome.tif", frames, ome=True, metadata={"axes": "TYX"})
    assert open_lazy(tmp_path / "movie.ome.tif")[1] == "tyx"
    model = zoo.load(tiny_package)
    model.predict_file(tmp_path / "movie.ome.tif", tmp_path / "out.tif", tile=64, batch_size=3)
    out, axes = open_lazy(tmp_path / "out.tif")
    assert axes == "tyx" and out.shape == frames.shape
    for t in range(3):   # each frame normalised on its own, as in memory
        _close(np.asarray(out[t]), model.predict(frames[t], tile=64))


def test_ome_zarr_in_and_out(tmp_path, tiny_package):
    image = synthetic_nuclei(shape=(300, 260), seed=7)[0]
    source = create_omezarr(tmp_path / "in.zarr", (1, 1) + image.shape, image.dtype, "tcyx", chunks=(1, 1, 64, 64))
    source[0, 0] = image
    model = zoo.load(tiny_package)
    shape = model.predict_file(tmp_path / "in.zarr", tmp_path / "out.zarr", tile=96)
    out, axes = open_omezarr(tmp_path / "out.zarr")
    assert shape == (1, 1, 300, 260) and axes == "tcyx"
    _close(np.asarray(out[0, 0]), model.predict(image, tile=96))
    # the CLI reads what the stream wrote, and a second run replaces it whole
    model.predict_file(tmp_path / "in.zarr", tmp_path / "out.zarr", tile=128, overwrite=True)
    assert open_omezarr(tmp_path / "out.zarr")[0].shape == (1, 1, 300, 260)


def test_wrong_axes_for_the_model_say_what_is_expected(tmp_path, tiny_package):
    tifffile.imwrite(tmp_path / "two.tif", np.zeros((2, 64, 64), np.uint16), metadata={"axes": "CYX"})
    model = zoo.load(tiny_package)
    with pytest.raises(InputError, match="expects 1 channel"):
        model.predict_file(tmp_path / "two.tif", tmp_path / "o.tif")
    with pytest.raises(InputError, match="one letter per dimension"):
        model.predict_file(tmp_path / "two.tif", tmp_path / "o.tif", axes="yx")


def test_output_never_overwrites_the_input_nor_stays_half_written(tmp_path, tiny_package):
    image = synthetic_nuclei(shape=(256, 256), seed=1)[0]
    tifffile.imwrite(tmp_path / "in.tif", image)
    model = zoo.load(tiny_package)
    with pytest.raises(InputError, match="is the input"):
        model.predict_file(tmp_path / "in.tif", tmp_path / "in.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "in.tif"), image)

    calls = []

    def failing(batch):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return batch

    model._runner = failing
    with pytest.raises(KeyboardInterrupt):
        model.predict_file(tmp_path / "in.tif", tmp_path / "out.tif", tile=64, batch_size=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_plain_zarr_arrays_and_empty_groups(tmp_path, tiny_package):
    import zarr

    image = synthetic_nuclei(shape=(120, 100), seed=2)[0]
    plain = zarr.open_array(str(tmp_path / "plain.zarr"), mode="w", shape=image.shape, chunks=(50, 50), dtype=image.dtype)
    plain[...] = image
    assert open_lazy(tmp_path / "plain.zarr")[1] is None        # no metadata: axes are guessed
    model = zoo.load(tiny_package)
    model.predict_file(tmp_path / "plain.zarr", tmp_path / "out.tif", tile=64)
    _close(tifffile.imread(tmp_path / "out.tif"), model.predict(image, tile=64))
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(InputError, match="without images"):
        model.predict_file(tmp_path / "empty.zarr", tmp_path / "o.tif")
    with pytest.raises(InputError, match="cannot stream into '.png'"):
        model.predict_file(tmp_path / "plain.zarr", tmp_path / "o.png")


def test_a_volume_is_normalised_from_all_its_planes_not_its_first(tmp_path, monkeypatch):
    """The normalisation sample took every k-th row along the first axis, whole: for a volume
    whose planes are larger than the sample (2048^2 planes against 4 Mpx) that was the first plane
    alone, and a light-sheet stack's first plane is often dark. Here the sample is cut to a
    quarter of a plane, as a 2048^2 plane is to the real one, and the first plane is dark: the
    streamed prediction must stay that of the whole volume's statistics."""
    from zoo.runtime import stream

    model = zoo.load("care-synth-3d")
    rng = np.random.default_rng(0)
    volume = (rng.gamma(2.0, 150.0, (40, 64, 64)) + 500).astype(np.float32)
    volume[0] = rng.gamma(2.0, 5.0, (64, 64))
    tifffile.imwrite(tmp_path / "in.tif", volume)
    monkeypatch.setattr(stream, "_SAMPLE_PIXELS", 64 * 64 // 4)
    assert stream._sample_strides((40, 64, 64), 1)[0] < 40          # more than one plane
    model.predict_file(tmp_path / "in.tif", tmp_path / "out.tif", axes="zyx")
    streamed, whole = tifffile.imread(tmp_path / "out.tif"), model.predict(volume, axes="zyx")
    inner = (slice(1, None),) * 3        # a subsample's percentiles are close, not equal
    error = np.abs(streamed - whole)[inner].mean() / np.ptp(whole[inner])
    assert error < 0.02, error          # whole rows alone: 0.136 (the first plane's statistics)
