"""Folder mode against one process per image (issue 24.6).

Reproduce:  .venv/bin/python scripts/bench_batch.py [--n 200] [--size 256] [--package n2v-w2s] [--threads 2]

Writes ``n`` crops (``size`` x ``size``) of the shipped Hagen actin sample, then times, as whole
processes from the same shell:

- ``folder``:    one ``zoo predict PKG DIR -o OUT`` over all of them;
- ``folder --lanes 1``: the same, one image at a time with every thread (folder mode before lanes);
- ``separate``:  ``zoo predict PKG IMG -o OUT.tif`` once per image (the model loaded each time);

and prints images/s of each, the ratio (goal >= 10x), and folder mode's CPU time per image
beside the network's and the shift check's own (measured in-process, one thread, on the same
images). CPU seconds are the children's own (``getrusage``), which other load moves far less
than wall time.
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


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one whole process."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def network_seconds(package: str, paths: list[Path]) -> tuple[float, float]:
    """CPU seconds per image of the network and of the shift check, each on one thread as a
    folder run's lanes run them, in this process."""
    import tifffile

    import zoo

    model = zoo.load(package, device="cpu")
    network = shift = 0.0
    with model.lanes():
        inner = model.predictor.runner

        def runner(batch):
            nonlocal network
            started = time.thread_time()
            out = inner(batch)
            network += time.thread_time() - started
            return out

        runner.name, runner.on_gpu, runner.bytes_per_pixel = inner.name, inner.on_gpu, inner.bytes_per_pixel
        model.predictor.runner = runner
        image = tifffile.imread(paths[0])
        model.predict(image), model.check_shift(image)       # warm-up
        network = 0.0
        for p in paths:
            image = tifffile.imread(p)
            model.predict(image)
            started = time.thread_time()
            model.check_shift(image)
            shift += time.thread_time() - started
        model.predictor.runner = inner
    return network / len(paths), shift / len(paths)


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
        one_lane = timed([*ZOO, "predict", args.package, str(root / "in"), "-o", str(root / "lane"), "--lanes", "1"],
                         env)
        runs = [timed([*ZOO, "predict", args.package, str(p), "-o", str(root / "sep" / p.name)], env) for p in paths]
        separate = (sum(r[0] for r in runs), sum(r[1] for r in runs))
        network, shift = network_seconds(args.package, paths)
    n = args.n
    print(f"{n} images of {args.size}x{args.size}, {args.package}, {args.threads} threads (whole processes); "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| mode | seconds | images/s | ms per image | CPU ms per image |")
    print("|---|---|---|---|---|")
    for what, (wall, cpu) in (("folder (one zoo predict DIR; lanes by default)", folder),
                              ("folder, --lanes 1 (one image at a time, every thread)", one_lane),
                              ("separate (one zoo predict per image)", separate)):
        print(f"| {what} | {wall:.1f} | {n / wall:.2f} | {1000 * wall / n:.0f} | {1000 * cpu / n:.0f} |")
    print(f"ratio folder / separate: {separate[0] / folder[0]:.1f}x (goal >= 10x); --lanes 1: "
          f"{separate[0] / one_lane[0]:.1f}x")
    print(f"CPU per image in folder mode {1000 * folder[1] / n:.0f} ms: the network {1000 * network:.0f} ms and the "
          f"shift check {1000 * shift:.0f} ms (one thread each, in-process), the rest (reading, hashing, writing, "
          f"process start and model load amortised) {1000 * (folder[1] / n - network - shift):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
