"""Give a published standard package a dataset-shift check, as a new patch version (published
versions are never rewritten): the same weights and test tensors, plus `trust/` (training-input
statistics, the bottleneck encoder) calibrated on the package's own training and validation
images from ../shared/data.

Reproduce:  python scripts/add_trust.py stardist-dsb-fluo-2d [--version 0.1.1] [--no-publish]
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

import zoo
from zoo.registry import standard_store
from zoo.trust.calibrate import calibrate

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _train_segmentation():
    spec = importlib.util.spec_from_file_location("train_segmentation", REPO / "scripts" / "train_segmentation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_segmentation"] = module          # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def images_of(name: str):
    """The package's training and validation images, as its recipe split them."""
    if name == "stardist-dsb-fluo-2d":
        split = _train_segmentation().dsb(("fluo",))
        return split.train, split.val, "DSB2018 fluorescence (the recipe's split)"
    raise SystemExit(f"no image split known for {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("--from-version", default="0.1.0")
    p.add_argument("--version", default="0.1.1")
    p.add_argument("--no-publish", action="store_true")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "zoo-trust")
    args = p.parse_args()
    source = standard_store() / "packages" / args.name / args.from_version
    package = args.work / f"{args.name}-{args.version}"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(source, package)
    from zoo.package import build

    build.amend(package, lambda s: setattr(s, "version", args.version))
    train, val, description = images_of(args.name)
    shift = calibrate(package, train, val, description=description)
    zoo.load(package).test()
    print(f"{package}: shift threshold {shift.threshold:.3f}, reference {shift.reference}")
    if not args.no_publish:
        recipe_cli.publish(package, standard_store())


if __name__ == "__main__":
    main()
