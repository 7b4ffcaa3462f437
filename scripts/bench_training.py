"""Benchmark of training's bookkeeping and precision (issue 27.8).

1. Overhead of the run folder and checkpoints on training time: the same run (CARE on synthetic
   noisy/clean nuclei, the same data, seed, validations and selection metric) **bare** (no
   logger, no checkpoints, no validation images) and **full** (metrics CSV, TensorBoard when it
   is installed, the validation images of every validation, a checkpoint every
   ``--checkpoint-every`` steps and at the end), in one process, in interleaved rounds whose
   order alternates (bare full | full bare | ...) so that slow drifts of the machine's load fall
   on both alike. Each round gives one overhead, full / bare - 1 of the whole fit's wall time;
   the result is the median over the rounds with its spread (min, max), goal <= 5%. (The
   training-curves PNG drawn once when the package is written is not part of it.)
2. bf16-mixed against fp32 (``32-true``): training speed (patches/s in the training steps) and
   quality (PSNR on the validation patches against the clean targets, of the selected weights),
   in rounds interleaved likewise.

Every configuration is run once, short, before the rounds (first-call costs: imports, oneDNN's
kernels, the first checkpoint and PNG). The command the lead runs on a quiet machine (the
script prints the time left after its first round, and the load average before and after):

    python scripts/bench_training.py --steps 150 --repeats 5 --json bench_training.json

and a smoke run (under a minute): ``--steps 16 --val-every 8 --checkpoint-every 8 --repeats 1``.
``--only overhead`` or ``--only precision`` runs one half.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_data(root: Path, n: int = 8, size: int = 128) -> tuple[Path, Path]:
    import numpy as np
    import tifffile

    from zoo.synthetic import nuclei

    noisy, clean = root / "noisy", root / "clean"
    noisy.mkdir()
    clean.mkdir()
    for i in range(n):
        image, truth = nuclei((size, size), n=30, seed=i, peak=30, read_noise=5)
        tifffile.imwrite(noisy / f"c{i}.tif", image)
        tifffile.imwrite(clean / f"c{i}.tif", truth.astype(np.float32))
    return noisy, clean


def one_run(spec, noisy: Path, clean: Path, work: Path, steps: int, val_every: int, precision: str, full: bool,
            checkpoint_every: int) -> dict:
    import pytorch_lightning as pl

    from zoo import architectures
    from zoo.trainers.checkpoints import open_run
    from zoo.trainers.fit import make_datamodule, pair_targets, split_files
    from zoo.trainers.loop import train
    from zoo.trainers.selection import choose

    arch = architectures.get(spec.architecture_id)
    train_files, val_files = split_files(noisy, None, None, 0.25, 0)
    pairs = pair_targets(arch, clean, train_files, val_files)
    pl.seed_everything(0, verbose=False)
    module = arch.training_module()(spec)
    dm = make_datamodule(module, train_files, val_files, pairs, 64, 8, val_every, 0)
    selection, items = choose(spec, dm, "metric")
    run_dir = work / f"run-{time.perf_counter_ns()}"
    plan = open_run(run_dir, {"architecture": spec.architecture_id}, checkpoint_every) if full else None
    from zoo.trainers.loop import quiet_lightning

    started = time.perf_counter()
    with quiet_lightning():
        run = train(module, dm, steps, progress=False, run_dir=run_dir if full else None, val_every=val_every,
                    plan=plan, selection=selection, selection_items=items, seed=0, accelerator="cpu", devices=1,
                    precision=precision)
    return {"seconds": time.perf_counter() - started, "patches_per_second": run.patches_per_second,
            "val_psnr": run.selection["value"], "checkpoint_seconds": run.checkpoint_seconds,
            "checkpoints": len(list((run_dir / "checkpoints").glob("*.ckpt"))) if full else 0}


def spread(values: list[float], digits: int = 3) -> str:
    return f"{statistics.median(values):.{digits}f} (min {min(values):.{digits}f}, max {max(values):.{digits}f})"


def tensorboard_installed() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--val-every", type=int, default=50)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5, help="rounds of each comparison")
    parser.add_argument("--width", type=int, default=16, help="CARE base channels (the standard blueprint's: 32)")
    parser.add_argument("--only", choices=("overhead", "precision"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import logging
    import os
    import shutil

    import torch

    from zoo import architectures, spec as specs

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    spec = specs.load(architectures.get("care").blueprint_path(2))
    spec.architecture_params["base_channels"] = args.width
    parts = [args.only] if args.only else ["overhead", "precision"]
    results: dict = {"steps": args.steps, "val_every": args.val_every, "checkpoint_every": args.checkpoint_every,
                     "repeats": args.repeats, "width": args.width, "torch_threads": torch.get_num_threads(),
                     "cpus": os.cpu_count(), "load_average_before": os.getloadavg()[0],
                     "tensorboard": tensorboard_installed(),
                     "overhead": {"bare": [], "full": []}, "precision": {"32-true": [], "bf16-mixed": []}}
    configurations = {"overhead": (("bare", "32-true", False), ("full", "32-true", True)),
                      "precision": (("32-true", "32-true", False), ("bf16-mixed", "bf16-mixed", False))}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        noisy, clean = make_data(work)

        def run(steps: int, val_every: int, checkpoint_every: int, precision: str, full: bool) -> dict:
            result = one_run(spec, noisy, clean, work, steps, val_every, precision, full, checkpoint_every)
            for folder in work.glob("run-*"):
                shutil.rmtree(folder, ignore_errors=True)
            return result

        short = max(4, min(args.steps, 20))          # warm-up: every code path once (validation, checkpoint, PNG)
        warm = time.perf_counter()
        for part in parts:
            for _, precision, full in configurations[part]:
                run(short, short // 2, short // 2, precision, full)
        print(f"warm-up {time.perf_counter() - warm:.0f} s (load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs)", file=sys.stderr, flush=True)
        for i in range(args.repeats):
            round_began = time.perf_counter()
            for part in parts:
                order = configurations[part] if i % 2 == 0 else configurations[part][::-1]
                for name, precision, full in order:
                    result = run(args.steps, args.val_every, args.checkpoint_every, precision, full)
                    results[part][name].append(result)
                    print(f"{part} {name} #{i}: {result}", file=sys.stderr, flush=True)
            if i == 0 and args.repeats > 1:
                left = (time.perf_counter() - round_began) * (args.repeats - 1)
                print(f"one round {time.perf_counter() - round_began:.0f} s: about {left / 60:.1f} min left",
                      file=sys.stderr, flush=True)
    results["seconds"] = time.perf_counter() - began
    results["load_average_after"] = os.getloadavg()[0]

    print(f"CARE width {args.width}, {args.steps} steps of 8 patches 64x64, validation every {args.val_every}, "
          f"{results['torch_threads']} torch threads on {results['cpus']} CPUs, {args.repeats} interleaved rounds, "
          f"{results['seconds'] / 60:.1f} min; load average {results['load_average_before']:.1f} before, "
          f"{results['load_average_after']:.1f} after")
    if "overhead" in parts:
        bare = [r["seconds"] for r in results["overhead"]["bare"]]
        full = [r["seconds"] for r in results["overhead"]["full"]]
        rounds = [f / b - 1 for b, f in zip(bare, full)]
        results["overhead_fraction_rounds"] = rounds
        results["overhead_fraction_median"] = statistics.median(rounds)
        results["overhead_fraction_of_medians"] = statistics.median(full) / statistics.median(bare) - 1
        results["checkpoint_seconds_median"] = statistics.median(r["checkpoint_seconds"]
                                                                 for r in results["overhead"]["full"])
        print(f"bare (no logs, no checkpoints, no images): {spread(bare)} s")
        print(f"full (CSV{' + TensorBoard' if results['tensorboard'] else ''}, validation images, a checkpoint every "
              f"{args.checkpoint_every} steps and at the end): {spread(full)} s, of which writing checkpoints "
              f"{results['checkpoint_seconds_median']:.3f} s")
        print(f"overhead: median {100 * results['overhead_fraction_median']:+.1f}% over {len(rounds)} rounds "
              f"(min {100 * min(rounds):+.1f}%, max {100 * max(rounds):+.1f}%; of the medians "
              f"{100 * results['overhead_fraction_of_medians']:+.1f}%); goal <= 5%")
    if "precision" in parts:
        for precision, runs in results["precision"].items():
            print(f"{precision}: {spread([r['patches_per_second'] for r in runs], 1)} patches/s, val PSNR "
                  f"{spread([r['val_psnr'] for r in runs], 2)} dB")
        speedups = [b["patches_per_second"] / f["patches_per_second"]
                    for f, b in zip(results["precision"]["32-true"], results["precision"]["bf16-mixed"])]
        results["bf16_speedup_rounds"] = speedups
        results["bf16_speedup"] = statistics.median(speedups)
        print(f"bf16-mixed / fp32 speed: median {results['bf16_speedup']:.2f}x over {len(speedups)} rounds "
              f"(min {min(speedups):.2f}x, max {max(speedups):.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
