"""Physical scale, channels by name and z-stacks at prediction time (issue 24.2-4), through the
api and the CLI: pixel sizes read from OME-TIFF, ImageJ and OME-Zarr metadata or given, images
rescaled to the model's scale and back (labels by nearest neighbour), what was done said in
words, an unknown pixel size a warning, and bad values clear errors that write nothing."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from conftest import REPO
from zoo.errors import InputError


@pytest.fixture()
def at_one_micron(package_copy):
    """The tiny package, recording that it was trained at 1 µm per pixel."""
    from zoo.package import build

    build.amend(package_copy, lambda s: setattr(s, "scale", {"pixel_size": {"y": 1.0, "x": 1.0},
                                                              "measured_from": "--pixel-size"}))
    return package_copy


def _image(seed=0, shape=(96, 80)):
    return np.random.default_rng(seed).normal(100, 10, shape).astype(np.float32)


def test_pixel_sizes_are_read_from_ome_tiff_imagej_and_ome_zarr(tmp_path):
    from zoo import metadata
    from zoo.omezarr import create_omezarr

    tifffile.imwrite(tmp_path / "ome.ome.tif", _image(), ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeXUnit": "µm",
                               "PhysicalSizeYUnit": "µm", "Channel": {"Name": ["DAPI"]}})
    found = metadata.read(tmp_path / "ome.ome.tif")
    assert found.pixel_size == {"y": 0.5, "x": 0.5} and found.channel_names == ["DAPI"] and found.source == "OME-TIFF"
    tifffile.imwrite(tmp_path / "ij.tif", _image(), imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"unit": "um"})
    assert metadata.read(tmp_path / "ij.tif").pixel_size == pytest.approx({"y": 0.25, "x": 0.25})
    array = create_omezarr(tmp_path / "img.zarr", (96, 80), "float32", "yx", pixel_size={"y": 1.0, "x": 1.0})
    array[:] = _image()
    assert metadata.read(tmp_path / "img.zarr").pixel_size == {"y": 1.0, "x": 1.0}
    create_omezarr(tmp_path / "unknown.zarr", (96, 80), "float32", "yx")
    assert metadata.read(tmp_path / "unknown.zarr").pixel_size == {}       # pixels, not 1 µm
    tifffile.imwrite(tmp_path / "plain.tif", _image())
    assert metadata.read(tmp_path / "plain.tif").pixel_size == {}


def test_an_image_at_another_pixel_size_is_rescaled_to_the_models_and_back(at_one_micron, tmp_path, capsys):
    import zoo
    from zoo.cli import main
    from zoo.runtime.resample import rescale_image, restore_size

    model = zoo.load(at_one_micron)
    image = _image()
    tifffile.imwrite(tmp_path / "half.ome.tif", image, ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    assert main(["predict", str(at_one_micron), str(tmp_path / "half.ome.tif"), "-o", str(tmp_path / "out.tif")]) == 0
    printed = capsys.readouterr().out
    assert "rescaled by 0.5 x 0.5 to the model's scale and back (image 0.5 µm/px (OME-TIFF), model 1 µm/px)" in printed
    got = tifffile.imread(tmp_path / "out.tif")
    expected = restore_size(model.predict(rescale_image(image, (0.5, 0.5))), image.shape)
    assert got.shape == image.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    same = zoo.predict(model, image, pixel_size=0.5)                     # the api, the same numbers
    np.testing.assert_allclose(same, got, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(zoo.predict(model, image, pixel_size=1.0), model.predict(image), atol=1e-6)


def test_an_unknown_pixel_size_is_a_warning_and_bad_ones_are_errors(at_one_micron, tmp_path, capsys):
    from zoo.cli import main

    tifffile.imwrite(tmp_path / "plain.tif", _image())
    assert main(["predict", str(at_one_micron), str(tmp_path / "plain.tif"), "-o", str(tmp_path / "a.tif")]) == 0
    assert "warning: the image's pixel size is unknown" in capsys.readouterr().err
    for bad in ("0", "-1", "nan", "abc"):
        assert main(["predict", str(at_one_micron), str(tmp_path / "plain.tif"), "-o", str(tmp_path / "b.tif"),
                     "--pixel-size", bad]) == 2
        assert "--pixel-size" in capsys.readouterr().err and not (tmp_path / "b.tif").exists()


def test_objects_of_another_size_are_rescaled_by_their_diameter(tmp_path):
    """The DSB fluorescence sample shown at 2x: with --diameter the nuclei are found as well as at
    1x; without it the model sees objects twice the size it learnt."""
    import zoo
    from zoo.api.scaling import plan
    from zoo.runtime.resample import rescale_image, rescale_labels
    from zoo.runtime.scale import estimate_diameter
    from zoo.segmentation.metrics import evaluate

    model = zoo.load("stardist-dsb-fluo-2d")
    assert model.spec.scale and model.spec.scale["diameter"] > 0
    image = tifffile.imread(REPO / "samples" / "dsb_fluo_nuclei.tif").astype(np.float32)
    truth = tifffile.imread(REPO / "samples" / "dsb_fluo_nuclei_labels.tif")
    big, big_truth = rescale_image(image, (2, 2)), rescale_labels(truth, (2, 2))
    diameter = estimate_diameter(big_truth)
    assert "rescaled by" in plan(model.spec, diameter=diameter).said
    ap = {name: evaluate([t], [p], [0.5])[0]["ap"] for name, t, p in (
        ("1x", truth, model.predict(image)), ("2x as it is", big_truth, model.predict(big)),
        ("2x rescaled", big_truth, zoo.predict(model, big, diameter=diameter)))}
    assert ap["2x rescaled"] >= ap["1x"] - 0.05, ap
    # beyond 1.5x the model's objects the check warns and says what to pass, even where the training
    # images' own objects spread wider (DSB fluorescence: ~3.3x either side); at 1x it does not
    report = model.check_shift(big, prediction=model.predict(big))
    assert report.scale_ratio > 1.5 and report.scale_mismatch and report.shift_warning, report.to_dict()
    assert report.verdict in ("at another scale", "unlike the training data")
    assert any("pass --diameter" in m for m in report.messages), report.messages
    own = model.check_shift(image, prediction=model.predict(image))
    assert 1 / 1.5 <= own.scale_ratio <= 1.5 and not own.scale_mismatch, own.to_dict()
    with pytest.raises(InputError, match="records no typical object diameter"):
        zoo.predict("n2v-w2s", image, diameter=20)


def test_channels_by_name(package_copy, tmp_path, capsys):
    import zoo
    from zoo.cli import main

    model = zoo.load(package_copy)
    name = model.spec.inputs[0].channels[0]
    two = np.stack([_image(1), _image(2)])                               # cyx: the nuclei are in channel 1
    np.testing.assert_allclose(zoo.predict(model, two, axes="cyx", channels=f"{name}=1"), model.predict(two[1]),
                               atol=1e-6)
    tifffile.imwrite(tmp_path / "two.tif", two)
    assert main(["predict", str(package_copy), str(tmp_path / "two.tif"), "-o", str(tmp_path / "o.tif"),
                 "--channels", "nuclei=1"]) == 2
    err = capsys.readouterr().err
    assert f"the model's channels are {name}" in err and "unknown: nuclei" in err and not (tmp_path / "o.tif").exists()
    with pytest.raises(InputError, match="has 2 channel"):
        zoo.predict(model, two, axes="cyx", channels=f"{name}=5")


def test_a_z_stack_through_a_2d_instance_model_is_stitched_into_3d_objects(tmp_path, capsys):
    import zoo
    from zoo.cli import main

    crop = tifffile.imread(REPO / "samples" / "dsb_fluo_nuclei.tif")[:128, :128]
    stack = np.stack([crop, crop, crop])
    tifffile.imwrite(tmp_path / "stack.tif", stack, metadata={"axes": "ZYX"})
    per_slice = zoo.predict("stardist-dsb-fluo-2d", stack, axes="zyx")
    stitched = zoo.predict("stardist-dsb-fluo-2d", stack, axes="zyx", stitch_threshold=0.5)
    n = len(np.unique(per_slice[0])) - 1
    assert len(np.unique(per_slice)) - 1 == 3 * n or len(np.unique(per_slice)) - 1 >= n   # ids per slice
    assert len(np.unique(stitched)) - 1 == n and np.array_equal(stitched[0], stitched[2])
    assert main(["predict", "stardist-dsb-fluo-2d", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "s.tif"),
                 "--stitch-threshold", "0.5"]) == 0
    assert len(np.unique(tifffile.imread(tmp_path / "s.tif"))) - 1 == n
    for bad in ("0", "1.5"):
        assert main(["predict", "stardist-dsb-fluo-2d", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "x.tif"),
                     "--stitch-threshold", bad]) == 2
        assert "stitch threshold is an IoU in (0, 1]" in capsys.readouterr().err


def test_a_3d_model_takes_the_anisotropy_of_a_volume(tmp_path):
    import zoo

    volume = np.random.default_rng(0).normal(100, 10, (12, 48, 48)).astype(np.float32)
    out = zoo.predict("unet-synth-3d", volume, anisotropy=2.0)
    assert out.shape == volume.shape
    with pytest.raises(InputError, match="--anisotropy is for 3D models"):
        zoo.predict("n2v-w2s", volume[0], anisotropy=2.0)


def test_training_records_the_pixel_size_and_the_objects_diameter(package_copy, tmp_path):
    """zoo train's record: --pixel-size, else the images' metadata when they agree; instance
    models also their training objects' median diameter, from the label images."""
    from zoo import spec as specs
    from zoo.errors import InputError
    from zoo.trainers.scale import pixel_size_of, record_scale

    images = []
    for k, size in enumerate((0.65, 0.65)):
        images.append(tmp_path / f"i{k}.ome.tif")
        tifffile.imwrite(images[-1], _image(k), ome=True, metadata={"axes": "YX", "PhysicalSizeX": size,
                                                                     "PhysicalSizeY": size})
    assert pixel_size_of(None, "yx", images) == ({"y": 0.65, "x": 0.65}, "training image metadata (OME-TIFF)")
    tifffile.imwrite(tmp_path / "other.ome.tif", _image(3), ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3})
    assert pixel_size_of(None, "yx", images + [tmp_path / "other.ome.tif"])[0] is None
    assert pixel_size_of(0.5, "yx", images)[0] == {"y": 0.5, "x": 0.5}
    with pytest.raises(InputError, match="positive number of micrometres"):
        pixel_size_of(-1.0, "yx", images)
    labels = REPO / "samples" / "dsb_fluo_nuclei_labels.tif"
    scale = record_scale(package_copy, "yx", images, None, [labels], instances=True)
    assert scale["pixel_size"] == {"y": 0.65, "x": 0.65} and 15 < scale["diameter"] < 30
    assert specs.load(package_copy).scale == scale and "## Scale" in (package_copy / "README.md").read_text()
