"""Peak memory of out-of-core prediction: a 16384x16384 image against a 4096x4096 one.

Reproduce:  python scripts/bench_memory.py [--sizes 4096 16384] [--package n2v-w2s]

Each size runs in a fresh process (peak RSS from getrusage) that pulls the package and streams
a uint16 TIFF (the Hagen sample tiled to size) to a float32 TIFF with `Model.predict_file`.
The in-memory path (`Model.predict` on the loaded array) is measured at the smaller size as
the baseline. Prints a table with seconds, Mpx/s, peak RSS and the ratio to the smallest size.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import numpy as np, tifffile, zoo
package, source, target, mode, tile, batch = sys.argv[1:7]
tile, batch = int(tile) or None, int(batch) or None      # 0: chosen from free memory
model = zoo.load(package, runtime="onnx", device="cpu")
started = time.perf_counter()
if mode == "stream":
    model.predict_file(source, target, tile=tile, batch_size=batch, overwrite=True)
else:
    tifffile.imwrite(target, model.predict(tifffile.imread(source), tile=tile, batch_size=batch))
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_image(path: Path, size: int) -> None:
    tile = tifffile.imread(REPO / "samples" / "hagen_actin_lowsnr.tif").astype(np.uint16)
    reps = -(-size // tile.shape[0])
    with tifffile.TiffWriter(path, bigtiff=True) as tif:   # uncompressed, contiguous: memory-mappable
        tif.write(np.tile(tile, (reps, reps))[:size, :size])


def run(package: str, source: Path, target: Path, mode: str, tile: int, batch: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, package, str(source), str(target), mode, str(tile), str(batch)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--package", default="n2v-w2s")
    parser.add_argument("--tile", type=int, default=0, help="tile size (default 0: chosen from free memory)")
    parser.add_argument("--batch-size", type=int, default=0, help="tiles per call (default 0: from free memory)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i, size in enumerate(sorted(args.sizes)):
            source = tmp / f"in_{size}.tif"
            make_image(source, size)
            modes = ["in-memory", "stream"] if i == 0 else ["stream"]
            for mode in modes:
                result = run(args.package, source, tmp / f"out_{size}.tif", mode, args.tile, args.batch_size)
                rows.append({"size": size, "mode": mode, **result, "mpx_per_s": size * size / 1e6 / result["seconds"]})
            source.unlink()
            (tmp / f"out_{size}.tif").unlink()
    base = next(r for r in rows if r["mode"] == "stream")["peak_rss_mb"]
    print(f"{'image':>12} {'mode':>10} {'seconds':>8} {'Mpx/s':>7} {'peak RSS MB':>12} {'vs smallest stream':>19}")
    for r in rows:
        print(f"{r['size']:>6}x{r['size']:<5} {r['mode']:>10} {r['seconds']:8.1f} {r['mpx_per_s']:7.2f} "
              f"{r['peak_rss_mb']:12.0f} {r['peak_rss_mb'] / base:18.2f}x")


if __name__ == "__main__":
    main()
