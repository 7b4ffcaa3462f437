"""bioimage.io interoperability: exports and imports (the exports' own checks, run where
bioimage-zoo is not installed, are in test_bioimageio_export.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zoo.export.bioimageio import export, zip_folder
from zoo.registry import standard_store

PACKAGES = sorted((standard_store() / "packages").glob("*/*"))
# classifiers resample onto a canvas, which bioimage.io ops cannot express: their export is refused
STANDARD = [p for p in PACKAGES if not yaml.safe_load((p / "zoo.yaml").read_text())["task"].startswith("classification")]


def _failures(summary) -> list[str]:
    return [f"{d.name}: {[e.msg for e in d.errors]}" for d in summary.details if d.status == "failed"]


# Every standard package's export passing `bioimageio test` with every weight format, in a Python
# without bioimage-zoo, with the description's lineage and documentation checked:
# tests/test_bioimageio_export.py (one package in the default suite, all of them with -m slow).


@pytest.mark.slow    # bioimageio test in a clean Python stays in the default suite (test_bioimageio_export.py)
def test_the_zip_and_the_official_command(tmp_path):
    rdf, _ = export(standard_store() / "packages" / "n2v-w2s-2d" / "0.1.0", tmp_path / "n2v")
    archive = zip_folder(tmp_path / "n2v")
    command = Path(sys.executable).parent / "bioimageio"
    result = subprocess.run([str(command), "test", str(archive)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "passed" in result.stdout


def test_a_classifier_export_is_refused_naming_the_op(tmp_path):
    from zoo.errors import InputError

    classifiers = sorted(set(PACKAGES) - set(STANDARD))
    assert classifiers
    with pytest.raises(InputError, match="'fit_canvas'.*no bioimage.io equivalent"):
        export(classifiers[0], tmp_path / "out")


def test_export_refuses_a_folder_in_use(tmp_path):
    from zoo.errors import InputError

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export(standard_store() / "packages" / "n2v-w2s-2d" / "0.1.0", tmp_path / "busy")


ONE_PER_ARCHITECTURE = {"care": "care-w2s-2d", "n2v": "n2v-w2s", "n2v2": "n2v-w2s-2d", "unet-seg": "unet-dsb-2d",
                        "stardist": "stardist-dsb-fluo-2d", "cellpose": "cellpose-dsb-2d"}


@pytest.mark.parametrize("arch", sorted(ONE_PER_ARCHITECTURE))
def test_export_then_import_gives_the_same_predictions(arch, tmp_path, zoo_home):
    import numpy as np

    import zoo
    from zoo.cli import main as cli

    original = zoo.load(ONE_PER_ARCHITECTURE[arch])
    assert cli(["export", "bioimageio", ONE_PER_ARCHITECTURE[arch], str(tmp_path / "bio"), "--zip"]) == 0
    assert cli(["import", "bioimageio", str(tmp_path / "bio.zip"), "--out", str(tmp_path / "back")]) == 0
    back = zoo.load(tmp_path / "back")
    back.test()
    assert back.spec.authors == original.spec.authors and back.spec.license == original.spec.license
    assert back.spec.cite == original.spec.cite and back.spec.training.data["n_train"] == 0
    x = np.load(tmp_path / "bio" / "test" / "input.npy")
    np.testing.assert_allclose(back.predict_tensor(x, raw=True), original.predict_tensor(x, raw=True),
                               rtol=1e-4, atol=1e-4)
    # the same package imported as its ONNX graph alone
    assert cli(["import", "bioimageio", str(tmp_path / "bio.zip"), "--out", str(tmp_path / "graph"),
                "--weights", "onnx"]) == 0
    graph = zoo.load(tmp_path / "graph")
    graph.test()
    assert graph.spec.graph_only and graph.spec.weights.safetensors is None
    for imported in (back, graph):
        if original.makes_instances:                       # the same objects, exactly
            np.testing.assert_array_equal(imported.predict_tensor(x), original.predict_tensor(x))
        else:                                              # restored images: float rounding of the re-export
            np.testing.assert_allclose(imported.predict_tensor(x), original.predict_tensor(x), rtol=1e-5, atol=1e-3)


def _hand_written(folder: Path, weights: str = "pytorch_state_dict") -> Path:
    """A bioimage.io package written by hand (not by our exporter): a StarDist network of our
    architecture with untrained weights, network outputs only."""
    import numpy as np
    import onnxruntime  # noqa: F401  (the validator runs the weights)
    import torch

    from zoo import architectures
    from zoo.hashing import sha256_file

    params = {"dims": 2, "channels": 1, "n_rays": 16, "depth": 2, "base_channels": 8}
    torch.manual_seed(0)
    network = architectures.get("stardist").build_network(params).eval()
    (folder / "test").mkdir(parents=True)
    torch.save(network.state_dict(), folder / "weights.pt")
    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    with torch.no_grad():
        y = network(torch.from_numpy(x)).numpy()
    np.save(folder / "test" / "x.npy", x)
    np.save(folder / "test" / "y.npy", y)
    (folder / "doc.md").write_text("# hand-written\n\n## Validation\n\nnone\n")
    rdf = {"format_version": "0.5.4", "type": "model", "name": "Hand Written StarDist", "version": "1.2.0",
           "description": "written by hand for a test", "authors": [{"name": "A. Biologist"}],
           "cite": [{"text": "Schmidt et al. 2018", "doi": "10.1007/978-3-030-00934-2_30"}], "license": "CC-BY-4.0",
           "documentation": "doc.md", "tags": ["nuclei"],
           "inputs": [{"id": "raw", "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["dapi"]},
                                               {"type": "space", "id": "y", "size": {"min": 16, "step": 8}},
                                               {"type": "space", "id": "x", "size": {"min": 16, "step": 8}}],
                       "test_tensor": {"source": "test/x.npy", "sha256": sha256_file(folder / "test" / "x.npy")},
                       "data": {"type": "float32"}}],
           "outputs": [{"id": "out", "axes": [{"type": "batch"}, {"type": "channel", "channel_names":
                                                                     [f"c{i}" for i in range(17)]},
                                                {"type": "space", "id": "y", "size": {"tensor_id": "raw", "axis_id": "y"}},
                                                {"type": "space", "id": "x", "size": {"tensor_id": "raw", "axis_id": "x"}}],
                        "test_tensor": {"source": "test/y.npy", "sha256": sha256_file(folder / "test" / "y.npy")},
                        "data": {"type": "float32"}}],
           "weights": {weights: {"source": "weights.pt", "sha256": sha256_file(folder / "weights.pt"),
                                 "architecture": {"callable": "build", "import_from": "zoo.models.stardist.network",
                                                  "kwargs": params},
                                 "pytorch_version": torch.__version__.split("+")[0]}}}
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder / "rdf.yaml"


def test_a_hand_written_bioimageio_package_imports_and_runs(tmp_path):
    import numpy as np

    import zoo
    from zoo.export.bioimageio_import import import_package

    rdf = _hand_written(tmp_path / "hand")
    package = import_package(rdf, tmp_path / "pkg")
    model = zoo.load(package)
    model.test()
    assert model.spec.name == "hand-written-stardist" and model.spec.version == "1.2.0"
    assert model.spec.inputs[0].channels == ["dapi"] and model.spec.authors == [{"name": "A. Biologist"}]
    x = np.load(tmp_path / "hand" / "test" / "x.npy")
    centre = (slice(None), slice(None), slice(24, 40), slice(24, 40))   # the runtime mirrors the borders (halo)
    np.testing.assert_allclose(model.predict_tensor(x, raw=True)[centre],
                               np.load(tmp_path / "hand" / "test" / "y.npy")[centre], rtol=1e-4, atol=1e-4)
    labels = model.predict(x[0, 0])
    assert labels.shape == (64, 64) and labels.dtype == np.int32


def test_unsupported_formats_and_invalid_descriptions_are_clear_errors(tmp_path):
    from zoo.errors import InputError, SpecError
    from zoo.export.bioimageio_import import import_package

    rdf = _hand_written(tmp_path / "broken")
    text = yaml.safe_load(rdf.read_text())
    text["license"] = "NOT-A-LICENCE"
    rdf.write_text(yaml.safe_dump(text))
    with pytest.raises(SpecError) as info:
        import_package(rdf, tmp_path / "pkg")
    assert "not a valid bioimage.io model description" in str(info.value) and "license" in str(info.value)

    described = yaml.safe_load(rdf.read_text())
    described["license"] = "MIT"
    described["weights"] = {"torchscript": {"source": "weights.pt", "sha256": described["weights"]["pytorch_state_dict"]
                                            ["sha256"], "pytorch_version": "2.13"}}
    rdf.write_text(yaml.safe_dump(described, sort_keys=False))
    with pytest.raises(InputError, match="TorchScript is a program.*--weights torchscript"):
        import_package(rdf, tmp_path / "pkg2")       # code runs only when asked for
    with pytest.raises(InputError, match="weights: bioimage-zoo imports onnx, pytorch_state_dict, torchscript, not "
                                         "'keras_hdf5' .converting it needs tf2onnx"):
        import_package(rdf, tmp_path / "pkg3", weights="keras_hdf5")


def _hand_written_graph(folder: Path, size: dict | int | None = None) -> Path:
    """A bioimage.io package written by hand around an ONNX graph built node by node (no torch):
    channel-last axes ``byxc`` with two channels, a 3x3 convolution, fixed-mean preprocessing and
    a sigmoid. Nothing in it was made by bioimage-zoo."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper, save

    from zoo.hashing import sha256_file

    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["raw"], ["chw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["chw", "kernel"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("Transpose", ["relu"], ["prob"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["b", "y", "x", 2])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["b", "y", "x", 3])],
                              [numpy_helper.from_array(kernel, "kernel")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True)
    save(model, str(folder / "net.onnx"))

    x = (rng.random((1, 48, 40, 2)) * 1000 + 100).astype(np.float32)
    mean, std = [500.0, 600.0], [300.0, 250.0]
    session = ort.InferenceSession(str(folder / "net.onnx"), providers=["CPUExecutionProvider"])
    y = session.run(None, {"raw": ((x - np.float32(mean)) / np.float32(std)).astype(np.float32)})[0]
    y = 1 / (1 + np.exp(-y))
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y.astype(np.float32))
    (folder / "README.md").write_text("# conv\n\n## Validation\n\nby hand\n")
    # a cover of its own: without one, bioimage.io's validator draws one into a mkdtemp() it never removes
    import imageio.v3 as iio

    iio.imwrite(folder / "cover.png", (y[0, ..., 0] * 255).astype(np.uint8))

    def axes(channels, reference=None):
        def space(name):
            if reference:
                return {"type": "space", "id": name, "size": {"tensor_id": reference, "axis_id": name}, "halo": 1}
            return {"type": "space", "id": name, "size": size if size is not None else {"min": 8, "step": 4}}
        return [{"type": "batch"}, space("y"), space("x"), {"type": "channel", "channel_names": channels}]

    rdf = {"format_version": "0.5.4", "type": "model", "name": "Channel-last conv", "version": "0.3.1",
           "description": "hand-written ONNX graph for a test", "authors": [{"name": "B. Imager"}, {"name": "C. Lab"}],
           "cite": [{"text": "a paper", "doi": "10.1038/s41592-018-0216-7"}], "license": "MIT",
           "documentation": "README.md", "covers": ["cover.png"], "tags": ["segmentation", "nuclei"],
           "inputs": [{"id": "raw", "axes": axes(["dapi", "membrane"]),
                       "test_tensor": {"source": "x.npy", "sha256": sha256_file(folder / "x.npy")},
                       "data": {"type": "float32"},
                       "preprocessing": [{"id": "fixed_zero_mean_unit_variance",
                                          "kwargs": {"axis": "channel", "mean": mean, "std": std}}]}],
           "outputs": [{"id": "prob", "axes": axes(["a", "b", "c"], reference="raw"),
                        "test_tensor": {"source": "y.npy", "sha256": sha256_file(folder / "y.npy")},
                        "data": {"type": "float32"}, "postprocessing": [{"id": "sigmoid"}]}],
           "weights": {"onnx": {"source": "net.onnx", "sha256": sha256_file(folder / "net.onnx"), "opset_version": 17}}}
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder / "rdf.yaml"


def test_a_hand_written_onnx_package_imports_runs_publishes_and_exports(tmp_path):
    """ONNX-only import end to end: a foreign graph in channel-last layout becomes a package that
    ONNX Runtime runs tiled, that a registry accepts, that refuses torch and fine-tuning clearly,
    and that exports back to a description the official validator passes."""
    import numpy as np
    from bioimageio.core import test_model

    import zoo
    from zoo.errors import InputError
    from zoo.export.bioimageio_import import import_package
    from zoo.registry import LocalRegistry

    rdf = _hand_written_graph(tmp_path / "hand")
    assert test_model(str(rdf)).status == "passed"          # the hand-written package is itself valid
    package = import_package(rdf, tmp_path / "pkg")
    model = zoo.load(package)
    model.test()
    spec = model.spec
    assert spec.graph_only and spec.architecture_id == "onnx-graph" and spec.task == "segmentation"
    assert spec.name == "channel-last-conv" and spec.version == "0.3.1" and spec.license == "MIT"
    assert [a["name"] for a in spec.authors] == ["B. Imager", "C. Lab"] and spec.cite[0]["doi"].startswith("10.1038")
    assert spec.inputs[0].channels == ["dapi", "membrane"] and spec.inputs[0].halo == [1, 1]

    x = np.load(tmp_path / "hand" / "x.npy")[0]                  # yxc, as the biologist has it
    expected = np.load(tmp_path / "hand" / "y.npy")[0]
    got = model.predict(x, axes="yxc", tile=24)                  # tiled: 4 tiles, stitched
    assert got.shape == (48, 40, 3)
    np.testing.assert_allclose(got[1:-1, 1:-1], expected[1:-1, 1:-1], rtol=1e-4, atol=1e-5)

    with pytest.raises(InputError, match="ONNX graph without PyTorch weights.*runtime='onnx'"):
        zoo.load(package, runtime="torch")
    with pytest.raises(InputError, match="cannot fine-tune channel-last-conv@0.3.1: it is an ONNX graph"):
        zoo.finetune(model, tmp_path, tmp_path / "child")

    registry = LocalRegistry(tmp_path / "registry")
    zoo.api.publish(package, registry)                            # reproduces with ONNX Runtime only
    pulled_spec, pulled_root = registry.pull("channel-last-conv@0.3.1")
    assert pulled_spec.graph_only and (pulled_root / "weights" / "model.onnx").is_file()

    from zoo.export.bioimageio import export

    rdf_back, _ = export(package, tmp_path / "again")
    summary = test_model(str(rdf_back))
    assert summary.status == "passed", _failures(summary)
    assert list(yaml.safe_load(rdf_back.read_text())["weights"]) == ["onnx"]


def test_a_fixed_size_graph_predicts_tiled_at_that_size(tmp_path):
    """A graph that takes 48x40 only (a fixed-size description) imports and predicts an image of
    another size in tiles of exactly 48x40, the last padded by reflection; inside, the result is
    the graph's own (its one-pixel halo declared)."""
    import numpy as np
    import onnxruntime as ort

    import zoo
    from zoo.export.bioimageio_import import import_package

    rdf_path = _hand_written_graph(tmp_path / "hand", size=48)
    rdf = yaml.safe_load(rdf_path.read_text())
    for axis in rdf["inputs"][0]["axes"][1:3]:
        axis["size"] = 40 if axis["id"] == "x" else 48
    rdf_path.write_text(yaml.safe_dump(rdf, sort_keys=False))
    model = zoo.load(import_package(rdf_path, tmp_path / "pkg"))
    assert model.spec.inputs[0].shape_min == [48, 40] and model.spec.inputs[0].shape_step == [0, 0]
    model.test()
    calls = []
    runner = model.predictor.runner
    model._runner = lambda batch: calls.append(batch.shape) or runner(batch)
    image = (np.random.default_rng(3).random((100, 71, 2)) * 1000 + 100).astype(np.float32)
    got = model.predict(image, axes="yxc", batch_size=2)
    assert got.shape == (100, 71, 3) and calls and all(shape[1:] == (2, 48, 40) for shape in calls), calls
    session = ort.InferenceSession(str(tmp_path / "hand" / "net.onnx"), providers=["CPUExecutionProvider"])
    normalised = (image - np.float32([500.0, 600.0])) / np.float32([300.0, 250.0])
    whole = 1 / (1 + np.exp(-session.run(None, {"raw": normalised[None].astype(np.float32)})[0][0]))
    np.testing.assert_allclose(got[1:-1, 1:-1], whole[1:-1, 1:-1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("change, message", [
    ("external-data", "external file"),
    ("wrong-output", "does not reproduce the package's own test output"),
])
def test_onnx_imports_that_cannot_work_are_refused_clearly(change, message, tmp_path):
    import numpy as np
    import onnx

    from zoo.errors import ZooError
    from zoo.export.bioimageio_import import import_package
    from zoo.hashing import sha256_file

    rdf_path = _hand_written_graph(tmp_path / "hand")
    rdf = yaml.safe_load(rdf_path.read_text())
    folder = rdf_path.parent
    if change == "external-data":
        model = onnx.load(str(folder / "net.onnx"))
        onnx.save(model, str(folder / "net.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="kernel.bin", size_threshold=0)
        rdf["weights"]["onnx"]["sha256"] = sha256_file(folder / "net.onnx")
    if change == "wrong-output":
        np.save(folder / "y.npy", np.load(folder / "y.npy") * 0.5)
        rdf["outputs"][0]["test_tensor"]["sha256"] = sha256_file(folder / "y.npy")
    rdf_path.write_text(yaml.safe_dump(rdf, sort_keys=False))
    with pytest.raises(ZooError, match=message):
        import_package(rdf_path, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()
