"""Out-of-core prediction: file to file, band by band, equal to the in-memory prediction."""
import numpy as np
import pytest
import tifffile

import zoo
from zoo.errors import InputError
from conftest import synthetic_nuclei


@pytest.mark.parametrize("shape, tile", [((700, 500), 128), ((97, 301), 64), ((1, 40), 64)])
def test_streamed_equals_in_memory(tmp_path, tiny_package, shape, tile):
    model = zoo.load(tiny_package)
    image = synthetic_nuclei(shape=shape, n=20, seed=3)[0] if min(shape) > 1 else \
        np.random.default_rng(0).integers(0, 500, shape).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", image)
    out_shape = model.predict_file(tmp_path / "in.tif", tmp_path / "out.tif", tile=tile, batch_size=2)
    streamed = tifffile.imread(tmp_path / "out.tif")
    whole = model.predict(image, tile=tile)
    assert out_shape == shape and streamed.shape == shape
    np.testing.assert_allclose(streamed, whole, rtol=1e-4, atol=1e-4 * np.ptp(whole))


def test_npy_input_is_memory_mapped(tmp_path, tiny_package):
    image = synthetic_nuclei(shape=(200, 150), seed=5)[0].astype(np.float32)
    np.save(tmp_path / "in.npy", image)
    model = zoo.load(tiny_package)
    model.predict_file(tmp_path / "in.npy", tmp_path / "out.tif", tile=96)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out.tif"), model.predict(image, tile=96),
                               rtol=1e-4, atol=1e-3)


def test_streaming_refuses_multichannel_files(tmp_path, tiny_package):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 64, 64), np.uint16), photometric="minisblack")
    with pytest.raises(InputError, match="streaming needs a single yx image"):
        zoo.load(tiny_package).predict_file(tmp_path / "stack.tif", tmp_path / "o.tif")
