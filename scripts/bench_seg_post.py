"""Share of the instance post-processing in a whole prediction on a 2048x2048 image.

Reproduce:  python scripts/bench_seg_post.py [PACKAGE ...] [--size 2048] [--runtime onnx]
            (default: the standard segmentation packages in the local registry)

The image is a mosaic of 256x256 crops of DSB2018 fluorescence validation images (CC0), about
1,300 nuclei.
For each package: the network's tiled prediction (raw outputs), then its instance step on the
stitched outputs, timed apart in the same run; prints seconds, ms per megapixel and the share
of the post-processing in the total.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

import zoo
from zoo.imageio import read_image
from zoo import opnames
from zoo.runtime import ops

REPO = Path(__file__).resolve().parents[1]
DSB = REPO.parent / "shared" / "data" / "dsb2018"
STANDARD = ["stardist-dsb-fluo-2d", "cellpose-dsb-2d", "unet-dsb-2d"]


def mosaic(size: int, seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` grey mosaic of 256x256 crops of fluorescence validation images."""
    spec = importlib.util.spec_from_file_location("bench_seg_baseline", REPO / "scripts" / "bench_seg_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, val = module.dsb_split(DSB)["fluo"]
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size), np.float32)
    for y in range(0, size, 256):
        for x in range(0, size, 256):
            image = np.asarray(read_image(DSB / "images" / f"{val[rng.integers(len(val))]}.png"), np.float32)
            image = image if image.ndim == 2 else image[..., :3].mean(axis=-1)
            crop = image[:256, :256]
            lo, hi = np.percentile(crop, [1, 99.8])
            out[y:y + 256, x:x + 256][: crop.shape[0], : crop.shape[1]] = (crop - lo) / max(hi - lo, 1e-6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packages", nargs="*", default=STANDARD)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--runtime", default="onnx", choices=["onnx", "torch"])
    args = parser.parse_args()
    image = mosaic(args.size)
    mpx = image.size / 1e6
    print(f"image {args.size}x{args.size} ({mpx:.1f} Mpx), runtime {args.runtime}, CPU")
    print("| package | network s | post-processing s | post ms/Mpx | post share | objects |")
    print("|---|---|---|---|---|---|")
    for name in args.packages:
        model = zoo.load(name, runtime=args.runtime, device="cpu")
        model.predict(image[:256, :256], raw=True)          # warm-up (sessions, allocations)
        started = time.perf_counter()
        raw = model.predict_tensor(np.repeat(image[None, None], model.spec.inputs[0].n_channels, axis=1), raw=True)
        network = time.perf_counter() - started
        instance_ops = [op for op in model.spec.outputs[0].postprocessing if opnames.is_instance_op(op.op)]
        started = time.perf_counter()
        labels = ops.apply(instance_ops, raw, {}, "labels", ops.POSTPROCESSING)
        post = time.perf_counter() - started
        print(f"| {name} | {network:.2f} | {post:.2f} | {1000 * post / mpx:.0f} | {post / (network + post):.0%} | "
              f"{len(np.unique(labels)) - 1} |", flush=True)


if __name__ == "__main__":
    main()
