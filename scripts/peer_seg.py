#!/usr/bin/env python3
"""Peer check: nuclei instance segmentation on DSB2018 against Cellpose trained from scratch.

The project's segmentation numbers (``scripts/bench_seg_baseline.py`` and the trained models) are
compared with a well-known peer package trained *here*, briefly, on the same training split and
evaluated on the same validation split with the project's own metrics. No pretrained weights are
downloaded or loaded: the peer's network starts from a random initialisation.

The peer runs in its own virtual environment (never the project's ``.venv``), so its torch /
numpy / OpenCV pins never touch the project. This one file has three roles:

``setup VENV`` (any python3, standard library only)
    Creates ``VENV`` with ``python -m venv`` and installs ``torch==2.13.0+cpu`` (the CPU wheel on
    this machine's disk; the ``+cpu`` local version can never resolve to a multi-GB CUDA build)
    and then ``cellpose==3.1.1.3`` under a constraints file that holds torch at that wheel.
    Idempotent: does nothing when the venv already imports the pinned versions.

``run --venv VENV --data DSB --kind KIND (--steps N | --epochs E) --out RESULT.json``
    (the project's python, ``.venv/bin/python``: needs ``zoo``)
    Takes the project's split (``dsb_split`` from ``scripts/bench_seg_baseline.py``, imported by
    path), starts ``VENV/bin/python`` on this file with the internal ``_peer`` subcommand, which
    trains the peer from scratch on the training ids of KIND, predicts the validation ids and
    writes one label image per id (``<id>.tif``) to ``--pred-dir`` (default: next to RESULT.json,
    ``<RESULT stem>_labels/``; the trained weights go to its ``models/`` folder). Back in the
    project's python it scores those label images with ``zoo.segmentation.metrics.evaluate``
    against ``masks/<id>.tif``, writes RESULT.json and prints a markdown row.

``_peer JOB.json`` (internal, inside the peer venv)
    The peer side of ``run``; ``check`` (also inside the venv) prints the versions as JSON.

Reproduce (from the repository root)::

    python3 scripts/peer_seg.py setup .bench/peer-seg-venv
    nice -n 10 .venv/bin/python scripts/peer_seg.py run --venv .bench/peer-seg-venv \\
        --data ../shared/data/dsb2018 --kind fluo --steps 300 --out .bench/peer_seg_fluo.json

How the peer is trained (Cellpose 3.1.1.3)
------------------------------------------
* Network: ``models.CellposeModel(gpu=False, pretrained_model=False, model_type=None,
  nchan=2, diam_mean=17.0)``. With both ``pretrained_model`` and ``model_type`` false/None,
  cellpose 3's ``get_model_params`` resolves no model path and the constructor builds a randomly
  initialised ``CPnet`` ("no model weights loaded"); it never calls ``cache_model_path``, the only
  code that downloads. As a guard the peer process also points ``CELLPOSE_LOCAL_MODELS_PATH`` at
  an empty temporary folder, replaces ``cellpose.utils.download_url_to_file`` with a function
  that raises, and makes every socket connection attempt raise. ``diam_mean=17`` is cellpose's
  convention for nuclei (training rescales every image so its mean nucleus diameter is 17 px).
* Images: grey images as they are; RGB images (histo_rgb) with ``channels=[0, 0]``,
  ``channel_axis=2``, i.e. cellpose averages the colour channels into one grey channel. Cellpose
  normalises each image to its 1st..99th percentile itself.
* Flows are computed from the training masks with ``dynamics.labels_to_flows`` (timed apart as
  ``flows_seconds``) and passed to ``train.train_seg`` (cellpose then skips recomputing them).
* ``train.train_seg`` with its defaults otherwise: AdamW, learning rate 0.005 (10-epoch linear
  warm-up; the last 100/50 epochs halve it when there are more than 300/100), weight decay 1e-5,
  batch 8 random 224x224 crops (``--bsize``) with rotation/flip/scale augmentation,
  ``min_train_masks=5`` (cellpose drops training images with fewer than 5 nuclei; the count
  used is reported). The trained weights are kept (``weights`` in the result).
  No test data is given to it: the validation images are never seen in training.
* ``--epochs E``: E cellpose epochs, each a pass over all training images (ceil(n/8) steps).
  Note the warm-up: epoch 0 runs at learning rate 0, so a few epochs teach little.
  ``--steps N``: exactly N optimisation steps, done as ``n_epochs=N`` with
  ``nimg_per_epoch=batch_size``: every cellpose "epoch" is one batch of training images drawn
  at random (cellpose draws them with ``np.random.choice``), so warm-up and decay count steps.
* Prediction: ``model.eval(images, channels=[0, 0], diameter=D)`` with D the mean nucleus
  diameter of the training masks (``net.diam_labels``, which ``train_seg`` sets), the same D for
  every validation image (no size model; the validation masks are never used for prediction),
  cellpose's defaults otherwise (flow threshold 0.4, cell-probability threshold 0, min size 15).

Timing: ``train_seconds`` is the ``train_seg`` call (normalisation, diameters and the training
loop; flows excluded), ``predict_seconds`` the ``eval`` call for all validation images. Threads:
``--threads`` (default 2) via ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` and ``torch.set_num_threads``.
On a CPU shared with other jobs use ``--threads 1``: two threads that wait on each other ran a
step 3-4x slower than one thread here. A fluo step (8 crops of 224 px) took 5-10 s on this
2-core machine, so one pass over the 363 usable fluo training images (46 steps) takes 4-8 min;
``--bsize 128`` crops are about 3.5x cheaper per step.

Short runs predict nothing. CPnet's BatchNorm layers update their running statistics with
momentum 0.05, and ``eval`` uses those statistics: after a few dozen steps they still lag far
behind the network, so the cell-probability map stays below 0 everywhere and no object is found
(AP 0), although the network in batch-statistics mode already separates nuclei from background.
Budget at least a few hundred steps for a meaningful number.

Why not cellpose 4: cellpose 4.x (4.2.1.1 is the newest) requires torchvision and
segment-anything, because its only network is CPSAM, a ViT-L SAM encoder. Training that from
scratch on a CPU would not be brief, and torchvision is a risk beside this torch 2.13.0 CPU wheel
(``scripts/peer_careamics.py`` found PyPI's torchvision <= 0.26 does not import beside it; newer
torchvision releases were not tried). Cellpose 3.1.1.3 needs neither.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parents[1]

TORCH_PIN = "torch==2.13.0+cpu"  # the CPU wheel on this disk; "+cpu" can never match CUDA
CELLPOSE_PIN = "cellpose==3.1.1.3"  # the last 3.x: CPnet, no torchvision / segment-anything
PINS = {"torch": "2.13.0+cpu", "cellpose": "3.1.1.3"}

NUCLEUS_DIAMETER = 17.0  # cellpose's diam_mean for nuclei
CHANNELS = [0, 0]  # cellpose: segment the grey (channel-averaged) image, no second channel
THRESHOLDS = [0.5, 0.75]


def say(message: str) -> None:
    print(f"[peer_seg] {message}", file=sys.stderr, flush=True)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


# --------------------------------------------------------------------------------------------
# setup (standard library only)
# --------------------------------------------------------------------------------------------


def check_venv(venv: Path) -> dict | None:
    """Versions the venv reports through ``check``, or None when it cannot import the peer."""
    python = venv_python(venv)
    if not python.exists():
        return None
    proc = subprocess.run([str(python), str(SCRIPT), "check"], check=False, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pip_install(python: Path, *args: str) -> None:
    """``pip install ARGS`` in the venv; raise SystemExit with pip's last lines on failure."""
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check",
           "--progress-bar", "off", *args]
    say(" ".join(cmd[1:]))
    proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise SystemExit(f"pip failed (exit {proc.returncode}):\n{tail}")


def setup(venv: Path) -> int:
    venv = venv.resolve()
    report = check_venv(venv)
    if report is not None and all(report.get(k) == v for k, v in PINS.items()):
        say(f"{venv} is ready, nothing to do: {json.dumps(report)}")
        return 0
    if not venv_python(venv).exists():
        say(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv_python(venv)
    pip_install(python, TORCH_PIN)  # first, so nothing later can ask for a CUDA build
    with tempfile.TemporaryDirectory(prefix="peer-seg-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(f"{TORCH_PIN}\n")
        pip_install(python, "--constraint", str(constraints), CELLPOSE_PIN)
    report = check_venv(venv)
    if report is None:
        raise SystemExit(f"installed, but `{python} {SCRIPT.name} check` fails")
    say(f"ready: {json.dumps(report)}")
    return 0


# --------------------------------------------------------------------------------------------
# inside the peer venv
# --------------------------------------------------------------------------------------------


def check() -> int:
    """Import the peer as ``_peer`` does and print the versions as one JSON line."""
    import numpy
    import torch
    from cellpose import dynamics, models, train, version  # noqa: F401

    print(json.dumps({"cellpose": version, "torch": torch.__version__, "numpy": numpy.__version__}))
    return 0


def forbid_network() -> None:
    """Make any socket connection (and cellpose's weight download) raise instead of happening."""
    import socket

    def refuse(*args, **kwargs):
        raise RuntimeError("peer_seg: network access attempted (no downloads allowed)")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    import cellpose.utils

    cellpose.utils.download_url_to_file = refuse


def read_image(path: Path):
    """A PNG/TIFF as a numpy array (grey: YX, colour: YXC), as the project's reader gives it."""
    import numpy as np

    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    import imagecodecs  # a cellpose requirement; PIL is not

    return np.asarray(imagecodecs.imread(path))


def untrained_cellpose(threads: int, seed: int):
    """A randomly initialised CellposeModel for nuclei: no weights are looked up or loaded."""
    import numpy as np
    import torch
    from cellpose import models

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = models.CellposeModel(gpu=False, pretrained_model=False, model_type=None,
                                 nchan=2, diam_mean=NUCLEUS_DIAMETER)
    if model.pretrained_model:
        raise RuntimeError(f"cellpose resolved pretrained weights {model.pretrained_model!r}")
    return model


def train_schedule(job: dict, n_train: int) -> dict:
    """``train_seg`` arguments for --steps / --epochs, and the optimisation steps they make."""
    batch = job["batch_size"]
    if job["steps"]:
        return {"n_epochs": job["steps"], "nimg_per_epoch": batch, "optimizer_steps": job["steps"]}
    return {"n_epochs": job["epochs"], "nimg_per_epoch": None,
            "optimizer_steps": job["epochs"] * -(-n_train // batch)}


def peer(job_path: Path) -> int:
    """Train Cellpose from scratch on the job's training ids, predict its validation ids."""
    job = json.loads(job_path.read_text())
    forbid_network()
    import logging

    import numpy as np
    import tifffile
    import torch
    from cellpose import dynamics, train, version

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("cellpose.train").setLevel(logging.INFO)

    data, out_dir = Path(job["data"]), Path(job["pred_dir"])
    train_images = [read_image(data / "images" / f"{i}.png") for i in job["train_ids"]]
    train_masks = [tifffile.imread(data / "masks" / f"{i}.tif") for i in job["train_ids"]]
    val_images = [read_image(data / "images" / f"{i}.png") for i in job["val_ids"]]
    channel_axis = 2 if train_images[0].ndim == 3 else None
    n_objects = [len(np.unique(m)) - int((m == 0).any()) for m in train_masks]
    n_used = sum(n >= job["min_train_masks"] for n in n_objects)

    model = untrained_cellpose(job["threads"], job["seed"])
    schedule = train_schedule(job, n_used)

    started = time.perf_counter()
    flows = dynamics.labels_to_flows(train_masks, device=model.device)
    flows_seconds = time.perf_counter() - started

    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    weights, train_losses, _ = train.train_seg(
        model.net, train_data=train_images, train_labels=flows, channels=CHANNELS,
        channel_axis=channel_axis, batch_size=job["batch_size"],
        learning_rate=job["learning_rate"], n_epochs=schedule["n_epochs"],
        nimg_per_epoch=schedule["nimg_per_epoch"], min_train_masks=job["min_train_masks"],
        bsize=job["bsize"], save_path=out_dir, save_every=schedule["n_epochs"],
        model_name=f"cellpose_{job['kind']}")
    train_seconds = time.perf_counter() - started

    diameter = float(model.net.diam_labels.item())  # mean diameter of the training nuclei
    started = time.perf_counter()
    masks, _, _ = model.eval(val_images, channels=CHANNELS, channel_axis=channel_axis,
                             diameter=diameter)
    predict_seconds = time.perf_counter() - started

    for image_id, image, mask in zip(job["val_ids"], val_images, masks):
        if mask.shape != image.shape[:2]:
            raise RuntimeError(f"{image_id}: labels {mask.shape} for an image {image.shape}")
        tifffile.imwrite(out_dir / f"{image_id}.tif", mask.astype(np.uint32))

    result = {
        "peer": "cellpose", "version": version, "torch": torch.__version__,
        "n_train": len(train_images), "n_train_used": int(n_used), "n_val": len(val_images),
        "epochs": schedule["n_epochs"], "nimg_per_epoch": schedule["nimg_per_epoch"],
        "optimizer_steps": schedule["optimizer_steps"], "batch_size": job["batch_size"],
        "bsize": job["bsize"], "learning_rate": job["learning_rate"], "threads": job["threads"],
        "seed": job["seed"],
        "flows_seconds": round(flows_seconds, 2), "train_seconds": round(train_seconds, 2),
        "seconds_per_step": round(train_seconds / schedule["optimizer_steps"], 3),
        "predict_seconds": round(predict_seconds, 2),
        "final_train_loss": round(float(train_losses[-1]), 5), "diameter": round(diameter, 2),
        "weights": str(weights),
    }
    (out_dir / "peer.json").write_text(json.dumps(result, indent=1))
    return 0


# --------------------------------------------------------------------------------------------
# run (the project's python)
# --------------------------------------------------------------------------------------------


def project_split(data: Path, kind: str) -> tuple[list[str], list[str]]:
    """The project's (training ids, validation ids) of KIND, from bench_seg_baseline.dsb_split."""
    spec = importlib.util.spec_from_file_location("bench_seg_baseline",
                                                  REPO / "scripts" / "bench_seg_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    split = module.dsb_split(data)
    if kind not in split:
        raise SystemExit(f"no kind {kind!r} in {data / 'index.csv'}: {', '.join(sorted(split))}")
    return split[kind]


def run_peer(venv: Path, job: dict) -> dict:
    """Run ``_peer`` in the venv on ``job``; return what it reports."""
    pred_dir = Path(job["pred_dir"])
    pred_dir.mkdir(parents=True, exist_ok=True)
    for stale in pred_dir.glob("*.tif"):
        stale.unlink()
    job_path = pred_dir / "job.json"
    job_path.write_text(json.dumps(job))
    with tempfile.TemporaryDirectory(prefix="peer-seg-models-") as empty_models:
        threads = str(job["threads"])
        env = {**os.environ, "CELLPOSE_LOCAL_MODELS_PATH": empty_models,
               "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TQDM_MININTERVAL": "30"}
        say(f"training {job['peer']} from scratch in {venv} ...")
        cmd = [str(venv_python(venv)), str(SCRIPT), "_peer", str(job_path)]
        proc = subprocess.Popen(cmd, env=env)
        try:
            returncode = proc.wait()
        finally:  # interrupted (Ctrl-C, or SIGTERM from `timeout`): never leave the peer running
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if returncode != 0:
        raise SystemExit(f"the peer process failed (exit {returncode})")
    return json.loads((pred_dir / "peer.json").read_text())


def score(data: Path, val_ids: list[str], pred_dir: Path) -> dict[float, dict]:
    """The project's metrics of the predicted label images, by IoU threshold."""
    import tifffile

    from zoo.segmentation.metrics import evaluate

    truths = [tifffile.imread(data / "masks" / f"{i}.tif") for i in val_ids]
    predictions = [tifffile.imread(pred_dir / f"{i}.tif") for i in val_ids]
    return {row["threshold"]: row for row in evaluate(truths, predictions, thresholds=THRESHOLDS)}


def markdown(result: dict) -> str:
    """Header and one row: peer, kind, images, AP@0.5, AP@0.75, F1@0.5, training s, budget."""
    p, s = result["peer"], result["scores"]
    budget = f"{p['optimizer_steps']} steps x {p['batch_size']} crops of {p['bsize']} px"
    if p["nimg_per_epoch"] is None:
        budget += f" ({p['epochs']} epochs)"
    return ("| peer | kind | images | AP@0.5 | AP@0.75 | F1@0.5 | train s | training |\n"
            "|---|---|---|---|---|---|---|---|\n"
            f"| {p['peer']} {p['version']} (from scratch) | {result['kind']} | {p['n_val']} | "
            f"{s['0.5']['ap']:.3f} | {s['0.75']['ap']:.3f} | {s['0.5']['f1']:.3f} | "
            f"{p['train_seconds']:.0f} | {budget} |")


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # runs `finally`
    data, out = args.data.resolve(), args.out.resolve()
    pred_dir = (args.pred_dir or out.with_name(f"{out.stem}_labels")).resolve()
    train_ids, val_ids = project_split(data, args.kind)
    say(f"{args.kind}: {len(train_ids)} training, {len(val_ids)} validation images")
    job = {"peer": "cellpose", "data": str(data), "kind": args.kind, "pred_dir": str(pred_dir),
           "train_ids": train_ids, "val_ids": val_ids, "steps": args.steps, "epochs": args.epochs,
           "batch_size": args.batch_size, "bsize": args.bsize, "learning_rate": args.learning_rate,
           "min_train_masks": args.min_train_masks, "threads": args.threads, "seed": args.seed}
    peer_result = run_peer(args.venv.resolve(), job)
    scores = score(data, val_ids, pred_dir)
    result = {"kind": args.kind, "data": str(data), "pred_dir": str(pred_dir), "peer": peer_result,
              "scores": {str(t): row for t, row in scores.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return 0


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_setup = sub.add_parser("setup", help="create VENV with the pinned peer (any python3)")
    p_setup.add_argument("venv", type=Path)

    p_run = sub.add_parser("run", help="train the peer, predict, score (project's python)")
    p_run.add_argument("--venv", type=Path, required=True, help="made by `setup`")
    p_run.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dsb2018")
    p_run.add_argument("--kind", default="fluo", help="fluo, histo_rgb or brightfield_gray")
    budget = p_run.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="optimisation steps (one batch each)")
    budget.add_argument("--epochs", type=int, help="cellpose epochs (passes over the training set)")
    p_run.add_argument("--out", type=Path, required=True, help="result JSON")
    p_run.add_argument("--pred-dir", type=Path, help="predicted labels (default: OUT_labels/)")
    p_run.add_argument("--batch-size", type=int, default=8)
    p_run.add_argument("--bsize", type=int, default=224,
                       help="side of the training crops (cellpose's default 224)")
    p_run.add_argument("--learning-rate", type=float, default=0.005)
    p_run.add_argument("--min-train-masks", type=int, default=5,
                       help="cellpose drops training images with fewer nuclei")
    p_run.add_argument("--threads", type=int, default=2)
    p_run.add_argument("--seed", type=int, default=0)

    sub.add_parser("check", help="inside the venv: print the versions")
    p_peer = sub.add_parser("_peer", help="internal: the peer side of `run`")
    p_peer.add_argument("job", type=Path)

    args = parser.parse_args(argv)
    if args.command == "setup":
        return setup(args.venv)
    if args.command == "check":
        return check()
    if args.command == "_peer":
        return peer(args.job)
    if (args.steps or args.epochs or 0) < 1:
        parser.error("--steps / --epochs must be at least 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
