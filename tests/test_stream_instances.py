"""Streamed instance segmentation (issue 21.9): bands are labelled as the network's outputs stream,
so the temporary disk stays within twice the label output (the raw outputs are never written), and
the labels are those of the two-pass path it replaces (raw outputs of every channel into a float32
NPY, then ``label_bands``) and the in-memory prediction's objects, seams included, in 2D and 3D."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

import zoo
from zoo.registry import standard_store
from zoo import opnames
from zoo.runtime import ops, stream
from zoo.synthetic import labelled_nuclei

from conftest import REPO
from test_segmentation_post import same_partition

PACKAGES = standard_store() / "packages"
SAMPLE = REPO / "samples" / "dsb_fluo_nuclei.tif"
HE_SAMPLE = REPO / "samples" / "dsb_he_nuclei.tif"


def latest(name: str) -> Path:
    return sorted((PACKAGES / name).iterdir())[-1]


@pytest.fixture(scope="module")
def stardist():
    return zoo.load(latest("stardist-dsb-fluo-2d"))


@pytest.fixture
def narrow_bands(monkeypatch):
    """Label bands of about ``rows`` rows of ``row_bytes`` each (read by label_bands at call time)."""
    def set_rows(rows: int, overlap: int, row_bytes: int) -> None:
        monkeypatch.setattr(stream, "_LABEL_BAND_BYTES", (rows + 2 * overlap) * row_bytes)
    return set_rows


def two_pass(model, source: Path, target: Path, tile=None, max_object_size=stream.MAX_OBJECT_SIZE,
             keep_raw: list | None = None) -> np.ndarray:
    """Labels as the zoo streamed them before issue 21.9: every raw channel into a float32 NPY,
    then labelled band by band from it (the raw outputs appended to ``keep_raw`` if given)."""
    out = model.spec.outputs[0]
    raw_path = target.with_name(f".{target.name}.raw.npy")
    stream.predict_file(model, source, raw_path, tile=tile, raw=True)
    _, layout, _ = stream._open_input(model, source, None)
    sink = stream._Sink(target, layout)
    raw = np.load(raw_path, mmap_mode="r")
    stream.label_bands(raw, layout.output(out.n_channels), [op for op in out.postprocessing
                                                            if opnames.is_instance_op(op.op)], sink, max_object_size)
    if keep_raw is not None:
        keep_raw.append(np.array(raw))
    del raw
    sink.commit()
    raw_path.unlink()
    return tifffile.imread(target)


def seam_rows(rows: int, band: int) -> list[int]:
    return list(range(band, rows, band))


def crossing(labels: np.ndarray, seams: list[int]) -> int:
    """Objects with pixels on both sides of some seam (first spatial axis)."""
    ids = set()
    for s in seams:
        ids |= set(np.unique(labels[s - 1])) & set(np.unique(labels[s]))
    return len(ids - {0})


def test_temporary_disk_stays_within_twice_the_labels(stardist, tmp_path):
    """The folder of the target is watched at every progress report (after every batch of tiles):
    beyond the label output (its partial file included) it never holds more than the output's size
    twice. Before, it held every raw channel as float32: 33 times the labels for StarDist."""
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "nuclei.tif"
    tifffile.imwrite(source, tifffile.imread(SAMPLE)[:384, :448])
    out = tmp_path / "out"
    out.mkdir()
    target = out / "labels.tif"
    sizes, reports = [], []

    def watch(done: int, total: int) -> None:
        reports.append((done, total))
        sizes.append(sum(f.stat().st_size for f in out.iterdir() if f.is_file()))

    shape = stardist.predict_file(source, target, tile=128, progress=watch)
    labels_bytes = target.stat().st_size
    assert shape == (384, 448) and len(sizes) > 4
    assert max(sizes) - labels_bytes <= 2 * labels_bytes, (max(sizes), labels_bytes)
    assert [f.name for f in out.iterdir()] == ["labels.tif"]              # nothing left behind
    assert reports[-1][0] == reports[-1][1] and [d for d, _ in reports] == sorted(d for d, _ in reports)


def test_labels_equal_the_two_pass_path_and_the_whole_image_across_narrow_bands(stardist, tmp_path, narrow_bands):
    image = tifffile.imread(SAMPLE)[:400, :320]
    tifffile.imwrite(tmp_path / "nuclei.tif", image)
    overlap, rows = 40, 48
    narrow_bands(rows, overlap, 33 * image.shape[1] * 4)
    stream.predict_file(stardist, tmp_path / "nuclei.tif", tmp_path / "labels.tif", tile=160, max_object_size=overlap)
    streamed = tifffile.imread(tmp_path / "labels.tif")
    before = two_pass(stardist, tmp_path / "nuclei.tif", tmp_path / "before.tif", tile=160, max_object_size=overlap)
    assert np.array_equal(streamed, before)                               # the same labels, numbers and all
    whole = stardist.predict(image, tile=160)
    assert same_partition(whole, streamed)
    assert crossing(streamed, seam_rows(image.shape[0], rows)) >= 5      # objects on seams found once, whole
    assert streamed.max() == len(np.unique(streamed)) - 1 > 100          # numbered 1..n


def test_bands_that_do_not_divide_the_tile_rows(stardist, tmp_path, narrow_bands, monkeypatch):
    """Tiles deliver rows in pieces unrelated to the labelling bands (here 37-row bands, 29 of
    overlap, tiles of 96), written a few columns at a time (100 of 256): the window drops and
    keeps the right rows and columns."""
    monkeypatch.setattr(stream, "_WRITE_COLUMNS", 100)
    image = tifffile.imread(SAMPLE)[100:400, 200:456]
    tifffile.imwrite(tmp_path / "nuclei.tif", image)
    narrow_bands(37, 29, 33 * image.shape[1] * 4)
    stream.predict_file(stardist, tmp_path / "nuclei.tif", tmp_path / "labels.tif", tile=96, max_object_size=29)
    before = two_pass(stardist, tmp_path / "nuclei.tif", tmp_path / "before.tif", tile=96, max_object_size=29)
    assert np.array_equal(tifffile.imread(tmp_path / "labels.tif"), before)


def test_a_stack_is_labelled_frame_by_frame_a_few_frames_at_a_time(stardist, tmp_path, narrow_bands):
    """Frames go through the tiles in groups that fit one labelling window (here 2, then 1): each
    frame is labelled on its own, from 1, as the two-pass path labelled it."""
    image = tifffile.imread(SAMPLE)
    stack = np.stack([image[r:r + 120, c:c + 150] for r, c in ((0, 0), (200, 300), (340, 80))])
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "TYX"})
    narrow_bands(120, 0, int(2.5 * 33 * 150 * 4) // 120)                  # ~2.5 frames of raw outputs
    stream.predict_file(stardist, tmp_path / "stack.tif", tmp_path / "labels.tif", max_object_size=200)
    streamed = tifffile.imread(tmp_path / "labels.tif")
    before = two_pass(stardist, tmp_path / "stack.tif", tmp_path / "before.tif", max_object_size=200)
    assert np.array_equal(streamed, before)
    for frame, labels in zip(stack, streamed):
        assert same_partition(stardist.predict(frame), labels)
        assert labels.max() == len(np.unique(labels)) - 1 > 5


def test_a_3d_model_streams_bands_along_z(tmp_path, narrow_bands):
    """Bands of 8 slices, 18 of overlap: labels as before, and the whole volume's objects (the
    instance op on the whole raw output, as an in-memory prediction labels it)."""
    model = zoo.load(latest("unet-synth-3d"))
    volume, _ = labelled_nuclei((48, 48, 48), n=30, seed=3)
    tifffile.imwrite(tmp_path / "volume.tif", volume, imagej=True, metadata={"axes": "ZYX"})
    overlap, rows = 18, 8
    narrow_bands(rows, overlap, 3 * 48 * 48 * 4)
    stream.predict_file(model, tmp_path / "volume.tif", tmp_path / "labels.tif", max_object_size=overlap)
    streamed = tifffile.imread(tmp_path / "labels.tif")
    raw = []
    before = two_pass(model, tmp_path / "volume.tif", tmp_path / "before.tif", max_object_size=overlap, keep_raw=raw)
    assert np.array_equal(streamed, before)
    out = model.spec.outputs[0]
    whole = ops.apply(out.postprocessing, raw[0][np.newaxis], {}, "labels", ops.POSTPROCESSING)[0, 0]
    assert same_partition(whole, streamed)
    assert crossing(streamed, seam_rows(48, rows)) >= 5 and streamed.max() == len(np.unique(streamed)) - 1


@pytest.mark.parametrize("name, sample", [("stardist-dsb-he-2d", HE_SAMPLE), ("cellpose-dsb-2d", SAMPLE),
                                          ("unet-dsb-2d", SAMPLE)])
def test_every_2d_instance_package_streams_as_before(tmp_path, narrow_bands, name, sample):
    model = zoo.load(latest(name))
    image = tifffile.imread(sample)
    image = image[:200, :240]
    tifffile.imwrite(tmp_path / "image.tif", image)
    narrow_bands(40, 32, model.spec.outputs[0].n_channels * 240 * 4)
    stream.predict_file(model, tmp_path / "image.tif", tmp_path / "labels.tif", tile=128, max_object_size=32)
    streamed = tifffile.imread(tmp_path / "labels.tif")
    before = two_pass(model, tmp_path / "image.tif", tmp_path / "before.tif", tile=128, max_object_size=32)
    assert np.array_equal(streamed, before) and streamed.max() > 5
    assert sorted(os.listdir(tmp_path)) == ["before.tif", "image.tif", "labels.tif"]


def test_column_strips_label_like_the_whole_width(stardist, tmp_path, monkeypatch):
    """A wide many-channel output is labelled in column strips (here ~160 px of 448, strips own
    128 px, 40 px of context each side): objects on the column seams are found once and whole,
    the objects are the whole image's, numbered 1..n, and progress counts every strip's tiles."""
    image = tifffile.imread(SAMPLE)[:400, :448]
    tifffile.imwrite(tmp_path / "nuclei.tif", image)
    whole_width = tmp_path / "one_strip.tif"
    stream.predict_file(stardist, tmp_path / "nuclei.tif", whole_width, tile=256, max_object_size=40)
    monkeypatch.setattr(stream, "_STRIP_ROW_BYTES", 160 * 33 * 4)
    monkeypatch.setattr(stream, "MIN_STRIP_TILES", 1)
    reports = []
    stream.predict_file(stardist, tmp_path / "nuclei.tif", tmp_path / "labels.tif", tile=256, max_object_size=40,
                        progress=lambda done, total: reports.append((done, total)))
    streamed = tifffile.imread(tmp_path / "labels.tif")
    plans, _ = stardist.plan_tiles(image.shape, 256)
    parts = stream.strips(plans[-1], stream.strip_width(image.shape, 33), 40)
    assert len(parts) == 4 and parts[0] == (0, 128)
    assert same_partition(tifffile.imread(whole_width), streamed)
    assert same_partition(stardist.predict(image, tile=256), streamed)
    assert crossing(streamed.T, [hi for _, hi in parts[:-1]]) >= 5       # on column seams: found once, whole
    assert streamed.max() == len(np.unique(streamed)) - 1 > 100
    done = [d for d, _ in reports]
    assert done == sorted(done) and reports[-1][0] == reports[-1][1] > 4 * 4     # tiles of context run again


@pytest.mark.parametrize("name", ["unet-dsb-2d", "cellpose-dsb-2d"])
def test_few_channel_outputs_wider_than_the_label_strip_are_labelled_in_strips(tmp_path, monkeypatch, name):
    """3-channel outputs went in strips only past ~55000 px (their row of outputs is small), while
    labelling's own memory grew with the width; past LABEL_STRIP_WIDTH (here 160 px of 448; nuclei up to 59 px, 64 px of context) they
    are labelled in strips too, and the objects are the whole width's, seams included."""
    model = zoo.load(latest(name))
    image = tifffile.imread(SAMPLE)[:200, :448]
    tifffile.imwrite(tmp_path / "nuclei.tif", image)
    stream.predict_file(model, tmp_path / "nuclei.tif", tmp_path / "whole.tif", tile=128, max_object_size=64)
    monkeypatch.setattr(stream, "LABEL_STRIP_WIDTH", 160)
    monkeypatch.setattr(stream, "MIN_STRIP_TILES", 1)
    stream.predict_file(model, tmp_path / "nuclei.tif", tmp_path / "strips.tif", tile=128, max_object_size=64)
    plans, _ = model.plan_tiles(image.shape, 128)
    parts = stream.strips(plans[-1], stream.strip_width(image.shape, 3, stream.LABEL_STRIP_WIDTH), 64)
    streamed = tifffile.imread(tmp_path / "strips.tif")
    assert len(parts) >= 3 and stream.strip_width(image.shape, 3) is None
    assert same_partition(tifffile.imread(tmp_path / "whole.tif"), streamed)
    assert crossing(streamed.T, [hi for _, hi in parts[:-1]]) >= 3
    assert streamed.max() == len(np.unique(streamed)) - 1 > 20
