"""Peak memory of out-of-core prediction for every standard 2D package: flat in the image size?

Reproduce:  python scripts/bench_memory.py [--sizes 4096 16384] [--formats tif zarr npy]
                                           [--packages NAME ...] [--json OUT] [--threads N]
                                           [--timeout SECONDS] [--workdir DIR]

For every standard 2D package (the classifier has no image output and is skipped) and every
output format, each size runs ``zoo predict PACKAGE in.tif -o out.FORMAT`` as a separate
process, exactly as a user runs it (default runtime, tiles from free memory, shift check), on
a uint16 TIFF of that size (the Hagen actin sample tiled; for RGB packages the DSB H&E sample
tiled, channels last). The peak RSS is the child's own (``wait4``, from a tiny launcher). A package is flat
when the largest size's peak is within 1.2x of the smallest's.

Runs go format by format (every package's sizes in one format before the next format), and
every finished run is written to the JSON at once: a run cut short still reports what it
measured, and a rerun with the same ``--json`` skips the runs already there. ``--threads N``
gives each child N threads (``ZOO_THREADS``; the calibration is keyed by it, and redone once
for it here before anything is measured). ``--timeout`` stops a run after that many seconds and
records its peak so far as a lower bound (``timed_out``). Outputs are deleted after each run;
``--workdir`` keeps the input images there (reused by a rerun).

Reports a table (package, format, peak RSS per size, ratio, seconds) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
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


_LAUNCHER = """
import json, os, sys, time
out, timeout, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(cmd[0], cmd)
timed_out = False
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    if timeout and time.perf_counter() - started > timeout:
        os.kill(pid, 9)
        timed_out = True
        _, status, usage = os.wait4(pid, 0)
        break
    time.sleep(0.5)
with open(out, "w") as f:
    json.dump({"seconds": time.perf_counter() - started, "peak_rss_mb": usage.ru_maxrss / 1024,
               "timed_out": timed_out, "code": os.waitstatus_to_exitcode(status),
               "launcher_peak_mb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024}, f)
"""
"""Starts ``zoo predict`` from a fresh, tiny interpreter and reports its ``wait4`` peak. Linux
carries the high-water RSS of the process that forks (here: that tiny one) into the child's
``ru_maxrss`` at exec, so a child started from this benchmark itself (which loads and calibrates
every package first) reported at least the benchmark's own peak: a floor of up to 1.66 GB under
the packages' numbers (found 2026-12-07: a CARE run at 4096^2 read exactly the benchmark's
VmHWM, 1663.93 MB)."""


def run(package: str, source: Path, target: Path, timeout: float | None = None) -> dict:
    """One ``zoo predict`` process: seconds and its own peak RSS (a lower bound if it timed out)."""
    zoo_cli = REPO / ".venv" / "bin" / "zoo"
    cmd = [str(zoo_cli) if zoo_cli.exists() else shutil.which("zoo") or "zoo",
           "predict", package, str(source), "-o", str(target), "--overwrite"]
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        with open(Path(tmp) / "log", "w+b") as log:   # a pipe nobody reads could fill and block the child
            subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, str(result_file), str(timeout or 0), *cmd],
                           stdout=log, stderr=log, check=False)
            log.seek(0)
            err = log.read().decode(errors="replace")
        result = json.loads(result_file.read_text()) if result_file.exists() else \
            {"seconds": 0.0, "peak_rss_mb": 0.0, "timed_out": False, "code": -1}
    code = result.pop("code")
    if not result["timed_out"] and code != 0:
        return {**result, "failed": err[-2000:]}
    return result


def table(rows: list[dict], sizes: list[int]) -> str:
    """Markdown: one line per package and format; ``>=`` marks a lower bound (timed out)."""
    def cell(r):
        if r is None:
            return "-"
        text = f"{r['peak_rss_mb']:.0f}"
        return ("failed " + text) if r.get("failed") else (">=" + text) if r.get("timed_out") else text

    head = " | ".join(f"peak MB {s}^2" for s in sizes)
    lines = [f"| package | format | {head} | ratio {sizes[-1]}/{sizes[0]} | flat (<= {FLAT}) | seconds {sizes[-1]}^2 |",
             "|---|---|" + "---|" * len(sizes) + "---|---|---|"]
    for row in rows:
        runs = [row["runs"].get(str(s)) for s in sizes]
        ratio = row.get("ratio")
        last = runs[-1]
        lines.append(f"| {row['package']} | {row['format']} | {' | '.join(cell(r) for r in runs)} | "
                     f"{'-' if ratio is None else ('>=' if last.get('timed_out') else '') + f'{ratio:.2f}'} | "
                     f"{'-' if row.get('flat') is None else 'yes' if row['flat'] else 'NO'} | "
                     f"{'-' if last is None else ('>=' if last.get('timed_out') else '') + format(last['seconds'], '.0f')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--formats", nargs="+", default=["tif", "zarr", "npy"])
    parser.add_argument("--packages", nargs="+", help="default: every standard 2D package (in this order if given)")
    parser.add_argument("--json", type=Path, help="results, written after every run (and read back: done runs are skipped)")
    parser.add_argument("--workdir", type=Path, help="where the images go and stay (default: a temporary folder)")
    parser.add_argument("--threads", type=int, help="threads per child (ZOO_THREADS)")
    parser.add_argument("--timeout", type=float, help="seconds per run; its peak so far is kept as a lower bound")
    args = parser.parse_args()

    if args.threads:
        os.environ["ZOO_THREADS"] = str(args.threads)
    packages = standard_2d()
    if args.packages:
        known = dict(packages)
        missing = [n for n in args.packages if n not in known]
        if missing:
            raise SystemExit(f"not standard 2D packages: {', '.join(missing)} (known: {', '.join(known)})")
        packages = [(n, known[n]) for n in args.packages]
    sizes = sorted(args.sizes)
    rows: list[dict] = []
    if args.json and args.json.exists():
        rows = json.loads(args.json.read_text())

    def row_of(name: str, fmt: str) -> dict:
        for row in rows:
            if row["package"] == name and row["format"] == fmt:
                return row
        rows.append({"package": name, "format": fmt, "runs": {}})
        return rows[-1]

    def save() -> None:
        if args.json:
            partial = args.json.with_suffix(".partial")
            partial.write_text(json.dumps(rows, indent=1))
            partial.replace(args.json)

    import zoo

    for name, _ in packages:      # pulled and calibrated (once per machine) before anything is measured
        settle = getattr(zoo.load(name).runner, "resolve", None)
        if settle:
            settle(sizes[0] ** 2)
    work = args.workdir or Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    try:
        for fmt in args.formats:
            for name, channels in packages:
                row = row_of(name, fmt)
                for size in sizes:
                    if str(size) in row["runs"]:
                        continue
                    source = work / f"in_{channels}_{size}.tif"
                    if not source.exists():
                        make_image(source.with_suffix(".part.tif"), size, channels)
                        source.with_suffix(".part.tif").replace(source)
                    target = work / f"out_{name}_{size}.{fmt}"
                    result = run(name, source, target, args.timeout)
                    leftovers = [str(target)] + [str(q) for q in work.glob(f".{target.name}.partial-*")]
                    subprocess.run(["rm", "-rf", *leftovers], check=True)      # a killed run's partial output too
                    result["threads"] = args.threads
                    row["runs"][str(size)] = result
                    done = [row["runs"].get(str(s)) for s in sizes]
                    if all(done):
                        row["ratio"] = done[-1]["peak_rss_mb"] / done[0]["peak_rss_mb"]
                        row["flat"] = None if done[-1].get("timed_out") and row["ratio"] <= FLAT else row["ratio"] <= FLAT
                    save()
                    print(json.dumps({"package": name, "format": fmt, "size": size, **result})[:400], flush=True)
    finally:
        if not args.workdir:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    print()
    print(table(rows, sizes))
    return 0 if all(r.get("flat") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
