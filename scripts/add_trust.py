"""Give a published standard package a dataset-shift check, as a new patch version (published
versions are never rewritten): the same weights and test tensors, plus `trust/` (training-input
statistics, the bottleneck encoder) calibrated on the package's own training and validation
images from ../shared/data.

Reproduce:  python scripts/add_trust.py NAME --from-version X.Y.Z --version X.Y.(Z+1) [--no-publish]
            (every standard package: see images_of; instance models also record their training
            objects' sizes, from the training label images)
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import zoo
from zoo.registry import standard_store
from zoo.trust.calibrate import calibrate

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Split:
    train: list[Path]
    val: list[Path]
    train_labels: list[Path] | None = field(default=None)   # instance models: the training label images


def _script(name: str):
    """A recipe script of scripts/ as a module (their dataclasses look themselves up by name)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _dsb(kinds) -> Split:
    split = _script("train_segmentation").dsb(kinds)
    return Split(split.train, split.val, [split.labels / (p.stem + ".tif") for p in split.train])


def _restoration(split) -> Split:
    return Split(split.train, split.val)


def images_of(name: str, work: Path) -> tuple[Split, str]:
    """The package's training and validation images as its recipe split them (synthetic data
    regenerated with the recipe's generator and seeds), with the training label images of
    instance models (their objects' sizes)."""
    seg, res = (lambda: _script("train_segmentation")), (lambda: _script("train_restoration"))
    if name == "stardist-dsb-fluo-2d":
        return _dsb(("fluo",)), "DSB2018 fluorescence (the recipe's split)"
    if name in ("unet-dsb-2d", "cellpose-dsb-2d"):
        return _dsb(seg().ALL_KINDS), "DSB2018, all kinds (the recipe's split)"
    if name == "unet-synth-3d":
        split = seg().synthetic_3d(work / "data")
        return (Split(split.train, split.val, [split.labels / p.name for p in split.train]),
                "synthetic 32x96x96 nuclei volumes (zoo.synthetic.labelled_nuclei, seeds 20000-20029, the recipe's split)")
    if name == "stardist-dsb-he-2d":
        task = _script("bench_finetune").segmentation_task(SimpleNamespace(sizes=None, steps=None, every=None))
        train = task.train_pool[:25]
        return (Split(train, task.val, [task.targets / (p.stem + ".tif") for p in train]),
                "DSB2018 H&E (scripts/bench_finetune.py's 25 fine-tuning and 19 validation images)")
    if name == "care-hagen-mito-2d":
        task = _script("bench_finetune").restoration_task(
            SimpleNamespace(hagen="mito-confocal", sizes_restoration=None, steps_restoration=None,
                            every_restoration=None), work / "hagen")
        return (Split(task.train_pool[:4], task.val),
                "Hagen mito-confocal 256x256 crops (scripts/bench_finetune.py's 4 training and 4 validation crops)")
    if name in ("care-w2s-2d", "n2v-w2s-2d", "n2v-w2s"):
        return _restoration(res().w2s_split(False)), "W2S noisy frames, fields of view 1-40 / 41-48 (the recipe's split)"
    if name == "n2v-cbmi-2d":
        return _restoration(res().cbmi_split()), "CBMI noisy crops, every fifth validates (the recipe's split)"
    if name == "care-synth-3d":
        return (_restoration(res().synthetic_3d_split(work / "data")),
                "synthetic 32x96x96 noisy nuclei volumes (zoo.synthetic.nuclei, seeds 10000-10027, the recipe's split)")
    if name == "classifier-bccd":
        from zoo.trainers.classification import split_examples

        bccd = REPO.parent / "shared" / "data" / "bccd"
        data = split_examples(bccd, bccd / "labels.csv", "source_image", "voc_split", "train", "val", 0.15, 0)
        return (Split([e.path for e in data.train], [e.path for e in data.val]),
                "BCCD train-split crops, validated on the 15% of their source images the trainer held out")
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
    split, description = images_of(args.name, args.work / f"{args.name}-data")
    shift = calibrate(package, split.train, split.val, description=description, train_labels=split.train_labels)
    zoo.load(package).test()
    print(f"{package}: shift threshold {shift.threshold:.3f} ({len(split.train)} training, {len(split.val)} "
          f"validation images), reference {shift.reference}, object sizes {shift.sizes}", flush=True)
    if not args.no_publish:
        recipe_cli.publish(package, standard_store())


if __name__ == "__main__":
    main()
