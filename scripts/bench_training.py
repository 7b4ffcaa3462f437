"""Benchmark of training's bookkeeping and precision (issue 27.8).

1. Overhead of the run folder (metrics CSV, curves) and checkpoints on training time: the same
   run (CARE on synthetic noisy/clean nuclei, the same data, seed and validations) bare (no
   logger, no checkpoints) and full (CSV logger, a checkpoint every ``--checkpoint-every``
   steps and at the end), interleaved bare/full ``--repeats`` times in one process so that
   both see the same machine load; the medians of the whole fit's wall time are compared
   (goal: <= 5%).
2. bf16-mixed against fp32 (``32-true``): training speed (patches/s in the training steps) and
   quality (PSNR on the validation patches against the clean targets, of the selected weights),
   interleaved likewise.

    python scripts/bench_training.py [--steps 200] [--repeats 3] [--width 16] [--json out.json]

Timings on a shared machine are noisy: read the spread printed beside each median.
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


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--val-every", type=int, default=50)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=16, help="CARE base channels (the standard blueprint's: 32)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import logging

    import torch

    from zoo import architectures, spec as specs

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    spec = specs.load(architectures.get("care").blueprint_path(2))
    spec.architecture_params["base_channels"] = args.width
    results: dict = {"steps": args.steps, "val_every": args.val_every, "checkpoint_every": args.checkpoint_every,
                     "repeats": args.repeats, "width": args.width, "torch_threads": torch.get_num_threads(),
                     "overhead": {"bare": [], "full": []}, "precision": {"32-true": [], "bf16-mixed": []}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        noisy, clean = make_data(work)
        common = (spec, noisy, clean, work, args.steps, args.val_every)
        one_run(*common, "32-true", False, args.checkpoint_every)          # warm-up (first-call costs)
        for i in range(args.repeats):
            order = (("bare", False), ("full", True)) if i % 2 == 0 else (("full", True), ("bare", False))
            for name, full in order:
                results["overhead"][name].append(one_run(*common, "32-true", full, args.checkpoint_every))
                print(f"overhead {name} #{i}: {results['overhead'][name][-1]}", file=sys.stderr, flush=True)
            order = ("32-true", "bf16-mixed") if i % 2 == 0 else ("bf16-mixed", "32-true")
            for precision in order:
                results["precision"][precision].append(one_run(*common, precision, False, args.checkpoint_every))
                print(f"precision {precision} #{i}: {results['precision'][precision][-1]}", file=sys.stderr,
                      flush=True)

    bare = [r["seconds"] for r in results["overhead"]["bare"]]
    full = [r["seconds"] for r in results["overhead"]["full"]]
    pairs = [f / b - 1 for b, f in zip(bare, full)]
    results["overhead_fraction_median"] = statistics.median(full) / statistics.median(bare) - 1
    results["overhead_fraction_pairs"] = pairs
    results["checkpoint_seconds_median"] = statistics.median(r["checkpoint_seconds"] for r in results["overhead"]["full"])
    print(f"CARE width {args.width}, {args.steps} steps of 8 patches 64x64, validation every {args.val_every}, "
          f"{results['torch_threads']} torch threads, {args.repeats} interleaved repeats")
    print(f"bare (no logs, no checkpoints): {spread(bare)} s")
    print(f"full (CSV + checkpoint every {args.checkpoint_every} and at the end): {spread(full)} s, of which writing "
          f"checkpoints {results['checkpoint_seconds_median']:.3f} s")
    print(f"overhead: {100 * results['overhead_fraction_median']:+.1f}% (medians); per pair "
          + ", ".join(f"{100 * p:+.1f}%" for p in pairs) + " (goal <= 5%)")
    for precision, runs in results["precision"].items():
        print(f"{precision}: {spread([r['patches_per_second'] for r in runs])} patches/s, val PSNR "
              f"{spread([r['val_psnr'] for r in runs])} dB")
    fp32 = statistics.median(r["patches_per_second"] for r in results["precision"]["32-true"])
    bf16 = statistics.median(r["patches_per_second"] for r in results["precision"]["bf16-mixed"])
    results["bf16_speedup"] = bf16 / fp32
    print(f"bf16-mixed / fp32 speed: {bf16 / fp32:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
