"""The classical baseline (Otsu + distance-transform watershed) on DSB2018, per image kind.

Reproduce:  python scripts/bench_seg_baseline.py [--data ../shared/data/dsb2018]

The validation split is by image: every fifth image of each kind (sorted by id), the split the
segmentation packages are to be validated on. Prints AP (TP/(TP+FP+FN)) at IoU 0.5 and 0.75,
F1@0.5 and panoptic quality@0.5, the numbers every segmentation model must beat.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import tifffile

from zoo.imageio import read_image
from zoo.segmentation.baseline import otsu_watershed
from zoo.segmentation.metrics import evaluate

REPO = Path(__file__).resolve().parents[1]


def dsb_split(root: Path) -> dict[str, tuple[list[str], list[str]]]:
    """{kind: (training ids, validation ids)}: every fifth id of a kind, sorted, validates."""
    kinds: dict[str, list[str]] = {}
    with open(root / "index.csv") as f:
        for row in csv.DictReader(f):
            kinds.setdefault(row["kind"], []).append(row["id"])
    out = {}
    for kind, ids in kinds.items():
        ids = sorted(ids)
        val = ids[::5]
        out[kind] = ([i for i in ids if i not in set(val)], val)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dsb2018")
    args = parser.parse_args()
    print("| kind | images | AP@0.5 | AP@0.75 | F1@0.5 | PQ@0.5 | ms/Mpx |")
    print("|---|---|---|---|---|---|---|")
    for kind, (_, val) in sorted(dsb_split(args.data).items()):
        truths, predictions, seconds, pixels = [], [], 0.0, 0
        for image_id in val:
            image = read_image(args.data / "images" / f"{image_id}.png")
            started = time.perf_counter()
            predictions.append(otsu_watershed(image))
            seconds += time.perf_counter() - started
            truths.append(tifffile.imread(args.data / "masks" / f"{image_id}.tif"))
            pixels += truths[-1].size
        rows = {r["threshold"]: r for r in evaluate(truths, predictions, thresholds=[0.5, 0.75])}
        print(f"| {kind} | {len(val)} | {rows[0.5]['ap']:.3f} | {rows[0.75]['ap']:.3f} | {rows[0.5]['f1']:.3f} | "
              f"{rows[0.5]['panoptic_quality']:.3f} | {1000 * seconds / (pixels / 1e6):.0f} |")


if __name__ == "__main__":
    main()
