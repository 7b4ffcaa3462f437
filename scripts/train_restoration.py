"""Build the standard restoration packages from ../shared/data and publish them to the standard
store shipped with the repository (zoo/standard), which seeds every user's local registry.

Reproduce:  python scripts/train_restoration.py RECIPE [--max-steps N] [--no-publish]
            (RECIPE: care-w2s-2d, n2v-w2s-2d, n2v-cbmi-2d, care-synth-3d, n2v-w2s; or all)

Every recipe is seeded and records its data fingerprint. Splits are by image (W2S: fields of
view 1-40 train, 41-48 validate, 49-60 held out), and the held-out metrics (PSNR/SSIM before
and after, normalised as in CSBDeep) are measured with the packaged ONNX model and written into
the model card. Test tensors and covers come from images that may be redistributed (the Hagen
actin crop, CC0, or the project's synthetic volumes), never from W2S or CBMI.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import tifffile

import zoo
from zoo import architectures, spec as specs
from zoo.restoration.evaluate import evaluate_pairs, summary
from zoo.package.build import record_metrics
from zoo.synthetic import nuclei
from zoo.trainers.fit import fit

import recipe_cli  # noqa: E402  (scripts/, beside this file)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
HAGEN_SAMPLE = REPO / "samples" / "hagen_actin_lowsnr.tif"
W2S_SOURCE = ("Zhou et al. 2020, W2S: Microscopy Data with Joint Denoising and Super-Resolution, ECCV "
              "workshops (as copied in ND-HowardGroup/Instant-Image-Denoising)")


@dataclass
class Split:
    train: list[Path]
    val: list[Path]
    test: list[Path] = field(default_factory=list)
    target: Path | None = None          # folder of targets, same names (paired training, metrics)


def w2s_split(paired: bool) -> Split:
    root = DATA / "w2s"
    fov = lambda p: int(p.stem.split("_")[1])  # noqa: E731  w2s_<fov>_<channel>.png
    images = sorted((root / "images").glob("w2s_*.png"))
    return Split([p for p in images if fov(p) <= 40], [p for p in images if 40 < fov(p) <= 48],
                 [p for p in images if fov(p) > 48], root / "targets")


def cbmi_split() -> Split:
    """CBMI crops (no clean targets): every fifth crop of each structure validates."""
    images = sorted((DATA / "cbmi_noisy").glob("*/*.tif"))
    val = images[::5]
    return Split([p for p in images if p not in val], val)


def synthetic_3d_split(work: Path) -> Split:
    """Synthetic nuclei volumes (the project's own: clean ground truth, free to ship)."""
    for folder in ("low", "high"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(34):
        noisy, clean = nuclei((32, 96, 96), n=40, seed=10_000 + i, peak=60.0, read_noise=4.0, radius=(3.0, 7.0))
        name = f"synth3d_{i:02d}.tif"
        tifffile.imwrite(work / "low" / name, noisy)
        tifffile.imwrite(work / "high" / name, clean.astype(np.float32))
        names.append(work / "low" / name)
    return Split(names[:24], names[24:28], names[28:], work / "high")


@dataclass
class Recipe:
    name: str
    architecture: str
    dims: int
    split: Callable[[Path], Split]
    description: str
    data_description: str
    data_source: str
    data_license: str
    max_steps: int
    patch: int | list[int] = 64
    batch_size: int = 16
    module_options: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)      # changes to the blueprint's architecture params
    sample: Callable[[Path, Split], Path] = lambda work, split: HAGEN_SAMPLE
    out_of_domain: list[tuple[Path, Path]] = field(default_factory=list)


def hagen_pairs(prefix: str) -> list[tuple[Path, Path]]:
    root = DATA / "hagen_snr"
    return [(p, root / "targets" / p.name) for p in sorted((root / "images").glob(f"{prefix}*.png"))]


RECIPES = {r.name: r for r in [
    Recipe("care-w2s-2d", "care", 2, lambda work: w2s_split(True),
           "CARE restoration of widefield fluorescence (trained on W2S pairs: one noisy frame -> the mean of 400 "
           "frames; nuclei, actin, mitochondria). Input: one noisy 2D grey image of any size.",
           "W2S widefield fields of view 1-40 (3 channels, noisy frame + 400-frame average) train, 41-48 "
           "validate; 49-60 held out for the metrics below.", W2S_SOURCE, "research use (cite Zhou et al. 2020)",
           max_steps=2500, out_of_domain=hagen_pairs("")),
    Recipe("n2v-w2s-2d", "n2v2", 2, lambda work: w2s_split(False),
           "N2V2 self-supervised denoiser for widefield fluorescence (trained on W2S noisy frames alone). Input: "
           "one noisy 2D grey image of any size.",
           "W2S widefield fields of view 1-40 (3 channels, one noisy frame each) train, 41-48 validate; 49-60 "
           "held out (their 400-frame averages are used only for the metrics below).", W2S_SOURCE,
           "research use (cite Zhou et al. 2020)", max_steps=2500, module_options={"mask_fraction": 0.01, "lr": 4e-4},
           out_of_domain=hagen_pairs("")),
    Recipe("n2v-cbmi-2d", "n2v2", 2, lambda work: cbmi_split(),
           "N2V2 self-supervised denoiser for low-SNR ER and mitochondria (trained on CBMI noisy crops alone). "
           "Input: one noisy 2D grey image of any size.",
           "CBMI low-SNR ER and mitochondria crops (256x256 uint16), every fifth crop validates; no clean "
           "targets exist, so held-out quality is measured on the Hagen mitochondria low/high-SNR pairs.",
           "CBMI noisy crops as copied in ND-HowardGroup/Instant-Image-Denoising", "research use",
           max_steps=1500, module_options={"mask_fraction": 0.01, "lr": 4e-4}, out_of_domain=hagen_pairs("mito")),
    Recipe("care-synth-3d", "care", 3, synthetic_3d_split,
           "CARE 3D restoration of noisy nuclei volumes (trained on synthetic Poisson-Gaussian pairs with clean "
           "ground truth). Input: one noisy zyx volume of any size.",
           "34 synthetic 32x96x96 nuclei volumes (zoo.synthetic.nuclei, seeds 10000-10033): 24 train, 4 "
           "validate, 6 held out for the metrics below.", "bioimage-zoo synthetic data (zoo.synthetic)", "MIT",
           max_steps=1200, patch=[16, 48, 48], batch_size=8, sample=lambda work, split: split.test[0]),
    Recipe("n2v-w2s", "n2v", 2, lambda work: w2s_split(False),
           "Noise2Void denoiser for widefield fluorescence (trained self-supervised on W2S noisy frames: nuclei, "
           "actin, mitochondria channels). Input: one noisy 2D grey image of any size.",
           "W2S widefield fields of view 1-40 (3 channels each, one noisy frame per image) for training, 41-48 "
           "for validation; 49-60 held out for the metrics below.", W2S_SOURCE,
           "research use (cite Zhou et al. 2020)", max_steps=4000, module_options={"mask_fraction": 0.01, "lr": 4e-4},
           params={"layout": None, "residual": None}, out_of_domain=hagen_pairs("")),   # 0.1.0: plain, residual
]}


def build(recipe: Recipe, work: Path, max_steps: int | None, version: str, session: dict | None = None) -> tuple[Path, dict]:
    split = recipe.split(work)
    blueprint = specs.load(architectures.get(recipe.architecture).blueprint_path(recipe.dims))
    for key, value in recipe.params.items():
        if value is None:
            blueprint.architecture_params.pop(key, None)
        else:
            blueprint.architecture_params[key] = value
    target = split.target if architectures.get(recipe.architecture).needs_targets else None
    started = time.perf_counter()
    package = fit(blueprint, None, work / recipe.name, target=target, train_files=split.train,
                  val_files=split.val, name=recipe.name, version=version, max_steps=max_steps or recipe.max_steps,
                  patch=recipe.patch, batch_size=recipe.batch_size, module_options=recipe.module_options,
                  progress=sys.stderr.isatty(), overwrite=True, sample=recipe.sample(work, split),
                  description=recipe.description, data_description=recipe.data_description,
                  data_source=recipe.data_source, data_license=recipe.data_license,
                  **(session or {}))
    seconds = time.perf_counter() - started
    model = zoo.load(package, runtime="onnx", device="cpu")
    metrics = {}
    if split.test and split.target:
        held_out = summary(evaluate_pairs(model, split.test, [split.target / p.name for p in split.test]))
        metrics.update({f"heldout_{k}": v for k, v in held_out.items()})
    if recipe.out_of_domain:
        images, targets = zip(*recipe.out_of_domain)
        hagen = summary(evaluate_pairs(model, list(images), list(targets)))
        metrics.update({f"hagen_{k}": v for k, v in hagen.items()})
    record_metrics(package, metrics)
    return package, {"train_seconds": round(seconds, 1), **metrics}


def main() -> None:
    cli = recipe_cli.parser(__doc__, RECIPES, "zoo-restoration-build")
    args = cli.parse_args()
    for name in recipe_cli.chosen(cli, args, RECIPES, [n for n in RECIPES if n != "n2v-w2s"]):
        work = args.work / name
        package, numbers = build(RECIPES[name], work, args.max_steps, args.version,
                                 recipe_cli.session(args, work / RECIPES[name].name))
        print(json.dumps({"package": name, **numbers}, indent=1), flush=True)
        if not args.no_publish:
            recipe_cli.publish(package, args.store)


if __name__ == "__main__":
    main()
