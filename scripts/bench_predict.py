"""Prediction speed and memory: our runners against CAREamics' tiled N2V prediction, 2048x2048.

Reproduce:  python scripts/bench_predict.py [--size 2048] [--threads 2] [--no-peer] [--repeats 1]

Every contender is a whole separate process (peak RSS from its own getrusage) that loads its
model, warms up on a small image, then predicts one ``size x size`` image as its users would:

- ``ours-onnx``:   ``zoo.load(pkg).predict(image)`` (ONNX Runtime, tiles and batch chosen from
                   free memory, blended seams);
- ``ours-torch``:  the same with ``runtime="torch"``;
- ``ours-stream``: ``Model.predict_file(in.tif, out.tif)`` (out of core, ONNX Runtime);
- ``careamics``:   CAREamics 0.3.5, default N2V U-Net (depth 2, 32 filters), tile 256, overlap
                   48, installed by ``scripts/peer_careamics.py`` into ``.bench/careamics-venv``.

The physical limit is ``threads x one core's measured fp32 matrix-multiply GFLOP/s`` divided by
the network's forward FLOPs per pixel (counted from the ONNX graph: 2 x multiply-adds of every
Conv/ConvTranspose). Where the time goes: ONNX Runtime's own profiler on one tile, by op type,
plus the share of the run spent outside the network (reading, blending, normalising).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEER_VENV = REPO / ".bench" / "careamics-venv"
PEER_FLOPS_PER_PIXEL = 166.5e3   # CAREamics' default N2V U-Net, forward (as the issue states)

WORKER = r"""
import json, os, resource, sys, time
import numpy as np
mode, package, size, source = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
import zoo
runtime = "torch" if mode == "ours-torch" else "onnx"
if runtime == "torch":
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
model = zoo.load(package, runtime=runtime, device="cpu")
inner, calls = model.runner, {"seconds": 0.0, "pixels": 0}
def timed(batch):
    t = time.perf_counter(); out = inner(batch)
    calls["seconds"] += time.perf_counter() - t; calls["pixels"] += int(np.prod(batch.shape[2:])) * batch.shape[0]
    return out
model._runner = timed
timed.on_gpu, timed.bytes_per_pixel = inner.on_gpu, inner.bytes_per_pixel
import tifffile
image = tifffile.imread(source)
model.predict(image[:256, :256])                       # warm-up: sessions, allocator, caches
calls.update(seconds=0.0, pixels=0)
plans, batch = model.plan_tiles(image.shape)
start = time.perf_counter()
if mode == "ours-stream":
    model.predict_file(source, os.path.join(os.path.dirname(source), "out.tif"), overwrite=True)
else:
    out = model.predict(image)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "mpx_per_s": size * size / 1e6 / seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "network_seconds": calls["seconds"], "network_pixels": calls["pixels"],
                  "tiles": "x".join(str(p.n) for p in plans) + " of " + "x".join(str(p.tile) for p in plans),
                  "batch": batch}))
"""

MATMUL = r"""
import time, numpy as np
best = 0.0
for n in (1024, 2048):
    a = np.random.default_rng(0).random((n, n), dtype=np.float32); b = a.T.copy(); a @ b
    for _ in range(3):
        t = time.perf_counter(); a @ b; best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
print(best)
"""


def thread_env(threads: int) -> dict:
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ZOO_THREADS")
    return {**os.environ, **{name: str(threads) for name in names}}


def one_core_gflops() -> float:
    out = subprocess.run([sys.executable, "-c", MATMUL], capture_output=True, text=True, check=True, env=thread_env(1))
    return float(out.stdout.strip())


def network_flops_per_pixel(onnx_path: Path, probe: int = 256) -> float:
    """2 x multiply-adds of every convolution for a ``probe x probe`` input, per input pixel."""
    import onnx

    model = onnx.load(str(onnx_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 1, probe, probe)):
        dim.Clear()
        dim.dim_value = value
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    weights = {w.name: list(w.dims) for w in model.graph.initializer}
    flops = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            kernel = weights[node.input[1]]   # Conv: (out, in/groups, k...); ConvTranspose: (in, out/groups, k...)
            out = shapes[node.output[0]]
            if node.op_type == "Conv":
                flops += 2 * math.prod(out) * math.prod(kernel[1:])
            else:
                flops += 2 * math.prod(shapes[node.input[0]]) * math.prod(kernel[1:])
    return flops / probe ** 2


def ort_profile(onnx_path: Path, tile: int, threads: int) -> list[tuple[str, float]]:
    """Share of one tile's forward time by ONNX Runtime op type (its own profiler)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((1, 1, tile, tile), dtype=np.float32)
        for _ in range(3):
            session.run(None, {session.get_inputs()[0].name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + event["dur"]
    total = sum(by_op.values()) or 1.0
    return sorted(((op, t / total) for op, t in by_op.items()), key=lambda kv: -kv[1])


def run_ours(mode: str, package: str, size: int, source: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, mode, package, str(size), str(source)],
                         capture_output=True, text=True, env=thread_env(threads), cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_peer(size: int, threads: int) -> dict | None:
    setup = subprocess.run([sys.executable, str(REPO / "scripts" / "peer_careamics.py"), "setup", str(PEER_VENV)],
                           capture_output=True, text=True)
    if setup.returncode != 0:
        print(f"CAREamics could not be set up, peer skipped:\n{setup.stdout[-2000:]}{setup.stderr[-2000:]}")
        return None
    out = subprocess.run([str(PEER_VENV / "bin" / "python"), str(REPO / "scripts" / "peer_careamics.py"), "run",
                          "--size", str(size), "--tile", "256", "--overlap", "48", "--threads", str(threads)],
                         capture_output=True, text=True, env=thread_env(threads))
    if out.returncode != 0:
        print(f"CAREamics failed, peer skipped:\n{out.stderr[-3000:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_image(path: Path, size: int) -> None:
    import numpy as np
    import tifffile

    sample = tifffile.imread(REPO / "samples" / "hagen_actin_lowsnr.tif")
    reps = -(-size // sample.shape[0])
    tifffile.imwrite(path, np.tile(sample, (reps, reps))[:size, :size])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="n2v-w2s")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs per contender; the best is reported")
    parser.add_argument("--modes", nargs="+", default=["ours-onnx", "ours-torch", "ours-stream"])
    parser.add_argument("--no-peer", action="store_true", help="skip CAREamics")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import zoo

    model = zoo.load(args.package, device="cpu")   # pulls it into the cache for the workers
    onnx_path = model.root / model.spec.weights.onnx.file
    gflops = one_core_gflops()
    ours_flops = network_flops_per_pixel(onnx_path)
    limits = {"ours": args.threads * gflops * 1e9 / ours_flops / 1e6,
              "careamics": args.threads * gflops * 1e9 / PEER_FLOPS_PER_PIXEL / 1e6}
    print(f"one core: {gflops:.1f} GFLOP/s fp32 matmul; x{args.threads} threads")
    print(f"network: ours {ours_flops / 1e3:.1f} kFLOP/px (limit {limits['ours']:.2f} Mpx/s), "
          f"CAREamics {PEER_FLOPS_PER_PIXEL / 1e3:.1f} kFLOP/px (limit {limits['careamics']:.2f} Mpx/s)")

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.tif"
        make_image(source, args.size)
        for mode in args.modes:
            runs = [run_ours(mode, args.package, args.size, source, args.threads) for _ in range(args.repeats)]
            results[mode] = max(runs, key=lambda r: r["mpx_per_s"]) | {"peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
            print(f"{mode}: {json.dumps(results[mode])}", flush=True)
    if not args.no_peer:
        runs = [r for r in (run_peer(args.size, args.threads) for _ in range(args.repeats)) if r]
        if runs:
            results["careamics"] = max(runs, key=lambda r: r["mpx_per_s"]) | {"peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
            print(f"careamics: {json.dumps(results['careamics'])}", flush=True)

    peer = results.get("careamics")
    print(f"\n{args.size}x{args.size}, {args.threads} threads, whole processes")
    print("| contender | Mpx/s | peak RSS MB | x CAREamics speed | RSS / CAREamics | % of physical limit | tiles |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        limit = limits["careamics" if name == "careamics" else "ours"]
        speed = f"{r['mpx_per_s'] / peer['mpx_per_s']:.2f}" if peer else "-"
        memory = f"{r['peak_rss_mb'] / peer['peak_rss_mb']:.2f}" if peer else "-"
        tiles = r.get("tiles", "256 + overlap 48")
        print(f"| {name} | {r['mpx_per_s']:.3f} | {r['peak_rss_mb']:.0f} | {speed} | {memory} | "
              f"{100 * r['mpx_per_s'] / limit:.0f}% | {tiles} |")

    best = results.get("ours-onnx")
    if best:
        tile = int(best["tiles"].split(" of ")[1].split("x")[0])
        overhead = best["network_pixels"] / args.size ** 2
        outside = 1 - best["network_seconds"] / best["seconds"]
        network_rate = best["network_pixels"] / 1e6 / best["network_seconds"]
        print(f"\nwhere ours-onnx's time goes: network {100 * (1 - outside):.0f}% of the run "
              f"({network_rate:.2f} Mpx/s of tile pixels = {100 * network_rate / limits['ours']:.0f}% of the limit), "
              f"outside the network {100 * outside:.0f}%; tiles cover {overhead:.2f}x the image (halo + blend)")
        profile = ort_profile(onnx_path, tile, args.threads)
        print("ONNX Runtime profile of one tile by op type: " +
              ", ".join(f"{op} {100 * share:.0f}%" for op, share in profile[:8]))
        results["profile"] = dict(profile)
    if args.json:
        args.json.write_text(json.dumps({"limits": limits, "gflops_one_core": gflops, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
