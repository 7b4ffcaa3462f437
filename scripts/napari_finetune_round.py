"""One correction round of the napari plugin, measured: AP@0.5 on a held-out crop before and after.

For each DSB2018 H&E image: the parent predicts the whole image; the user's correction of the
left part (columns 0-191, a rectangle drawn over it) is simulated by the ground truth there (a
perfect correction); the plugin's own fine-tune (:func:`zoo.napari._jobs.finetune_on_corrections`,
what the "Fine-tune on my corrections" button runs) trains the child on that part, publishes it
in a temporary local registry, and both models predict the held-out right part (columns
192-319), which training never saw. AP@0.5 = TP / (TP + FP + FN), objects matched one-to-one by IoU.

    python scripts/napari_finetune_round.py                       # the shipped sample (samples/dsb_he_nuclei.tif)
    python scripts/napari_finetune_round.py --images 5 --steps 200  # + DSB H&E validation images (../shared/data)
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DSB = REPO.parent / "shared" / "data" / "dsb2018"


def he_images(n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The shipped H&E sample, then ``n - 1`` H&E validation images of stardist-dsb-he-2d (every
    fifth H&E id, as its training split held out), read from ../shared/data/dsb2018."""
    import tifffile

    images = [("sample 2dd3356f", tifffile.imread(REPO / "samples" / "dsb_he_nuclei.tif"),
               tifffile.imread(REPO / "samples" / "dsb_he_nuclei_labels.tif"))]
    if n > 1:
        from PIL import Image

        with open(DSB / "index.csv") as f:
            ids = sorted(row["id"] for row in csv.DictReader(f) if row["kind"] == "histo_rgb")
        for image_id in [i for k, i in enumerate(ids) if k % 5 == 0 and not i.startswith("2dd3356f")][:n - 1]:
            rgb = np.asarray(Image.open(DSB / "images" / f"{image_id}.png").convert("RGB"))
            images.append((image_id[:8], rgb, tifffile.imread(DSB / "masks" / f"{image_id}.tif")))
    return images


def ap50(truth: np.ndarray, predicted: np.ndarray) -> float:
    from zoo.segmentation.metrics import counts, scores

    return scores(counts(truth, predicted, [0.5]))[0]["ap"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", default="stardist-dsb-he-2d")
    parser.add_argument("--images", type=int, default=1, help="the sample, then DSB H&E validation images")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--split", type=int, default=192, help="columns corrected (left) | held out (right)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("ZOO_HOME", tempfile.mkdtemp(prefix="zoo-round-"))   # children go to a scratch registry
    import zoo.api as api
    from zoo.napari import _jobs

    parent = api.load(args.parent)
    rows = []
    print(f"parent {parent.spec.ref}; correct columns 0-{args.split - 1}, hold out {args.split}-; {args.steps} steps")
    print("image      | held-out objects | AP@0.5 before | after | fine-tune s")
    for name, image, truth in he_images(args.images):
        held_image, held_truth = image[:, args.split:], truth[:, args.split:]
        before = ap50(held_truth, api.predict(parent, held_image))
        corrected = api.predict(parent, image)                                # what the Run button shows ...
        corrected[:, :args.split] = truth[:, :args.split]                   # ... corrected on the left part
        with tempfile.TemporaryDirectory() as work:
            done = _jobs.finetune_on_corrections(parent.spec.ref, image, corrected, work, rgb=True,
                                                 region=(0, image.shape[0], 0, args.split), steps=args.steps,
                                                 seed=args.seed)
            child = api.load(done.child)
            after = ap50(held_truth, api.predict(child, held_image))
        n = len(np.unique(held_truth)) - 1
        rows.append((name, n, before, after, done.seconds))
        print(f"{name:10s} | {n:16d} | {before:13.3f} | {after:5.3f} | {done.seconds:8.0f}   ({'; '.join(done.notes)})",
              flush=True)
    if len(rows) > 1:
        b, a = np.mean([r[2] for r in rows]), np.mean([r[3] for r in rows])
        print(f"{'mean':10s} | {sum(r[1] for r in rows):16d} | {b:13.3f} | {a:5.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
