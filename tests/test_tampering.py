"""Tampering: one flipped byte in any file of any standard package, in the cache or in the store,
is caught before the file is used; the error names the file; pulling again repairs the cache."""
from __future__ import annotations

import logging
import shutil

import pytest

import zoo
from zoo.errors import IntegrityError
from zoo.package import files
from zoo.registry import LocalRegistry, standard_store
from zoo import spec as specs

REFS = sorted(f"{p.parent.name}@{p.name}" for p in (standard_store() / "packages").glob("*/*"))


def flip(path, position: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(position * (len(data) - 1))] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tamper") / "store"
    shutil.copytree(standard_store(), root)
    return root


@pytest.mark.parametrize("ref", REFS)
def test_a_flipped_byte_in_any_cached_or_stored_file_is_caught(ref, store, tmp_path, caplog):
    registry = LocalRegistry(store, cache=tmp_path / "cache")
    spec, cached = registry.pull(ref)
    names = files.package_files(spec)
    assert len(names) >= 5
    pinned_by_spec = {f.file for f in spec.package_files()}
    for k, name in enumerate(names):
        before = (cached / name).read_bytes()
        flip(cached / name, position=(k + 1) / (len(names) + 1))
        if name in pinned_by_spec:        # weights, ONNX, test tensors, trust: a folder load refuses, naming it
            with pytest.raises(IntegrityError, match=name.replace(".", r"\.")):
                zoo.load(cached)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="zoo"):
            _, repaired = registry.pull(ref)       # every file: the index pins zoo.yaml, card and covers too
        assert any("damaged" in r.message and name in r.message for r in caplog.records), (name, caplog.text)
        assert repaired == cached and (cached / name).read_bytes() == before
    # in the store: a pull refuses, names the file, and leaves nothing in the cache
    shutil.rmtree(tmp_path / "cache")
    for name in names:
        target = registry.package_dir(spec.name, spec.version) / name
        original = target.read_bytes()
        flip(target)
        try:
            with pytest.raises(IntegrityError) as info:
                registry.pull(ref)
            assert name in str(info.value) or (name == specs.SPEC_FILE and specs.SPEC_FILE in str(info.value))
            assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*") if ".lock" not in p.name)
        finally:
            target.write_bytes(original)
