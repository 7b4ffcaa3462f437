"""Cellpose flow following: every foreground pixel at once against chunks of pixels.

Reproduce:  python scripts/bench_follow.py [--tiles 2] [--rounds 3] [--chunks 16384 1048576]

Predicts cellpose-dsb-2d's raw flows on the DSB fluorescence sample tiled ``--tiles`` x
``--tiles``, then follows its foreground pixels (200 steps) with ``FOLLOW_CHUNK`` set to the
whole image and to each of ``--chunks``, interleaved for ``--rounds`` rounds. Reports the
median seconds, the ratio against all at once, the peak RSS each adds (VmHWM, reset before each
call through ``/proc/self/clear_refs``) and whether the end points are identical.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]


def _status(field: str) -> int:
    """A /proc/self/status field in MB."""
    text = Path("/proc/self/status").read_text()
    return int(text.split(field + ":")[1].split()[0]) // 1024


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks", type=int, nargs="+", default=[16384, 1 << 20])
    args = parser.parse_args()

    import zoo
    from zoo.segmentation import cellpose

    model = zoo.load("cellpose-dsb-2d")
    image = np.tile(tifffile.imread(REPO / "samples" / "dsb_fluo_nuclei.tif"), (args.tiles, args.tiles))
    raw = np.asarray(model.predict(image, raw=True)).reshape(3, *image.shape[:2])
    flow, mask = raw[:2], raw[2] > 0.5
    print(f"{image.shape[0]}x{image.shape[1]}: {int(mask.sum())} foreground pixels followed 200 steps")
    variants = [("all at once", 1 << 40)] + [(f"chunks of {c}", c) for c in args.chunks]
    seconds = {name: [] for name, _ in variants}
    added = {name: [] for name, _ in variants}
    ends = {}
    for _ in range(args.rounds):
        for name, chunk in variants:
            cellpose.FOLLOW_CHUNK = chunk
            measured = _reset_peak()
            before = _status("VmRSS")
            start = time.perf_counter()
            ends[name] = cellpose.follow(flow, mask)
            seconds[name].append(time.perf_counter() - start)
            if measured:
                added[name].append(_status("VmHWM") - before)
    whole = statistics.median(seconds["all at once"])
    print("| variant | median s | x all at once | peak RSS added MB | identical ends |")
    print("|---|---|---|---|---|")
    for name, _ in variants:
        median = statistics.median(seconds[name])
        peak = f"{max(added[name])}" if added[name] else "-"
        same = np.array_equal(ends[name], ends["all at once"])
        print(f"| {name} | {median:.2f} | {whole / median:.2f} | {peak} | {same} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
