"""Prediction speed and memory: our runners against CAREamics' tiled N2V prediction, 2048x2048.

Reproduce:  python scripts/bench_predict.py [--size 2048] [--threads 2] [--no-peer] [--repeats 1] [--json OUT]

Every contender is a whole separate process (peak RSS from its own getrusage) that loads its
model, warms up on a small image, then predicts one ``size x size`` image as its users would:

- ``ours-default``: ``zoo.load(pkg).predict(image)`` with no runtime named: the runtime the
                   calibration chose for this package on this machine (cached; the calibration,
                   if it runs, is part of the untimed load), tiles and batch chosen from free
                   memory, blended seams;
- ``ours-onnx``:   the same with ``runtime="onnx"`` (graph rewritten in memory, arena on where
                   the memory allows);
- ``ours-onnx-published``: ONNX Runtime on the graph as published, arena off (the runtime
                   before issue 28: ``ZOO_ORT_REWRITES=none ZOO_ORT_ARENA=0``);
- ``ours-torch``:  the same with ``runtime="torch"``;
- ``ours-stream``: ``Model.predict_file(in.tif, out.tif)`` (out of core, default runtime);
- ``careamics``:   CAREamics 0.3.5, default N2V U-Net (depth 2, 32 filters), tile 256, overlap
                   48, installed by ``scripts/peer_careamics.py`` into ``.bench/careamics-venv``.

Limits (issue 28.3), each as Mpx/s of tile pixels for the network's forward FLOPs per pixel
(counted from the ONNX graph as published: 2 x multiply-adds of every Conv/ConvTranspose):

- FMA peak: cores x nominal MHz (``/proc/cpuinfo``) x 32 fp32 FLOP per cycle (two 256-bit FMA
  pipes; AVX-512 on Zen 4 runs on the same pipes), and the best fp32 matrix multiply measured;
- convolution limit: every convolution of the package's own graph, at the tile's shapes, timed
  alone with oneDNN (torch, NCHW and channels-last) and ONNX Runtime (a one-node graph); each
  layer's best time, summed, is the fastest this machine runs these layers as one library call
  each. The rewritten graph (fewer FLOPs: the transposed convolutions) gets its own such limit.

Each runner's fraction of the convolution limit is its network time (tiles only) against it.
Where the time goes: ONNX Runtime's own profiler on one tile, by op type, plus the share of the
run spent outside the network (reading, blending, normalising).
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
mode, package, size, source, device = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
import zoo
runtime = {"ours-torch": "torch", "ours-onnx": "onnx", "ours-onnx-published": "onnx"}.get(mode, "auto")
model = zoo.load(package, runtime=runtime, device=device)
inner, calls = model.runner, {"seconds": 0.0, "pixels": 0}
def timed(batch):
    t = time.perf_counter(); out = inner(batch)
    calls["seconds"] += time.perf_counter() - t; calls["pixels"] += int(np.prod(batch.shape[2:])) * batch.shape[0]
    return out
model._runner = timed
timed.on_gpu, timed.bytes_per_pixel, timed.name = inner.on_gpu, inner.bytes_per_pixel, inner.name
import tifffile
image = tifffile.imread(source)
model.predict(image[:256, :256])                       # warm-up: sessions, allocator, caches
calls.update(seconds=0.0, pixels=0)
plans, batch = model.plan_tiles(image.shape)
usage = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
if mode == "ours-stream":
    model.predict_file(source, os.path.join(os.path.dirname(source), "out.tif"), overwrite=True)
else:
    out = model.predict(image)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
cpu_seconds = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
if model.runner.on_gpu:
    import torch
    torch.cuda.synchronize()
print(json.dumps({"seconds": seconds, "mpx_per_s": size * size / 1e6 / seconds, "cpu_seconds": cpu_seconds,
                  "mpx_per_cpu_s": size * size / 1e6 / cpu_seconds,
                  # VmHWM, this process's own: ru_maxrss keeps the parent's peak across exec
                  "peak_rss_mb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024,
                  "network_seconds": calls["seconds"], "network_pixels": calls["pixels"],
                  "tiles": "x".join(str(p.n) for p in plans) + " of " + "x".join(str(p.tile) for p in plans),
                  "batch": batch, "runtime": model.runtime,
                  "rewrites": getattr(inner, "rewritten", None), "arena": getattr(inner, "arena", None)}))
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


def fma_peak_gflops(threads: int) -> tuple[float, float]:
    """(nominal MHz, threads x MHz x 32 fp32 FLOP per cycle)."""
    mhz = 0.0
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            mhz = max(mhz, float(line.split(":")[1]))
    return mhz, threads * mhz * 1e6 * 32 / 1e9


LAYERS = r"""
import json, sys, time, numpy as np, onnx, onnxruntime as ort, torch
from onnx import helper, numpy_helper, TensorProto
from zoo.runtime.graph_rewrite import rewrite
path, tile, threads, rewritten = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
torch.set_num_threads(threads)
data = open(path, "rb").read()
if rewritten:
    data = rewrite(data)[0]
model = onnx.load_model_from_string(data)
channels = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value or 1
for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, channels, tile, tile)):
    dim.Clear(); dim.dim_value = value
model = onnx.shape_inference.infer_shapes(model)
shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
          for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
weights = {w.name: numpy_helper.to_array(w) for w in model.graph.initializer}
def best(f, reps=3):
    f(); t = float("inf")
    for _ in range(reps):
        s = time.perf_counter(); f(); t = min(t, time.perf_counter() - s)
    return t
rows = []
for node in model.graph.node:
    if node.op_type not in ("Conv", "ConvTranspose"):
        continue
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    w = weights[node.input[1]]; b = weights.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    xs = shapes[node.input[0]]; ys = shapes[node.output[0]]
    x = np.random.default_rng(0).random(xs, dtype=np.float32)
    pads = a.get("pads", [0, 0, 0, 0]); stride = a.get("strides", [1, 1])
    transpose = node.op_type == "ConvTranspose"
    macs = (int(np.prod(xs)) if transpose else int(np.prod(ys))) * int(np.prod(w.shape[1:]))
    tx, tw = torch.from_numpy(x), torch.from_numpy(w); tb = None if b is None else torch.from_numpy(b)
    F = torch.nn.functional
    def run_torch(layout):
        xx, ww = tx.contiguous(memory_format=layout), tw.contiguous(memory_format=layout)
        def f():
            with torch.inference_mode():
                if transpose:
                    F.conv_transpose2d(xx, ww, tb, stride=stride, padding=pads[:2])
                else:
                    F.conv2d(xx, ww, tb, stride=stride, padding=pads[:2])
        return f
    times = {"onednn-nchw": best(run_torch(torch.contiguous_format)),
             "onednn-nhwc": best(run_torch(torch.channels_last))}
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    one = helper.make_node(node.op_type, ["x", "w"] + (["b"] if b is not None else []), ["y"], **a)
    g = helper.make_graph([one], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ys)], initializer=inits)
    o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.log_severity_level = 3
    sess = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                o, providers=["CPUExecutionProvider"])
    times["ort"] = best(lambda: sess.run(None, {"x": x}))
    rows.append({"layer": node.output[0], "op": node.op_type, "gflop": 2 * macs / 1e9, "seconds": times})
print(json.dumps(rows))
"""


def conv_limit(onnx_path: Path, tile: int, threads: int, rewritten: bool) -> dict:
    """Each convolution of the graph timed alone with oneDNN and ONNX Runtime at the tile's shapes."""
    out = subprocess.run([sys.executable, "-c", LAYERS, str(onnx_path), str(tile), str(threads), "1" if rewritten else "0"],
                         capture_output=True, text=True, env=thread_env(threads), cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"layer timing failed:\n{out.stderr[-3000:]}")
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    best = sum(min(r["seconds"].values()) for r in rows)
    per_library = {lib: sum(r["seconds"][lib] for r in rows) for lib in rows[0]["seconds"]}
    gflop = sum(r["gflop"] for r in rows)
    return {"tile": tile, "gflop": gflop, "seconds_best": best, "gflops_best": gflop / best,
            "mpx_per_s": tile * tile / 1e6 / best, "seconds_by_library": per_library,
            "layers": [{"layer": r["layer"], "op": r["op"], "gflops": {k: r["gflop"] / v for k, v in r["seconds"].items()}}
                       for r in rows]}


def ort_profile(onnx_path: Path, tile: int, threads: int) -> list[tuple[str, float]]:
    """Share of one tile's forward time by ONNX Runtime op type (its own profiler)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = True
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    from zoo.runtime.graph_rewrite import rewrite

    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        data = rewrite(onnx_path.read_bytes())[0]      # as the ONNX runner runs it
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
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


def run_ours(mode: str, package: str, size: int, source: Path, threads: int, device: str = "cpu") -> dict | None:
    env = thread_env(threads)
    if mode == "ours-onnx-published":
        env.update(ZOO_ORT_REWRITES="none", ZOO_ORT_ARENA="0")
    out = subprocess.run([sys.executable, "-c", WORKER, mode, package, str(size), str(source), device],
                         capture_output=True, text=True, env=env, cwd=REPO)
    if out.returncode != 0:     # reported, and the other contenders still run (a GPU without ONNX Runtime's CUDA)
        print(f"{mode} failed, skipped:\n{out.stderr[-2000:]}", flush=True)
        return None
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


PRECISION = r"""
import json, sys, time, numpy as np, tifffile, zoo
from zoo.restoration.metrics import normalized_psnr
from zoo.segmentation.metrics import evaluate
restore, segment, samples = sys.argv[1], sys.argv[2], sys.argv[3]
noisy, clean = tifffile.imread(f"{samples}/hagen_actin_lowsnr.tif"), tifffile.imread(f"{samples}/hagen_actin_highsnr.tif")
nuclei, truth = tifffile.imread(f"{samples}/dsb_fluo_nuclei.tif"), tifffile.imread(f"{samples}/dsb_fluo_nuclei_labels.tif")
rows = []
for package, quality in ((restore, lambda m: normalized_psnr(m.predict(noisy), clean)),
                         (segment, lambda m: next(r["ap"] for r in evaluate([truth], [m.predict(nuclei)]) if r["threshold"] == 0.5))):
    for runtime, precision in (("onnx", None), ("torch", None), ("torch", "bf16"), ("torch", "fp16"), ("onnx", "int8"), ("onnx", "fp16")):
        model = zoo.load(package, runtime=runtime, device="cpu", precision=precision)
        tol = model.spec.test
        x = np.random.default_rng(0).random((1, model.spec.inputs[0].n_channels, 512, 512), dtype=np.float32)
        model.runner(x); best = float("inf")
        for _ in range(3):
            start = time.perf_counter(); model.runner(x); best = min(best, time.perf_counter() - start)
        try:
            worst = model.test(); within = True
        except Exception as e:
            worst, within = None, False
        rows.append({"package": package, "runtime": runtime, "precision": precision or "fp32",
                     "mpx_per_s": 512 * 512 / 1e6 / best, "quality": float(quality(model)),
                     "within_test_tolerance": within, "tolerance": {"rtol": tol.rtol, "atol": tol.atol}})
        print(json.dumps(rows[-1]), flush=True)
"""


def precision_report(threads: int, restore: str = "n2v-w2s", segment: str = "stardist-dsb-fluo-2d") -> list[dict]:
    """Speed (network on a 512^2 tile) and quality (PSNR on Hagen's actin pair; AP@0.5 on the DSB
    fluorescence sample) of every precision, against float32 in the same run."""
    out = subprocess.run([sys.executable, "-c", PRECISION, restore, segment, str(REPO / "samples")],
                         capture_output=True, text=True, env=thread_env(threads), cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"precision report failed:\n{out.stderr[-3000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    print("\n| package | runtime | precision | network Mpx/s (512^2) | x fp32 same runtime | quality | change | "
          "test tensors within tolerance |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(b for b in rows if b["package"] == r["package"] and b["runtime"] == r["runtime"] and b["precision"] == "fp32")
        unit = "dB PSNR" if r["package"] == restore else "AP@0.5"
        print(f"| {r['package']} | {r['runtime']} | {r['precision']} | {r['mpx_per_s']:.3f} | "
              f"{r['mpx_per_s'] / base['mpx_per_s']:.2f} | {r['quality']:.3f} {unit} | {r['quality'] - base['quality']:+.3f} | "
              f"{'yes' if r['within_test_tolerance'] else 'no'} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="n2v-w2s")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per contender, interleaved (a round runs every contender once); the best is reported")
    parser.add_argument("--modes", nargs="+",
                        default=["ours-default", "ours-onnx", "ours-onnx-published", "ours-torch", "ours-stream"])
    parser.add_argument("--no-peer", action="store_true", help="skip CAREamics")
    parser.add_argument("--no-limits", action="store_true", help="skip the per-layer convolution limit")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N (limits and profile: CPU only)")
    parser.add_argument("--precision-report", action="store_true",
                        help="only the reduced-precision table: speed and PSNR / AP change of fp16, bf16, int8")
    args = parser.parse_args()
    if args.precision_report:
        rows = precision_report(args.threads)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return 0
    if args.device != "cpu":
        args.no_limits = True

    os.environ.update(thread_env(args.threads))     # the calibration key includes the thread setting
    import zoo

    model = zoo.load(args.package, device=args.device)   # pulls it into the cache
    settle = getattr(model.runner, "resolve", None)
    if settle:                                             # calibrates (once per machine) for the workers
        settle(args.size ** 2)
    print(f"default runtime for {model.spec.ref} here: {model.runtime}")
    onnx_path = model.root / model.spec.weights.onnx.file
    gflops = one_core_gflops()
    mhz, fma = fma_peak_gflops(args.threads)
    ours_flops = network_flops_per_pixel(onnx_path)
    print(f"FMA peak: {args.threads} cores x {mhz:.0f} MHz x 32 FLOP/cycle = {fma:.0f} GFLOP/s; "
          f"fp32 matmul measured: {gflops:.1f} GFLOP/s on one core")
    print(f"network: ours {ours_flops / 1e3:.1f} kFLOP/px as published, CAREamics {PEER_FLOPS_PER_PIXEL / 1e3:.1f} kFLOP/px")

    results: dict[str, dict] = {}
    runs: dict[str, list] = {mode: [] for mode in args.modes + ([] if args.no_peer else ["careamics"])}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.tif"
        make_image(source, args.size)
        for _ in range(args.repeats):
            for mode in args.modes:
                done = run_ours(mode, args.package, args.size, source, args.threads, args.device)
                if done:
                    runs[mode].append(done)
                    print(f"{mode}: {json.dumps(done)}", flush=True)
            if not args.no_peer:
                peer_run = run_peer(args.size, args.threads)
                if peer_run:
                    runs["careamics"].append(peer_run)
                    print(f"careamics: {json.dumps(peer_run)}", flush=True)
    for mode, done in runs.items():
        if done:
            results[mode] = max(done, key=lambda r: r["mpx_per_s"]) | {"peak_rss_mb": max(r["peak_rss_mb"] for r in done)}

    limits = {}
    tile = None
    for r in results.values():
        if "tiles" in r:
            tile = int(r["tiles"].split(" of ")[1].split("x")[0])
            break
    if not args.no_limits and tile:
        limits["published"] = conv_limit(onnx_path, min(tile, 768), args.threads, rewritten=False)
        limits["rewritten"] = conv_limit(onnx_path, min(tile, 768), args.threads, rewritten=True)
        for name, lim in limits.items():
            libs = ", ".join(f"{k} {lim['gflop'] / v:.0f}" for k, v in lim["seconds_by_library"].items())
            print(f"convolution limit ({name} graph, {lim['tile']}^2 tiles): {lim['gflops_best']:.0f} GFLOP/s effective "
                  f"= {lim['mpx_per_s']:.2f} Mpx/s of tile pixels (whole graph as one library: {libs} GFLOP/s)")

    peer = results.get("careamics")
    conv_rate = limits["published"]["mpx_per_s"] if limits else None
    fma_rate = fma * 1e9 / ours_flops / 1e6
    print(f"\n{args.size}x{args.size}, {args.device}, {args.threads} threads, whole processes, best of {args.repeats} interleaved round(s)")
    print("| contender | runtime | Mpx/s | peak RSS MB | x CAREamics speed | RSS / CAREamics | network Mpx/s (tile px) "
          "| % of conv limit | % of FMA peak | Mpx per CPU-s | tiles |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        speed = f"{r['mpx_per_s'] / peer['mpx_per_s']:.2f}" if peer else "-"
        memory = f"{r['peak_rss_mb'] / peer['peak_rss_mb']:.2f}" if peer else "-"
        if name == "careamics":
            print(f"| {name} | torch | {r['mpx_per_s']:.3f} | {r['peak_rss_mb']:.0f} | {speed} | {memory} | - | - | "
                  f"{100 * r['mpx_per_s'] * 1e6 * PEER_FLOPS_PER_PIXEL / (fma * 1e9):.0f}% | - | 256 + overlap 48 |")
            continue
        net = r["network_pixels"] / 1e6 / r["network_seconds"]
        conv = f"{100 * net / conv_rate:.0f}%" if conv_rate else "-"
        print(f"| {name} | {r.get('runtime', '?')} | {r['mpx_per_s']:.3f} | {r['peak_rss_mb']:.0f} | {speed} | {memory} | "
              f"{net:.2f} | {conv} | {100 * net / fma_rate:.0f}% | {r.get('mpx_per_cpu_s', 0):.3f} | {r['tiles']} |")

    best = results.get("ours-onnx")
    if best and args.device == "cpu":
        overhead = best["network_pixels"] / args.size ** 2
        outside = 1 - best["network_seconds"] / best["seconds"]
        print(f"\nwhere ours-onnx's time goes: network {100 * (1 - outside):.0f}% of the run, outside the network "
              f"{100 * outside:.0f}%; tiles cover {overhead:.2f}x the image (halo + blend)")
        profile = ort_profile(onnx_path, int(best["tiles"].split(" of ")[1].split("x")[0]), args.threads)
        print("ONNX Runtime profile of one tile by op type (rewritten graph): " +
              ", ".join(f"{op} {100 * share:.0f}%" for op, share in profile[:8]))
        results["profile"] = dict(profile)
    if args.json:
        args.json.write_text(json.dumps({"limits": limits, "fma_peak_gflops": fma, "mhz": mhz,
                                         "gflops_one_core_matmul": gflops, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
