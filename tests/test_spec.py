"""The spec: schema, typed view, clear errors that name the field."""
import copy

import pytest
import yaml

from zoo import spec as specs
from zoo.errors import SpecError
from conftest import N2V_BLUEPRINT


def blueprint_dict() -> dict:
    return yaml.safe_load(N2V_BLUEPRINT.read_text())


def test_blueprint_loads_into_typed_view():
    spec = specs.load(N2V_BLUEPRINT)
    assert spec.kind == "blueprint" and spec.architecture_id == "n2v"
    assert spec.inputs[0].spatial_axes == "yx" and spec.inputs[0].n_channels == 1
    assert spec.inputs[0].preprocessing[0].op == "percentile_normalize"
    assert spec.inputs[0].halo == [32, 32]


def test_round_trip_is_lossless(tiny_package):
    spec = specs.load(tiny_package)
    again = specs.validate(yaml.safe_load(specs.dump(spec)))
    assert again == spec
    assert spec.kind == "package" and spec.weights.onnx_opset >= 17
    assert spec.training.data["n_train"] >= 1 and len(spec.training.data["fingerprint"]) == 64


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["inputs"][0].update(axes="bxy"), "inputs[0].axes"),
    (lambda d: d.update(version="1.0"), "version"),
    (lambda d: d.update(name="Has Spaces"), "name"),
    (lambda d: d["architecture"].pop("id"), "architecture"),
    (lambda d: d["inputs"][0].update(dtype="float128"), "inputs[0].dtype"),
    (lambda d: d.update(unexpected=1), "(top level)"),
    (lambda d: d["inputs"][0]["preprocessing"][0].update(op="Bad Op"), "inputs[0].preprocessing[0].op"),
    (lambda d: d.update(kind="package"), "(top level)"),      # a package needs weights, test, training
    (lambda d: d["inputs"][0].update(halo=[8]), "inputs[0].halo"),
])
def test_schema_violations_name_the_field(mutate, field):
    data = blueprint_dict()
    mutate(data)
    with pytest.raises(SpecError) as err:
        specs.validate(data)
    assert any(p.startswith(field) for p in err.value.problems), err.value.problems


def test_axes_error_says_what_was_expected():
    data = blueprint_dict()
    data["inputs"][0]["axes"] = "bxy"
    with pytest.raises(SpecError, match=r"inputs\[0\]\.axes: 'bxy' does not match"):
        specs.validate(data)


def test_malformed_yaml_names_the_line(tmp_path):
    bad = tmp_path / "zoo.yaml"
    bad.write_text("name: x\ninputs: [\n  - a: b\n")
    with pytest.raises(SpecError, match=r"malformed YAML at line \d+"):
        specs.load(bad)


def test_non_mapping_and_missing_file(tmp_path):
    (tmp_path / "zoo.yaml").write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        specs.load(tmp_path)
    with pytest.raises(SpecError, match="no spec file"):
        specs.load(tmp_path / "nowhere")


def test_invalid_spec_is_never_written(tmp_path):
    spec = specs.load(N2V_BLUEPRINT)
    spec.version = "not-semver"
    with pytest.raises(SpecError):
        specs.write(spec, tmp_path / "zoo.yaml")
    assert not (tmp_path / "zoo.yaml").exists()


def test_paths_in_spec_cannot_escape(tmp_path, tiny_package):
    data = yaml.safe_load((tiny_package / "zoo.yaml").read_text())
    for bad in ("../outside.onnx", "/etc/passwd"):
        d = copy.deepcopy(data)
        d["weights"]["onnx"]["file"] = bad
        with pytest.raises(SpecError, match=r"weights\.onnx\.file"):
            specs.validate(d)


def test_schema_is_draft_2020_12_and_shipped():
    schema = specs.schema()
    assert schema["$schema"].endswith("2020-12/schema")
    for key in ("name", "version", "authors", "license", "cite", "tags", "task", "architecture", "inputs",
                "outputs", "weights", "training", "test"):
        assert key in schema["properties"]
