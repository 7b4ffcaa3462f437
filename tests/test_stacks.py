"""Stacks through a 2D instance model (issue 21.1): every frame of a t or z stack is segmented on its
own, with labels unique within the frame, on every path (api in memory, api streamed to TIFF, NPY and
OME-Zarr, and the command line), equal to predicting each frame alone."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

import zoo
from zoo.imageio import open_lazy
from zoo.registry import standard_store
from test_cli import zoo_cli

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
MODEL = standard_store() / "packages" / "stardist-dsb-fluo-2d" / "0.1.1"


@pytest.fixture(scope="module")
def model():
    return zoo.load(MODEL)


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    """Four different 160x200 frames cut from a real DSB fluorescence image."""
    image = tifffile.imread(REPO / "samples" / "dsb_fluo_nuclei.tif")
    return np.stack([image[r:r + 160, c:c + 200] for r, c in ((0, 0), (200, 300), (340, 80), (100, 480))])


@pytest.fixture(scope="module")
def per_frame(model, stack) -> list[np.ndarray]:
    return [model.predict(frame) for frame in stack]


def assert_same_objects(labels: np.ndarray, expected: np.ndarray, frame: int) -> None:
    """The same objects (the same partition of the frame's pixels), whatever their numbers."""
    assert labels.shape == expected.shape, frame
    assert np.array_equal(labels > 0, expected > 0), f"frame {frame}: foreground differs"
    fg = expected > 0
    pairs = np.unique(np.stack([labels[fg], expected[fg]]), axis=1)
    n_ours, n_theirs = len(np.unique(labels[fg])), len(np.unique(expected[fg]))
    assert pairs.shape[1] == n_ours == n_theirs, f"frame {frame}: {n_ours} objects, expected {n_theirs}"


def assert_frames(result: np.ndarray, per_frame: list[np.ndarray]) -> None:
    counts = [len(np.unique(f)) - 1 for f in result]
    expected = [len(np.unique(f)) - 1 for f in per_frame]
    assert counts == expected and min(counts) > 5, (counts, expected)
    for t, (labels, alone) in enumerate(zip(result, per_frame)):
        assert_same_objects(np.asarray(labels), alone, t)


@pytest.mark.parametrize("axes", ["tyx", "zyx"])
def test_in_memory(model, stack, per_frame, axes):
    assert_frames(model.predict(stack, axes=axes), per_frame)


@pytest.mark.parametrize("axes, suffix", [("TYX", ".tif"), ("ZYX", ".tif"), ("TYX", ".npy"), ("ZYX", ".zarr")])
def test_streamed(model, stack, per_frame, tmp_path, axes, suffix):
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": axes})
    shape = model.predict_file(tmp_path / "stack.tif", tmp_path / f"labels{suffix}")
    result, out_axes = open_lazy(tmp_path / f"labels{suffix}")
    assert shape == stack.shape and np.asarray(result).shape == stack.shape
    assert_frames(np.asarray(result), per_frame)


def test_streamed_in_narrow_bands_still_finds_each_frame(model, stack, per_frame, tmp_path):
    """Several bands per frame: each frame's objects are numbered from 1, none lost on a seam."""
    from zoo.runtime import stream

    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "TYX"})
    original = stream._LABEL_BAND_BYTES
    stream._LABEL_BAND_BYTES = 60 * 200 * 4 * 33      # ~60 rows of 33 raw channels per band
    try:
        stream.predict_file(model, tmp_path / "stack.tif", tmp_path / "labels.tif", max_object_size=40)
    finally:
        stream._LABEL_BAND_BYTES = original
    result = tifffile.imread(tmp_path / "labels.tif")
    assert_frames(result, per_frame)
    assert all(f.max() == len(np.unique(f)) - 1 for f in result)      # 1..n in each frame


@pytest.mark.parametrize("axes", ["TYX", "ZYX"])
def test_command_line(stack, per_frame, tmp_path, axes):
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": axes})
    zoo_cli("predict", MODEL, tmp_path / "stack.tif", "-o", tmp_path / "labels.tif", env_home=tmp_path / "home")
    assert_frames(tifffile.imread(tmp_path / "labels.tif"), per_frame)
