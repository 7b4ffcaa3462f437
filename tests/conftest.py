"""Shared fixtures: an isolated ZOO_HOME, synthetic noisy microscopy, a tiny trained N2V package."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
N2V_BLUEPRINT = REPO / "models" / "n2v" / "spec.yaml"


def synthetic_nuclei(shape=(96, 96), n=12, seed=0, peak=200.0, read_noise=5.0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy uint16 image, clean float image): blurred blobs with Poisson-Gaussian noise."""
    from zoo.synthetic import nuclei

    return nuclei(shape, n=n, seed=seed, peak=peak, read_noise=read_noise)


def labelled_nuclei_folder(root: Path, n: int = 5) -> tuple[Path, Path]:
    """``root/images`` and ``root/labels``: ``n`` synthetic 64x64 nuclei images and their labels."""
    import tifffile

    from zoo.synthetic import labelled_nuclei

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        image, labels = labelled_nuclei((64, 64), n=10, seed=i, radius=(4, 7))
        tifffile.imwrite(root / "images" / f"n{i}.tif", image)
        tifffile.imwrite(root / "labels" / f"n{i}.tif", labels)
    return root / "images", root / "labels"


@pytest.fixture
def zoo_home(tmp_path, monkeypatch) -> Path:
    """An empty local registry and cache for one test (the shipped standard zoo seeds it)."""
    home = tmp_path / "zoo_home"
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.setenv("ZOO_CACHE", str(home / "cache"))
    return home


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    import tifffile

    folder = tmp_path_factory.mktemp("images")
    for i in range(5):
        noisy, _ = synthetic_nuclei(seed=i)
        tifffile.imwrite(folder / f"img_{i}.tif", noisy)
    return folder


@pytest.fixture(scope="session")
def tiny_blueprint():
    """The N2V blueprint with a narrow network, so that training takes seconds."""
    from zoo import spec as specs

    bp = specs.load(N2V_BLUEPRINT)
    bp.architecture_params["base_channels"] = 8
    bp.name = "n2v-tiny"
    return bp


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory, image_folder, tiny_blueprint) -> Path:
    """A complete package trained for a few steps on synthetic images (read-only for tests)."""
    from zoo.trainers.fit import fit

    out = tmp_path_factory.mktemp("pkg") / "n2v-tiny"
    return fit(tiny_blueprint, image_folder, out, max_steps=12, steps_per_epoch=6, batch_size=4,
               patch=32, progress=False, val_fraction=0.4)


@pytest.fixture
def package_copy(tmp_path, tiny_package) -> Path:
    """A private copy of the tiny package that a test may modify."""
    import shutil

    dst = tmp_path / "pkg_copy"
    shutil.copytree(tiny_package, dst)
    return dst


def pytest_configure(config):
    os.environ.setdefault("ZOO_THREADS", "2")
