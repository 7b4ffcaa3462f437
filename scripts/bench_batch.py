"""Folder mode against one process per image (issue 24.6).

Reproduce:  .venv/bin/python scripts/bench_batch.py [--n 200] [--size 256] [--package n2v-w2s] [--threads 2]

Writes ``n`` crops (``size`` x ``size``) of the shipped Hagen actin sample, then times, as whole
processes from the same shell:

- ``folder``:    one ``zoo predict PKG DIR -o OUT`` over all of them;
- ``separate``:  ``zoo predict PKG IMG -o OUT.tif`` once per image (the model loaded each time);

and prints images/s of each, the ratio (goal >= 10x), and folder mode's per-image overhead
beside the network's own time (measured in-process on the same images with the runner timed).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ZOO = [sys.executable, "-m", "zoo"]


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    import tifffile

    actin = tifffile.imread(REPO / "samples" / "hagen_actin_lowsnr.tif")
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    paths = []
    for k in range(n):
        y, x = (int(rng.integers(0, s - size + 1)) for s in actin.shape[:2])
        paths.append(folder / f"img{k:04d}.tif")
        tifffile.imwrite(paths[-1], actin[y:y + size, x:x + size])
    return paths


def timed(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def network_seconds(package: str, paths: list[Path]) -> float:
    """The network's own time over the images (runner calls only), in this process."""
    import tifffile

    import zoo

    model = zoo.load(package, device="cpu")
    inner, spent = model.predictor.runner, [0.0]

    def runner(batch):
        started = time.perf_counter()
        out = inner(batch)
        spent[0] += time.perf_counter() - started
        return out

    runner.name, runner.on_gpu, runner.bytes_per_pixel = inner.name, inner.on_gpu, inner.bytes_per_pixel
    model._runner = runner
    model.predict(tifffile.imread(paths[0]))       # warm-up
    spent[0] = 0.0
    for p in paths:
        model.predict(tifffile.imread(p))
    return spent[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--package", default="n2v-w2s")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "ZOO_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_images(root / "in", args.n, args.size)
        subprocess.run([*ZOO, "pull", args.package], check=True, env=env, stdout=subprocess.DEVNULL)
        folder = timed([*ZOO, "predict", args.package, str(root / "in"), "-o", str(root / "folder")], env)
        separate = sum(timed([*ZOO, "predict", args.package, str(p), "-o", str(root / "sep" / p.name)], env)
                       for p in paths)
        network = network_seconds(args.package, paths)
    n = args.n
    print(f"{n} images of {args.size}x{args.size}, {args.package}, {args.threads} threads (whole processes)")
    print("| mode | seconds | images/s |")
    print("|---|---|---|")
    print(f"| folder (one zoo predict DIR) | {folder:.1f} | {n / folder:.2f} |")
    print(f"| separate (one process per image) | {separate:.1f} | {n / separate:.2f} |")
    print(f"ratio folder / separate: {separate / folder:.1f}x (goal >= 10x)")
    print(f"per image: folder {1000 * folder / n:.0f} ms, of which the network {1000 * network / n:.0f} ms and the "
          f"rest (reading, writing, hashing, shift check, process start amortised) {1000 * (folder - network) / n:.0f} "
          f"ms; separate {1000 * separate / n:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
