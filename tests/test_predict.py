"""Prediction through the one way in, `zoo.load(NAME).predict(array)`, on large and real images."""
import numpy as np
import pytest

import zoo
from zoo.errors import InputError
from zoo.imageio import read_image
from zoo.restoration.metrics import normalized_psnr
from zoo.registry import LocalRegistry
from conftest import REPO


@pytest.fixture
def registry_with_tiny(tmp_path, tiny_package):
    reg = LocalRegistry(tmp_path / "reg", cache=tmp_path / "cache")
    reg.publish(tiny_package)
    return reg


def test_2048_image_by_name(registry_with_tiny):
    model = zoo.load("n2v-tiny@0.1.0", registry=registry_with_tiny)
    image = np.random.default_rng(0).poisson(50, size=(2048, 2048)).astype(np.uint16)
    out = model.predict(image)
    assert out.shape == (2048, 2048) and out.dtype == np.float32 and np.isfinite(out).all()


def test_natural_layouts_out_as_in(registry_with_tiny):
    model = zoo.load("n2v-tiny", registry=registry_with_tiny)
    image = np.random.default_rng(0).random((64, 80)).astype(np.float32) * 100
    single = model.predict(image)
    assert model.predict(image[None]).shape == (1, 64, 80)             # cyx with one channel
    batch = model.predict(np.stack([image, image[::-1]]), axes="byx")
    assert batch.shape == (2, 64, 80)
    np.testing.assert_allclose(batch[0], single, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(model.predict(image.T, axes="xy"), single.T, rtol=1e-4, atol=1e-3)


def test_wrong_dimensions(registry_with_tiny):
    model = zoo.load("n2v-tiny", registry=registry_with_tiny)
    with pytest.raises(InputError, match="expects a 2D image"):
        model.predict(np.zeros((2, 2, 2, 8, 8)))
    with pytest.raises(InputError, match="tile must be a positive size or 2 of them"):
        model.predict(np.zeros((32, 32)), tile=[64, 64, 64])


def test_standard_n2v_denoises_the_shipped_sample(zoo_home):
    """The main job's claim, on real data shipped in the repository: the pulled standard package
    denoises a low-SNR Hagen actin image (compared against its high-SNR acquisition)."""
    model = zoo.load("n2v-w2s")
    noisy = read_image(REPO / "samples" / "hagen_actin_lowsnr.tif")
    reference = read_image(REPO / "samples" / "hagen_actin_highsnr.tif")
    denoised = model.predict(noisy)
    assert denoised.shape == noisy.shape
    before, after = normalized_psnr(noisy, reference), normalized_psnr(denoised, reference)
    assert after > before + 1.0, (before, after)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_standard_packages_reproduce_their_tests(zoo_home, runtime):
    from zoo.registry import default_registry

    registry = default_registry()
    for row in registry.entries():
        assert zoo.load(f"{row['name']}@{row['latest']}", runtime=runtime, registry=registry).test() <= 1


def test_images_holding_nan_or_inf_are_refused_by_name(tiny_package):
    import numpy as np
    import pytest

    import zoo
    from zoo.errors import InputError

    model = zoo.load(tiny_package)
    image = np.ones((64, 64), np.float32)
    image[3, 4], image[10, 10] = np.nan, np.inf
    with pytest.raises(InputError, match="2 NaN or infinite value"):
        model.predict(image)
