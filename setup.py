"""The package list of bioimage-zoo, discovered: everything else is in pyproject.toml.

One import namespace, ``zoo``, from four folders (DESIGN.md, "Layout"): ``zoo/`` is ``zoo``,
``models/`` is ``zoo.models``, ``trainers/`` is ``zoo.trainers`` and ``specs/`` is ``zoo.specs``.
``[tool.setuptools.packages.find]`` cannot prefix what it finds in ``models/`` with ``zoo.``, so
the sub-packages of each folder are found here: a new ``models/<id>/`` (or ``zoo/<part>/``) is
installed without editing any list, in editable and wheel installs alike.
"""
from setuptools import find_packages, setup

PACKAGE_DIR = {"zoo": "zoo", "zoo.models": "models", "zoo.trainers": "trainers", "zoo.specs": "specs"}

setup(
    package_dir=PACKAGE_DIR,
    packages=[name for prefix, folder in PACKAGE_DIR.items()
              for name in [prefix, *(f"{prefix}.{sub}" for sub in find_packages(folder))]],
)
