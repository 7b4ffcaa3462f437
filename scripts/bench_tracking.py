"""Tracking accuracy on synthetic time lapses with known tracks (moving, dividing, touching nuclei,
nuclei entering and leaving, one-frame segmentation misses).

Reproduce:  python scripts/bench_tracking.py [--seeds 10] [--frames 40] [--json OUT.json]

For each seed a 2D time lapse (192x192, 16 nuclei at the start) is tracked by `zoo track`'s
linker, and by the same linker without gap closing and without division detection (ablations
measured in the same run), and scored against the truth: the fraction of true links found
(recall) and of found links that are true (precision), and the same for divisions (a division is
correct when the parent's last object and both children's first objects are right).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from zoo.quantify.tracking import track
from zoo.quantify.tracking_metrics import score
from zoo.synthetic import time_lapse

VARIANTS = {"zoo track": {}, "no gap closing": {"gap_closing": False}, "no divisions": {"divisions": False}}
CONDITIONS = {
    "moving + dividing": dict(division_rate=0.04, birth_rate=0.0, death_rate=0.0, miss_rate=0.0, speed=1.5),
    "+ enter/leave, 2% missed": dict(division_rate=0.04, birth_rate=0.08, death_rate=0.01, miss_rate=0.02, speed=1.5),
    "fast (speed 3)": dict(division_rate=0.04, birth_rate=0.05, death_rate=0.01, miss_rate=0.02, speed=3.0),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    results = {}
    print("| condition | tracker | links (true) | link recall | link precision | divisions (true) | division recall "
          "| division precision | s/frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    for condition, options in CONDITIONS.items():
        for variant, flags in VARIANTS.items():
            totals = {"links_true": 0, "links_found": 0, "links_correct": 0, "divisions_true": 0,
                      "divisions_found": 0, "divisions_correct": 0}
            seconds = 0.0
            for seed in range(args.seeds):
                labels, truth, tracks = time_lapse((192, 192), n=16, frames=args.frames, seed=seed, **options)
                started = time.perf_counter()
                result = track(labels, **flags)
                seconds += time.perf_counter() - started
                s = score(result, truth, tracks)
                for k in totals:
                    totals[k] += s[k]
            row = {**totals, "link_recall": totals["links_correct"] / max(totals["links_true"], 1),
                   "link_precision": totals["links_correct"] / max(totals["links_found"], 1),
                   "division_recall": totals["divisions_correct"] / max(totals["divisions_true"], 1),
                   "division_precision": totals["divisions_correct"] / max(totals["divisions_found"], 1),
                   "seconds_per_frame": seconds / (args.seeds * args.frames)}
            results.setdefault(condition, {})[variant] = row
            print(f"| {condition} | {variant} | {row['links_true']} | {row['link_recall']:.3f} | "
                  f"{row['link_precision']:.3f} | {row['divisions_true']} | {row['division_recall']:.3f} | "
                  f"{row['division_precision']:.3f} | {row['seconds_per_frame']:.4f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seeds": args.seeds, "frames": args.frames, "results": results}, f, indent=1)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
