"""Commands that make and judge models: train, finetune, evaluate."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import load, registry_of, runtime_options


def _run_options(p) -> None:
    p.add_argument("--run-dir", type=Path, help="the run folder: metrics.csv, TensorBoard events where installed, "
                                                "training_curves.png (default: OUT.run beside the package)")
    p.add_argument("--max-time", type=max_time, metavar="BUDGET",
                   help="stop when this much time is spent in this session, keeping the best weights (the run can be "
                        "resumed): e.g. 2h, 90m, 1d12h, 01:30:00")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="steps between checkpoints in RUN_DIR/checkpoints (default: every validation); one is also "
                        "written when training ends")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint (optimiser, schedule, random and data "
                        "state): give the command that started it, plus --resume")
    p.add_argument("--select", choices=["metric", "loss"], default="metric",
                   help="keep the weights with the best task metric on the validation split (AP@0.5 for instance "
                        "models, macro-F1 for classifiers, PSNR for restoration with targets; default) or the lowest "
                        "validation loss")


def max_time(text: str):
    """``2h``, ``90m``, ``1d12h``, ``45s`` or ``HH:MM:SS`` as a timedelta."""
    import re
    from datetime import timedelta

    match = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if match and any(match.groups()):
        d, h, m, s = (int(g or 0) for g in match.groups())
        return timedelta(days=d, hours=h, minutes=m, seconds=s)
    parts = text.strip().split(":")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return timedelta(hours=int(parts[0]), minutes=int(parts[1]), seconds=int(parts[2]))
    raise argparse.ArgumentTypeError(f"'{text}' is not a time budget: expected e.g. 2h, 90m, 1d12h, 45s or HH:MM:SS")


def cmd_train(args) -> int:
    from .. import api

    path = api.train(args.blueprint, args.data, args.out, dims=args.dims, target=args.target, name=args.name,
                     version=args.version, val_fraction=args.val_fraction, patch=args.patch,
                     batch_size=args.batch_size, max_steps=args.max_steps, lr=args.lr, seed=args.seed,
                     accelerator=args.accelerator, devices=args.devices, precision=args.precision,
                     strategy=args.strategy, progress=True if sys.stderr.isatty() else "lines", overwrite=args.overwrite,
                     labels=args.labels, group_column=args.group_column, split_column=args.split_column,
                     train_split=args.train_split, test_split=args.test_split, canvas=args.canvas, scale=args.scale,
                     pixel_size=args.pixel_size, run_dir=args.run_dir, max_time=args.max_time,
                     val_every=args.val_every, **_run_args(args))
    if path is not None:              # under DDP, ranks other than 0 write nothing
        print(f"package written: {path} (publish it with `zoo push {path}`)")
    return 0


def _run_args(args) -> dict:
    return {"resume": args.resume, "checkpoint_every": args.checkpoint_every, "select": args.select,
            "device": args.device}


def cmd_finetune(args) -> int:
    from .. import api
    from ..errors import InputError
    from ..spec import parse_yaml
    from ..images import list_images, match_targets
    from ..trainers.data import Rehearsal

    rehearsal = None
    if args.rehearsal_data:
        images = list_images(args.rehearsal_data)
        rehearsal = Rehearsal(images, args.rehearsal,
                              match_targets(images, args.rehearsal_target) if args.rehearsal_target else None)
    params = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--set takes KEY=VALUE (e.g. n_rays=64), got '{item}'")
        params[key] = parse_yaml(value, source=f"--set {key}")
    path = api.finetune(args.ref, args.data, args.out, target=args.target, name=args.name, version=args.version,
                        val_fraction=args.val_fraction, channels=args.channels, params=params, freeze=args.freeze,
                        unfreeze_every=args.unfreeze_every, lr=args.lr, warmup=args.warmup,
                        layer_decay=args.layer_decay, patience=args.patience or None, val_every=args.val_every,
                        rehearsal=rehearsal, patch=args.patch, batch_size=args.batch_size, max_steps=args.max_steps,
                        seed=args.seed, registry=registry_of(args),
                        progress=True if sys.stderr.isatty() else "lines", overwrite=args.overwrite,
                        accelerator=args.accelerator, devices=args.devices, precision=args.precision,
                        strategy=args.strategy, run_dir=args.run_dir, max_time=args.max_time, **_run_args(args))
    if path is None:                  # under DDP, ranks other than 0 write nothing
        return 0
    from .. import spec as specs

    training = specs.load(path).training
    print(f"package written: {path} (fine-tuned from {training.parent['ref']}; publish it with `zoo push {path}`)")
    _print_finetune_result(path, training)
    return 0


def _print_finetune_result(path: Path, training) -> None:
    """The child's validation numbers beside the parent's and the classical baseline's."""
    from ..evaluate import describe

    metrics = training.metrics
    if "parent_val_loss" in metrics:
        print(f"validation loss: parent {metrics['parent_val_loss']:.4g}, fine-tuned {metrics['val_loss']:.4g}")
    report = metrics.get("finetune_report")
    if report is None:
        print("compared by validation loss only (no targets to score against): score both on held-out pairs, beside "
              f"the classical baseline, with `zoo evaluate {path} --data IMAGES --target TARGETS --compare "
              f"{training.parent['ref']}`")
        return
    table = metrics.get("parent_vs_child", {})
    print("\n".join(describe({**report, "metrics": table}, names=("fine-tuned", "parent"))))


def cmd_evaluate(args) -> int:
    from .. import api

    model = load(args, args.ref)
    if args.compare:
        from ..evaluate import describe

        parent = load(args, args.compare)
        report = api.compare(model, parent, args.data, args.target, args.out, axes=args.axes)
        print("\n".join(describe(report, names=(model.spec.ref, parent.spec.ref))))
        for warning in report["warnings"]:
            print(f"WARNING: {warning}", file=sys.stderr)
        print(report["path"])
        return 0
    result = api.evaluate(model, args.data, args.target, args.out, axes=args.axes)
    if result["kind"] == "segmentation":
        print(f"{model.spec.ref} on {result['n_images']} image(s), objects matched by IoU (Hungarian), next to the "
              f"Otsu + watershed baseline:")
        print(result["summary"], end="")
    else:
        mean = result["summary"]
        print(f"{model.spec.ref} on {mean['n_images']} image(s): PSNR {mean['psnr_input']:.2f} -> "
              f"{mean['psnr_output']:.2f} dB, SSIM {mean['ssim_input']:.3f} -> {mean['ssim_output']:.3f}")
    print("\n".join(map(str, result["files"])))
    return 0


def _data_options(p: argparse.ArgumentParser, default_name: str) -> None:
    """The training data and the package to write, for train and finetune."""
    p.add_argument("--data", type=Path, required=True, help="folder of training images (TIFF/PNG/NPY/Zarr)")
    p.add_argument("--target", type=Path, help="folder of targets or label images, same file names (care, n2n, "
                                               "segmentation)")
    p.add_argument("--out", type=Path, required=True, help="package folder to write")
    p.add_argument("--name", help=f"package name (default: {default_name})")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--val-fraction", type=float, default=0.15, help="fraction of images for validation")


def _lightning_options(p: argparse.ArgumentParser) -> None:
    """Options that pass straight to Lightning, and --overwrite, for train and finetune."""
    p.add_argument("--device", choices=["cpu", "cuda", "mps"],
                   help="where to train, the same for every architecture (default: Lightning's --accelerator auto)")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu")
    p.add_argument("--devices", default="auto", help="Lightning devices, e.g. 1, 2 or auto (2 with --strategy ddp: two "
                                                     "processes)")
    p.add_argument("--precision", default="32-true", help="Lightning precision: 32-true, bf16-mixed (CPU and recent "
                                                          "GPUs), 16-mixed (GPU)")
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (several processes; only rank 0 "
                                                      "writes the package)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="a model on held-out data: PSNR/SSIM of restoration (image/target pairs), "
                                        "AP/F1/PQ of segmentation (image/label pairs)")
    p.add_argument("ref", help="NAME[@VERSION] or a package folder")
    p.add_argument("--data", type=Path, required=True, help="folder of input images")
    p.add_argument("--target", type=Path, required=True,
                   help="folder of targets (restoration) or label images (segmentation), same file names")
    p.add_argument("--out", type=Path, default=Path("evaluation"),
                   help="folder for metrics.csv and figure.png (restoration) or metrics.json/.md (segmentation)")
    p.add_argument("--axes", help="axes of the images when they cannot be guessed")
    p.add_argument("--compare", metavar="PARENT", help="also score this model (NAME[@VERSION] or a package folder) "
                                                       "on the same data, each fed it in the channels it declares "
                                                       "(RGB made grey, grey repeated), beside the classical baseline")
    runtime_options(p, device_help=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="train a blueprint on a folder of images and write a package")
    p.add_argument("blueprint", help="blueprint spec (models/care/spec.yaml) or an architecture id (care, n2v, "
                                     "stardist ...: `python -c 'from zoo import architectures; "
                                     "print(architectures.available())'`)")
    p.add_argument("--dims", type=int, choices=[2, 3], default=2, help="2D or 3D blueprint of an architecture")
    _data_options(p, "the blueprint's")
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--pixel-size", type=float, help="the training images' µm per pixel, recorded in the package "
                                                      "(default: from their metadata, where they state it)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--val-every", type=int, metavar="STEPS",
                   help="steps between validations (default: 200 for dense models, 100 for classifiers)")
    _run_options(p)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    _lightning_options(p)
    g = p.add_argument_group("classifier", "labelled images: class folders under --data, or a CSV")
    g.add_argument("--labels", type=Path, help="CSV with columns file (relative to --data) and label")
    g.add_argument("--group-column", help="CSV column grouping images that must stay on one side of the split "
                                          "(e.g. the source image of each crop)")
    g.add_argument("--split-column", help="CSV column holding a split: only --train-split rows train")
    g.add_argument("--train-split", default="train")
    g.add_argument("--test-split", help="rows of this split are held out and scored into the model card")
    g.add_argument("--canvas", type=int, help="square canvas the network sees, in pixels (default 64)")
    g.add_argument("--scale", type=float, help="pixel scale images are resampled by before the canvas (default 1)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="fine-tune a pretrained package on a few of your own images")
    p.add_argument("ref", help="parent: NAME[@VERSION] or a package folder")
    _data_options(p, "the parent's with -ft")
    p.add_argument("--channels", type=int, help="input channels of the new model (default: from the images; "
                                                "the first convolution is adapted)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change an architecture parameter that sets the outputs (a new head), e.g. n_rays=64")
    p.add_argument("--freeze", choices=["none", "encoder", "all-but-head", "gradual"], default="none",
                   help="which parts keep the parent's weights (gradual: unfreeze one stage at a time from the head)")
    p.add_argument("--unfreeze-every", type=int, help="steps between unfreezing stages (gradual)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: half the parent's)")
    p.add_argument("--warmup", type=int, help="linear warm-up steps (default 5%% of --max-steps, at least 10)")
    p.add_argument("--layer-decay", type=float, help="layer-wise learning-rate decay per stage from the head, e.g. 0.7")
    p.add_argument("--patience", type=int, default=5, help="validations without improvement before stopping (0: never)")
    p.add_argument("--val-every", type=int, default=50, help="steps between validations")
    p.add_argument("--rehearsal-data", type=Path, help="images of the parent's own training data to rehearse")
    p.add_argument("--rehearsal-target", type=Path, help="their targets or label images")
    p.add_argument("--rehearsal", type=float, default=0.2, help="fraction of patches from the rehearsal data")
    p.add_argument("--patch", type=int, help="patch size (default: the parent's)")
    p.add_argument("--batch-size", type=int, help="default: the parent's")
    p.add_argument("--max-steps", type=int, default=500)
    _run_options(p)
    p.add_argument("--seed", type=int, default=0)
    _lightning_options(p)
    p.set_defaults(func=cmd_finetune)
