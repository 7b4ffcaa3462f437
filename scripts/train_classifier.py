"""Build the standard classifier package `classifier-bccd` from ../shared/data/bccd and publish
it to the standard store (zoo/standard).

Reproduce:  python scripts/train_classifier.py classifier-bccd [--max-steps N] [--no-publish]

BCCD (Shenggan/BCCD_Dataset, MIT): crops of red cells, white cells and platelets cut from the
VOC boxes of 364 blood-smear images. Its `voc_split` column splits by source image: `train`
crops train (and a further 15% of their source images, whole, choose the kept weights); `val`
crops are never seen in training and give the model card's accuracy, per-class precision and
recall, macro-F1 and confusion matrix, measured on the written package with ONNX Runtime.
Imbalance (RBC 85% of the crops): cross-entropy weighted by inverse class frequency.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from zoo import architectures
from zoo.trainers.classification import fit_classifier

import recipe_cli  # noqa: E402  (scripts/, beside this file)

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO.parent / "shared" / "data" / "bccd"
RECIPES = {
    "classifier-bccd": dict(
        canvas=96, scale=0.5, max_steps=3000, batch_size=32, lr=2e-3,
        description="Blood-cell classifier (red cell, white cell, platelet) for crops of stained blood smears "
                    "(BCCD), or per object of a segmentation with `zoo measure --classifier`.",
        data_description="BCCD: 2804 crops (RBC 2381, WBC 214, platelets 209) cut from the VOC boxes of the "
                         "dataset's train images; 1137 crops of its val images held out",
        data_source="Shenggan/BCCD_Dataset (crops from its VOC annotations)", data_license="MIT"),
}


def main() -> None:
    p = recipe_cli.parser(__doc__, RECIPES, "zoo-classifiers")
    args = p.parse_args()
    for name in recipe_cli.chosen(p, args, RECIPES, list(RECIPES)):
        recipe = dict(RECIPES[name])
        if args.max_steps:
            recipe["max_steps"] = args.max_steps
        started = time.time()
        package = fit_classifier(architectures.get("classifier").blueprint_path(), BCCD, args.work / name,
                                 labels=BCCD / "labels.csv", group_column="source_image", split_column="voc_split",
                                 train_split="train", test_split="val", name=name, version=args.version,
                                 overwrite=True, progress=sys.stderr.isatty(),
                                 **recipe_cli.session(args, args.work / name), **recipe)
        import zoo

        spec = zoo.load(package).spec
        held = spec.training.metrics["held_out"]
        print(json.dumps({"package": str(package), "minutes": round((time.time() - started) / 60, 1),
                          "accuracy": held["accuracy"], "macro_f1": held["macro_f1"],
                          "per_class": held["per_class"], "confusion": held["confusion"]}, indent=1), flush=True)
        if not args.no_publish:
            recipe_cli.publish(package, args.store)


if __name__ == "__main__":
    main()
