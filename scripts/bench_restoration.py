"""Noise2Void training against CAREamics 0.3.5: throughput and validation PSNR, one run.

Reproduce:  python scripts/bench_restoration.py [--steps 300] [--threads 2] [--no-peer]

Both train Noise2Void on the same W2S split (fields of view 1-40, noisy frames only), with the
same patch (64x64), batch (16), number of optimisation steps and U-Net (depth 2, 32 filters,
CSBDeep widths: our ``n2v`` blueprint's ``layout: csbdeep``), 2 threads, each in its own process
(CAREamics in ``.bench/careamics-venv``, made by ``scripts/peer_careamics.py``). Throughput is
training patches per second over the training batches alone (a Lightning callback in both),
and over the wall time of the whole fit. Then both predict the 24 validation images (fields
41-48) and the same function scores them against the 400-frame averages (PSNR normalised as
in CSBDeep).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
W2S = REPO.parent / "shared" / "data" / "w2s"
PEER_VENV = REPO / ".bench" / "careamics-venv"
FORWARD_FLOPS_PER_PIXEL = 166.5e3       # the depth-2, 32-filter U-Net with CSBDeep widths

OURS = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from zoo import architectures, spec as specs
from zoo.trainers.fit import fit
import zoo
train, val, out, steps = json.loads(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
blueprint = specs.load(architectures.get("n2v").blueprint_path(2))
started = time.perf_counter()
package = fit(blueprint, None, out / "pkg", train_files=[Path(p) for p in train], val_files=[Path(p) for p in val],
              max_steps=steps, steps_per_epoch=steps, patch=64, batch_size=16, progress=False, overwrite=True,
              module_options={"mask_fraction": 0.002})
wall = time.perf_counter() - started
spec = specs.load(package)
model = zoo.load(package, device="cpu")
from zoo.imageio import read_image
for p in val:
    np.save(out / (Path(p).stem + ".npy"), model.predict(read_image(p).astype(np.float32)))
print(json.dumps({"train_seconds": wall, "patches_per_s": steps * 16 / wall,
                  "patches_per_s_batches": spec.training.config["patches_per_second"]}))
"""


def thread_env(threads: int) -> dict:
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ZOO_THREADS")
    return {**os.environ, **{name: str(threads) for name in names}}


def split() -> tuple[list[Path], list[Path]]:
    fov = lambda p: int(p.stem.split("_")[1])  # noqa: E731
    images = sorted((W2S / "images").glob("w2s_*.png"))
    return [p for p in images if fov(p) <= 40], [p for p in images if 40 < fov(p) <= 48]


def score(predictions: Path, val: list[Path]) -> float:
    import numpy as np

    from zoo.imageio import read_image
    from zoo.restoration.metrics import normalized_psnr

    return float(np.mean([normalized_psnr(np.load(predictions / f"{p.stem}.npy"), read_image(W2S / "targets" / p.name))
                          for p in val]))


def run_ours(train, val, out: Path, steps: int, threads: int) -> dict:
    result = subprocess.run([sys.executable, "-c", OURS, json.dumps(list(map(str, train))),
                             json.dumps(list(map(str, val))), str(out), str(steps)],
                            capture_output=True, text=True, env=thread_env(threads), cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"our training failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_peer(train, val, out: Path, steps: int, threads: int) -> dict | None:
    setup = subprocess.run([sys.executable, str(REPO / "scripts" / "peer_careamics.py"), "setup", str(PEER_VENV)],
                           capture_output=True, text=True)
    if setup.returncode != 0:
        print(f"CAREamics could not be set up, peer skipped:\n{setup.stdout[-2000:]}{setup.stderr[-2000:]}")
        return None
    (out / "train.txt").write_text("\n".join(map(str, train)))
    (out / "val.txt").write_text("\n".join(map(str, val)))
    result = subprocess.run([str(PEER_VENV / "bin" / "python"), str(REPO / "scripts" / "peer_careamics.py"), "train",
                             "--train-list", str(out / "train.txt"), "--val-list", str(out / "val.txt"),
                             "--out-dir", str(out), "--steps", str(steps), "--patch", "64", "--batch-size", "16",
                             "--threads", str(threads)], capture_output=True, text=True, env=thread_env(threads))
    if result.returncode != 0:
        print(f"CAREamics failed, peer skipped:\n{result.stderr[-3000:]}")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    train, val = split()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, runner in (("ours", run_ours), ("careamics", None if args.no_peer else run_peer)):
            if runner is None:
                continue
            out = Path(tmp) / name
            out.mkdir()
            result = runner(train, val, out, args.steps, args.threads)
            if result:
                results[name] = {**result, "val_psnr": score(out, val)}
                print(f"{name}: {json.dumps(results[name])}", flush=True)

    flops_per_patch = 3 * FORWARD_FLOPS_PER_PIXEL * 64 * 64      # forward + backward (about 2x forward)
    peer = results.get("careamics")
    print(f"\nNoise2Void on W2S, {len(train)} training / {len(val)} validation images, {args.steps} steps, "
          f"batch 16, patch 64, {args.threads} threads")
    print("| trainer | patches/s (batches) | patches/s (wall) | x CAREamics | GFLOP/s | val PSNR dB |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        rate = r.get("patches_per_s_batches") or r["patches_per_s"]
        ratio = f"{rate / (peer.get('patches_per_s_batches') or peer['patches_per_s']):.2f}" if peer else "-"
        print(f"| {name} | {rate:.1f} | {r['patches_per_s']:.1f} | {ratio} | {rate * flops_per_patch / 1e9:.0f} | "
              f"{r['val_psnr']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
