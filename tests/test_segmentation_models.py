"""The segmentation architectures end to end on synthetic nuclei with exact labels: training
lowers the loss, packages predict instance labels (raw outputs on request) in memory and when
streamed, 2D and 3D, and bad inputs get clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

import zoo
from zoo import architectures, spec as specs
from zoo.errors import InputError
from zoo.synthetic import labelled_nuclei
from zoo.trainers.fit import fit
from zoo.trainers.segmentation import SegmentationDataModule

from test_segmentation_post import same_partition


def small_blueprint(arch: str, dims: int = 2, channels: int = 1):
    bp = specs.load(architectures.get(arch).blueprint_path(dims))
    bp.architecture_params.update(base_channels=8, depth=2)
    if channels == 3:
        bp.architecture_params["channels"] = 3
        bp.inputs[0].channels = ["red", "green", "blue"]
        bp.inputs[0].grey = "repeat"
    return bp


def write_data(folder, dims: int, n: int = 5, seed: int = 0):
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    shape = (64, 64) if dims == 2 else (16, 48, 48)
    for i in range(n):
        image, labels = labelled_nuclei(shape, n=10 if dims == 2 else 14, seed=seed + i, radius=(4, 7))
        tifffile.imwrite(folder / "images" / f"n{i}.tif", image)
        tifffile.imwrite(folder / "labels" / f"n{i}.tif", labels)
    return folder / "images", folder / "labels"


@pytest.fixture(scope="module")
def data_2d(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("seg2d"), 2)


@pytest.mark.parametrize("arch", ["unet-seg", "stardist", "cellpose"])
def test_training_lowers_the_loss(arch, data_2d):
    torch.manual_seed(0)
    bp = small_blueprint(arch)
    images, labels = data_2d
    module = architectures.get(arch).training_module()(bp, lr=3e-3)
    files = sorted(images.glob("*.tif"))
    dm = SegmentationDataModule(bp.inputs[0], files, files[:1], patch=[48, 48], targets=module.targets,
                                roles=module.roles(), batch_size=4, steps_per_epoch=40,
                                train_targets=[labels / f.name for f in files], val_targets=[labels / files[0].name])
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for batch in dm.train_dataloader():
        loss = module.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:4]), losses


@pytest.fixture(scope="module")
def unet_package(tmp_path_factory, data_2d):
    images, labels = data_2d
    return fit(small_blueprint("unet-seg"), images, tmp_path_factory.mktemp("pkg") / "unet", target=labels,
               max_steps=150, steps_per_epoch=50, batch_size=4, patch=48, lr=3e-3, progress=False, val_fraction=0.2)


def test_a_package_predicts_instance_labels_and_raw_outputs_on_request(unet_package, tmp_path):
    model = zoo.load(unet_package)
    image, truth = labelled_nuclei((96, 128), n=16, seed=99, radius=(4, 7))
    labels = model.predict(image)
    assert labels.shape == image.shape and labels.dtype == np.int32 and labels.max() > 0
    raw = model.predict(image, raw=True)
    assert raw.shape == (3, 96, 128) and raw.dtype == np.float32
    np.testing.assert_allclose(raw.sum(axis=0), 1.0, atol=1e-4)          # softmax classes
    from zoo.segmentation.metrics import evaluate

    assert evaluate([truth], [labels], thresholds=[0.5])[0]["f1"] > 0.5   # it learned something real
    # tiled in small tiles: the same objects as one whole-image pass
    tiled = model.predict(image, tile=48)
    assert evaluate([labels], [tiled], thresholds=[0.9])[0]["ap"] > 0.95
    # streamed to disk: the same label image
    tifffile.imwrite(tmp_path / "in.tif", image)
    model.predict_file(tmp_path / "in.tif", tmp_path / "out.tif")
    streamed = tifffile.imread(tmp_path / "out.tif")
    assert streamed.dtype == np.int32 and same_partition(labels, streamed)


def test_bad_inputs_get_clear_errors(unet_package):
    model = zoo.load(unet_package)
    rgb = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InputError, match="single-channel"):
        model.predict(rgb)


def test_a_grey_image_is_repeated_into_an_rgb_model(tmp_path, data_2d):
    images, labels = data_2d
    package = fit(small_blueprint("cellpose", channels=3), images, tmp_path / "cp", target=labels, max_steps=4,
                  steps_per_epoch=4, batch_size=2, patch=48, progress=False, val_fraction=0.2)
    model = zoo.load(package)
    grey = labelled_nuclei((64, 64), n=6, seed=5)[0]
    assert model.predict(grey).shape == (64, 64)
    assert model.predict(np.repeat(grey[..., None], 3, axis=-1)).shape == (64, 64)
    with pytest.raises(InputError, match="3 channels"):
        model.predict(np.zeros((2, 64, 64), np.uint8), axes="cyx")


def test_training_needs_label_images(tmp_path, data_2d):
    images, _ = data_2d
    with pytest.raises(InputError, match="label images"):
        fit(small_blueprint("stardist"), images, tmp_path / "x", max_steps=1, progress=False)


def test_3d_unet_segments_volumes(tmp_path):
    images, labels = write_data(tmp_path, 3, n=4)
    package = fit(small_blueprint("unet-seg", dims=3), images, tmp_path / "u3", target=labels, max_steps=60,
                  steps_per_epoch=30, batch_size=2, patch=[16, 32, 32], lr=3e-3, progress=False, val_fraction=0.25)
    model = zoo.load(package)
    volume, truth = labelled_nuclei((16, 48, 48), n=14, seed=77, radius=(4, 7))
    labels = model.predict(volume)
    assert labels.shape == volume.shape and labels.dtype == np.int32
    assert model.predict(volume, raw=True).shape == (3, 16, 48, 48)
