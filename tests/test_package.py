"""A trained package is complete, its ONNX graph is real and both runners reproduce its tests."""
import numpy as np
import onnx
import pytest

import zoo
from zoo import spec as specs
from zoo.errors import IntegrityError, ReproducibilityError
from zoo.model import Model


def test_package_is_complete(tiny_package):
    spec = specs.load(tiny_package)
    for rel in ["zoo.yaml", "README.md", "cover.png", spec.weights.safetensors.file, spec.weights.onnx.file,
                spec.test.inputs[0].file, spec.test.outputs[0].file]:
        assert (tiny_package / rel).is_file(), rel
    card = (tiny_package / "README.md").read_text()
    assert spec.name in card and "## Training" in card and spec.weights.onnx.sha256 in card
    stats = spec.training.statistics
    assert stats["std"] > 0 and stats["percentiles"]["p99"] > stats["percentiles"]["p1"]
    assert spec.training.parent is None and "val_loss" in spec.training.metrics


def test_onnx_graph_has_dynamic_batch_and_spatial_axes(tiny_package):
    spec = specs.load(tiny_package)
    graph = onnx.load(str(tiny_package / spec.weights.onnx.file)).graph
    assert max(op.version for op in onnx.load(str(tiny_package / spec.weights.onnx.file)).opset_import) >= 17
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_runners_reproduce_test_tensors(tiny_package, runtime):
    ratio = zoo.load(tiny_package, runtime=runtime, device="cpu").test()
    assert 0 <= ratio <= 1


def test_runners_agree_on_other_sizes_and_batches(tiny_package):
    torch_model = zoo.load(tiny_package, runtime="torch", device="cpu")
    onnx_model = zoo.load(tiny_package, runtime="onnx", device="cpu")
    x = np.random.default_rng(0).random((3, 1, 72, 100)).astype(np.float32) * 300
    a, b = torch_model.predict_tensor(x), onnx_model.predict_tensor(x)
    assert a.shape == x.shape
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.ptp(a))


def test_changed_test_output_is_detected(package_copy):
    spec = specs.load(package_copy)
    out = package_copy / spec.test.outputs[0].file
    np.save(out, np.load(out) + 10.0)
    with pytest.raises(IntegrityError, match="sha256 mismatch for 'test/output.npy'"):
        zoo.load(package_copy)
    # even with matching hashes, a wrong expectation is a reproducibility failure
    from zoo.hashing import sha256_file

    spec.test.outputs[0].sha256 = sha256_file(out)
    specs.write(spec, package_copy)
    with pytest.raises(ReproducibilityError, match="does not reproduce"):
        zoo.load(package_copy, runtime="onnx").test()


def test_missing_weights_file(package_copy):
    (package_copy / "weights" / "model.onnx").unlink()
    with pytest.raises(IntegrityError, match="missing file 'weights/model.onnx'"):
        zoo.load(package_copy)


def test_unknown_architecture_in_package(package_copy):
    text = (package_copy / "zoo.yaml").read_text().replace("id: n2v", "id: stardist-3000")
    (package_copy / "zoo.yaml").write_text(text)
    with pytest.raises(zoo.errors.UnknownArchitectureError, match="'stardist-3000'"):
        zoo.load(package_copy)


def test_blueprint_cannot_predict():
    from conftest import N2V_BLUEPRINT

    with pytest.raises(zoo.errors.InputError, match="blueprint"):
        Model(specs.load(N2V_BLUEPRINT), N2V_BLUEPRINT.parent)


def test_weights_are_safetensors_not_pickle(tiny_package):
    data = (tiny_package / "weights" / "model.safetensors").read_bytes()
    assert not data.startswith(b"\x80") and b"PK\x03\x04" not in data[:4]
    header_len = int.from_bytes(data[:8], "little")
    assert data[8:9] == b"{" and header_len < len(data)


def test_exact_tolerance_passes_when_outputs_are_identical(package_copy):
    spec = specs.load(package_copy)
    spec.test.rtol, spec.test.atol = 0.0, 0.0
    specs.write(spec, package_copy)
    assert zoo.load(package_copy, runtime="torch", device="cpu").test() == 0.0


def test_build_refuses_to_replace_a_folder_that_is_not_a_package(tmp_path, tiny_blueprint):
    from zoo.package.build import build
    from zoo.errors import InputError

    precious = tmp_path / "my_data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a package"):
        build(tiny_blueprint, None, precious, None, None, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"
