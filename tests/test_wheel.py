"""A non-editable install works (issue 22.7): the wheel holds every module and every data file of
the four folders, and, installed into a fresh virtual environment, it lists the architectures,
finds its blueprints and the standard zoo, and `zoo predict` denoises the shipped sample.

The fresh environment reuses the dependencies already installed here (torch, onnxruntime, ...)
through a ``.pth`` line naming this environment's site-packages: nothing is downloaded. A plain
path line does not run that folder's own ``.pth`` files, so the editable install of this
repository stays out of it; the test checks that ``zoo`` is imported from the new environment.
About 30-40 s on 2 cores (building the wheel with its 127 MB standard zoo, installing it, one
prediction of a 1024 x 1024 image).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import REPO
from zoo.restoration.metrics import normalized_psnr

# setup.py's mapping of folders onto the one namespace (DESIGN.md, "Layout")
FOLDERS = {"zoo": "zoo", "models": "zoo/models", "trainers": "zoo/trainers", "specs": "zoo/specs"}
NOT_SHIPPED = {"zoo/standard/.lock"}          # the source tree's registry lock: not part of the standard zoo
SOURCE_IGNORED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                        ".pytest_cache", ".hypothesis", ".bench", "results", "lightning_logs",
                                        "tests", "docs", "scripts", "samples")


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(tmp: Path) -> Path:
    """``pip wheel`` of a copy of the working tree (a build in the repository would leave
    ``build/`` there, whose stale files a later wheel would ship)."""
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=SOURCE_IGNORED)
    run(sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist")
    (wheel,) = (tmp / "dist").glob("bioimage_zoo-*.whl")
    return wheel


def venv_reusing_this_one(where: Path) -> Path:
    """A virtual environment without pip whose site-packages ends with this one's (by a ``.pth``
    line, added by :func:`reuse_dependencies` once something is installed into it)."""
    run(sys.executable, "-m", "venv", "--without-pip", where)
    return where / "bin" / "python"


def site_packages(python: Path) -> Path:
    return Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())


def reuse_dependencies(python: Path) -> None:
    (site_packages(python) / "_reuse_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def expected_members(source: Path) -> set[str]:
    """Every file of the four folders, as the wheel must name it."""
    found = set()
    for folder, installed in FOLDERS.items():
        for path in (source / folder).rglob("*"):
            rel = path.relative_to(source / folder)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
                found.add(f"{installed}/{rel.as_posix()}")
    return found - NOT_SHIPPED


@pytest.mark.slow    # the default suite keeps under 10 minutes on 2 cores (issue 22.8): run it with -m slow
def test_the_wheel_installs_every_module_and_predicts(tmp_path):
    wheel = build_wheel(tmp_path)
    members = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(expected_members(tmp_path / "source") - members)
    assert not missing, f"the wheel lacks {len(missing)} files of the source tree, e.g. {missing[:10]}"
    assert not [m for m in members if m.split("/")[0] in ("models", "trainers", "specs")], "bare top-level package"

    python = venv_reusing_this_one(tmp_path / "venv")
    # installed before the .pth exists, so that pip sees no other bioimage-zoo to replace
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)
    reuse_dependencies(python)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(ZOO_HOME=str(tmp_path / "home"), ZOO_CACHE=str(tmp_path / "cache"))
    work = tmp_path / "work"                           # not the repository: its zoo/ must not be importable
    work.mkdir()

    check = ("import importlib, pathlib, zipfile, zoo, zoo.registry as r\n"
             "from zoo import architectures, spec\n"
             f"names = [n for n in zipfile.ZipFile({str(wheel)!r}).namelist() if n.endswith('.py')]\n"
             "names = [n for n in names if not n.endswith('__main__.py')]   # running them runs the CLI\n"
             "modules = [n[:-3].replace('/', '.').removesuffix('.__init__') for n in names]\n"
             "for m in modules: importlib.import_module(m)\n"
             "archs = architectures.available()\n"
             "print(zoo.__file__); print(len(modules)); print(' '.join(sorted(archs)))\n"
             "print(all(spec.load(a.blueprint_path()).architecture_id == i for i, a in archs.items()))\n"
             "print((r.standard_store() / 'index.json').is_file())\n")
    lines = run(python, "-c", check, cwd=work, env=env).stdout.split("\n")
    assert Path(lines[0]).resolve().is_relative_to(venv.resolve()), f"zoo imported from {lines[0]}, not the wheel"
    assert int(lines[1]) > 80
    from zoo import architectures
    assert lines[2].split() == sorted(architectures.available())
    assert lines[3:5] == ["True", "True"]

    sample = REPO / "samples" / "hagen_actin_lowsnr.tif"
    out = work / "denoised.tif"
    run(venv / "bin" / "zoo", "predict", "n2v-w2s", sample, "-o", out, cwd=work, env=env)
    noisy, denoised = tifffile.imread(sample), tifffile.imread(out)
    reference = tifffile.imread(REPO / "samples" / "hagen_actin_highsnr.tif")
    assert denoised.shape == noisy.shape and denoised.dtype == np.float32 and np.isfinite(denoised).all()
    assert normalized_psnr(denoised, reference) > normalized_psnr(noisy, reference) + 1.0


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_every_folder_with_python_files_is_a_package(folder):
    """setup.py finds packages by their ``__init__.py``: a folder without one would be left out
    of the wheel (the editable install would still import it, as a namespace package)."""
    for path in (REPO / folder).rglob("*.py"):
        parents = path.relative_to(REPO / folder).parents
        for parent in list(parents)[:-1]:
            assert (REPO / folder / parent / "__init__.py").is_file(), f"{folder}/{parent} has no __init__.py"
