"""Rough edges a new user hit (issue 21.3-6, 21.10): colour into a grey model, figures of colour
images, output formats checked before the work, files read by content, pull's byte count, search
ranking, and a folder where an image belongs."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

import zoo
from zoo.errors import ColourImageError, InputError
from zoo.imageio import file_format, open_lazy, read_image
from zoo.registry import standard_store
from conftest import REPO
from test_hardening_registry import assert_one_line_error, zoo as zoo_cli

HE = REPO / "samples" / "dsb_he_nuclei.tif"              # a real RGB H&E image, (256, 320, 3) uint8
FLUO = REPO / "samples" / "dsb_fluo_nuclei.tif"


# ----------------------------------------------------------------------------- 3: colour into a grey model
def test_colour_into_a_grey_model_names_the_colour_packages_and_no_batch_hint(zoo_home):
    model = zoo.load("n2v-w2s")
    with pytest.raises(ColourImageError) as caught:
        model.predict(tifffile.imread(HE))
    message = str(caught.value)
    assert "looks like RGB" in message and "byx" not in message and "batch" not in message
    assert "stardist-dsb-he-2d" in message and "cellpose-dsb-2d" in message
    assert "n2v-w2s" not in message.split("installed:")[1]          # only packages that take colour


def test_colour_on_the_command_line_and_streamed(zoo_home, tmp_path, capsys):
    code, _, err = zoo_cli("predict", "n2v-w2s", HE, "-o", tmp_path / "o.tif", capsys=capsys)
    assert_one_line_error(code, err, "looks like RGB", "stardist-dsb-he-2d")
    assert "byx" not in err


def test_a_two_channel_last_axis_still_gets_the_batch_hint():
    model = zoo.load(standard_store() / "packages" / "n2v-w2s" / "0.1.0")
    with pytest.raises(InputError, match="axes='yxb'") as caught:
        model.predict(np.zeros((64, 64, 2), np.float32))
    assert not isinstance(caught.value, ColourImageError)


# ----------------------------------------------------------------------------- 4: figures of colour images
def test_a_figure_draws_colour_as_colour_at_its_aspect_ratio(zoo_home, tmp_path, capsys):
    code, _, _ = zoo_cli("predict", "stardist-dsb-he-2d", HE, "-o", tmp_path / "labels.tif", "--figure",
                         tmp_path / "figure.png", capsys=capsys)
    assert code == 0
    picture = np.asarray(Image.open(tmp_path / "figure.png").convert("RGB"))
    he = tifffile.imread(HE)
    assert picture.shape[0] >= he.shape[0]                  # the input panel is whole, not a strip
    panel = picture[22:22 + he.shape[0], 8:8 + he.shape[1]]
    np.testing.assert_array_equal(panel, he)                # drawn as the RGB it is
    assert panel[..., 0].mean() != panel[..., 2].mean()


# ----------------------------------------------------------------------------- 5: formats checked up front
def test_an_output_format_that_cannot_hold_the_output_is_refused_before_predicting(tmp_path, tiny_package, capsys,
                                                                                   monkeypatch):
    from zoo.model import Model

    calls = []
    monkeypatch.setattr(Model, "predict", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(Model, "predict_file", lambda *a, **k: calls.append(1))
    tifffile.imwrite(tmp_path / "in.tif", np.zeros((64, 64), np.uint16))
    for output, says in (("o.png", "write it as .tif"), ("o.jpg", "cannot write '.jpg'"), ("o", "cannot write")):
        code, _, err = zoo_cli("predict", tiny_package, tmp_path / "in.tif", "-o", tmp_path / output, capsys=capsys)
        assert_one_line_error(code, err, says)
    assert calls == []


def test_labels_are_written_to_png_and_help_names_only_formats_that_hold_the_output(zoo_home, tmp_path, capsys):
    code, _, err = zoo_cli("predict", "stardist-dsb-fluo-2d", FLUO, "-o", tmp_path / "labels.png", capsys=capsys)
    assert code == 0, err
    labels = np.asarray(Image.open(tmp_path / "labels.png"))
    assert labels.dtype == np.uint16 and labels.max() > 10
    with pytest.raises(SystemExit):
        zoo_cli("predict", "--help", capsys=capsys)
    help_text = " ".join(capsys.readouterr().out.split())
    assert ".png (labels and 8/16-bit images only" in help_text


# ----------------------------------------------------------------------------- 6: read by content
def test_files_are_read_by_content_whatever_their_name(tmp_path, caplog):
    image = tifffile.imread(FLUO)
    Image.fromarray(image).save(tmp_path / "png_named.tif", format="PNG")
    tifffile.imwrite(tmp_path / "tiff_named.png", image)
    Image.fromarray(image).save(tmp_path / "no_extension", format="PNG")
    with open(tmp_path / "npy.dat", "wb") as f:
        np.save(f, image)
    for name, kind in (("png_named.tif", "png"), ("tiff_named.png", "tiff"), ("no_extension", "png"),
                       ("npy.dat", "npy")):
        assert file_format(tmp_path / name) == kind
        np.testing.assert_array_equal(np.asarray(open_lazy(tmp_path / name)[0]), image)
        np.testing.assert_array_equal(read_image(tmp_path / name), image)
    assert "png_named.tif is a PNG image despite its .tif name" in caplog.text


def test_content_that_is_no_image_says_what_it_is(tmp_path, tiny_package, capsys):
    (tmp_path / "notes.tif").write_text("exposure 100 ms\n")
    shutil.make_archive(str(tmp_path / "bundle"), "zip", tmp_path, "notes.tif")
    shutil.move(tmp_path / "bundle.zip", tmp_path / "bundle.png")
    for name, says in (("notes.tif", "expected a TIFF image, as its name says"), ("bundle.png", "a zip archive")):
        code, _, err = zoo_cli("predict", tiny_package, tmp_path / name, "-o", tmp_path / "o.tif", capsys=capsys)
        assert_one_line_error(code, err, says)


def test_the_cli_prediction_of_a_misnamed_file_equals_the_rightly_named_one(tmp_path, tiny_package, capsys):
    image = tifffile.imread(FLUO)[:128, :128]
    Image.fromarray(image).save(tmp_path / "right.png", format="PNG")
    shutil.copy(tmp_path / "right.png", tmp_path / "wrong.tif")
    for name in ("right.png", "wrong.tif"):
        assert zoo_cli("predict", tiny_package, tmp_path / name, "-o", tmp_path / f"{name}.out.tif",
                       capsys=capsys)[0] == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "right.png.out.tif"),
                                  tifffile.imread(tmp_path / "wrong.tif.out.tif"))


# ----------------------------------------------------------------------------- 10: small truths
def test_pull_prints_the_bytes_it_moved(zoo_home, capsys):
    code, out, _ = zoo_cli("pull", "n2v-w2s@0.1.0", capsys=capsys)
    size = sum(p.stat().st_size for p in (standard_store() / "packages" / "n2v-w2s" / "0.1.0").rglob("*")
               if p.is_file())
    assert code == 0 and f"\t{size} bytes copied" in out, (out, size)
    code, out, _ = zoo_cli("pull", "n2v-w2s@0.1.0", capsys=capsys)
    assert "\t0 bytes copied (already in the cache)" in out


def test_search_ranks_the_task_a_word_asks_for_first(zoo_home, capsys):
    code, out, _ = zoo_cli("search", "nuclei", capsys=capsys)
    tasks = [line.split("\t")[2] for line in out.splitlines()]
    assert code == 0 and "restoration/denoising" in tasks            # denoisers whose text names nuclei
    first_other = next(i for i, t in enumerate(tasks) if not t.startswith("segmentation"))
    assert all(t.startswith("segmentation") for t in tasks[:first_other]) and first_other >= 4
    assert not any(t.startswith("segmentation") for t in tasks[first_other:])
    out = zoo_cli("search", "noise", capsys=capsys)[1]
    assert out.splitlines()[0].split("\t")[2].startswith("restoration")


def test_a_folder_where_an_image_belongs_says_it_is_a_folder(tmp_path, tiny_package, capsys):
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((32, 32), np.uint16))
    for output in ("o.tif", "o.zarr"):
        code, _, err = zoo_cli("predict", tiny_package, tmp_path / "images", "-o", tmp_path / output, capsys=capsys)
        assert_one_line_error(code, err, "is a folder, not an image")
    with pytest.raises(InputError, match="is a folder"):
        read_image(tmp_path / "images")
