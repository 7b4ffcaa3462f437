"""The last tile of each axis read at its own length against at the full tile size.

Reproduce:  python scripts/bench_last_tile.py [--package n2v-cbmi-2d] [--sizes 2048 2600] [--rounds 3]
                                              [--threads 2]

Until 2026-12-07 a last core of half a core or more was read at the full tile size (past the
image's end, reflected) so that ONNX Runtime saw one input shape: its memory pattern held memory
per shape. With the pattern off on CPU, the last tile is as short as the image needs. Each round
runs ``predict_file`` once with the old rule patched back in and once as it is now, each in a
fresh process, on a uint16 image of each size; prints seconds, network pixels per image pixel,
and the largest difference between the two outputs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(package: str, source: str, target: str, old_rule: bool) -> None:
    import zoo
    from zoo.runtime import tiling

    if old_rule:
        plan_axis = tiling.plan_axis

        def full_size_last(*args, **kwargs):
            plan = plan_axis(*args, **kwargs)
            return dataclasses.replace(plan, last=0) if plan.last and 2 * plan.last >= plan.core else plan
        tiling.plan_axis = full_size_last
    model = zoo.load(package)
    import tifffile

    shape = tifffile.TiffFile(source).pages[0].shape
    plans, _ = model.plan_tiles(list(shape))
    network = 1
    for p in plans:
        network *= sum(p.core_of(i) for i in range(p.n)) + p.n * 2 * p.margin if p.last else p.n * p.tile
    start = time.perf_counter()
    model.predict_file(source, target, overwrite=True)
    print(json.dumps({"seconds": time.perf_counter() - start, "overlap": network / (shape[0] * shape[1])}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", default="n2v-cbmi-2d")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 2600])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        package, source, target, old = args.child
        return _child(package, source, target, old == "old")

    import numpy as np
    import tifffile

    env = {**os.environ, "ZOO_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory(prefix="bench_last_tile-") as work:
        work = Path(work)
        print(f"{args.package}, {args.threads} threads, {args.rounds} rounds (old and new interleaved)")
        print("| image | rule | seconds: median (rounds) | network px / image px |\n|---|---|---|---|")
        for size in args.sizes:
            source = work / f"in_{size}.tif"
            tifffile.imwrite(source, (np.random.default_rng(size).random((size, size)) * 1000).astype(np.uint16))
            runs: dict[str, list[dict]] = {"old": [], "new": []}
            for _ in range(args.rounds):
                for rule in runs:
                    out = subprocess.run([sys.executable, __file__, "--child", args.package, str(source),
                                          str(work / f"out_{rule}.tif"), rule], env=env, capture_output=True,
                                         text=True, check=True)
                    runs[rule].append(json.loads(out.stdout.strip().splitlines()[-1]))
            for rule, label in (("old", "full-size last tile"), ("new", "last tile as needed")):
                seconds = [r["seconds"] for r in runs[rule]]
                print(f"| {size}^2 | {label} | {statistics.median(seconds):.2f} "
                      f"({', '.join(f'{s:.2f}' for s in seconds)}) | {runs[rule][0]['overlap']:.3f} |")
            old, new = (tifffile.imread(work / f"out_{r}.tif") for r in ("old", "new"))
            print(f"|   | largest difference | {float(np.abs(old - new).max()):.3g} of a range of "
                  f"{float(np.ptp(old)):.4g} | |")


if __name__ == "__main__":
    main()
