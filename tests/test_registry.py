"""The local registry: push, pull, list, resolution, immutability, atomicity, verification."""
import json
import shutil
from pathlib import Path

import pytest

import zoo
from zoo import spec as specs
from zoo.errors import IntegrityError, NotFoundError, SpecError, VersionConflictError, InputError
from zoo.registry import LocalRegistry, default_registry
from zoo.registry import refs


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and ".lock" not in p.name}


def with_version(pkg: Path, version: str) -> Path:
    spec = specs.load(pkg)
    spec.version = version
    specs.write(spec, pkg)
    return pkg


@pytest.fixture
def registry(tmp_path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "reg", cache=tmp_path / "cache")


def test_push_pull_list(registry, tiny_package):
    result = registry.publish(tiny_package)
    assert result.created and result.ref == "n2v-tiny@0.1.0"
    assert [r["name"] for r in registry.entries()] == ["n2v-tiny"]
    spec, path = registry.pull("n2v-tiny")
    assert spec.ref == "n2v-tiny@0.1.0" and (path / "weights" / "model.onnx").is_file()
    assert path.is_relative_to(registry.cache)
    index = json.loads((registry.root / "index.json").read_text())
    assert index["n2v-tiny"]["0.1.0"]["task"] == "restoration/denoising"


def test_second_pull_reuses_the_cache(registry, tiny_package):
    registry.publish(tiny_package)
    _, first = registry.pull("n2v-tiny@0.1.0")
    stamp = (first / "weights" / "model.onnx").stat().st_mtime_ns
    _, second = registry.pull("n2v-tiny")
    assert first == second and (second / "weights" / "model.onnx").stat().st_mtime_ns == stamp


def test_identical_republish_is_a_no_op_and_different_content_conflicts(registry, package_copy, tiny_package):
    registry.publish(tiny_package)
    before = snapshot(registry.root)
    assert not registry.publish(package_copy).created
    spec = specs.load(package_copy)
    spec.description = "changed description, same version"
    specs.write(spec, package_copy)
    with pytest.raises(VersionConflictError, match=r"n2v-tiny@0.1.0 is already published.*0\.1\.1"):
        registry.publish(package_copy)
    assert snapshot(registry.root) == before


def test_wrong_sha256_is_refused_and_registry_unchanged(registry, package_copy):
    (package_copy / "weights" / "model.safetensors").write_bytes(b"\0" * 100)
    before = snapshot(registry.root) if registry.root.exists() else {}
    with pytest.raises(IntegrityError, match="model.safetensors"):
        registry.publish(package_copy)
    assert (snapshot(registry.root) if registry.root.exists() else {}) == before


@pytest.mark.parametrize("breakage, error", [
    (lambda p: (p / "zoo.yaml").write_text("name: [unclosed\n"), SpecError),
    (lambda p: (p / "test" / "input.npy").unlink(), IntegrityError),
    (lambda p: (p / "zoo.yaml").write_text((p / "zoo.yaml").read_text().replace("id: n2v", "id: nope")),
     zoo.errors.UnknownArchitectureError),
])
def test_bad_packages_leave_registry_as_it_was(registry, tiny_package, package_copy, breakage, error):
    registry.publish(tiny_package)
    before = snapshot(registry.root)
    breakage(with_version(package_copy, "0.2.0"))
    with pytest.raises(error):
        registry.publish(package_copy)
    assert snapshot(registry.root) == before


def test_versions_resolve_semantically(registry, tiny_package, tmp_path):
    for version in ["0.1.0", "0.2.0", "0.10.0", "1.0.0-rc.1"]:
        pkg = with_version(shutil.copytree(tiny_package, tmp_path / version), version)
        registry.publish(pkg)
    assert registry.resolve("n2v-tiny") == ("n2v-tiny", "0.10.0")           # not "0.2.0" (string order)
    assert registry.resolve("n2v-tiny@latest")[1] == "0.10.0"
    assert registry.resolve("n2v-tiny@^0.1")[1] == "0.1.0"
    assert registry.resolve("n2v-tiny@0.2.0")[1] == "0.2.0"
    assert registry.resolve("n2v-tiny@>=0.2,<1")[1] == "0.10.0"
    with pytest.raises(NotFoundError, match="available: 0.1.0, 0.2.0, 0.10.0"):
        registry.resolve("n2v-tiny@^2.0")
    with pytest.raises(NotFoundError, match="no package named 'absent'"):
        registry.resolve("absent")
    with pytest.raises(InputError, match="bad package reference"):
        refs.parse("Bad Name@1")


def test_pull_verifies_store_and_repairs_cache(registry, tiny_package):
    registry.publish(tiny_package)
    _, cached = registry.pull("n2v-tiny")
    (cached / "weights" / "model.onnx").write_bytes(b"corrupt")       # damaged cache: repaired
    _, again = registry.pull("n2v-tiny")
    assert zoo.load(again).test() <= 1
    stored = registry.package_dir("n2v-tiny", "0.1.0") / "weights" / "model.onnx"
    stored.write_bytes(b"tampered")                                   # tampered store: refused
    shutil.rmtree(registry.cache)
    with pytest.raises(IntegrityError, match="model.onnx"):
        registry.pull("n2v-tiny")
    assert not any(registry.cache.rglob("model.onnx")), "an unverified file must not stay in the cache"


def test_interrupted_publish_leftovers_are_invisible(registry, tiny_package):
    orphan = registry.package_dir("n2v-tiny", "0.1.0")
    orphan.mkdir(parents=True)
    (orphan / "zoo.yaml").write_text("half-written")
    assert registry.entries() == []
    registry.publish(tiny_package)
    assert registry.pull("n2v-tiny")[0].version == "0.1.0"


def test_default_registry_is_seeded_with_the_standard_zoo(zoo_home):
    from zoo.registry import standard_store

    shipped = json.loads((standard_store() / "index.json").read_text())
    reg = default_registry()
    assert reg.root.is_relative_to(zoo_home)
    assert set(shipped) <= {r["name"] for r in reg.entries()}


def test_versions_outside_the_supported_semver_subset_are_refused_by_the_schema(tiny_package):
    import yaml

    data = yaml.safe_load((tiny_package / "zoo.yaml").read_text())
    for bad in ("1.0.0-foo", "1.0.0-1", "1.0", "01.0.0"):
        data["version"] = bad
        with pytest.raises(SpecError, match="version"):
            specs.validate(data)


def test_caret_prefers_stable_releases(registry, tiny_package, tmp_path):
    for version in ["1.4.0", "1.5.0-rc.1"]:
        registry.publish(with_version(shutil.copytree(tiny_package, tmp_path / version), version))
    assert registry.resolve("n2v-tiny@^1.2")[1] == "1.4.0"
    assert registry.resolve("n2v-tiny@1.5.0-rc.1")[1] == "1.5.0-rc.1"
