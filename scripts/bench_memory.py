"""Peak memory of out-of-core prediction for every standard 2D package: flat in the image size?

Reproduce:  python scripts/bench_memory.py [--sizes 4096 16384] [--formats tif zarr npy]
                                           [--packages NAME ...] [--json OUT]

For every standard 2D package (the classifier has no image output and is skipped) and every
output format, each size runs ``zoo predict PACKAGE in.tif -o out.FORMAT`` as a separate
process, exactly as a user runs it (default runtime, tiles from free memory, shift check), on
a uint16 TIFF of that size (the Hagen actin sample tiled; for RGB packages the DSB H&E sample
tiled, channels last). The peak RSS is the child's own (``wait4``). A package is flat
when the largest size's peak is within 1.2x of the smallest's.

Reports a table (package, format, peak RSS per size, ratio, seconds) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
FLAT = 1.2


def standard_2d() -> list[tuple[str, int]]:
    """(name, input channels) of every standard package with a 2D image output."""
    import zoo

    names = []
    for folder in sorted((Path(zoo.__file__).parent / "standard" / "packages").iterdir()):
        latest = max(folder.iterdir(), key=lambda p: tuple(int(v) for v in p.name.split(".")))
        from zoo import spec as specs

        spec = specs.load(latest / "zoo.yaml")
        if spec.task == "classification" or len(spec.inputs[0].spatial_axes) != 2:
            continue
        names.append((spec.name, spec.inputs[0].n_channels))
    return names


def make_image(path: Path, size: int, channels: int) -> None:
    """A contiguous, uncompressed (memory-mappable) uint16 TIFF, written a band at a time."""
    if channels == 1:
        sample = tifffile.imread(REPO / "samples" / "hagen_actin_lowsnr.tif").astype(np.uint16)
    else:
        sample = tifffile.imread(REPO / "samples" / "dsb_he_nuclei.tif").astype(np.uint16)[..., :channels]
    shape = (size, size) + ((channels,) if channels > 1 else ())
    out = tifffile.memmap(str(path), shape=shape, dtype=np.uint16, photometric="rgb" if channels == 3 else "minisblack")
    reps = -(-size // sample.shape[1])
    row = np.tile(sample, (1, reps) + ((1,) if channels > 1 else ()))[:, :size]
    for start in range(0, size, sample.shape[0]):
        stop = min(size, start + sample.shape[0])
        out[start:stop] = row[:stop - start]
    out.flush()
    del out


def run(package: str, source: Path, target: Path) -> dict:
    """One ``zoo predict`` process: seconds and its own peak RSS."""
    cmd = [str(REPO / ".venv" / "bin" / "zoo") if (REPO / ".venv" / "bin" / "zoo").exists() else "zoo",
           "predict", package, str(source), "-o", str(target), "--overwrite"]
    started = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    err = child.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--formats", nargs="+", default=["tif", "zarr", "npy"])
    parser.add_argument("--packages", nargs="+", help="default: every standard 2D package")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path, help="where the images go (default: a temporary folder)")
    args = parser.parse_args()

    packages = standard_2d()
    if args.packages:
        packages = [(n, c) for n, c in packages if n in args.packages]
    sizes = sorted(args.sizes)
    import zoo

    for name, _ in packages:      # pulled and calibrated (once per machine) before anything is measured
        settle = getattr(zoo.load(name).runner, "resolve", None)
        if settle:
            settle(sizes[0] ** 2)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        for channels in sorted({c for _, c in packages}):
            for size in sizes:
                make_image(tmp / f"in_{channels}_{size}.tif", size, channels)
        for name, channels in packages:
            for fmt in args.formats:
                row = {"package": name, "format": fmt, "runs": {}}
                for size in sizes:
                    target = tmp / f"out.{fmt}"
                    row["runs"][size] = run(name, tmp / f"in_{channels}_{size}.tif", target)
                    subprocess.run(["rm", "-rf", str(target)], check=True)
                peaks = [row["runs"][s]["peak_rss_mb"] for s in sizes]
                row["ratio"] = peaks[-1] / peaks[0]
                row["flat"] = row["ratio"] <= FLAT
                rows.append(row)
                print(json.dumps(row), flush=True)
    head = " | ".join(f"peak MB {s}^2" for s in sizes)
    print(f"\n| package | format | {head} | ratio {sizes[-1]}/{sizes[0]} | flat (<= {FLAT}) | seconds {sizes[-1]}^2 |")
    print("|---|---|" + "---|" * len(sizes) + "---|---|---|")
    for row in rows:
        peaks = " | ".join(f"{row['runs'][s]['peak_rss_mb']:.0f}" for s in sizes)
        print(f"| {row['package']} | {row['format']} | {peaks} | {row['ratio']:.2f} | {'yes' if row['flat'] else 'NO'} | "
              f"{row['runs'][sizes[-1]]['seconds']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["flat"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
