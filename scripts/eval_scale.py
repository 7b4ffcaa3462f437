"""Physical scale, measured (issue 24.2): held-out DSB 2018 images shown to an instance model at
0.5x, 1x and 2x their size, predicted as they are and rescaled to the model's scale with
``diameter`` (the objects' median diameter measured on the scaled image's labels, as a user
measuring a few cells would), AP@0.5 against the scaled ground truth; and whether the shift
check warns on the scaled images.

Reproduce:  .venv/bin/python scripts/eval_scale.py [--package stardist-dsb-fluo-2d] [--kind fluorescence] [--n 30]
(needs ../shared/data/dsb2018; the package must record its object diameter: scripts/add_scale.py)
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _split(kind: str):
    spec = importlib.util.spec_from_file_location("train_segmentation", REPO / "scripts" / "train_segmentation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_segmentation"] = module
    spec.loader.exec_module(module)
    return module.dsb((kind,))


def main() -> int:
    import zoo
    from zoo.imageio import read_image
    from zoo.runtime.resample import rescale_image, rescale_labels
    from zoo.runtime.scale import estimate_diameter
    from zoo.segmentation.metrics import evaluate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--package", default="stardist-dsb-fluo-2d")
    p.add_argument("--kind", default="fluo", help="fluo, histo_rgb or brightfield_gray")
    p.add_argument("--n", type=int, default=30)
    args = p.parse_args()
    split = _split(args.kind)
    model = zoo.load(args.package, device="cpu") if not Path(args.package).is_dir() else zoo.load(Path(args.package))
    print(f"{model.spec.ref} (training objects {model.spec.scale['diameter']:g} px), {args.kind}: "
          f"{min(args.n, len(split.val))} validation images never trained on")
    print("| scale | AP@0.5 as it is | AP@0.5 rescaled (--diameter) | shift warnings (of n) | scale ratio (median) |")
    print("|---|---|---|---|---|")
    for s in (1.0, 0.5, 2.0):
        truths, plain, rescaled, warned, ratios = [], [], [], 0, []
        for path in split.val[:args.n]:
            image = read_image(path)
            labels = read_image(split.labels / (path.stem + ".tif"))
            if image.ndim == 3 and image.shape[-1] in (3, 4):
                image = image[..., :3].mean(-1) if model.spec.inputs[0].n_channels == 1 else image[..., :3]
            if s != 1.0:
                image = rescale_image(image, (s, s)) if image.ndim == 2 else \
                    np.moveaxis(rescale_image(np.moveaxis(image, -1, 0), (s, s)), 0, -1)
                labels = rescale_labels(labels, (s, s))
            truths.append(labels)
            plain.append(model.predict(image))
            diameter = estimate_diameter(labels)
            rescaled.append(zoo.predict(model, image, diameter=diameter))
            report = model.check_shift(image, prediction=plain[-1])
            if report is not None:
                warned += bool(report.shift_warning)
                if report.scale_ratio:
                    ratios.append(report.scale_ratio)
        ap_plain = evaluate(truths, plain, [0.5])[0]["ap"]
        ap_rescaled = evaluate(truths, rescaled, [0.5])[0]["ap"]
        print(f"| {s:g}x | {ap_plain:.3f} | {ap_rescaled:.3f} | {warned} of {len(truths)} | "
              f"{np.median(ratios) if ratios else float('nan'):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
