"""A prediction's output declares its input's pixel size (issue 24.2): streamed into TIFF and
OME-Zarr, written from memory (rescaled), given with --pixel-size; and an output whose input
said nothing declares no physical size at all, never a made-up 1 µm."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from zoo import metadata


def _ome_tiff(path, size_um: float, shape=(96, 80)):
    image = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32)
    tifffile.imwrite(path, image, ome=True, metadata={"axes": "YX", "PhysicalSizeX": size_um, "PhysicalSizeY": size_um,
                                                      "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"})
    return path


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_a_streamed_output_declares_the_inputs_pixel_size(tiny_package, tmp_path, suffix):
    from zoo.cli import main

    source = _ome_tiff(tmp_path / "in.ome.tif", 0.65)
    target = tmp_path / f"out{suffix}"
    assert main(["predict", str(tiny_package), str(source), "-o", str(target)]) == 0
    assert metadata.read(target).pixel_size == pytest.approx({"y": 0.65, "x": 0.65})
    if suffix == ".tif":            # the resolution tags other TIFF readers (Fiji) show: pixels per cm
        with tifffile.TiffFile(target) as tif:
            numerator, denominator = tif.pages[0].tags["XResolution"].value
            assert numerator / denominator == pytest.approx(1e4 / 0.65, rel=1e-3)
            assert tif.pages[0].tags["ResolutionUnit"].value == 3


def test_a_given_pixel_size_is_declared_in_an_output_made_in_memory(package_copy, tmp_path):
    """Rescaled to the model's 1 µm and back: the output is on the input's grid, at 0.5 µm."""
    import zoo
    from zoo.package import build

    build.amend(package_copy, lambda s: setattr(s, "scale", {"pixel_size": {"y": 1.0, "x": 1.0},
                                                              "measured_from": "--pixel-size"}))
    source = tmp_path / "plain.tif"
    tifffile.imwrite(source, np.random.default_rng(1).normal(100, 10, (96, 80)).astype(np.float32))
    done = zoo.api.predict_file(package_copy, source, tmp_path / "out.tif", pixel_size=0.5)
    assert not done.streamed and done.shape == (96, 80)
    assert metadata.read(tmp_path / "out.tif").pixel_size == {"y": 0.5, "x": 0.5}


def test_an_input_without_a_pixel_size_gives_an_output_without_one(tiny_package, tmp_path):
    from zoo.cli import main

    source = tmp_path / "plain.tif"
    tifffile.imwrite(source, np.random.default_rng(2).normal(100, 10, (64, 72)).astype(np.float32))
    for name in ("out.tif", "out.zarr"):
        assert main(["predict", str(tiny_package), str(source), "-o", str(tmp_path / name)]) == 0
        assert metadata.read(tmp_path / name).pixel_size == {}, name


def test_a_zoo_tiff_without_pixel_size_metadata_and_a_screen_resolution_says_nothing(tmp_path):
    """72 dpi in a plain TIFF is a screen's resolution, not a microscope's: it is not read as 353 µm."""
    tifffile.imwrite(tmp_path / "screen.tif", np.zeros((8, 8), np.uint8), resolution=(72, 72), resolutionunit="INCH",
                     metadata={"axes": "YX"})
    assert metadata.read(tmp_path / "screen.tif").pixel_size == {}
