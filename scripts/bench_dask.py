"""Dask scaling benchmark (issue 25.6): one large OME-Zarr predicted by one process, by
``--cluster local:1`` and by ``--cluster local:2`` (one thread per worker), at 8192^2 and 16384^2.

Reproduce (on a quiet machine with at least 2 cores; about 9 minutes with the default package):

    .venv/bin/python scripts/bench_dask.py [--sizes 8192 16384] [--package n2v-narrow] [--repeats 3] [--json OUT]

Each mode is a fresh process (so each peak RSS is its own), with ONNX Runtime on one thread
(``ZOO_THREADS=1``, ``OMP_NUM_THREADS=1``) in the process and in every worker:

- ``single``:  ``zoo.load(pkg).predict_file(in.zarr, out.zarr)``: the single-process stream, out
               of core, written as it goes;
- ``local:N``: ``zoo.predict(model, in.zarr, out=out.zarr, client=...)`` on a LocalCluster of N
               worker processes: chunks predicted and written by the workers (no tile run twice);
- ``pair``:    two ``single`` processes at once on the same image, started together: the
               machine's own ceiling for ``local:2`` (shared caches and memory bandwidth, or two
               vCPUs that are one host core's hyperthreads), with no Dask in the way.

Every mode loads the model, runs it on a small array and predicts a 1024^2 OME-Zarr through its
own path (imports, codecs, the cluster's plugin) before its clock starts; the cluster's start is
reported apart (``startup_s``). Peak RSS is each process's own (``VmHWM``; ``ru_maxrss`` carries a
parent's peak into a child across exec). Dask runs also report, from the task stream, the
prelude (the call's start to the first task), the tail (the first worker out of work to the
end) and each worker's idle fraction. Besides the wall time, each mode's CPU seconds (the
process; for Dask the client, with the scheduler in it, and every worker) are counted: on a
machine that other work shares they show Dask's own cost where the wall time cannot. All modes use one tile size and batch (the plan the
single process chooses here), so they run the same tiles. Reported per size: seconds and
throughput (Mpx/s), scaling (``local:2`` against ``local:1``; goal >= 1.8) beside the ceiling
(``pair``: 2 x single's seconds / the pair's seconds), Dask's overhead at
``local:1`` against one process (goal <= 10%), the peak RSS of the single process, of each worker
and of the client (goal: a worker's flat in the image's size), and each Dask output's largest
difference from the single-process output (goal 0 or <= 1e-5 of its range). The load average
before and after each mode is recorded: on a machine other work shares, the times are contended.

``--package``: a package name, folder or archive, or ``n2v-narrow`` (default): the zoo's N2V
blueprint with 8 base channels instead of 32 (same depth, halo and tiling), trained for 10 steps
on synthetic nuclei into ``.bench/dask/`` the first time (about 20 s). Its network is ~7x
cheaper than ``n2v-w2s`` (one 16384^2 pass on one thread: ~2.5 min against ~20 min), so the whole
benchmark runs in minutes, and Dask's own costs weigh more against it than against a full-width
network: the overhead it shows is an upper bound for the standard packages. ``--package
n2v-w2s`` measures a standard package (about 80 minutes for both sizes).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".bench" / "dask"
NARROW = "n2v-narrow"
MODES = ("single", "local:1", "local:2", "pair")
WARM = 1024               # the small image every mode predicts once before its clock starts


# ----------------------------------------------------------------------------- inputs and package
def narrow_package(work: Path) -> Path:
    """The N2V blueprint with 8 base channels, trained for a few steps (built once)."""
    out = work / NARROW
    if (out / "zoo.yaml").is_file():
        return out
    import tifffile
    import yaml

    from zoo.api.training import blueprint_path, train
    from zoo.synthetic import labelled_nuclei

    blueprint = yaml.safe_load(blueprint_path("n2v").read_text())
    blueprint["architecture"]["params"]["base_channels"] = 8
    blueprint["name"] = NARROW
    blueprint["description"] = "N2V with 8 base channels, trained 10 steps: a cheap network for bench_dask.py"
    data = work / "narrow-data"
    data.mkdir(parents=True, exist_ok=True)
    for seed in range(4):
        tifffile.imwrite(data / f"nuclei_{seed}.tif", labelled_nuclei((128, 128), n=12, seed=seed)[0])
    (work / f"{NARROW}.yaml").write_text(yaml.safe_dump(blueprint, sort_keys=False))
    return Path(train(work / f"{NARROW}.yaml", data, out, max_steps=10, steps_per_epoch=5, batch_size=4, patch=32,
                      progress=False, val_fraction=0.25, overwrite=True))


def make_input(work: Path, size: int) -> Path:
    """A ``size x size`` OME-Zarr (512 px chunks): the real low-SNR actin sample, mirrored."""
    import numpy as np
    import tifffile

    from zoo.omezarr import create_omezarr

    path = work / f"actin_{size}.zarr"
    if (path / ".complete").is_file():
        return path
    shutil.rmtree(path, ignore_errors=True)
    tile = tifffile.imread(REPO / "samples" / "hagen_actin_lowsnr.tif")
    array = create_omezarr(path, (size, size), tile.dtype, "yx", chunks=(512, 512), name="actin")
    h, w = tile.shape
    flip = np.block([[tile, tile[:, ::-1]], [tile[::-1], tile[::-1, ::-1]]])       # seamless period 2h x 2w
    for y in range(0, size, 1024):
        rows = np.arange(y, min(size, y + 1024)) % (2 * h)
        cols = np.arange(size) % (2 * w)
        array[y:y + len(rows)] = flip[np.ix_(rows, cols)]
    (path / ".complete").touch()
    return path


# ----------------------------------------------------------------------------- one mode, in its own process
def _warm_worker(name: str, tile: int, dask_worker=None) -> None:
    """On a worker (``client.run``): the model the plugin ``name`` holds runs once (ONNX Runtime's
    first call is slow)."""
    import numpy as np

    image = np.random.default_rng(0).normal(100, 10, (tile, tile)).astype(np.float32)
    dask_worker.plugins[name].model.predict(image, tile=tile)


def _peak_rss_mb() -> float:
    """This process's own peak RSS (MB): Linux's ``VmHWM``. Not ``ru_maxrss``: a process started
    by fork and exec keeps its parent's peak in it (the kernel carries ``maxrss`` across exec), so
    a child of a parent that had held 464 MB reported at least 464 MB whatever it used itself."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1024)


def _cpu_s() -> float:
    """CPU seconds (user + system) this process has used, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wait_for(go: str | None) -> None:
    """``pair``: each process warms up, says it is ready, and starts when both are."""
    if go:
        Path(go + f".ready-{os.getpid()}").touch()
        while not os.path.exists(go):
            time.sleep(0.005)


def _task_times(stream: list[dict], started: float, ended: float) -> dict:
    """From Dask's task stream: each worker's busy seconds (its tasks' compute time) and idle
    fraction over the run, the prelude (the run's start to the first task: the client's planning
    and statistics, every worker idle) and the tail (the first worker out of work to the end)."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for task in stream:
        for part in task.get("startstops", ()):
            if part.get("action") == "compute":
                spans.setdefault(task["worker"], []).append((part["start"], part["stop"]))
    if not spans:
        return {}
    first = min(a for s in spans.values() for a, _ in s)
    lasts = [max(b for _, b in s) for s in spans.values()]
    busy = [sum(b - a for a, b in s) for s in spans.values()]
    return {"tasks": sum(map(len, spans.values())), "prelude_s": round(first - started, 3),
            "tail_s": round(ended - min(lasts), 3) if len(lasts) > 1 else None,
            "worker_busy_s": [round(v, 2) for v in busy],
            "worker_idle": [round(1 - v / (ended - started), 4) for v in busy]}


def run_mode(mode: str, package: str, source: str, target: str, tile: int, batch: int, warm_source: str | None = None,
             go: str | None = None) -> dict:
    import numpy as np

    import zoo

    model = zoo.load(package, runtime="onnx", device="cpu")
    warm = np.random.default_rng(0).normal(100, 10, (tile, tile)).astype(np.float32)
    warm_target = Path(target).with_name(Path(target).stem + "_warm.zarr")
    result: dict = {"mode": mode, "load_before": os.getloadavg()[0]}
    if mode == "single":
        model.predict(warm, tile=tile)
        if warm_source:                         # the file path's first use (imports, codecs) off the clock
            model.predict_file(warm_source, warm_target, tile=tile, batch_size=batch)
            shutil.rmtree(warm_target, ignore_errors=True)
        _wait_for(go)
        started, cpu = time.perf_counter(), _cpu_s()
        model.predict_file(source, target, tile=tile, batch_size=batch)
        result["seconds"] = time.perf_counter() - started
        result["cpu_s"] = round(_cpu_s() - cpu, 2)
        result["peak_rss_mb"] = {"process": round(_peak_rss_mb(), 1)}
    else:
        from distributed import get_task_stream

        from zoo.api.distributed import worker_ref
        from zoo.distributed import cluster, plugin

        started = time.perf_counter()
        client = cluster.client_for(mode, threads=1)             # one thread per worker, whatever the cores
        try:
            how = worker_ref(model)
            name = plugin.register(client, how["model_ref"], how.get("registry"), how["runtime"], how["device"])
            client.run(_warm_worker, name, tile)
            if warm_source:                     # the same path once on a small image, off the clock
                zoo.predict(model, warm_source, out=warm_target, client=client, tile=tile, batch_size=batch)
                shutil.rmtree(warm_target, ignore_errors=True)
            result["startup_s"] = round(time.perf_counter() - started, 2)
            result["workers"] = len(client.nthreads())
            result["threads_per_worker"] = sorted(set(client.nthreads().values()))
            workers_cpu = client.run(_cpu_s)
            with get_task_stream(client) as stream:
                started, wall, cpu = time.perf_counter(), time.time(), _cpu_s()
                zoo.predict(model, source, out=target, client=client, tile=tile, batch_size=batch)
                result["seconds"] = time.perf_counter() - started
                client_cpu = _cpu_s() - cpu             # the client, and the LocalCluster's scheduler in it
                ended = time.time()
            spent = {w: c - workers_cpu.get(w, 0.0) for w, c in client.run(_cpu_s).items()}
            result["cpu_s"] = round(client_cpu + sum(spent.values()), 2)
            result["cpu_s_parts"] = {"client": round(client_cpu, 2), "workers": [round(v, 2) for v in spent.values()]}
            result["dask"] = _task_times(stream.data, wall, ended)
            peaks = client.run(_peak_rss_mb)
            result["peak_rss_mb"] = {"workers": [round(v, 1) for v in peaks.values()],
                                     "client": round(_peak_rss_mb(), 1)}
        finally:
            cluster.close(client)
    result["load_after"] = os.getloadavg()[0]
    return result


# ----------------------------------------------------------------------------- the parent
def compare(single: Path, other: Path) -> dict:
    """The largest absolute difference between two outputs, band by band, and the output's range."""
    import numpy as np

    from zoo.omezarr import open_omezarr

    a, b = open_omezarr(single)[0], open_omezarr(other)[0]
    if a.shape != b.shape:
        return {"shape": [list(a.shape), list(b.shape)], "max_abs_diff": None}
    worst, top = 0.0, 0.0
    for y in range(0, a.shape[0], 1024):
        x, z = np.asarray(a[y:y + 1024], np.float64), np.asarray(b[y:y + 1024], np.float64)
        worst, top = max(worst, float(np.abs(x - z).max())), max(top, float(np.abs(x).max()))
    return {"max_abs_diff": worst, "max_abs_value": top, "relative": worst / max(top, 1e-30)}


def _command(mode: str, package: str, source: Path, target: Path, tile: int, batch: int, warm: Path | None,
             go: Path | None = None) -> list[str]:
    return ([sys.executable, __file__, "--run-mode", mode, "--package", package, "--source", str(source),
             "--target", str(target), "--tile", str(tile), "--batch", str(batch)]
            + (["--warm-source", str(warm)] if warm else []) + (["--go", str(go)] if go else []))


ENV = {"ZOO_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def child(mode: str, package: str, source: Path, target: Path, tile: int, batch: int, warm: Path | None = None) -> dict:
    done = subprocess.run(_command(mode, package, source, target, tile, batch, warm), env={**os.environ, **ENV},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pair(package: str, source: Path, target: Path, tile: int, batch: int, warm: Path | None = None) -> dict:
    """The machine's own ceiling for ``local:2``: two single processes (one thread each) predict
    the same image at once, starting together once both have warmed up. Shared caches, memory
    bandwidth and a host that runs the two cores as one core's hyperthreads all show here, with
    no Dask in the way: ``ceiling`` = 2 x one process's seconds alone / the pair's seconds."""
    go = target.with_name(target.name + ".go")
    for stale in go.parent.glob(go.name + "*"):
        stale.unlink()
    targets = [target.with_name(f"{target.stem}_{i}.zarr") for i in range(2)]
    procs = [subprocess.Popen(_command("single", package, source, t, tile, batch, warm, go), env={**os.environ, **ENV},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for t in targets]
    load_before = os.getloadavg()[0]
    while len(list(go.parent.glob(go.name + ".ready-*"))) < 2 and all(p.poll() is None for p in procs):
        time.sleep(0.01)
    go.touch()
    runs = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"pair failed:\n{err[-4000:]}")
        runs.append(json.loads(out.strip().splitlines()[-1]))
    for stale in go.parent.glob(go.name + "*"):
        stale.unlink()
    for t in targets:
        shutil.rmtree(t, ignore_errors=True)
    return {"mode": "pair", "load_before": load_before, "seconds": max(r["seconds"] for r in runs),
            "each_s": [round(r["seconds"], 2) for r in runs], "cpu_s": round(sum(r["cpu_s"] for r in runs), 2),
            "cpu_s_parts": {"processes": [r["cpu_s"] for r in runs]},
            "peak_rss_mb": {"processes": [r["peak_rss_mb"]["process"] for r in runs]},
            "load_after": os.getloadavg()[0]}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarise(size: int, rounds: list[dict]) -> dict:
    """One size's row from ``rounds`` (each: mode -> run, the modes run one after another). With
    several rounds each mode shows its median run, and every ratio is the median of the ratios
    within a round (modes next to each other in time), which drift in the machine does not bias."""
    pixels = size * size
    runs = {}
    for mode in rounds[0]:
        ordered = sorted((r[mode] for r in rounds), key=lambda r: r["seconds"])
        runs[mode] = dict(ordered[(len(ordered) - 1) // 2])       # the median run (the lower one of two)
        runs[mode]["rounds_s"] = [round(r[mode]["seconds"], 2) for r in rounds]
        if "diff" in rounds[-1][mode]:
            runs[mode]["diff"] = rounds[-1][mode]["diff"]
    row = {"size": size, "rounds": len(rounds), "modes": runs}
    for mode, r in runs.items():
        r["mpx_per_s"] = round((2 if mode == "pair" else 1) * pixels / r["seconds"] / 1e6, 3)

    def ratio(f) -> tuple[float, list[float]]:
        values = [f(r) for r in rounds]
        return round(_median(values), 4), [round(v, 4) for v in values]

    if "single" in runs and "local:1" in runs:
        row["overhead_local1"], row["overhead_local1_rounds"] = ratio(
            lambda r: r["local:1"]["seconds"] / r["single"]["seconds"] - 1)
        row["cpu_overhead_local1"], _ = ratio(lambda r: r["local:1"]["cpu_s"] / r["single"]["cpu_s"] - 1)
    if "local:1" in runs and "local:2" in runs:
        row["scaling_local2"], row["scaling_local2_rounds"] = ratio(
            lambda r: r["local:1"]["seconds"] / r["local:2"]["seconds"])
        row["cpu_inflation_workers_local2"], _ = ratio(
            lambda r: sum(r["local:2"]["cpu_s_parts"]["workers"]) / sum(r["local:1"]["cpu_s_parts"]["workers"]) - 1)
    if "single" in runs and "pair" in runs:
        row["ceiling_pair"], row["ceiling_pair_rounds"] = ratio(
            lambda r: 2 * r["single"]["seconds"] / r["pair"]["seconds"])
        row["cpu_inflation_pair"], _ = ratio(lambda r: r["pair"]["cpu_s"] / (2 * r["single"]["cpu_s"]) - 1)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| size | mode | seconds (median; every round) | Mpx/s | CPU s | peak RSS (MB) | max diff vs single | "
             "load avg before/after |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for mode, r in row["modes"].items():
            rounds = r.get("rounds_s", [])
            seconds = f"{r['seconds']:.1f}" + (f" ({', '.join(f'{v:.1f}' for v in rounds)})" if len(rounds) > 1 else "")
            rss = r["peak_rss_mb"]
            rss_text = (f"{rss['process']}" if "process" in rss else
                        f"processes {', '.join(map(str, rss['processes']))}" if "processes" in rss else
                        f"workers {', '.join(map(str, rss['workers']))}; client {rss['client']}")
            diff = r.get("diff", {}).get("relative")
            lines.append(f"| {row['size']}^2 | {mode} | {seconds} | {r['mpx_per_s']:.3f} | {r['cpu_s']:.1f} | "
                         f"{rss_text} | "
                         f"{'-' if diff is None else f'{diff:.1e} of range'} | "
                         f"{r['load_before']:.2f} / {r['load_after']:.2f} |")
    lines.append("")
    for row in rows:
        parts = []
        each = row.get("rounds", 1) > 1

        def rounds_of(key: str, percent: bool) -> str:
            values = row.get(key + "_rounds", [])
            if not each:
                return ""
            return " (rounds: " + ", ".join(f"{100 * v:+.1f}%" if percent else f"{v:.2f}x" for v in values) + ")"

        if "overhead_local1" in row:
            parts.append(f"overhead at local:1 {100 * row['overhead_local1']:+.1f}%{rounds_of('overhead_local1', True)} "
                         f"in time (goal <= 10%), {100 * row['cpu_overhead_local1']:+.1f}% in CPU seconds")
        if "scaling_local2" in row:
            parts.append(f"local:2 / local:1 {row['scaling_local2']:.2f}x{rounds_of('scaling_local2', False)} "
                         f"(goal >= 1.8x), the workers' CPU seconds {100 * row['cpu_inflation_workers_local2']:+.1f}%")
        if "ceiling_pair" in row:
            parts.append(f"the machine's ceiling: two single processes at once {row['ceiling_pair']:.2f}x"
                         f"{rounds_of('ceiling_pair', False)} one "
                         f"alone, {100 * row['cpu_inflation_pair']:+.1f}% CPU seconds per image")
        medians = f" (medians of {row['rounds']} rounds)" if each else ""
        lines.append(f"- {row['size']}^2{medians}: " + "; ".join(parts))
        for mode, r in row["modes"].items():
            d = r.get("dask")
            if d:
                tail = "-" if d["tail_s"] is None else f"{d['tail_s']:.2f} s"
                lines.append(f"  - {mode}: {d['tasks']} tasks; prelude {d['prelude_s']:.2f} s, tail {tail}; "
                             f"workers idle {', '.join(f'{100 * v:.1f}%' for v in d['worker_idle'])}; client CPU "
                             f"{r['cpu_s_parts']['client']:.2f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    p.add_argument("--modes", nargs="+", default=list(MODES), help="single, local:N ... (default: all three)")
    p.add_argument("--package", default=NARROW, help=f"a package, or {NARROW} (default; built once)")
    p.add_argument("--tile", type=int, default=None, help="tile size (default: the single process's plan)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds of every mode (one after another); medians reported (single runs swing ~10%%)")
    p.add_argument("--work", type=Path, default=WORK, help=f"inputs, outputs and the package (default {WORK})")
    p.add_argument("--json", type=Path, default=None, help="results (default WORK/results.json)")
    p.add_argument("--keep", action="store_true", help="keep the outputs")
    p.add_argument("--run-mode", help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--warm-source", help=argparse.SUPPRESS)
    p.add_argument("--go", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_mode:
        print(json.dumps(run_mode(args.run_mode, args.package, args.source, args.target, args.tile, args.batch,
                                  args.warm_source, args.go)))
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    package = str(narrow_package(args.work)) if args.package == NARROW else args.package
    import zoo

    model = zoo.load(package, runtime="onnx", device="cpu")
    rows = []
    header = {"package": model.spec.ref, "cores": len(os.sched_getaffinity(0)), "tile": args.tile,
              "batch": args.batch, "load_at_start": os.getloadavg()}
    print(f"{model.spec.ref}; {header['cores']} cores; load average {header['load_at_start']}", flush=True)
    for size in args.sizes:
        tile = args.tile or model.predictor.plan_tiles((size, size), None, args.batch, None)[0][0].tile
        source, warm = make_input(args.work, size), make_input(args.work, WARM)
        rounds = []
        for round_ in range(args.repeats):      # every mode once per round: the modes of a round are close in time
            runs, outputs = {}, {}
            for mode in args.modes:
                target = args.work / f"out_{size}_{mode.replace(':', '')}.zarr"
                shutil.rmtree(target, ignore_errors=True)
                if mode == "pair":
                    runs[mode] = pair(package, source, target, tile, args.batch, warm)
                else:
                    runs[mode] = child(mode, package, source, target, tile, args.batch, warm)
                    outputs[mode] = target
                runs[mode]["tile"] = tile
                print(f"{size}^2 round {round_ + 1} {mode}: {runs[mode]['seconds']:.1f} s, peak RSS "
                      f"{runs[mode]['peak_rss_mb']} MB, load {runs[mode]['load_before']:.2f} -> "
                      f"{runs[mode]['load_after']:.2f}", flush=True)
            if "single" in outputs and round_ == args.repeats - 1:     # the outputs of the last round
                for mode in outputs:
                    if mode != "single":
                        runs[mode]["diff"] = compare(outputs["single"], outputs[mode])
                        print(f"{size}^2 {mode}: largest difference from single {runs[mode]['diff']}", flush=True)
            if not args.keep:
                for target in outputs.values():
                    shutil.rmtree(target, ignore_errors=True)
            rounds.append(runs)
        rows.append(summarise(size, rounds))
        print(table(rows[-1:]), flush=True)
    out = args.json or args.work / "results.json"
    out.write_text(json.dumps({**header, "load_at_end": os.getloadavg(), "results": rows}, indent=1))
    print(f"\n{table(rows)}\n\n{out}: results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
