"""The bioimage.io corpus (issue 23.6, tests/data/bioimageio): what is committed may be, is whole,
and is what it says; scripts/check_bioimageio.py reads every description and never crashes on a
bad one. Slow tests rebuild the synthetic descriptions and the CAREamics exports and hold them to
bioimage.io's own test."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "bioimageio"
ENTRIES = json.loads((CORPUS / "corpus.json").read_text())["descriptions"]
PRESENT = [e for e in ENTRIES if not e.get("unavailable")]
REDISTRIBUTABLE = {"MIT", "CC-BY-4.0", "BSD-3-Clause", "CC0-1.0"}
PEER = REPO / ".bench" / "careamics-venv" / "bin" / "python"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def check():
    return _load("check_bioimageio", REPO / "scripts" / "check_bioimageio.py")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_only_redistributable_descriptions_are_committed_and_the_readme_credits_each():
    readme = (CORPUS / "README.md").read_text()
    for entry in ENTRIES:
        assert entry["name"] in readme, f"{entry['name']} is not in tests/data/bioimageio/README.md"
    for entry in PRESENT:
        assert entry["license"] in REDISTRIBUTABLE, entry
        assert (CORPUS / entry["rdf"]).is_file(), entry["rdf"]
        origin = entry["origin"]
        assert origin.get("commit") or origin.get("builder"), f"{entry['name']}: say where it came from"
    size = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert size < 17 * 2**20, f"the corpus grew to {size / 2**20:.1f} MiB"


@pytest.mark.parametrize("entry", PRESENT, ids=[e["name"] for e in PRESENT])
def test_every_local_file_a_description_pins_has_that_sha256(check, entry):
    rdf, where = check.read_rdf(CORPUS / entry["rdf"])
    pinned = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("source"), str) and node.get("sha256"):
                pinned.append((node["source"], node["sha256"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(rdf)
    for entry_w in (rdf.get("weights") or {}).values():      # format 0.4: the architecture file's own pin
        arch = entry_w.get("architecture") if isinstance(entry_w, dict) else None
        if isinstance(arch, str) and ".py:" in arch and entry_w.get("architecture_sha256"):
            pinned.append((arch.rsplit(":", 1)[0], entry_w["architecture_sha256"]))
    local = [(s, h) for s, h in pinned if "://" not in s]
    assert local, "nothing pinned"
    for source, sha in local:
        data = check._file(where, source)
        assert data is not None, f"{entry['name']}: {source} is missing"
        assert _sha(data) == sha, f"{entry['name']}: {source} does not match its sha256"


def test_every_description_is_valid_for_bioimageio_spec():
    import zipfile

    from bioimageio.spec import InvalidDescr, ValidationContext, load_description

    for entry in PRESENT:
        source = CORPUS / entry["rdf"]
        with ValidationContext(perform_io_checks=False, log_warnings=False):
            descr = load_description(zipfile.ZipFile(source) if source.suffix == ".zip" else source)
        assert not isinstance(descr, InvalidDescr), f"{entry['name']}: {descr.validation_summary}"
        assert descr.type == "model"


def test_the_feature_reader_sees_what_each_description_asks_for(check):
    f = {e["name"]: check.features(*check.read_rdf(CORPUS / e["rdf"])) for e in PRESENT}
    broad = f["unet2d_nuclei_broad"]
    assert broad["weights"] == {"onnx": "local", "pytorch_state_dict": "url", "torchscript": "local"}
    assert "raw space axis id (-> 'x')" in broad["default_ids"] and broad["inputs"] == ["raw: bcyx [b=1, y=512, x=512]"]
    assert f["unet2d_nuclei_broad_v0_4_9"]["format_version"] == "0.4.9"
    assert "axis scale 2.0" in f["unet2d_diff_output_shape"]["outputs"][0]
    assert "input tensor id (-> 'input')" in f["unet2d_diff_output_shape"]["default_ids"]
    assert len(f["unet2d_multi_tensor"]["inputs"]) == 2 and len(f["unet2d_multi_tensor"]["outputs"]) == 2
    assert f["unet2d_fixed_shape"]["inputs"] == ["input: bcyx [fixed [1, 1, 256, 256]]"]
    assert "scale [1.0, 0.0, 4.0, 4.0]" in f["upsample_test_model"]["outputs"][0]
    assert f["careamics_n2v_yx"]["state_dict_architecture"] == "library careamics.models.unet:UNet"
    assert f["careamics_n2v_zyx"]["inputs"] == ["input: bczyx [z=16, y=16, x=16]"]
    assert "fixed_zero_mean_unit_variance(axis=channel)" in f["careamics_n2v_yx"]["postprocessing"]
    assert f["synthetic_cropped_output_05"]["outputs"] == ["cropped: bcyx [y=raw.y-6, x=raw.x-6]"]
    assert f["synthetic_xy_order_fixed_04"]["inputs"][0].startswith("input: bxyc")
    assert f["synthetic_keras_only_04"]["weights"] == {"keras_hdf5": "local"}


def test_layouts_are_turned_into_the_zoos_axis_order(check):
    import numpy as np

    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)       # b x y c
    ours = check.to_zoo_layout(x, "bxyc")
    assert ours.shape == (2, 5, 4, 3) and ours[1, 4, 2, 0] == x[1, 0, 2, 4]
    assert check.to_zoo_layout(np.zeros((7, 8)), "yx").shape == (1, 1, 7, 8)
    assert check.to_zoo_layout(np.zeros((1, 6, 7, 8)), "bzyx").shape == (1, 1, 6, 7, 8)


def test_the_table_reports_a_broken_description_as_a_row(check, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("format_version: 0.5.4\ntype: model\nname: [unclosed\n")
    rows = check.check_one({"name": "broken", "rdf": str(broken), "license": "MIT"}, tmp_path, trust=False)
    assert rows[0]["imports"] == "no" and rows[0]["refusal"].startswith("unreadable:")
    missing = {"name": "gone", "license": "MIT", "unavailable": "weights absent"}
    assert check.check_one(missing, tmp_path, trust=False)[0]["refusal"] == "not obtainable: weights absent"


def test_one_description_goes_through_the_whole_row(check, tmp_path):
    """A description the importer takes today: imported, then run on its own test input."""
    entry = next(e for e in PRESENT if e["name"] == "synthetic_xy_order_fixed_04")
    rows = check.check_one(entry, tmp_path, trust=False)
    assert [r["weight_format"] for r in rows] == ["onnx"]
    assert {k: rows[0][k] for k in ("imports", "refusal")} == {"imports": "yes", "refusal": "-"}, rows
    assert rows[0]["reproduces"].startswith("yes") and rows[0]["max_abs_error"] < 1e-4


# ----------------------------------------------------------------------------- slow: rebuild and bioimageio test
def _bioimageio_test(rdf: Path, fmt: str) -> tuple[str, list[str]]:
    from bioimageio.core import test_model

    summary = test_model(str(rdf), weight_format=fmt)
    return summary.status, [f"{d.name}: {[e.msg[:200] for e in d.errors]}" for d in summary.details
                            if d.status == "failed"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["channel_last_04", "xy_order_fixed_04", "cropped_output_05", "volume_3d_05"])
def test_rebuilt_synthetic_descriptions_pass_bioimageio_test(tmp_path, name):
    synthetic = _load("bioimageio_synthetic", CORPUS / "synthetic.py")
    import yaml

    rdf = synthetic.build(name, tmp_path)
    for fmt in yaml.safe_load(rdf.read_text())["weights"]:
        status, failed = _bioimageio_test(rdf, fmt)
        assert status == "passed", failed

    def without_pins(node):
        if isinstance(node, dict):
            return {k: without_pins(v) for k, v in node.items() if k != "sha256"}
        return [without_pins(v) for v in node] if isinstance(node, list) else node

    rebuilt, committed = (yaml.safe_load(p.read_text()) for p in (rdf, CORPUS / "synthetic" / name / "bioimageio.yaml"))
    assert sorted(rebuilt["weights"]) == sorted(committed["weights"])
    for key in ("inputs", "outputs"):           # the committed description is what the builder writes
        assert without_pins(rebuilt[key]) == without_pins(committed[key]), key


@pytest.mark.slow
@pytest.mark.skipif(not PEER.is_file(), reason="the CAREamics peer venv is not set up "
                    "(python3 scripts/peer_careamics.py setup .bench/careamics-venv)")
@pytest.mark.parametrize("axes, size", [("YX", 64), ("ZYX", 16)])
def test_careamics_exports_build_and_read_like_the_committed_ones(check, tmp_path, axes, size):
    out = tmp_path / f"careamics_{axes}.zip"
    run = subprocess.run([str(PEER), str(CORPUS / "build_careamics.py"), str(out), "--axes", axes, "--size", str(size)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    built = check.features(*check.read_rdf(out))
    committed = check.features(*check.read_rdf(CORPUS / "careamics" / f"careamics_n2v_{axes.lower()}.zip"))
    for key in ("inputs", "outputs", "preprocessing", "postprocessing", "state_dict_architecture", "license"):
        assert built[key] == committed[key], key
    rows = check.check_one({"name": out.stem, "rdf": str(out), "license": "BSD-3-Clause"}, tmp_path, trust=True)
    assert rows and all(r["imports"] in ("yes", "no") for r in rows)


@pytest.mark.slow
def test_the_import_table_covers_the_whole_corpus_without_crashing(check, tmp_path, capsys):
    rows = check.imports_table(None, trust=True)
    names = {r["name"] for r in rows}
    assert names == {e["name"] for e in ENTRIES}
    assert all(r["imports"] in ("yes", "no", "n/a") for r in rows)
    assert "obtainable descriptions imported and reproducing" in capsys.readouterr().out
