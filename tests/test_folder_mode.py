"""Folder mode (issue 24.1): one model over a folder or glob of images, outputs named after the
inputs, a manifest that makes a re-run skip finished work, a summary CSV, and bad files
reported while the others go on. Through the CLI and the api."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import tifffile

from conftest import REPO

MODEL = "n2v-w2s"


@pytest.fixture()
def folder(tmp_path):
    """Four real crops (two sizes, one RGB-free PNG-sized crop), a text file and a corrupt TIFF."""
    actin = tifffile.imread(REPO / "samples" / "hagen_actin_lowsnr.tif")
    root = tmp_path / "raw"
    root.mkdir()
    tifffile.imwrite(root / "a.tif", actin[:96, :96])
    tifffile.imwrite(root / "b.tif", actin[100:164, 50:178])          # another size
    np.save(root / "c.npy", actin[200:264, 200:264].astype(np.float32))
    tifffile.imwrite(root / "d.tif", actin[:80, :80][None])           # a leading axis of one
    (root / "notes.txt").write_text("acquisition notes")
    (root / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 40)
    return root


def _rows(out):
    with open(out / "summary.csv") as f:
        return {row["file"].rsplit("/", 1)[-1]: row for row in csv.DictReader(f)}


def test_a_folder_is_predicted_once_and_a_rerun_skips_what_is_finished(folder, tmp_path, capsys):
    from zoo.cli import main

    out = tmp_path / "out"
    code = main(["predict", MODEL, str(folder), "-o", str(out)])
    printed = capsys.readouterr()
    assert code == 1, printed                                          # one file failed
    assert "failed: " in printed.err and "broken.tif" in printed.err
    assert "4 predicted, 1 skipped, 1 failed" in printed.out, printed.out
    rows = _rows(out)
    assert {k: r["status"] for k, r in rows.items()} == {"a.tif": "done", "b.tif": "done", "c.npy": "done",
                                                        "d.tif": "done", "broken.tif": "failed",
                                                        "notes.txt": "skipped"}
    assert rows["b.tif"]["shape"] == "64x128" and float(rows["a.tif"]["seconds"]) > 0
    assert rows["a.tif"]["shift_score"] and rows["a.tif"]["shift_verdict"] in ("fits", "unlike the training data")
    assert "not an image" in rows["notes.txt"]["error"] and rows["broken.tif"]["error"]
    for name, shape in (("a", (96, 96)), ("b", (64, 128)), ("c", (64, 64))):
        assert tifffile.imread(out / f"{name}.tif").shape == shape
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 4 and all(e["model"].startswith(MODEL + "@") for e in manifest)
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"input": "cut by a cra')                         # a crash mid-line is ignored

    before = (out / "a.tif").stat().st_mtime_ns
    np.save(folder / "c.npy", np.load(folder / "c.npy") + 1)          # a changed input is redone
    assert main(["predict", MODEL, str(folder), "-o", str(out)]) == 1
    rows = _rows(out)
    assert rows["a.tif"]["status"] == "skipped" and "already done" in rows["a.tif"]["warnings"]
    assert rows["c.npy"]["status"] == "done" and (out / "a.tif").stat().st_mtime_ns == before
    assert main(["predict", MODEL, str(folder), "-o", str(out), "--overwrite"]) == 1
    assert _rows(out)["a.tif"]["status"] == "done" and (out / "a.tif").stat().st_mtime_ns != before


def test_globs_and_the_api_give_the_same_outputs(folder, tmp_path):
    import zoo

    model = zoo.load(MODEL)             # one model (one runtime) for the folder and the comparison
    report = zoo.predict(model, [str(folder / "a.tif"), str(folder / "[bc].*")], out=tmp_path / "api")
    assert [r["status"] for r in report.rows] == ["done"] * 3 and not report.failures
    np.testing.assert_allclose(tifffile.imread(tmp_path / "api" / "b.tif"),
                               model.predict(tifffile.imread(folder / "b.tif")), atol=1e-5)
    with pytest.raises(zoo.errors.InputError, match="out=FOLDER"):
        zoo.predict(MODEL, str(folder))


def test_a_file_in_the_output_folder_that_this_run_did_not_write_is_never_replaced(folder, tmp_path, capsys):
    from zoo.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "a.tif").write_bytes(b"someone's result")
    assert main(["predict", MODEL, str(folder / "a.tif"), str(folder / "b.tif"), "-o", str(out)]) == 1
    assert (out / "a.tif").read_bytes() == b"someone's result"
    assert "exists: pass --overwrite" in _rows(out)["a.tif"]["error"] and _rows(out)["b.tif"]["status"] == "done"
    capsys.readouterr()


def test_inputs_that_would_share_an_output_name_are_refused_before_any_work(folder, tmp_path, capsys):
    from zoo.cli import main

    tifffile.imwrite(folder / "a.png.tif", np.zeros((8, 8), np.uint8))
    shutil.copy(folder / "a.tif", folder / "e.tif")
    (folder / "e.npy").write_bytes((folder / "c.npy").read_bytes())
    assert main(["predict", MODEL, str(folder / "e.tif"), str(folder / "e.npy"), "-o", str(tmp_path / "o")]) == 2
    assert "would both be written" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_images_side_by_side_give_what_one_at_a_time_gives(folder, tmp_path, monkeypatch):
    """Lanes (several small images at once, one thread each) change nothing but the speed: the same
    outputs bit for bit, rows in input order with the same shift scores, the same manifest."""
    import zoo
    from zoo.api.batch import default_lanes, predict_files
    from zoo.folders import expand_inputs

    monkeypatch.setenv("ZOO_THREADS", "3")
    files, _ = expand_inputs([folder])
    assert len(files) == 5 and default_lanes(files) == 3                # as many as the threads allowed
    model = zoo.load(MODEL, runtime="onnx")
    runner = model.runner
    reports = {k: predict_files(model, [folder], tmp_path / f"lanes{k}", lanes=k) for k in (1, 3)}
    assert model.runner is runner                                       # the lanes' runners are gone after
    assert model._shift[1].session.get_session_options().intra_op_num_threads == 3
    drop = ("seconds", "output")
    one, three = ([{k: v for k, v in r.items() if k not in drop} for r in reports[k].rows] for k in (1, 3))
    assert one == three and [r["status"] for r in one].count("done") == 4
    for name in ("a", "b", "c", "d"):
        assert (tmp_path / "lanes1" / f"{name}.tif").read_bytes() == (tmp_path / "lanes3" / f"{name}.tif").read_bytes()
    manifests = [sorted((tmp_path / f"lanes{k}" / "manifest.jsonl").read_text().splitlines()) for k in (1, 3)]
    assert manifests[0] == manifests[1]


def test_lanes_apply_to_small_files_on_onnx_runtime_only(folder, tmp_path):
    import zoo
    from zoo.api.batch import LANE_FILE_BYTES, default_lanes

    small = [folder / "a.tif", folder / "b.tif"]
    assert default_lanes(small[:1]) == 1                               # one file: every thread for it
    big = tmp_path / "big.npy"
    np.save(big, np.zeros(LANE_FILE_BYTES // 4 + 1, np.float32))
    assert default_lanes(small + [big]) == 1                            # a large image gets every thread
    onnx, torch = zoo.load(MODEL, runtime="onnx"), zoo.load(MODEL, runtime="torch")
    before = onnx.runner
    with onnx.lanes() as on:
        assert on and onnx.runner is not before and onnx.runner.session.get_session_options().intra_op_num_threads == 1
    assert onnx.runner is before
    with torch.lanes() as on:                                           # torch's threads are process-wide
        assert not on


def test_lanes_through_the_cli_and_a_bad_count(folder, tmp_path, capsys):
    from zoo.cli import main

    assert main(["predict", MODEL, str(folder / "a.tif"), str(folder / "b.tif"), "-o", str(tmp_path / "o"),
                 "--lanes", "2"]) == 0
    assert tifffile.imread(tmp_path / "o" / "b.tif").shape == (64, 128)
    capsys.readouterr()
    assert main(["predict", MODEL, str(folder), "-o", str(tmp_path / "bad"), "--lanes", "0"]) != 0
    err = capsys.readouterr().err
    assert "lanes" in err and "1 or more" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()                              # refused before any work
