"""Temporary disk, time and memory of a streamed instance segmentation (issue 21.9).

For each size, a StarDist prediction (stardist-dsb-fluo-2d) of a SIZE x SIZE image (the DSB
fluorescence sample tiled) is streamed to a .tif twice, each in a child process of its own:

* ``old``: the two-pass path the zoo used before: every network output channel streamed into a
  float32 NPY beside the target, then labelled band by band from it (``label_bands``);
* ``new``: ``predict_file`` as it is now (bands labelled as they stream, nothing kept on disk).

While a child runs, this process samples the bytes under the target's folder (apparent sizes and
allocated blocks). Temporary disk is the peak there beyond the final label output (the output's
own partial file counts as the output). Printed per path: peak temporary disk, label output size,
their ratio (goal: at most 2), seconds, peak RSS of the child (``VmHWM``: it counts the pages
of memory-mapped files the child touched, as well as its own memory), objects found, and whether
the two paths wrote the same labels.

    .venv/bin/python scripts/bench_stream_instances.py --sizes 1024 8192
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "stardist-dsb-fluo-2d"


def old_predict_instances(model, source: Path, target: Path) -> tuple[int, ...]:
    """The path before issue 21.9 (``_predict_instances`` as it was): raw outputs of every channel
    into a float32 NPY beside the target, then ``label_bands`` over it."""
    from zoo import opnames
    from zoo.runtime import stream

    out = model.spec.outputs[0]
    instance_ops = [op for op in out.postprocessing if opnames.is_instance_op(op.op)]
    raw_path = target.with_name(f".{target.name}.raw-{os.getpid()}.npy")
    _, layout, _ = stream._open_input(model, source, None)
    sink = stream._Sink(target, layout)
    try:
        stream.predict_file(model, source, raw_path, raw=True)
        outputs = np.load(raw_path, mmap_mode="r")
        stream.label_bands(outputs, layout.output(out.n_channels), instance_ops, sink, stream.MAX_OBJECT_SIZE)
        del outputs
        return sink.commit()
    except BaseException:
        sink.discard()
        raise
    finally:
        raw_path.unlink(missing_ok=True)


def child(path: str, source: Path, target: Path) -> None:
    import zoo
    from zoo.registry import standard_store

    versions = sorted((standard_store() / "packages" / PACKAGE).iterdir())
    model = zoo.load(versions[-1])
    start = time.perf_counter()
    if path == "old":
        shape = old_predict_instances(model, source, target)
    else:
        shape = model.predict_file(source, target)
    seconds = time.perf_counter() - start
    # VmHWM (kB), this process's own: ru_maxrss keeps the parent's peak across exec
    rss = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
    print(json.dumps({"seconds": seconds, "peak_rss": rss, "shape": list(shape), "model": str(versions[-1].name)}))


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(apparent, allocated) bytes of the files under ``folder``."""
    apparent = allocated = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:      # renamed or removed while walking
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def measure(path: str, source: Path, folder: Path, interval: float) -> dict:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    target = folder / "labels.tif"
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            apparent, allocated = folder_bytes(folder)
            peak[0], peak[1] = max(peak[0], apparent), max(peak[1], allocated)
            done.wait(interval)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    run = subprocess.run([sys.executable, __file__, "--child", path, str(source), str(target)],
                         capture_output=True, text=True)
    done.set()
    watcher.join()
    if run.returncode:
        raise SystemExit(f"{path} failed:\n{run.stderr[-4000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    st = os.stat(target)
    output, output_alloc = st.st_size, st.st_blocks * 512
    result.update(output=output, temp_peak=max(0, peak[0] - output), temp_peak_allocated=max(0, peak[1] - output_alloc),
                  target=str(target))
    result["ratio"] = result["temp_peak"] / output
    return result


def make_input(size: int, folder: Path) -> Path:
    import tifffile

    sample = tifffile.imread(REPO / "samples" / "dsb_fluo_nuclei.tif")
    reps = (-(-size // sample.shape[0]), -(-size // sample.shape[1]))
    image = np.tile(sample, reps)[:size, :size]
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"nuclei_{size}.tif"
    tifffile.imwrite(source, image)
    return source


def gb(n: float) -> str:
    return f"{n / 1e9:.3f} GB"


def main() -> None:
    import tifffile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192], help="image sides (default 8192)")
    parser.add_argument("--paths", nargs="+", default=["old", "new"], choices=["old", "new"])
    parser.add_argument("--workdir", type=Path, default=None, help="where inputs and outputs go (default: a temp dir)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between disk samples")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--child", nargs=3, metavar=("PATH", "SOURCE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_stream_instances-"))
    rows = []
    try:
        for size in args.sizes:
            source = make_input(size, work / "in")
            results = {}
            for path in args.paths:
                r = measure(path, source, work / f"out-{path}-{size}", args.interval)
                labels = tifffile.memmap(r["target"], mode="r")
                r["objects"] = int(labels.max())
                del labels
                results[path] = r
                print(f"{size}^2 {path:>3}: temp disk peak {gb(r['temp_peak'])} "
                      f"(allocated {gb(r['temp_peak_allocated'])}), "
                      f"labels {gb(r['output'])}, ratio {r['ratio']:.2f}x (goal <= 2x), {r['seconds']:.1f} s, "
                      f"peak RSS {gb(r['peak_rss'])}, {r['objects']} objects", flush=True)
            if len(results) == 2:
                a = tifffile.memmap(results["old"]["target"], mode="r")
                b = tifffile.memmap(results["new"]["target"], mode="r")
                same = all(np.array_equal(a[i:i + 1024], b[i:i + 1024]) for i in range(0, a.shape[0], 1024))
                print(f"{size}^2: old and new labels identical: {same}", flush=True)
                for r in results.values():
                    r["identical"] = same
            rows.append({"size": size, **{p: {k: v for k, v in r.items() if k != "target"}
                                          for p, r in results.items()}})
            for path in args.paths:
                shutil.rmtree(work / f"out-{path}-{size}", ignore_errors=True)
        print(json.dumps(rows, indent=1))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
