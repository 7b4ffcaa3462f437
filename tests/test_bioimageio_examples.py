"""bioimage.io's own example models (issue 23.1-3), imported and run as a user would: fixed
sizes, outputs on another grid, two inputs and two outputs, TorchScript, state dicts whose
architecture is the package's own source (only with --trust-code), and weights that live at a
URL (downloaded only when chosen, never offline). The descriptions and their weights are
committed under tests/data/bioimageio (see its README for sources and licences)."""
from __future__ import annotations

import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from zoo.errors import InputError

EXAMPLES = Path(__file__).parent / "data" / "bioimageio"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Each example imported once for the module: name -> package folder."""
    from zoo.export.bioimageio_import import import_package

    root = tmp_path_factory.mktemp("imported")
    said: list[str] = []
    packages = {
        "nuclei": import_package(EXAMPLES / "unet2d_nuclei_broad", root / "nuclei"),
        "multi": import_package(EXAMPLES / "unet2d_multi_tensor", root / "multi", weights="torchscript"),
        "half": import_package(EXAMPLES / "unet2d_diff_output_shape", root / "half", trust_code=True,
                               announce=said.append),
        "fourfold": import_package(EXAMPLES / "upsample_test_model", root / "fourfold", trust_code=True,
                                   announce=said.append),
    }
    packages["said"] = said
    return packages


def test_each_example_reproduces_its_own_test_output_and_records_the_error(imported):
    import zoo

    for name in ("nuclei", "multi", "half", "fourfold"):
        model = zoo.load(imported[name], device="cpu")
        model.test()                                            # the zoo's own (tiled) test tensors
        reproduced = model.spec.training.config["imported_from"]["reproduced"]
        assert reproduced and all(e is not None and e < 1e-4 for e in reproduced.values()), (name, reproduced)
    assert zoo.load(imported["nuclei"]).runtime == "onnx"
    assert zoo.load(imported["multi"]).runtime == "torchscript"


def test_trusted_code_says_what_it_runs_and_the_package_carries_none(imported):
    said = imported["said"]
    assert any("resize_unet.py" in s and "ResizeUNet" in s for s in said), said
    assert any("upsample_model.py" in s for s in said), said
    files = {p.name for p in Path(imported["half"]).rglob("*") if p.is_file()}
    assert not any(f.endswith(".py") for f in files) and "model.torchscript.pt" in files, files


def test_a_fixed_size_model_runs_in_tiles_of_its_size_one_at_a_time(imported):
    """unet2d_nuclei_broad takes 512x512 and a batch of 1 only: a larger image is cut into such
    tiles; an image of exactly that size runs whole and gives the description's own output."""
    import zoo

    model = zoo.load(imported["nuclei"], device="cpu")
    assert model.spec.inputs[0].shape_step == [0, 0] and model.spec.inputs[0].batch == 1
    calls = []
    runner = model.predictor.runner
    model._runner = type("Spy", (), {"name": "onnx", "on_gpu": False,
                                     "__call__": lambda self, b: calls.append(b.shape) or runner(b),
                                     "bytes_per_pixel": lambda self, probe: runner.bytes_per_pixel(probe)})()
    image = np.load(EXAMPLES / "unet2d_nuclei_broad" / "test_input.npy")[0, 0]
    expected = np.load(EXAMPLES / "unet2d_nuclei_broad" / "test_output.npy")[0, 0]
    np.testing.assert_allclose(model.predict(image), expected, atol=1e-4)
    assert calls == [(1, 1, 512, 512)]
    calls.clear()
    large = np.pad(image, ((0, 200), (0, 90)), mode="reflect")
    out = model.predict(large)
    assert out.shape == large.shape and all(c == (1, 1, 512, 512) for c in calls) and len(calls) == 4, calls
    inside = out[100:400, 100:400].ravel()        # a larger image normalises a little differently
    assert np.isfinite(out).all() and np.corrcoef(inside, expected[100:400, 100:400].ravel())[0, 1] > 0.98


def test_outputs_on_another_grid_are_stitched_on_it(imported):
    """A network that halves the size and one that upsamples 4x predict any image tiled."""
    import zoo

    rng = np.random.default_rng(0)
    half = zoo.load(imported["half"], device="cpu")
    image = rng.normal(size=(160, 224)).astype(np.float32)
    assert half.predict(image).shape == (80, 112)
    fourfold = zoo.load(imported["fourfold"], device="cpu")
    small = rng.normal(size=(35, 55)).astype(np.float32)
    whole = fourfold.predict(small)
    tiled = fourfold.predict(small, tile=15, batch_size=2)
    assert whole.shape == tiled.shape == (140, 220)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)        # pixel-wise upsampling: no seams at all


def test_two_inputs_and_two_outputs_by_name_in_python_and_on_the_command_line(imported, tmp_path, capsys):
    import tifffile

    import zoo
    from zoo.cli import main

    model = zoo.load(imported["multi"], device="cpu")
    rng = np.random.default_rng(1)
    a, b = (rng.normal(size=(64, 96)).astype(np.float32) for _ in range(2))
    out = model.predict({"input0": a, "input1": b})
    assert set(out) == {"output0", "output1"} and out["output0"].shape == (64, 96)
    with pytest.raises(InputError, match="takes several inputs"):
        model.predict(a)
    tifffile.imwrite(tmp_path / "a.tif", a)
    tifffile.imwrite(tmp_path / "b.tif", b)
    assert main(["predict", str(imported["multi"]), str(tmp_path / "b.tif"), str(tmp_path / "a.tif"),
                 "--input", "input1", "--input", "input0", "-o", str(tmp_path / "out.tif")]) == 0
    printed = capsys.readouterr().out
    assert "out_output0.tif: output output0" in printed and "out_output1.tif" in printed, printed
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out_output1.tif"), out["output1"], atol=1e-5)
    assert main(["predict", str(imported["multi"]), str(tmp_path / "a.tif"), str(tmp_path / "b.tif"),
                 "--output-id", "output0", "-o", str(tmp_path / "only.tif")]) == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "only.tif"), out["output0"], atol=1e-5)
    assert main(["predict", str(imported["multi"]), str(tmp_path / "a.tif"), "-o", str(tmp_path / "x.tif")]) == 2
    assert "takes the inputs input0, input1" in capsys.readouterr().err


def test_code_and_torchscript_run_only_when_asked(tmp_path):
    from zoo.export.bioimageio_import import import_package

    with pytest.raises(InputError, match="resize_unet.py:ResizeUNet.*--trust-code"):
        import_package(EXAMPLES / "unet2d_diff_output_shape", tmp_path / "a")
    with pytest.raises(InputError, match="--trust-code.*\n.*TorchScript is a program"):
        import_package(EXAMPLES / "unet2d_multi_tensor", tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_weights_at_a_url_are_fetched_only_when_chosen_and_never_offline(tmp_path):
    """The state dict of unet2d_fixed_shape moved to a URL (a server on loopback): offline the
    import names the URL; online it downloads that file alone, checks its sha256 and imports."""
    from zoo.export.bioimageio_import import import_package

    folder = tmp_path / "fixed"
    shutil.copytree(EXAMPLES / "unet2d_fixed_shape", folder)
    served = tmp_path / "served"
    served.mkdir()
    (folder / "weights.pt").rename(served / "weights.pt")
    seen = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            seen.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/weights.pt"
        rdf = folder / "v0_4.bioimageio.yaml"
        rdf.write_text(rdf.read_text().replace("source: weights.pt", f"source: {url}"))
        assert url in rdf.read_text()
        with pytest.raises(InputError, match=f"is at {url}.*offline"):
            import_package(folder, tmp_path / "offline", trust_code=True, offline=True)
        assert seen == []
        package = import_package(folder, tmp_path / "online", trust_code=True, offline=False, announce=lambda s: None)
        assert seen == ["/weights.pt"], seen
    finally:
        server.shutdown()
        server.server_close()
    import zoo

    assert zoo.load(package).test() <= 1.0
    assert yaml.safe_load((package / "zoo.yaml").read_text())["architecture"]["id"] == "torchscript"


def test_aliases_in_a_description_are_read_but_a_bomb_is_refused(tmp_path):
    """The field's own examples use YAML anchors (unet2d_fixed_shape); a 'billion laughs'
    description is refused quickly, naming the limit."""
    import time

    from zoo.errors import SpecError
    from zoo.spec import parse_yaml

    assert parse_yaml("a: &x [1, 2]\nb: *x\n", aliases=True) == {"a": [1, 2], "b": [1, 2]}
    with pytest.raises(SpecError, match="anchors and aliases"):
        parse_yaml("a: &x [1, 2]\nb: *x\n")                    # zoo specs never
    lines = ["type: model", "l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 9) + "]" for k in range(1, 9)]
    (tmp_path / "rdf.yaml").write_text("\n".join(lines) + "\n")
    from zoo.export.bioimageio_import import import_package

    started = time.perf_counter()
    with pytest.raises(SpecError, match="aliases expand to more than 100000 values"):
        import_package(tmp_path, tmp_path / "pkg")
    assert time.perf_counter() - started < 2
