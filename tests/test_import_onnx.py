"""Publishing a model trained elsewhere (issue 21, item 11): `zoo import onnx` builds a complete
package from a plain-PyTorch network's ONNX export, `zoo bump` makes its next version,
`zoo validate` says where a test-output mismatch lies, and docs/publishing.md lists the ops of
the registry as they are."""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, synthetic_nuclei

HALO = 8


def zoo(capsys, *args) -> tuple[int, str, str]:
    """``zoo ARGS`` in this process: (exit code, stdout, stderr); argparse's exits included."""
    from zoo.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def plain_net(seed: int = 0, channels_last: bool = False):
    """A small conv net written in plain PyTorch (receptive field 2 px each side), nothing from the zoo."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 1, 3, padding=1))

        def forward(self, x):
            if channels_last:
                return self.body(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            return self.body(x)

    torch.manual_seed(seed)
    return Net().eval()


def export(net, path: Path, channels_last: bool = False, dynamic_batch: bool = True) -> Path:
    import torch

    shape, dims = ((1, 64, 64, 1), {1: "y", 2: "x"}) if channels_last else ((1, 1, 64, 64), {2: "y", 3: "x"})
    dynamic = {**({0: "batch"} if dynamic_batch else {}), **dims}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(shape),), str(path), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": dynamic, "output": dynamic})
    return path


def run_net(net, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    return export(plain_net(), tmp_path_factory.mktemp("onnx") / "plain-unet.onnx")


def import_onnx(capsys, onnx_file: Path, out: Path, *extra) -> Path:
    code, stdout, err = zoo(capsys, "import", "onnx", onnx_file, "--out", out, "--name", "plain-net", "--axes", "bcyx",
                            "--halo", HALO, *extra)
    assert code == 0, err
    assert "package written" in stdout
    return out


def test_import_onnx_builds_a_complete_package_that_validates_first_time(capsys, tmp_path, onnx_file):
    pkg = import_onnx(capsys, onnx_file, tmp_path / "pkg", "--input-op", "percentile_normalize:low=1,high=99.8",
                      "--output-op", "restore_input_scale:input=input", "--author", "A. Developer")
    for rel in ("zoo.yaml", "README.md", "cover.png", "test/input.npy", "test/output.npy", "weights/model.onnx"):
        assert (pkg / rel).is_file(), rel
    spec = yaml.safe_load((pkg / "zoo.yaml").read_text())
    assert spec["architecture"]["id"] == "onnx-graph" and spec["task"] == "restoration"
    assert spec["inputs"][0]["halo"] == [HALO, HALO]
    assert spec["inputs"][0]["preprocessing"] == [{"op": "percentile_normalize", "params": {"low": 1, "high": 99.8}}]
    assert spec["outputs"][0]["postprocessing"] == [{"op": "restore_input_scale", "params": {"input": "input"}}]
    assert spec["training"]["data"]["fingerprint"] == sha256(onnx_file)
    assert spec["weights"]["onnx"]["sha256"] == sha256(pkg / "weights/model.onnx")
    assert np.load(pkg / "test/input.npy").shape == (1, 1, 128, 128)      # the documented synthetic input
    assert "# plain-net 0.1.0" in (pkg / "README.md").read_text()

    code, out, err = zoo(capsys, "validate", pkg)
    assert code == 0, err
    assert "onnx reproduces the test tensors" in out and "valid package" in out


def test_the_python_api_imports_a_channels_last_graph_with_its_own_test_input(tmp_path):
    from zoo.export.onnx_import import import_onnx as api_import
    from zoo.model import from_path

    net = plain_net(seed=1, channels_last=True)
    graph = export(net, tmp_path / "byxc.onnx", channels_last=True)
    image, _ = synthetic_nuclei(shape=(80, 96), seed=3)
    np.save(tmp_path / "x.npy", image)
    pkg = api_import(graph, tmp_path / "pkg", name="plain-byxc", axes="byxc", halo=HALO,
                     test_input=tmp_path / "x.npy", output_ops=["sigmoid"])
    model = from_path(pkg, device="cpu")
    assert model.test() <= 1.0
    assert model.spec.task == "segmentation" and np.load(pkg / "test/input.npy").shape == (1, 1, 80, 96)
    logits = run_net(net, np.pad(image.astype(np.float32), HALO, mode="reflect")[None, :, :, None])
    expected = 1 / (1 + np.exp(-logits[0, HALO:-HALO, HALO:-HALO, 0]))
    np.testing.assert_allclose(model.predict(image), expected, rtol=1e-4, atol=1e-5)


def test_an_imported_package_is_pushed_pulled_and_predicted_through_a_registry(capsys, tmp_path, zoo_home,
                                                                                onnx_file):
    import tifffile

    pkg = import_onnx(capsys, onnx_file, tmp_path / "pkg")
    registry = tmp_path / "registry"
    code, out, err = zoo(capsys, "--registry", registry, "push", pkg)
    assert code == 0 and "plain-net@0.1.0 published" in out, err
    code, out, err = zoo(capsys, "--registry", registry, "pull", "plain-net")
    assert code == 0 and out.startswith("plain-net@0.1.0"), err
    image, _ = synthetic_nuclei(shape=(100, 90), seed=5)
    tifffile.imwrite(tmp_path / "in.tif", image)
    code, out, err = zoo(capsys, "--registry", registry, "predict", "plain-net", tmp_path / "in.tif",
                         "-o", tmp_path / "out.tif", "--device", "cpu")
    assert code == 0, err
    expected = run_net(plain_net(), np.pad(image.astype(np.float32), HALO, mode="reflect")[None, None])
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out.tif"), expected[0, 0, HALO:-HALO, HALO:-HALO],
                               rtol=1e-4, atol=1e-3)


def test_bump_recomputes_a_new_version_and_refuses_reusing_the_number(capsys, tmp_path, zoo_home, onnx_file):
    old = import_onnx(capsys, onnx_file, tmp_path / "v1", "--version", "1.0.0")
    old_yaml = sha256(old / "zoo.yaml")
    retrained = export(plain_net(seed=7), tmp_path / "retrained.onnx")

    code, _, err = zoo(capsys, "bump", old, "--version", "1.0.0", "--out", tmp_path / "same", "--weights", retrained)
    assert code == 2 and "not higher" in err and "1.0.1" in err, err
    assert not (tmp_path / "same").exists()

    code, out, err = zoo(capsys, "bump", old, "--version", "1.1.0", "--out", tmp_path / "v2", "--weights", retrained,
                         "--halo", 4)
    assert code == 0 and "plain-net@1.1.0" in out, err
    new = yaml.safe_load((tmp_path / "v2" / "zoo.yaml").read_text())
    assert new["version"] == "1.1.0" and new["inputs"][0]["halo"] == [4, 4]
    assert new["training"]["data"]["fingerprint"] == sha256(retrained)
    assert new["training"]["config"]["previous_version"] == "plain-net@1.0.0"
    assert new["test"]["outputs"][0]["sha256"] == sha256(tmp_path / "v2" / "test/output.npy")
    assert not np.allclose(np.load(tmp_path / "v2" / "test/output.npy"), np.load(old / "test/output.npy"))
    assert sha256(old / "zoo.yaml") == old_yaml                              # the old version is left alone
    for version in (old, tmp_path / "v2"):
        code, _, err = zoo(capsys, "validate", version)
        assert code == 0, err
    registry = tmp_path / "registry"
    for version in (old, tmp_path / "v2"):
        assert zoo(capsys, "--registry", registry, "push", version)[0] == 0
    code, out, _ = zoo(capsys, "--registry", registry, "pull", "plain-net")
    assert out.startswith("plain-net@1.1.0")


def _pin_test_output(pkg: Path, output: np.ndarray) -> None:
    """Replace a package's test output and its sha256 in zoo.yaml, as a hand-made package would."""
    np.save(pkg / "test/output.npy", output.astype(np.float32))
    spec = yaml.safe_load((pkg / "zoo.yaml").read_text())
    spec["test"]["outputs"][0]["sha256"] = sha256(pkg / "test/output.npy")
    (pkg / "zoo.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def test_validate_says_a_mismatch_lies_at_the_border_when_the_output_was_zero_padded(capsys, tmp_path):
    from zoo.model import from_path
    from zoo.runtime import ops

    pkg = tmp_path / "n2v"
    shutil.copytree(REPO / "zoo/standard/packages/n2v-w2s/0.1.0", pkg)
    model = from_path(pkg, device="cpu")
    inp, out = model.spec.inputs[0], model.spec.outputs[0]
    x, context = np.load(pkg / "test/input.npy"), {}
    network_input = ops.apply(inp.preprocessing, x, context, inp.name, ops.PREPROCESSING)
    zero_padded = model.runner(network_input)     # the bare image: the network's own zero padding, no reflection
    _pin_test_output(pkg, ops.apply(out.postprocessing, zero_padded, context, out.name, ops.POSTPROCESSING))

    code, _, err = zoo(capsys, "validate", pkg)
    assert code == 2 and "does not reproduce the test output" in err, err
    assert "within 16 px of the border" in err and "pads by reflection" in err, err


def test_validate_says_a_mismatch_is_spread_over_the_image(capsys, tmp_path, onnx_file):
    pkg = import_onnx(capsys, onnx_file, tmp_path / "pkg")
    _pin_test_output(pkg, np.load(pkg / "test/output.npy") * 1.5 + 1.0)
    code, _, err = zoo(capsys, "validate", pkg)
    assert code == 2 and "spread over the image" in err and "border:" not in err, err


@pytest.mark.parametrize("change, message", [
    (["--input-op", "sharpen"], "unknown op 'sharpen'"),
    (["--output-op", "percentile_normalize"], "unknown op 'percentile_normalize'"),
    (["--input-op", "percentile_normalize:low"], "NAME:KEY=VALUE"),
    (["--axes", "bcxy_"], "expected the graph's axes"),
    (["--name", "Plain Net"], "name"),
])
def test_imports_that_cannot_work_are_refused_clearly(capsys, tmp_path, onnx_file, change, message):
    options = {"--name": "plain-net", "--axes": "bcyx"}
    args = [a for k, v in options.items() if k not in change for a in (k, v)] + change
    code, _, err = zoo(capsys, "import", "onnx", onnx_file, "--out", tmp_path / "pkg", *args)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "pkg").exists()


def test_a_graph_with_a_fixed_batch_size_is_refused_naming_the_fix(capsys, tmp_path):
    graph = export(plain_net(), tmp_path / "fixed.onnx", dynamic_batch=False)
    code, _, err = zoo(capsys, "import", "onnx", graph, "--out", tmp_path / "pkg", "--name", "n", "--axes", "bcyx")
    assert code == 2 and "fixes the batch size to 1" in err and "dynamic" in err, err


def test_publishing_doc_is_current_with_the_op_registry_and_the_schema():
    from zoo.runtime.ops import POSTPROCESSING, PREPROCESSING

    script = REPO / "scripts" / "gen_publishing_doc.py"
    assert script.is_file(), "scripts/gen_publishing_doc.py is missing"
    spec = importlib.util.spec_from_file_location("gen_publishing_doc", script)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    text = (REPO / "docs" / "publishing.md").read_text(encoding="utf-8")
    for section in generator.SECTIONS:
        assert generator.current(text, section) == generator.render(section), \
            f"docs/publishing.md: the {section} section is out of date; run python scripts/gen_publishing_doc.py"
    for name in {*PREPROCESSING, *POSTPROCESSING}:
        assert f"| `{name}` |" in text
    for way in ("zoo train", "zoo import onnx", "zoo import bioimageio", "zoo bump", "reflection"):
        assert way in text
