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


def test_a_rerun_with_other_options_redoes_the_images(folder, tmp_path, capsys):
    """Options that change an output are part of what is finished (found 2026-12-07: a rerun with
    --pixel-size, --diameter or --raw skipped every image and kept the outputs of the first run)."""
    from zoo.cli import main

    out, files = tmp_path / "out", [str(folder / "a.tif"), str(folder / "b.tif")]
    assert main(["predict", MODEL, *files, "-o", str(out)]) == 0
    assert main(["predict", MODEL, *files, "-o", str(out), "--pixel-size", "0.5"]) == 0
    assert {r["status"] for r in _rows(out).values()} == {"done"}
    last = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()][-1]
    assert last["options"] == {"pixel_size": 0.5}
    assert main(["predict", MODEL, *files, "-o", str(out), "--pixel-size", "0.5"]) == 0
    assert {r["status"] for r in _rows(out).values()} == {"skipped"}
    capsys.readouterr()


def test_an_edited_output_or_another_models_is_not_replaced_without_overwrite(folder, tmp_path, capsys):
    """A rerun redoes in place only outputs that are as the manifest recorded them (found
    2026-12-07: a corrected label image, or another model's outputs in the same folder, were
    replaced without --overwrite as soon as the manifest had a line for their input)."""
    from zoo.cli import main

    out, files = tmp_path / "out", [str(folder / "a.tif"), str(folder / "b.tif")]
    assert main(["predict", MODEL, *files, "-o", str(out)]) == 0
    edited = tifffile.imread(out / "a.tif") * 2
    tifffile.imwrite(out / "a.tif", edited)                          # the user's corrections
    tifffile.imwrite(folder / "a.tif", tifffile.imread(folder / "a.tif")[::-1])   # the input changed too
    assert main(["predict", MODEL, *files, "-o", str(out)]) == 1
    assert np.array_equal(tifffile.imread(out / "a.tif"), edited)
    assert "not as this folder's manifest recorded it" in _rows(out)["a.tif"]["error"]
    b_before = (out / "b.tif").read_bytes()
    assert main(["predict", "n2v-cbmi-2d", str(folder / "b.tif"), str(folder / "c.npy"), "-o", str(out)]) == 1
    assert (out / "b.tif").read_bytes() == b_before                  # n2v-w2s's, kept
    assert "another model's" in _rows(out)["b.tif"]["error"] and _rows(out)["c.npy"]["status"] == "done"
    assert main(["predict", "n2v-cbmi-2d", str(folder / "b.tif"), str(folder / "c.npy"), "-o", str(out),
                 "--overwrite"]) == 0
    assert (out / "b.tif").read_bytes() != b_before
    capsys.readouterr()


def test_an_output_is_recorded_as_soon_as_it_is_written(folder, tmp_path):
    """A failure after the output is written (the shift check, a crash) leaves it recorded, so a
    rerun goes on (found 2026-12-07: the record came after the check, and a rerun then refused
    the output it had written itself, on every rerun)."""
    import zoo
    from zoo.api.predicting import predict_file
    from zoo.folders import Manifest, new_row, predict_one, read_input

    model, out = zoo.load(MODEL), tmp_path / "out"
    out.mkdir()
    source, target = folder / "a.tif", out / "a.tif"

    def failing_check(*args, **kwargs):
        raise OSError("the check's disk went away")

    row = new_row(source, target)
    digest, opened = read_input(source)
    predict_one(model, source, target, digest, opened, Manifest(out), row, False, None, True, {}, predict_file,
                failing_check)
    assert row["status"] == "failed" and target.exists()
    again = new_row(source, target)
    predict_one(model, source, target, digest, read_input(source)[1], Manifest(out), again, False, None, True, {},
                predict_file, failing_check)
    assert again["status"] == "skipped", again
