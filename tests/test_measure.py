"""Per-object measurements: values checked against direct numpy computations, 2D and 3D,
non-consecutive ids, objects on the border, empty images, tables in CSV and Parquet."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from zoo.errors import InputError
from zoo.quantify.measure import measure, write_table


def labelled() -> tuple[np.ndarray, np.ndarray]:
    """Objects 7 (a square on the top-left border), 300 (an L shape), 12 (a long thin ellipse),
    9 (a one-pixel-thick line); an RGB image with known values."""
    labels = np.zeros((60, 80), np.int32)
    labels[0:10, 0:10] = 7
    labels[20:40, 20:25] = 300
    labels[35:40, 20:40] = 300
    yy, xx = np.mgrid[:60, :80]
    labels[((yy - 15) / 3.0) ** 2 + ((xx - 60) / 15.0) ** 2 <= 1] = 12
    labels[50, 50:70] = 9
    image = np.zeros((60, 80, 3), np.float32)
    image[..., 0] = 10.0
    image[..., 1] = xx
    image[..., 2] = labels == 300
    return labels, image


def test_measurements_match_direct_computation():
    labels, image = labelled()
    rows = {r["label"]: r for r in measure(labels, image, channel_names=["dapi", "ramp", "mask"])}
    assert sorted(rows) == [7, 9, 12, 300]
    for label, row in rows.items():
        ys, xs = np.nonzero(labels == label)
        assert row["area"] == len(ys)
        assert row["centroid_y"] == pytest.approx(ys.mean(), abs=1e-3) and row["centroid_x"] == pytest.approx(xs.mean(), abs=1e-3)
        assert (row["bbox_min_y"], row["bbox_min_x"], row["bbox_max_y"], row["bbox_max_x"]) == \
            (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
        assert row["mean_intensity_ramp"] == pytest.approx(xs.mean(), abs=1e-3)
        assert row["max_intensity_ramp"] == xs.max() and row["mean_intensity_dapi"] == 10.0
    assert rows[300]["mean_intensity_mask"] == 1.0 and rows[7]["max_intensity_mask"] == 0.0
    assert rows[7]["bbox_min_y"] == 0 and rows[7]["solidity"] == 1.0          # on the border, convex
    assert rows[300]["solidity"] < 0.8                                        # the L is far from convex
    assert rows[12]["eccentricity"] > 0.95 and rows[7]["eccentricity"] < 0.05
    assert np.isnan(rows[9]["solidity"]) or rows[9]["solidity"] == pytest.approx(1.0)   # degenerate hull: no crash


def test_channel_first_grey_and_no_image():
    labels, image = labelled()
    first = measure(labels, np.moveaxis(image, -1, 0))
    last = measure(labels, image)
    assert first == last and "mean_intensity_c1" in first[0]
    grey = measure(labels, image[..., 1])
    assert "mean_intensity" in grey[0] and "mean_intensity_c0" not in grey[0]
    bare = measure(labels)
    assert not any(k.startswith("mean_intensity") for k in bare[0])


def test_3d_volumes():
    labels = np.zeros((10, 20, 20), np.uint16)
    labels[2:5, 3:8, 3:8] = 4
    labels[6:10, 10:20, 10:20] = 40000                   # touches three borders; a large id
    rows = measure(labels, labels.astype(np.float32) * 2)
    assert [r["label"] for r in rows] == [4, 40000]
    assert rows[0]["volume"] == 75 and rows[1]["volume"] == 400 and "area" not in rows[0]
    assert rows[1]["centroid_z"] == pytest.approx(7.5) and rows[1]["bbox_max_z"] == 10
    assert "eccentricity" not in rows[0] and rows[1]["mean_intensity"] == 80000.0


def test_empty_images_and_bad_input(tmp_path):
    assert measure(np.zeros((16, 16), np.int32)) == []
    write_table([], tmp_path / "empty.csv")
    assert (tmp_path / "empty.csv").read_text().strip() == "label"
    with pytest.raises(InputError, match="integer object ids"):
        measure(np.full((8, 8), 0.5))
    with pytest.raises(InputError, match="does not fit the label image"):
        measure(np.zeros((8, 8), np.int32), np.zeros((9, 8)))
    with pytest.raises(InputError, match="2D or 3D"):
        measure(np.zeros(8, np.int32))
    with pytest.raises(InputError, match="use .csv or .parquet"):
        write_table([{"label": 1}], tmp_path / "table.xlsx")


def test_tables_in_csv_and_parquet(tmp_path):
    import pyarrow.parquet as pq

    labels, image = labelled()
    rows = measure(labels, image)
    write_table(rows, tmp_path / "objects.csv")
    write_table(rows, tmp_path / "objects.parquet")
    with open(tmp_path / "objects.csv") as f:
        from_csv = list(csv.DictReader(f))
    table = pq.read_table(tmp_path / "objects.parquet").to_pydict()
    assert [int(r["label"]) for r in from_csv] == table["label"] == [7, 9, 12, 300]
    assert table["area"] == [r["area"] for r in rows]


def test_zoo_measure_and_predict_measure_on_the_command_line(tmp_path, zoo_home, capsys):
    import tifffile

    from zoo.cli import main as cli
    from conftest import REPO

    labels, image = labelled()
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "image.tif", image[..., 1])
    assert cli(["measure", str(tmp_path / "labels.tif"), str(tmp_path / "image.tif"), "-o",
                str(tmp_path / "objects.csv")]) == 0
    with open(tmp_path / "objects.csv") as f:
        assert [int(r["label"]) for r in csv.DictReader(f)] == [7, 9, 12, 300]
    nuclei = REPO / "samples" / "dsb_fluo_nuclei.tif"
    assert cli(["predict", "stardist-dsb-fluo-2d", str(nuclei), "-o", str(tmp_path / "seg.tif"), "--measure"]) == 0
    predicted = tifffile.imread(tmp_path / "seg.tif")
    with open(tmp_path / "seg_objects.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(np.unique(predicted)) - 1 > 0 and "mean_intensity" in rows[0]
    assert cli(["predict", "n2v-w2s-2d", str(nuclei), "-o", str(tmp_path / "den.tif"), "--measure"]) == 2
    assert "needs instance labels" in capsys.readouterr().err
