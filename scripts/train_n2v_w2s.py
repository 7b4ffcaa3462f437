"""Build the standard package `n2v-w2s`: Noise2Void trained on W2S widefield noisy frames.

Reproduce:  python scripts/train_n2v_w2s.py --data ../shared/data/w2s [--max-steps 3000]

Fields of view 1-40 train, 41-48 validate (loss, model selection), 49-60 are held out and
never seen: PSNR against their 400-frame averages (CSBDeep normalisation) is measured with the
packaged ONNX model before publishing into the standard store shipped with the repository.
Also measured, out of domain: the Hagen et al. low/high-SNR pairs (CC0), whose actin crop is
the main job's sample image.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import zoo
from zoo.imageio import read_image
from zoo.metrics import normalized_psnr
from zoo.package.build import record_metrics
from zoo.registry import LocalRegistry, standard_store
from zoo.trainers.fit import fit

REPO = Path(__file__).resolve().parents[1]


def w2s_split(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    images = sorted((root / "images").glob("w2s_*.png"))
    fov = lambda p: int(p.stem.split("_")[1])  # noqa: E731  w2s_<fov>_<channel>.png
    train = [p for p in images if fov(p) <= 40]
    val = [p for p in images if 40 < fov(p) <= 48]
    test = [p for p in images if fov(p) > 48]
    return train, val, test


def evaluate_pairs(model, pairs: list[tuple[Path, Path]]) -> dict:
    before, after = [], []
    for noisy_path, target_path in pairs:
        noisy = read_image(noisy_path).astype(np.float32)
        target = read_image(target_path).astype(np.float32)
        before.append(normalized_psnr(noisy, target))
        after.append(normalized_psnr(model.predict(noisy), target))
    return {"n_images": len(pairs), "psnr_noisy": round(float(np.mean(before)), 2),
            "psnr_denoised": round(float(np.mean(after)), 2),
            "psnr_gain": round(float(np.mean(after) - np.mean(before)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "w2s")
    parser.add_argument("--hagen", type=Path, default=REPO.parent / "shared" / "data" / "hagen_snr")
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--store", type=Path, default=standard_store(), help="registry to publish into")
    parser.add_argument("--no-publish", action="store_true")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "n2v-w2s-build",
                        help="where the package is built before publishing (kept)")
    args = parser.parse_args()

    train, val, test = w2s_split(args.data)
    work = args.work
    started = time.perf_counter()
    package = fit(
        REPO / "models" / "n2v" / "spec.yaml", None, work / "n2v-w2s", train_files=train, val_files=val,
        name="n2v-w2s", version=args.version, max_steps=args.max_steps, patch=64, batch_size=16,
        module_options={"mask_fraction": 0.01},
        progress=sys.stderr.isatty(), overwrite=True,
        sample=REPO / "samples" / "hagen_actin_lowsnr.tif",  # W2S images may not be redistributed; Hagen is CC0
        description=("Noise2Void denoiser for widefield fluorescence (trained self-supervised on W2S noisy "
                     "frames: nuclei, actin, mitochondria channels). Input: one noisy 2D grey image of any size."),
        data_description=("W2S widefield fields of view 1-40 (3 channels each, one noisy frame per image) for "
                          "training, 41-48 for validation; 49-60 held out for the metrics below."),
        data_source="Zhou et al. 2020, W2S: Microscopy Data with Joint Denoising and Super-Resolution, "
                    "ECCV workshops (as copied in ND-HowardGroup/Instant-Image-Denoising)",
        data_license="research use (cite Zhou et al. 2020)",
    )
    train_seconds = time.perf_counter() - started

    model = zoo.load(package, runtime="onnx", device="cpu")
    w2s = evaluate_pairs(model, [(p, args.data / "targets" / p.name) for p in test])
    metrics = {f"w2s_heldout_{k}": v for k, v in w2s.items()}
    if args.hagen.is_dir():
        hagen = evaluate_pairs(model, [(p, args.hagen / "targets" / p.name)
                                       for p in sorted((args.hagen / "images").glob("*.png"))])
        metrics.update({f"hagen_out_of_domain_{k}": v for k, v in hagen.items()})
    record_metrics(package, metrics)
    print(json.dumps({"train_seconds": round(train_seconds, 1), **metrics}, indent=1))

    if not args.no_publish:
        result = LocalRegistry(args.store, seed=None).publish(package)
        print(f"published {result.ref} to {args.store} (new: {result.created})")


if __name__ == "__main__":
    main()
