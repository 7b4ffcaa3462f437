"""bioimage.io interoperability: every standard package exports to a model description that the
official validator (bioimageio.core, offline) passes for both weight formats."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zoo.export.bioimageio import export, zip_folder
from zoo.registry import standard_store

STANDARD = sorted((standard_store() / "packages").glob("*/*"))


def _failures(summary) -> list[str]:
    return [f"{d.name}: {[e.msg for e in d.errors]}" for d in summary.details if d.status == "failed"]


@pytest.mark.parametrize("package", STANDARD, ids=lambda p: f"{p.parent.name}@{p.name}")
def test_every_standard_package_passes_bioimageio_test(package, tmp_path):
    from bioimageio.core import test_model

    rdf, report = export(package, tmp_path / "export")
    summary = test_model(str(rdf))
    assert summary.status == "passed", _failures(summary)
    tested = " ".join(d.name for d in summary.details if d.status == "passed")
    assert "(onnx)" in tested and "(pytorch_state_dict)" in tested          # both weight formats reproduce
    description = yaml.safe_load(rdf.read_text())
    assert description["config"]["bioimage-zoo"]["unmapped_ops"] == report.unmapped and report.unmapped
    documentation = (rdf.parent / "documentation.md").read_text()
    assert "## Validation" in documentation and "bioimage.io export" in documentation
    assert description["cite"][0].get("doi") and description["license"]


def test_the_zip_and_the_official_command(tmp_path):
    rdf, _ = export(standard_store() / "packages" / "n2v-w2s-2d" / "0.1.0", tmp_path / "n2v")
    archive = zip_folder(tmp_path / "n2v")
    command = Path(sys.executable).parent / "bioimageio"
    result = subprocess.run([str(command), "test", str(archive)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "passed" in result.stdout


def test_export_refuses_a_folder_in_use(tmp_path):
    from zoo.errors import InputError

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export(standard_store() / "packages" / "n2v-w2s-2d" / "0.1.0", tmp_path / "busy")
