"""Exports that run anywhere (issue 23.5): a bioimage.io export needs no bioimage-zoo.

- The ``pytorch_state_dict`` architecture is a standalone source file, assembled from the
  project's own network code, that imports torch and the standard library only. For every
  standard package (every architecture the standard zoo ships) that file, imported on its own
  in a Python where ``import zoo`` fails, builds a network that loads the package's weights with
  ``strict=True`` and gives the zoo network's output.
- The export carries ``torchscript`` weights too.
- ``bioimageio test`` passes with every weight format in a Python where bioimage-zoo cannot be
  imported, offline: the validator runs in a subprocess started with ``-I -S`` from an empty
  folder, with the site-packages folder added by hand (so neither the editable finder nor any
  ``.pth`` entry is installed), that first asserts ``find_spec("zoo") is None``, refuses every
  socket connection and records the attempts.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import yaml

from zoo.export.bioimageio import export
from zoo.registry import standard_store

REPO = Path(__file__).resolve().parents[1]
PACKAGES = sorted((standard_store() / "packages").glob("*/*"))
# classifiers resample onto a canvas, which bioimage.io ops cannot express: their export is refused
STANDARD = [p for p in PACKAGES if not yaml.safe_load((p / "zoo.yaml").read_text())["task"].startswith("classification")]
FAST = standard_store() / "packages" / "unet-dsb-2d" / "0.2.1"       # the 3-class U-Net: small, instance step
FORMATS = ("onnx", "pytorch_state_dict", "torchscript")

# Runs in the clean interpreter. argv: site-packages, repository, then the job (a JSON file).
PRELUDE = r'''
import importlib.util, json, socket, sys
site_packages, repo, job = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path[:] = [p for p in sys.path if p and not p.startswith(repo)] + [site_packages]
assert not any("editable" in type(finder).__module__ for finder in sys.meta_path), sys.meta_path
assert importlib.util.find_spec("zoo") is None, "bioimage-zoo is importable: the check would prove nothing"
attempts = []
def _refuse(*args, **kwargs):
    attempts.append(repr(args[1:] or args)[:200])
    raise OSError("this test is offline: no network")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
job = json.load(open(job))

def finish(result):
    result["network_attempts"] = attempts
    result["zoo_modules"] = sorted(m for m in sys.modules if m == "zoo" or m.startswith("zoo."))
    print("RESULT " + json.dumps(result))
'''

VALIDATE = PRELUDE + r'''
from bioimageio.core import test_model
results = {}
for name, rdf in job["rdfs"].items():
    summary = test_model(rdf)
    details = [{"name": d.name, "status": d.status, "errors": [e.msg[:300] for e in d.errors]}
               for d in summary.details]
    results[name] = {"status": summary.status, "details": details}
finish({"results": results})
'''

STANDALONE = PRELUDE + r'''
import numpy as np
import torch
results = {}
for name, case in job["cases"].items():
    spec = importlib.util.spec_from_file_location("standalone_" + str(len(results)), case["source"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    network = getattr(module, case["callable"])(**case["kwargs"]).eval()
    missing = network.load_state_dict(torch.load(case["weights"], weights_only=True), strict=True)
    with torch.no_grad():
        y = network(torch.from_numpy(np.load(case["input"]))).numpy()
    expected = np.load(case["expected"])
    results[name] = {"shape": list(y.shape), "expected_shape": list(expected.shape),
                     "max_abs_diff": float(np.abs(y - expected).max()) if y.shape == expected.shape else None,
                     "close": bool(y.shape == expected.shape and np.allclose(y, expected, rtol=1e-5, atol=1e-5)),
                     "keys": [list(missing.missing_keys), list(missing.unexpected_keys)]}
finish({"results": results})
'''


def clean_python(script: str, job: dict, tmp_path: Path, timeout: int = 900) -> dict:
    """Run ``script`` in a Python of this venv that cannot import bioimage-zoo; its result."""
    work = tmp_path / "clean"
    work.mkdir(exist_ok=True)
    (work / "job.json").write_text(json.dumps(job))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
           "BIOIMAGEIO_CACHE_PATH": str(work / "cache"), "OMP_NUM_THREADS": os.environ.get("ZOO_THREADS", "2")}
    command = [sys.executable, "-I", "-S", "-c", script, sysconfig.get_paths()["purelib"], str(REPO),
               str(work / "job.json")]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["zoo_modules"] == [], out["zoo_modules"]              # bioimage-zoo never came in
    assert out["network_attempts"] == [], out["network_attempts"]    # nothing reached for the network
    return out["results"]


def test_the_clean_python_really_cannot_import_zoo_and_the_guard_would_notice(tmp_path):
    """The prelude's own check fails where bioimage-zoo is importable (site processed, so the
    editable finder is installed): the clean tests cannot pass by accident."""
    (tmp_path / "job.json").write_text("{}")
    guard = PRELUDE + "\nfinish({})\n"
    args = [guard, sysconfig.get_paths()["purelib"], str(REPO), str(tmp_path / "job.json")]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    with_site = subprocess.run([sys.executable, "-I", "-c", *args], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=120)
    assert with_site.returncode != 0 and "bioimage-zoo is importable" in with_site.stderr
    clean = subprocess.run([sys.executable, "-I", "-S", "-c", *args], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
    assert clean.returncode == 0 and '"zoo_modules": []' in clean.stdout, clean.stderr[-2000:]


def per_format(details: list[dict]) -> dict[str, str]:
    """Each weight format's outcome: passed when it reproduced the test output and every other
    check naming it passed too."""
    out = {}
    for fmt in FORMATS:
        mine = [d for d in details if f"({fmt})" in d["name"] or f"Run {fmt} inference" in d["name"]]
        reproduced = any(d["name"].startswith("Reproduce test outputs") and d["status"] == "passed" for d in mine)
        failed = [f"{d['name']}: {d['errors']}" for d in mine if d["status"] == "failed"]
        out[fmt] = "passed" if reproduced and not failed else ("; ".join(failed) or "not tested")
    return out


def _failures(details: list[dict]) -> list[str]:
    return [f"{d['name']}: {d['errors']}" for d in details if d["status"] == "failed"]


# ----------------------------------------------------------------------------- the standalone source
def test_the_standalone_architecture_of_every_standard_package_loads_its_weights_and_matches(tmp_path):
    """For every architecture the standard zoo ships, in every configuration it ships (classifiers
    included, whose export is refused for another reason), with the newest package's weights: the
    standalone file, imported on its own where ``zoo`` cannot be imported, builds a network that
    loads the weights strictly and gives the zoo network's output to 1e-5."""
    import torch

    from zoo import architectures, spec as specs
    from zoo.export import torch_source
    from zoo.package import files, readers

    cases, shipped = {}, {}
    for package in reversed(PACKAGES):        # newest version first: one package per architecture and params
        spec = specs.load(package)
        arch = architectures.get(spec.architecture_id)
        key = json.dumps([spec.architecture_id, spec.architecture_params], sort_keys=True)
        if key in shipped:
            continue
        shipped[key] = spec.architecture_id
        text = torch_source.source(arch.network)
        assert {m.split(".")[0] for m in torch_source.imports(text)} <= {"torch", "__future__", "typing"}
        folder = tmp_path / spec.name / spec.version
        folder.mkdir(parents=True)
        (folder / "network.py").write_text(text)
        state = readers.state_dict(files.safe_join(package, spec.weights.safetensors.file))
        torch.save(state, folder / "weights.pt")
        network = arch.build_network(spec.architecture_params).eval()
        network.load_state_dict(state, strict=True)
        shape = np.load(files.safe_join(package, spec.test.inputs[0].file), mmap_mode="r").shape
        shape = (1, spec.inputs[0].n_channels, *[min(n, 64) for n in shape[-len(spec.inputs[0].spatial_axes):]])
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            np.save(folder / "expected.npy", network(torch.from_numpy(x)).numpy())
        np.save(folder / "input.npy", x)
        cases[spec.ref] = {"source": str(folder / "network.py"), "callable": arch.network.partition(":")[2],
                           "kwargs": spec.architecture_params, "weights": str(folder / "weights.pt"),
                           "input": str(folder / "input.npy"), "expected": str(folder / "expected.npy")}
    # every architecture the standard zoo ships, among the registered ones
    ids = set(shipped.values())
    assert ids <= set(architectures.available()) and {"care", "n2v", "n2v2", "unet-seg", "stardist", "cellpose",
                                                      "classifier"} <= ids
    results = clean_python(STANDALONE, {"cases": cases}, tmp_path)
    assert set(results) == set(cases)
    bad = {ref: r for ref, r in results.items() if not r["close"] or r["keys"] != [[], []]}
    assert not bad, bad


def _fake_architecture(tmp_path: Path, monkeypatch, body: str) -> str:
    """A module ``fakenet_<n>`` on the path with ``body`` as its source; its name."""
    name = f"fakenet_{abs(hash(body)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.parametrize("body, message", [
    ("import numpy\n\ndef build():\n    return numpy\n", "imports numpy"),
    ("from zoo.nn import unet\n\ndef build():\n    return unet\n", "zoo.nn.unet as a module"),
    ("def build():\n    from zoo.nn.unet import UNet\n    return UNet()\n", "inside a block"),
    ("from zoo.nn.unet import UNet\n\ndef UNet():\n    pass\n\ndef build():\n    return UNet()\n", "UNet is defined both"),
    ("from zoo.nn.unet import NoSuchThing\n\ndef build():\n    pass\n", "does not define it"),
    ("import torch\n\nother = 1\n", "defines no top-level build"),
])
def test_the_standalone_source_refuses_what_it_cannot_make_standalone(body, message, tmp_path, monkeypatch):
    from zoo.export.torch_source import StandaloneError, source

    with pytest.raises(StandaloneError, match=message):
        source(f"{_fake_architecture(tmp_path, monkeypatch, body)}:build")


def test_the_standalone_source_inlines_aliases_and_keeps_torch_imports(tmp_path, monkeypatch):
    from zoo.export import torch_source

    body = ('"""A third-party network on top of the zoo U-Net."""\nfrom __future__ import annotations\n\n'
            "import math\n\nimport torch\n\nfrom zoo.nn.unet import UNet as Base\n\n\n"
            "def build(width: int = 8):\n    return Base(base_channels=width * int(math.sqrt(1)), depth=1)\n")
    name = _fake_architecture(tmp_path, monkeypatch, body)
    text = torch_source.source(f"{name}:build")
    assert "Base = UNet" in text and "zoo.nn.unet import" not in text and text.count("import torch\n") == 1
    assert torch_source.imports(text) == {"__future__", "math", "torch", "torch.nn"}
    (tmp_path / "standalone.py").write_text(text)
    network = torch_source.load(tmp_path / "standalone.py", "build")(width=4)
    assert type(network).__name__ == "UNet" and type(network).__module__.startswith("_standalone_")


def test_an_architecture_that_cannot_be_made_standalone_is_exported_with_import_from(tmp_path, monkeypatch):
    """A third-party architecture whose network needs more than torch: the state dict names its
    installed module (as before), there is no TorchScript, and the report and documentation say so."""
    from zoo.export import torch_source

    def refuse(target, title=""):
        raise torch_source.StandaloneError(f"{target.partition(':')[0]} imports numpy (line 3)")

    monkeypatch.setattr(torch_source, "source", refuse)
    rdf, report = export(FAST, tmp_path / "export")
    weights = yaml.safe_load(rdf.read_text())["weights"]
    assert set(weights) == {"onnx", "pytorch_state_dict"} and not (rdf.parent / "weights" / "network.py").exists()
    assert weights["pytorch_state_dict"]["architecture"]["import_from"] == "zoo.models.unet_seg.network"
    assert any("cannot be made standalone" in note and "imports numpy" in note for note in report.notes)
    assert "cannot be made standalone" in (rdf.parent / "documentation.md").read_text()


# ----------------------------------------------------------------------------- the export, validated clean
def test_an_export_passes_bioimageio_test_with_every_weight_format_without_bioimage_zoo(tmp_path):
    import torch

    from zoo.export import torch_source

    rdf, report = export(FAST, tmp_path / "export")
    description = yaml.safe_load(rdf.read_text())
    weights = description["weights"]
    assert set(weights) == set(FORMATS)
    architecture = weights["pytorch_state_dict"]["architecture"]
    assert "import_from" not in architecture and architecture["callable"] == "build"
    source = (rdf.parent / architecture["source"]).read_text()
    assert {m.split(".")[0] for m in torch_source.imports(source)} <= {"__future__", "torch", "typing"}
    assert weights["torchscript"]["parent"] == "pytorch_state_dict" == weights["onnx"]["parent"]
    assert description["config"]["bioimage-zoo"]["architecture"] == {   # how the zoo recognises its own export
        "id": "unet-seg", "network": "zoo.models.unet_seg.network:build", "params": architecture["kwargs"]}
    assert weights["torchscript"]["pytorch_version"] == torch.__version__.split("+")[0]
    assert torch.jit.load(str(rdf.parent / weights["torchscript"]["source"])) is not None

    documentation = (rdf.parent / "documentation.md").read_text()      # the instance step: said, and how to run it
    assert "bioimage.io has no op for this model's instance step (`semantic_instances`)" in documentation
    assert "raw maps" in documentation and "zoo predict unet-dsb-2d@0.2.1 image.tif -o labels.tif" in documentation
    assert "weights/network.py" in documentation and "torchscript" in documentation

    results = clean_python(VALIDATE, {"rdfs": {"unet-dsb-2d@0.2.1": str(rdf)}}, tmp_path)
    details = results["unet-dsb-2d@0.2.1"]["details"]
    assert results["unet-dsb-2d@0.2.1"]["status"] == "passed", _failures(details)
    assert per_format(details) == {fmt: "passed" for fmt in FORMATS}


def test_the_cellpose_export_documents_its_raw_maps_and_the_zoo_command(tmp_path):
    rdf, report = export(standard_store() / "packages" / "cellpose-dsb-2d" / "0.1.1", tmp_path / "export")
    documentation = (rdf.parent / "documentation.md").read_text()
    assert "bioimage.io has no op for this model's instance step (`cellpose_instances`)" in documentation
    assert "raw maps" in documentation and "zoo predict cellpose-dsb-2d@0.1.1 image.tif -o labels.tif" in documentation
    assert report.unmapped == ["output labels: cellpose_instances"]


@pytest.mark.slow
def test_every_standard_package_passes_bioimageio_test_without_bioimage_zoo(tmp_path):
    """Every standard package that exports (classifiers are refused, see test_bioimageio.py):
    exported, then validated by ``bioimageio test`` in one clean interpreter, every weight
    format; the description keeps what the zoo knows (lineage, training data, unmapped ops)."""
    rdfs, reports = {}, {}
    for package in STANDARD:
        ref = f"{package.parent.name}@{package.name}"
        rdf, reports[ref] = export(package, tmp_path / "export" / package.parent.name / package.name)
        rdfs[ref] = str(rdf)
        description = yaml.safe_load(rdf.read_text())
        assert set(description["weights"]) == set(FORMATS)
        assert "import_from" not in description["weights"]["pytorch_state_dict"]["architecture"]
        assert description["config"]["bioimage-zoo"]["unmapped_ops"] == reports[ref].unmapped
        post = [op["id"] for op in description["outputs"][0].get("postprocessing", [])]
        documentation = (rdf.parent / "documentation.md").read_text()
        if "stardist" in package.parent.name:      # bioimage.io's own StarDist op, run by the validator itself
            assert post == ["stardist_postprocessing"] and not reports[ref].unmapped
            assert [a["type"] for a in description["outputs"][0]["axes"]] == ["batch", "space", "space", "channel"]
        else:                                      # the rest is the network output plus documented steps
            assert reports[ref].unmapped and "stardist_postprocessing" not in post
        if package.parent.name.startswith(("cellpose", "unet")):
            assert "has no op for this model's instance step" in documentation and f"zoo predict {ref}" in documentation
        assert "## Validation" in documentation and "bioimage.io export" in documentation
        assert description["cite"][0].get("doi") and description["license"]
        assert description["training_data"]["type"] == "dataset" and "fingerprint" in description["training_data"]["description"]
        lineage = description["config"]["bioimage-zoo"]
        assert lineage["training_data"]["n_train"] > 0
        if package.parent.name == "stardist-dsb-he-2d":          # fine-tuned: the parent is kept, pinned
            assert lineage["parent"]["ref"] == "stardist-dsb-fluo-2d@0.1.0" and len(lineage["parent"]["sha256"]) == 64
    results = clean_python(VALIDATE, {"rdfs": rdfs}, tmp_path, timeout=3600)
    table = {ref: per_format(result["details"]) for ref, result in results.items()}
    print("\n" + "\n".join(f"{ref:32s} " + " ".join(f"{fmt}={table[ref][fmt]}" for fmt in FORMATS) for ref in table))
    failed = {ref: _failures(r["details"]) for ref, r in results.items() if r["status"] != "passed"}
    assert not failed, failed
    assert all(row == {fmt: "passed" for fmt in FORMATS} for row in table.values()), table
