"""`zoo recommend IMAGE...` and zoo.api.recommending.recommend (issue 24.5): every package of the
registry that can take the images (axes, channels; latest versions only), ranked by its shift
score on them, with a one-line verdict each, as a table, JSON and a preview figure; packages
without a shift check last; an image nothing takes, and a file that is not an image, told clearly.

A small registry folder holds copies of a few standard packages (and one without its shift
check), and the images are crops of the committed samples, so that the tests run in seconds."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading

import numpy as np
import pytest
import tifffile
import yaml

from zoo.errors import InputError
from zoo.imageio import read_image
from zoo.recommend import Recommendation, Recommendations, rank, short
from zoo.registry import standard_store
from zoo.registry.refs import version_of
from zoo.trust.check import ShiftReport

from conftest import REPO

SAMPLES = REPO / "samples"
PACKAGES = ["care-w2s-2d", "care-synth-3d", "stardist-dsb-fluo-2d", "stardist-dsb-he-2d", "classifier-bccd"]
UNCHECKED = "n2v-w2s-2d"        # copied without its shift check


def latest(name: str) -> str:
    """name@version of the standard package's latest version."""
    versions = json.loads((standard_store() / "index.json").read_text())[name]
    return f"{name}@{max(versions, key=version_of)}"


def recommend(*args, **kwargs):
    from zoo.api.recommending import recommend as api_recommend

    return api_recommend(*args, **kwargs)


def cli(argv: list[str]) -> int:
    """``zoo ARGV``, with the recommend command registered whether or not zoo.cli lists it yet."""
    import zoo.cli as zoo_cli
    from zoo.cli import recommend as command

    groups = zoo_cli.GROUPS
    if command not in groups:
        zoo_cli.GROUPS = groups + (command,)
    try:
        return zoo_cli.main(argv)
    finally:
        zoo_cli.GROUPS = groups


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry folder: the latest versions of PACKAGES, an older classifier-bccd too, and UNCHECKED
    without its shift check."""
    from zoo.hashing import sha256_file

    root = tmp_path_factory.mktemp("recommend") / "registry"
    shipped = json.loads((standard_store() / "index.json").read_text())
    index = {}
    for name in PACKAGES + [UNCHECKED]:
        versions = sorted(shipped[name], key=version_of)
        for version in versions[-2:] if name == "classifier-bccd" else versions[-1:]:
            target = root / "packages" / name / version
            shutil.copytree(standard_store() / "packages" / name / version, target)
            index.setdefault(name, {})[version] = dict(shipped[name][version])
    (version,) = index[UNCHECKED]
    folder = root / "packages" / UNCHECKED / version
    spec = yaml.safe_load((folder / "zoo.yaml").read_text())
    del spec["trust"]
    (folder / "zoo.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    index[UNCHECKED][version]["sha256"] = sha256_file(folder / "zoo.yaml")
    (root / "index.json").write_text(json.dumps(index, indent=1))
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Small crops of the samples: grey fluorescence, RGB H&E, a BCCD crop, and a 4-channel image."""
    folder = tmp_path_factory.mktemp("images")
    tifffile.imwrite(folder / "fluo.tif", read_image(SAMPLES / "dsb_fluo_nuclei.tif")[100:228, 200:328])
    tifffile.imwrite(folder / "he.tif", read_image(SAMPLES / "dsb_he_nuclei.tif")[:160, :160])
    shutil.copy(SAMPLES / "bccd_wbc.jpg", folder / "wbc.jpg")
    np.save(folder / "four.npy", np.random.default_rng(0).integers(0, 255, (64, 64, 4), dtype=np.uint8))
    (folder / "notes.tif").write_text("not an image\n")
    return folder


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path_factory.getbasetemp() / "recommend-cache"))


def names(result) -> list[str]:
    return [r.package for r in result.ranking]


def test_a_colour_image_ranks_the_colour_packages_and_says_why_the_others_cannot_take_it(registry, images):
    result = recommend([images / "he.tif"], registry=registry)
    assert names(result)[0] == latest("stardist-dsb-he-2d"), [(r.package, r.verdict) for r in result.ranking]
    older = [n for n in names(result) if n.startswith("classifier-bccd@") and n != latest("classifier-bccd")]
    assert latest("classifier-bccd") in names(result) and not older                   # the latest version only
    assert result.ranking[0].verdict.startswith("fits: shift ") and "of threshold" in result.ranking[0].verdict
    classifier = result.ranking[names(result).index(latest("classifier-bccd"))]
    assert classifier.verdict.startswith("unlike its training data: ") and "x threshold (" in classifier.verdict
    skipped = {s.package.split("@")[0]: s.why for s in result.skipped}
    assert set(skipped) == {"care-w2s-2d", "care-synth-3d", "stardist-dsb-fluo-2d", UNCHECKED}
    assert "RGB 160x160x3" in skipped["care-w2s-2d"] and "1-channel 2D" in skipped["care-w2s-2d"]
    assert "3D images" in skipped["care-synth-3d"]          # an RGB picture is never read as a volume
    assert [r.rank for r in result.ranking] == list(range(1, len(result.ranking) + 1))


def test_a_grey_image_fits_grey_and_repeating_packages_and_unchecked_ones_come_last(registry, images):
    result = recommend([images / "fluo.tif"], registry=registry)
    ranked = [p.split("@")[0] for p in names(result)]
    assert ranked[0] == "stardist-dsb-fluo-2d", [(r.package, r.verdict) for r in result.ranking]
    assert "stardist-dsb-he-2d" in ranked                  # grey: repeat
    assert ranked[-1] == UNCHECKED and result.ranking[-1].verdict == "no shift check"
    assert result.ranking[-1].score is None
    assert {s.package.split("@")[0] for s in result.skipped} == {"care-synth-3d", "classifier-bccd"}


def test_several_images_and_the_task_filter(registry, images):
    result = recommend([images / "fluo.tif", images / "fluo.tif"], task="restoration", registry=registry)
    assert {r.task for r in result.ranking} == {"restoration/denoising"}
    assert {p.split("@")[0] for p in names(result)} == {"care-w2s-2d", UNCHECKED}
    assert all(len(r.reports) == 2 for r in result.ranking)
    assert result.top_for(1).package == result.ranking[0].package
    none = recommend([images / "fluo.tif"], task="tracking", registry=registry)
    assert not none.ranking and "no package" in none.message and "'tracking'" in none.message
    assert "classification" in none.message                                 # the tasks there are


def test_arrays_are_taken_with_their_axes(registry):
    grey = read_image(SAMPLES / "dsb_fluo_nuclei.tif")[:96, :96]
    result = recommend(np.stack([grey, grey]), task="restoration", registry=registry, axes="cyx")
    assert not result.ranking and "image 0" in result.message              # two channels: nothing takes them
    result = recommend(grey, task="restoration", registry=registry)
    assert result.images == ["image 0"] and result.ranking


def test_an_image_no_package_takes_gives_an_empty_ranking_that_says_why(registry, images, capsys):
    result = recommend([images / "four.npy"], registry=registry)
    assert not result.ranking and len(result.skipped) == len(PACKAGES) + 1
    assert "no package in the registry" in result.message and "64x64x4" in result.message
    assert "3-channel 2D images" in result.message and "1-channel 2D images" in result.message
    assert cli(["recommend", str(images / "four.npy"), "--registry", str(registry)]) == 1
    captured = capsys.readouterr()
    assert not captured.out and "takes these images" in captured.err


def test_a_file_that_is_not_an_image_is_a_clear_error(registry, images, capsys):
    with pytest.raises(InputError, match="could not read .*notes.tif.* but it is text"):
        recommend([images / "fluo.tif", images / "notes.tif"], registry=registry)
    assert cli(["recommend", str(images / "notes.tif"), "--registry", str(registry)]) == 2
    assert "error: could not read" in capsys.readouterr().err
    assert cli(["recommend", str(images / "missing.tif"), "--registry", str(registry)]) == 2
    assert "image not found" in capsys.readouterr().err
    with pytest.raises(InputError, match="at least one image"):
        recommend([], registry=registry)


def test_cli_table_json_and_preview_figure(registry, images, tmp_path, capsys):
    from PIL import Image

    figure = tmp_path / "top.png"
    assert cli(["recommend", str(images / "wbc.jpg"), "--registry", str(registry), "--figure", str(figure)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["rank", "package", "task"] and "shift score / threshold" in out[0]
    assert out[1].split()[:3] == ["1", latest("classifier-bccd"), "classification"]
    assert "fits: shift" in out[1] and f"{figure}: preview of the top 2" in out[-1]
    with Image.open(figure) as im:
        assert im.width > 2.5 * im.height                   # the input and the two packages, side by side
    assert cli(["--registry", str(registry), "recommend", str(images / "wbc.jpg"), "--json", "--task",
                "classification"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [r["package"] for r in body["ranking"]] == [latest("classifier-bccd")]
    first = body["ranking"][0]
    assert first["rank"] == 1 and first["shift_score"] < first["shift_threshold"] and first["verdict"].startswith("fits")
    assert body["images"][0].endswith("wbc.jpg") and len(first["images"]) == 1 and body["figure"] is None


def test_ranking_tiers_verdicts_and_short_messages():
    def report(score, threshold=10.0, messages=()):
        return ShiftReport(score, threshold, {"embedding": score}, list(messages))

    near = Recommendation("a@1.0.0", "restoration/denoising", [report(8.0), report(9.0), report(30.0)])
    close = Recommendation("b@1.0.0", "restoration/denoising", [report(2.0, threshold=1000.0)])
    far = Recommendation("c@1.0.0", "segmentation/instance",
                         [report(31.0, messages=["input is 4.0x noisier than training data",
                                                 "objects are 2.1x larger than in training data",
                                                 "the background is much brighter than in training data after "
                                                 "normalisation (inverted contrast, brightfield or H&E?)"])])
    unchecked = Recommendation("d@1.0.0", "classification", [None])
    ranked = rank([unchecked, far, near, close])
    assert [r.package for r in ranked] == ["b@1.0.0", "a@1.0.0", "c@1.0.0", "d@1.0.0"]
    assert near.verdict == "fits: shift 0.9 of threshold; 1 of 3 images beyond it"
    assert close.verdict == "fits: shift 0.00 of threshold"
    assert far.verdict == "unlike its training data: 3.1x threshold (4.0x noisier, objects 2.1x larger, brighter background)"
    assert unchecked.verdict == "no shift check" and unchecked.to_dict()["shift_score"] is None
    assert short("the network's features are unlike those of its training images") == "unfamiliar features"
    both = Recommendations(["x", "y"], rank([Recommendation("a@1.0.0", "t", [report(1.0), report(50.0)]),
                                             Recommendation("b@1.0.0", "t", [report(5.0), report(5.0)])]), [])
    assert [r.package for r in both.ranking] == ["b@1.0.0", "a@1.0.0"]     # a: median 25.5 > 10
    assert both.top_for(0).package == "a@1.0.0" and both.top_for(1).package == "b@1.0.0"


def test_the_default_local_registry_and_a_remote_one_over_http(zoo_home, registry, images):
    """Every standard package in the local registry by default; a registry at an http:// URL through
    the registry machinery (packages downloaded into the cache)."""
    result = recommend([SAMPLES / "bccd_rbc.jpg"])
    assert result.ranking[0].package.startswith("classifier-bccd@"), [(r.package, r.verdict) for r in result.ranking]
    assert len(result.ranking) + len(result.skipped) == len(json.loads((standard_store() / "index.json").read_text()))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(registry)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        remote = recommend([images / "fluo.tif"], registry=url, task="segmentation")
        assert names(remote)[0] == latest("stardist-dsb-fluo-2d") and url in remote.registry
    finally:
        httpd.shutdown()
        httpd.server_close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
