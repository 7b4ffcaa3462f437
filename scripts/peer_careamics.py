#!/usr/bin/env python3
"""Peer runner: time CAREamics 0.3.5's tiled Noise2Void prediction on the CPU.

``scripts/bench_predict.py`` compares our prediction runtime with CAREamics'.
This file is the CAREamics side of that comparison. It runs as a whole separate
process inside its own virtual environment, so CAREamics, Lightning and their
dependencies never touch the project's environment.

Subcommands
-----------
``setup VENV_DIR``
    Run with the system ``python3``. Creates ``VENV_DIR`` (``python3 -m venv``)
    and installs CAREamics 0.3.5 into it. Standard library only. Idempotent: if
    the venv already imports CAREamics 0.3.5 on torch 2.13.0 (CPU), it does
    nothing.
``run --size 2048 --tile 256 --overlap 48 --threads 2 --seed 0 [--json OUT]``
    Run with ``VENV_DIR/bin/python``. Builds the default CAREamics N2V
    configuration for 2D data (axes ``YX``; U-Net depth 2, 32 initial filters),
    creates an (untrained) ``CAREamist`` and times
    ``careamist.predict(image, axes="YX", tile_size=..., tile_overlap=...)`` on a
    synthetic float32 image. Prints one JSON object as the last stdout line.
``train --train-list TRAIN.txt --val-list VAL.txt --out-dir OUT --steps 300``
``--patch 64 --batch-size 16 --threads 2 --seed 0 [--json OUT.json]``
    Run with ``VENV_DIR/bin/python``. Loads the 2D grey images listed one a line
    in TRAIN.txt (PNG via PIL, TIFF via tifffile; float32; stacked as axes
    ``SYX`` when all have one size, else a list with axes ``YX``) and trains
    CAREamics' default N2V (U-Net depth 2, 32 initial filters, default masking,
    augmentations, Adam and ReduceLROnPlateau, mean/std normalization computed
    from the training data) for exactly ``--steps`` optimisation steps of
    ``--batch-size`` patches of ``--patch`` pixels. Then predicts every image in
    VAL.txt whole (no tiling) and saves each, denormalised by CAREamics, as
    ``OUT/STEM.npy`` (float32). Prints one JSON object as the last stdout line.

    Exact step count: ``max_epochs=-1`` (``num_epochs=-1``) with Lightning's
    ``max_steps=--steps`` in the trainer parameters; the run fails unless the
    timed batches, ``trainer.global_step`` and the "last" checkpoint that
    prediction loads all say ``--steps``. No validation during training:
    ``n_val_patches=0`` (CAREamics then requires the scheduler to monitor
    ``train_loss_epoch`` instead of ``val_loss``; ReduceLROnPlateau acts per
    epoch with patience 10, so this changes nothing within a few epochs) and
    ``num_sanity_val_steps=0``. The validation images are never seen in training.

    Timing: a Lightning callback records ``train_seconds`` (from the first
    ``on_train_epoch_start``, before the first batch is fetched, to the last
    ``on_train_batch_end``: patch extraction, augmentation, N2V masking, forward,
    backward and Adam step) and the sum of the per-batch times
    (``on_train_batch_start`` to ``on_train_batch_end``: masking, forward,
    backward, optimizer step; no batch fetching). ``fit_seconds`` is the whole
    ``careamist.train()`` call (adds dataset set-up and the mean/std pass).
    The median and 90th percentile of the batch times expose CPU contention.
``check``
    Run with ``VENV_DIR/bin/python``. Imports CAREamics the way ``run`` does and
    prints the versions as JSON; ``setup`` uses it to decide whether it is done.

Why ``--no-deps`` and a constraints file
----------------------------------------
On this machine ``pip install torch==2.13.0`` takes a CPU wheel that lies on
disk, while any torch requirement that is not already satisfied pulls a
multi-GB CUDA build. CAREamics 0.3.5 also requires ``torchvision<=0.26``, and
PyPI's torchvision builds do not import beside torch 2.13.0 (``operator
torchvision::nms does not exist``). So ``setup`` installs ``torch==2.13.0+cpu``
first (the local-version pin can only match the CPU wheel, so a missing wheel
fails instead of downloading CUDA), then every other requirement that
CAREamics' wheel metadata lists (except torch, torchvision and the optional
extras) under a constraints file that pins ``torch==2.13.0+cpu`` and forbids
torchvision altogether (``torchvision<0``), and finally CAREamics itself with
``--no-deps``. The installed set therefore lacks exactly one declared
requirement of CAREamics: torchvision.

Why the torchvision stand-in
----------------------------
CAREamics imports torchvision at import time, but only in modules that N2V
prediction never calls: ``careamics.model_io.bioimage.bioimage_utils`` (reads
``torchvision.__version__`` for BioImage Model Zoo export) and the LVAE/HDN
code (``import torchvision.transforms.functional as F``). ``run`` therefore
puts a small import-only stand-in package into ``sys.modules`` while
``careamics`` is imported, and removes it right afterwards. Before that it
imports torchmetrics and Lightning and resolves their lazy
``_TORCHVISION_AVAILABLE`` flags, so that neither library ever believes
torchvision is present. Any attribute looked up on the stand-in other than
``__version__`` raises, so an accidental use of torchvision fails loudly
instead of silently changing what is measured.

Measurement
-----------
Thread counts are set before torch is imported (``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``) and again through ``torch.set_num_threads`` and
``torch.set_num_interop_threads``. The data loader runs in the main process by
default (``--num-workers 0``), so the process uses the requested threads only
and ``peak_rss_mb`` (``VmHWM`` of this process) covers all the memory used.
The normalization statistics are put into the configuration up front, as a
trained model would carry them, so prediction does not compute them. One small
untimed warm-up prediction (a ``tile`` x ``tile`` image) runs before the timed
one. The weights are random: this measures speed and memory, not quality.
"""

from __future__ import annotations

import argparse
import email.parser
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

CAREAMICS_VERSION = "0.3.5"
TORCH_VERSION = "2.13.0"
#: The CPU wheel on this disk; a "+cpu" pin can never resolve to a CUDA build.
TORCH_PIN = f"torch=={TORCH_VERSION}+cpu"

#: Requirements of careamics that ``setup`` installs itself or refuses.
_HANDLED_BY_SETUP = {"torch", "torchvision"}

#: Lightning/torchmetrics modules holding a lazy ``_TORCHVISION_AVAILABLE`` flag.
_TORCHVISION_FLAG_MODULES = (
    "torchmetrics.utilities.imports",
    "lightning.pytorch.utilities.imports",
    "lightning.fabric.utilities.imports",
    "pytorch_lightning.utilities.imports",
)

#: Submodules the CAREamics import chain imports (``import a.b.c`` form).
_STANDIN_MODULES = (
    "torchvision",
    "torchvision.transforms",
    "torchvision.transforms.functional",
)

_SCRIPT = Path(__file__).resolve()


# --------------------------------------------------------------------------
# setup (system python3, standard library only)
# --------------------------------------------------------------------------


class SetupError(RuntimeError):
    """A setup step failed; the message says which and why."""


def _own_peak_mb() -> float:
    """This process's peak RSS: Linux's VmHWM (``ru_maxrss`` keeps the parent's peak across exec,
    so a run started by a large benchmark read at least the benchmark's memory)."""
    try:
        return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _say(message: str) -> None:
    print(f"[peer_careamics setup] {message}", flush=True)


def _venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def _run_step(title: str, cmd: list[str]) -> str:
    """Run ``cmd``, capturing its output; raise SetupError with the tail on failure."""
    _say(f"{title} ...")
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seconds = time.perf_counter() - start
    # pip on this machine warns about empty local index folders; that is noise.
    lines = [
        line
        for line in proc.stdout.splitlines()
        if not (line.startswith("WARNING: Location ") and "is ignored" in line)
    ]
    if proc.returncode != 0:
        tail = "\n".join(lines[-40:])
        raise SetupError(
            f"{title} failed (exit {proc.returncode}) after {seconds:.0f}s.\n"
            f"command: {' '.join(cmd)}\n--- last output ---\n{tail}"
        )
    installed = [line for line in lines if line.startswith("Successfully installed")]
    detail = ""
    if "install" in cmd:
        detail = f" ({installed[-1] if installed else 'nothing new to install'})"
    _say(f"{title}: done in {seconds:.0f}s{detail}")
    return "\n".join(lines)


def _check_venv(python: Path, quiet: bool) -> dict | None:
    """Run ``check`` inside the venv; return its report, or None if it fails."""
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), str(_SCRIPT), "check"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if proc.returncode != 0:
        if not quiet:
            sys.stderr.write(proc.stderr[-4000:])
        return None
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return None


def _careamics_requirements(wheel: Path) -> list[str]:
    """Requirements of the careamics wheel, minus extras, torch and torchvision."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(zf.read(name).decode("utf-8"))
    if (metadata["Name"], metadata["Version"]) != ("careamics", CAREAMICS_VERSION):
        raise SetupError(
            f"downloaded {wheel.name} is {metadata['Name']} {metadata['Version']},"
            f" not careamics {CAREAMICS_VERSION}"
        )
    requirements = []
    for spec in metadata.get_all("Requires-Dist") or []:
        requirement, _, marker = spec.partition(";")
        if re.search(r"\bextra\s*==", marker):
            continue  # optional extras (czi, wandb, tensorboard, examples)
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match is None:
            raise SetupError(f"cannot parse requirement {spec!r} of careamics")
        if re.sub(r"[-_.]+", "-", match.group(1)).lower() in _HANDLED_BY_SETUP:
            continue
        requirements.append(spec.strip())
    return requirements


def setup(venv_dir: Path) -> int:
    venv_dir = venv_dir.resolve()
    python = _venv_python(venv_dir)

    report = _check_venv(python, quiet=True)
    if report is not None:
        _say(f"{venv_dir} is already set up, nothing to do: {json.dumps(report)}")
        return 0

    if python.exists():
        _say(f"reusing the existing venv {venv_dir} (CAREamics not importable yet)")
    else:
        _run_step(
            f"creating venv {venv_dir} with {sys.executable}",
            [sys.executable, "-m", "venv", str(venv_dir)],
        )
    # Keep the venv out of git whatever folder it lives in (as Python 3.13's
    # venv module does by itself).
    gitignore = venv_dir / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("# created by scripts/peer_careamics.py\n*\n")

    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    install = [*pip, "install", "--progress-bar", "off"]

    with tempfile.TemporaryDirectory(prefix="peer-careamics-setup-") as tmp:
        tmp_dir = Path(tmp)
        constraints = tmp_dir / "constraints.txt"
        constraints.write_text(
            f"# the CPU wheel on this disk; anything else pulls a CUDA build\n"
            f"{TORCH_PIN}\n"
            f"# PyPI's torchvision does not import beside torch {TORCH_VERSION}\n"
            f"torchvision<0\n"
        )

        _run_step(
            f"installing {TORCH_PIN} (the CPU wheel on this disk)",
            [*install, TORCH_PIN],
        )

        _run_step(
            f"downloading careamics=={CAREAMICS_VERSION} (no deps) to read its metadata",
            [*pip, "download", "--no-deps", "--dest", str(tmp_dir),
             f"careamics=={CAREAMICS_VERSION}"],
        )
        wheels = sorted(tmp_dir.glob(f"careamics-{CAREAMICS_VERSION}-*.whl"))
        if not wheels:
            raise SetupError(
                f"pip download gave no careamics-{CAREAMICS_VERSION} wheel in {tmp_dir}"
            )
        requirements = _careamics_requirements(wheels[0])
        _say("careamics requirements to install (torch pinned, torchvision left out): "
             + ", ".join(requirements))

        _run_step(
            "installing careamics' requirements under the torch/torchvision constraints",
            [*install, "--constraint", str(constraints), *requirements],
        )
        _run_step(
            f"installing careamics=={CAREAMICS_VERSION} with --no-deps",
            [*install, "--no-deps", str(wheels[0])],
        )

    report = _check_venv(python, quiet=False)
    if report is None:
        raise SetupError(
            f"everything installed, but {python} {_SCRIPT.name} check failed"
            " (its error is above)"
        )
    _say(f"ready: {json.dumps(report)}")
    return 0


# --------------------------------------------------------------------------
# inside the venv: import CAREamics with the torchvision stand-in
# --------------------------------------------------------------------------


def _set_thread_env(threads: int) -> None:
    """Thread caps read by OpenMP/MKL when torch loads: set before importing it."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def _import_careamics():
    """Import careamics with an import-only torchvision stand-in; return the module."""
    import importlib
    import importlib.machinery
    import types

    # Import these first and resolve their lazy "is torchvision installed?"
    # flags while torchvision is truly absent, so the stand-in can't flip them.
    import lightning  # noqa: F401
    import torchmetrics  # noqa: F401

    for name in _TORCHVISION_FLAG_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        flag = getattr(module, "_TORCHVISION_AVAILABLE", None)
        if flag is not None:
            bool(flag)

    class _StandIn(types.ModuleType):
        def __getattr__(self, attr: str):
            if attr.startswith("__"):
                raise AttributeError(attr)
            raise RuntimeError(
                f"{self.__name__}.{attr} was used, but torchvision here is only an"
                " import-time stand-in (see scripts/peer_careamics.py)"
            )

    if any(name in sys.modules for name in _STANDIN_MODULES):
        raise RuntimeError("torchvision was imported before the stand-in was set up")
    standins = {}
    for name in _STANDIN_MODULES:
        module = _StandIn(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []
        module.__file__ = None
        standins[name] = module
    standins["torchvision"].__version__ = "0.0.0+standin"
    for name, module in standins.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(standins[parent], child, module)
    sys.modules.update(standins)
    try:
        import careamics
        import careamics.config  # noqa: F401
    finally:
        # Scope the stand-in to the import: later availability checks see no
        # torchvision; modules that already bound it keep their reference.
        for name in _STANDIN_MODULES:
            if sys.modules.get(name) is standins[name]:
                del sys.modules[name]
    return careamics


def _quiet_libraries() -> None:
    """Silence CAREamics/Lightning info logging and known harmless warnings."""
    import logging
    import warnings

    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("careamics", "lightning", "pytorch_lightning",
                                  "lightning_fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("careamics", "lightning", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Untrained model: no "last" checkpoint exists, the current weights are used.
    warnings.filterwarnings("ignore", message=r".*ckpt_path=\"last\".*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def _unmet_requirements() -> list[str]:
    """careamics' declared requirements (no extras) that the venv does not satisfy."""
    from importlib import metadata

    from packaging.requirements import Requirement

    unmet = []
    for spec in metadata.requires("careamics") or []:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            unmet.append(str(req))
            continue
        if not req.specifier.contains(version, prereleases=True):
            unmet.append(f"{req} (have {version})")
    return unmet


def check() -> int:
    import torch

    careamics = _import_careamics()
    from careamics import CAREamist  # noqa: F401
    from careamics.config import create_n2v_config  # noqa: F401

    report = {
        "careamics_version": careamics.__version__,
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "unmet_requirements": _unmet_requirements(),
    }
    problems = []
    if careamics.__version__ != CAREAMICS_VERSION:
        problems.append(f"careamics is {careamics.__version__}, want {CAREAMICS_VERSION}")
    if torch.__version__.split("+")[0] != TORCH_VERSION or torch.version.cuda:
        problems.append(f"torch is {torch.__version__} (cuda {torch.version.cuda}),"
                        f" want the {TORCH_VERSION} CPU build")
    if any(not item.startswith("torchvision") for item in report["unmet_requirements"]):
        problems.append(f"unmet requirements: {report['unmet_requirements']}")
    if problems:
        print("check failed: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


# --------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------


def _synthetic_image(size: int, seed: int):
    """Seeded float32 test image: smooth blobs and stripes plus Gaussian noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    coords = np.arange(size, dtype=np.float32) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    image = 0.3 * np.sin(2 * np.pi * 6 * xx) * np.cos(2 * np.pi * 4 * yy)
    for cy, cx, sigma, amp in zip(rng.random(24), rng.random(24),
                                  rng.uniform(0.01, 0.06, 24), rng.uniform(0.5, 1.5, 24)):
        image += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    image += rng.normal(0.0, 0.25, size=(size, size))
    return image.astype(np.float32)


def _report(result: dict, json_path: str | None) -> int:
    """Print the result as the last stdout line (and write it to ``json_path`` when given)."""
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    depth = 2  # CAREamics' default UNetConfig.depth (num_channels_init 32)
    if args.tile % (2**depth) or args.tile <= 0:
        raise SystemExit(f"--tile must be a positive multiple of {2**depth} (U-Net depth {depth})")
    if args.overlap % 2 or not 0 <= args.overlap < args.tile:
        raise SystemExit("--overlap must be even and in [0, tile)")
    if args.size <= 0 or args.threads <= 0 or args.batch_size <= 0 or args.num_workers < 0:
        raise SystemExit("--size, --threads and --batch-size must be positive,"
                         " --num-workers non-negative")

    _set_thread_env(args.threads)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)

    careamics = _import_careamics()
    from careamics import CAREamist
    from careamics.config import create_advanced_n2v_config

    _quiet_libraries()

    image = _synthetic_image(args.size, args.seed)
    warmup = _synthetic_image(args.tile, args.seed + 1)

    # create_n2v_config() is create_advanced_n2v_config() with its defaults;
    # the advanced form only adds the normalization statistics a trained model
    # carries, and a seed (careamics wants it > 0).
    config = create_advanced_n2v_config(
        experiment_name="peer_careamics",
        data_type="array",
        axes="YX",
        patch_size=[64, 64],
        batch_size=args.batch_size,
        normalization_params={
            "input_means": [float(image.mean())],
            "input_stds": [float(image.std())],
        },
        num_workers=args.num_workers,
        seed=args.seed + 1,
    )
    unet = config.algorithm_config.model
    torch.manual_seed(args.seed)

    with tempfile.TemporaryDirectory(prefix="peer-careamics-") as work_dir:
        careamist = CAREamist(config, work_dir=work_dir, enable_progress_bar=False)
        _quiet_libraries()

        def predict(data):
            predictions, _sources = careamist.predict(
                data,
                axes="YX",
                tile_size=(args.tile, args.tile),
                tile_overlap=(args.overlap, args.overlap),
            )
            return predictions

        start = time.perf_counter()
        predict(warmup)
        warmup_seconds = time.perf_counter() - start

        start = time.perf_counter()
        predictions = predict(image)
        seconds = time.perf_counter() - start

    if len(predictions) != 1:
        raise SystemExit(f"expected one prediction, got {len(predictions)}")
    output = np.squeeze(np.asarray(predictions[0]))
    if output.shape != image.shape:
        raise SystemExit(f"output shape {output.shape} != input shape {image.shape}")
    if not np.isfinite(output).all():
        raise SystemExit("prediction contains non-finite values")

    result = {
        "peer": "careamics",
        "careamics_version": careamics.__version__,
        "torch_version": torch.__version__,
        "size": args.size,
        "tile": args.tile,
        "overlap": args.overlap,
        "threads": args.threads,
        "seconds": round(seconds, 4),
        "mpx_per_s": round(args.size * args.size / 1e6 / seconds, 4),
        "output_shape": list(output.shape),
        "peak_rss_mb": round(_own_peak_mb(), 1),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "unet_depth": unet.depth,
        "unet_num_channels_init": unet.num_channels_init,
        "warmup_seconds": round(warmup_seconds, 4),
    }
    return _report(result, args.json)


# --------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------


def _read_list(path: Path) -> list[Path]:
    """Image paths listed one a line in ``path`` (blank lines and ``#`` comments skipped)."""
    base = path.resolve().parent
    paths = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        item = Path(line)
        paths.append(item if item.is_absolute() else base / item)
    if not paths:
        raise SystemExit(f"{path} lists no images")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"{path}: {len(missing)} listed files do not exist, e.g. {missing[0]}")
    return paths


def _load_grey(path: Path):
    """A 2D grey image (PNG via PIL, TIFF via tifffile) as a float32 array."""
    import numpy as np

    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        array = tifffile.imread(path)
    else:
        from PIL import Image

        with Image.open(path) as image:
            if image.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
                raise SystemExit(f"{path}: PIL mode {image.mode!r} is not a grey image")
            array = np.asarray(image)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise SystemExit(f"{path}: expected a 2D grey image, got shape {array.shape}")
    return array.astype(np.float32)


def _quiet_training() -> None:
    """Also silence what only training prints: CAREamics' own loggers (created by
    ``careamics.utils.logging.get_logger`` under bare names such as "Statistics",
    which do not propagate) and the tqdm bar of its normalization statistics."""
    import functools
    import logging

    from careamics.dataset.normalization import statistics
    from careamics.utils import logging as careamics_logging

    for name in list(careamics_logging.LOGGERS):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not isinstance(statistics.tqdm, functools.partial):
        statistics.tqdm = functools.partial(statistics.tqdm, disable=True)


def train(args: argparse.Namespace) -> int:
    depth = 2  # CAREamics' default UNetConfig.depth (num_channels_init 32)
    if args.steps <= 0 or args.batch_size <= 0 or args.threads <= 0:
        raise SystemExit("--steps, --batch-size and --threads must be positive")
    if args.patch <= 0 or args.patch % (2**depth):
        raise SystemExit(f"--patch must be a positive multiple of {2**depth}")

    train_paths = _read_list(Path(args.train_list))
    val_paths = _read_list(Path(args.val_list))
    overlap = {p.resolve() for p in train_paths} & {p.resolve() for p in val_paths}
    if overlap:
        raise SystemExit(f"{len(overlap)} images are in both lists, e.g. {min(overlap)}")
    stems = [p.stem for p in val_paths]
    if len(set(stems)) != len(stems):
        raise SystemExit("validation images must have distinct file stems (outputs are STEM.npy)")

    _set_thread_env(args.threads)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)

    careamics = _import_careamics()
    import warnings

    from careamics import CAREamist
    from careamics.config import create_advanced_n2v_config
    from lightning.pytorch.callbacks import Callback

    _quiet_libraries()
    _quiet_training()
    # num_workers=0 is deliberate (threads stay as set); no validation loader.
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*Total length of .* is zero.*")
    warnings.filterwarnings("ignore", message=r".*val_dataloader.*")

    train_images = [_load_grey(p) for p in train_paths]
    val_images = [_load_grey(p) for p in val_paths]
    shapes = {im.shape for im in train_images}
    if len(shapes) == 1:
        # one stack of same-sized images: CAREamics wants axes "SYX" for it
        train_data, train_axes = np.stack(train_images), "SYX"
    else:
        train_data, train_axes = train_images, "YX"
    for image in train_images:
        if min(image.shape) < args.patch:
            raise SystemExit(f"a training image {image.shape} is smaller than --patch {args.patch}")

    class StepTimer(Callback):
        """Times the training loop and each optimisation step (batch)."""

        def __init__(self) -> None:
            self.loop_start: float | None = None
            self.loop_end: float | None = None
            self.batch_start = 0.0
            self.batch_seconds: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if self.loop_start is None:  # the first batch is fetched after this hook
                self.loop_start = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.batch_start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            now = time.perf_counter()
            self.batch_seconds.append(now - self.batch_start)
            self.loop_end = now
            actual = int(batch[0].data.shape[0])
            if actual != args.batch_size:
                raise RuntimeError(
                    f"batch {len(self.batch_seconds)} has {actual} patches, not {args.batch_size}"
                )

    # Exact step count: an unbounded number of epochs (max_epochs=-1) cut by
    # Lightning's max_steps (optimizer steps == batches: automatic optimisation,
    # no gradient accumulation). No validation: n_val_patches=0, which CAREamics
    # only allows with a training-loss monitor for its (per-epoch,
    # patience-10) ReduceLROnPlateau; no sanity validation either.
    config = create_advanced_n2v_config(
        experiment_name="peer_careamics_train",
        data_type="array",
        axes=train_axes,
        patch_size=[args.patch, args.patch],
        batch_size=args.batch_size,
        num_epochs=-1,
        n_val_patches=0,
        monitor_metric="train_loss_epoch",
        num_workers=0,
        trainer_params={
            "max_steps": args.steps,
            "num_sanity_val_steps": 0,
            "enable_model_summary": False,
        },
        seed=args.seed + 1,  # careamics wants a seed > 0
    )
    unet = config.algorithm_config.model
    torch.manual_seed(args.seed)
    timer = StepTimer()

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peer-careamics-train-") as work_dir:
        careamist = CAREamist(
            config, work_dir=work_dir, callbacks=[timer], enable_progress_bar=False
        )
        _quiet_libraries()
        _quiet_training()

        start = time.perf_counter()
        careamist.train(train_data=train_data)
        fit_seconds = time.perf_counter() - start

        trainer = careamist.trainer
        steps_run = len(timer.batch_seconds)
        if steps_run != args.steps or trainer.global_step != args.steps:
            raise SystemExit(
                f"CAREamics ran {steps_run} batches / {trainer.global_step} optimizer"
                f" steps, not the requested {args.steps}"
            )
        batches_per_epoch = trainer.num_training_batches
        epochs_touched = -(-steps_run // max(1, int(batches_per_epoch)))  # ceil
        final_loss = trainer.callback_metrics.get("train_loss")
        train_seconds = timer.loop_end - timer.loop_start
        batch_seconds_sum = float(sum(timer.batch_seconds))

        # N2V predicts from the "last" checkpoint; make sure it holds the final weights.
        last_ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
        if last_ckpt and Path(last_ckpt).is_file():
            ckpt_step = torch.load(last_ckpt, map_location="cpu", weights_only=False)["global_step"]
            if ckpt_step != args.steps:
                raise SystemExit(f"the last checkpoint is from step {ckpt_step}, not {args.steps}")
            predict_weights = f"last checkpoint (global_step {ckpt_step})"
        else:
            predict_weights = "in-memory weights (no last checkpoint)"

        start = time.perf_counter()
        predictions, _sources = careamist.predict(
            val_images, axes="YX", data_type="array", tile_size=None
        )
        predict_seconds = time.perf_counter() - start

    if len(predictions) != len(val_images):
        raise SystemExit(f"got {len(predictions)} predictions for {len(val_images)} images")
    written = []
    for path, image, prediction in zip(val_paths, val_images, predictions):
        output = np.squeeze(np.asarray(prediction)).astype(np.float32)
        if output.shape != image.shape:
            raise SystemExit(f"{path.name}: prediction shape {output.shape} != {image.shape}")
        if not np.isfinite(output).all():
            raise SystemExit(f"{path.name}: prediction contains non-finite values")
        target = out_dir / f"{path.stem}.npy"
        np.save(target, output)
        written.append(str(target))

    patches = args.steps * args.batch_size
    result = {
        "peer": "careamics",
        "careamics_version": careamics.__version__,
        "torch_version": torch.__version__,
        "steps": steps_run,
        "batch_size": args.batch_size,
        "patch": args.patch,
        "threads": args.threads,
        "train_seconds": round(train_seconds, 4),
        "patches_per_s": round(patches / train_seconds, 3),
        "batch_seconds_sum": round(batch_seconds_sum, 4),
        "patches_per_s_batches": round(patches / batch_seconds_sum, 3),
        # per-step spread: a shared/oversubscribed CPU shows up as a long tail
        "batch_seconds_median": round(float(np.median(timer.batch_seconds)), 4),
        "batch_seconds_p90": round(float(np.percentile(timer.batch_seconds, 90)), 4),
        "patches_per_s_median_batch": round(
            args.batch_size / float(np.median(timer.batch_seconds)), 3
        ),
        "fit_seconds": round(fit_seconds, 4),
        "predict_seconds": round(predict_seconds, 4),
        "predict_weights": predict_weights,
        "final_train_loss": None if final_loss is None else round(float(final_loss), 6),
        "batches_per_epoch": int(batches_per_epoch),
        "epochs_touched": int(epochs_touched),
        "train_axes": train_axes,
        "unet_depth": unet.depth,
        "unet_num_channels_init": unet.num_channels_init,
        "seed": args.seed,
        "predictions": written,
        "n_train_images": len(train_images),
        "n_val_images": len(val_images),
    }
    return _report(result, args.json)


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="CAREamics 0.3.5 peer for scripts/bench_predict.py"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_setup = sub.add_parser("setup", help="create VENV_DIR with CAREamics (system python3)")
    p_setup.add_argument("venv_dir", type=Path)

    sub.add_parser("check", help="inside the venv: import CAREamics, print versions")

    p_run = sub.add_parser("run", help="inside the venv: time tiled N2V prediction")
    p_run.add_argument("--size", type=int, default=2048, help="image side (pixels)")
    p_run.add_argument("--tile", type=int, default=256, help="tile side (pixels)")
    p_run.add_argument("--overlap", type=int, default=48, help="tile overlap (pixels)")
    p_run.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads")
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--batch-size", type=int, default=16,
                       help="configuration batch size, which predict() uses for tiles")
    p_run.add_argument("--num-workers", type=int, default=0,
                       help="data loader worker processes (0: in the main process)")
    p_run.add_argument("--json", help="also write the result to this file")

    p_train = sub.add_parser("train", help="inside the venv: train N2V for exact steps, predict")
    p_train.add_argument("--train-list", required=True, help="training image paths, one a line")
    p_train.add_argument("--val-list", required=True, help="images to predict, one a line")
    p_train.add_argument("--out-dir", required=True, help="predictions go here as STEM.npy")
    p_train.add_argument("--steps", type=int, default=300, help="optimisation steps")
    p_train.add_argument("--patch", type=int, default=64, help="patch side (pixels)")
    p_train.add_argument("--batch-size", type=int, default=16)
    p_train.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads")
    p_train.add_argument("--seed", type=int, default=0)
    p_train.add_argument("--json", help="also write the result to this file")

    args = parser.parse_args(argv)
    if args.command == "setup":
        try:
            return setup(args.venv_dir)
        except SetupError as error:
            print(f"[peer_careamics setup] FAILED: {error}", file=sys.stderr)
            return 1
    if args.command == "check":
        return check()
    if args.command == "train":
        return train(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
