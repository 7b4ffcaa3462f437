"""``fit``: train a blueprint on a folder of images with Lightning and write a package.

``fit`` is the one way in for training, whatever the task: the blueprint's architecture names
its trainer (:mod:`zoo.trainers.dispatch`). Dense models (restoration, segmentation) are trained
here on patches by :func:`fit_dense`; classifiers by
:func:`zoo.trainers.classification.fit_classifier`. The helpers below are shared with dense
fine-tuning."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from zoo import architectures, spec as specs
from zoo.errors import InputError
from zoo.hashing import fingerprint_files
from zoo.images import list_images, match_targets, read_raw, split_by_image
from zoo.package import build
from zoo.spec import Spec, Training

from . import dispatch
from .data import Rehearsal, RestorationDataModule
from .loop import add_shift_check, train
from .options import TrainingOptions
from .checkpoints import open_run
from .runlog import attach_curves, run_folder

log = logging.getLogger("zoo.trainers")


def fit(blueprint: str | Path | Spec, data: str | Path | None, out: str | Path, *,
        target: str | Path | None = None,
        train_files: Sequence[Path] | None = None, val_files: Sequence[Path] | None = None,
        val_fraction: float = 0.15, name: str | None = None, version: str = "0.1.0",
        description: str | None = None, patch: int | Sequence[int] = 64, batch_size: int | None = None,
        max_steps: int | None = None, steps_per_epoch: int | None = None, lr: float | None = None, seed: int = 0,
        accelerator: str = "auto", devices: str | int = "auto", precision: str = "32-true",
        strategy: str = "auto", progress: bool | str = True, module_options: dict | None = None,
        data_description: str | None = None, data_source: str | None = None,
        data_license: str | None = None, sample: str | Path | None = None, overwrite: bool = False,
        callbacks: Sequence = (), labels: str | Path | None = None, group_column: str | None = None,
        split_column: str | None = None, train_split: str = "train", test_split: str | None = None,
        canvas: int | None = None, scale: float | None = None, val_every: int | None = None,
        pixel_size: float | dict | None = None, run_dir: str | Path | None = None, max_time=None,
        resume: str | Path | bool | None = None, checkpoint_every: int | None = None, select: str = "metric",
        device: str | None = None) -> Path | None:
    """Train ``blueprint`` on the images in ``data`` (or explicit file lists); return the package path.

    A classifier's blueprint is trained by :func:`zoo.trainers.classification.fit_classifier`
    on labelled images (``labels`` ... ``scale``, ``val_every``: its options; ``batch_size`` and
    ``max_steps`` default to its own, 32 and 1500). Every other blueprint trains on patches
    (:func:`fit_dense`). An option that does not apply to the blueprint's task is refused when
    given; None means the trainer's default. Architectures trained on pairs (CARE, Noise2Noise) take their targets from the folder
    ``target``: the file of the same name as each image.
    The split is by image: ``val_files`` if given, else ``val_fraction`` of the folder's images.
    ``patch``, ``batch_size`` (default 16), ``max_steps`` (default 1000) and ``steps_per_epoch``
    (default 200, one validation each).
    The weights kept are those with the lowest validation loss. Lightning options (accelerator, devices, precision, strategy) pass straight through.
    ``sample``: the image whose crop becomes the package's test tensors and cover (default: the
    first validation image; pass one whose licence allows redistribution when publishing).
    ``callbacks``: extra Lightning callbacks.
    ``pixel_size``: the training images' µm per pixel (a number, or by axis), recorded in the
    package's ``scale`` with the training objects' median diameter (instance models); default:
    the images' metadata, when they state one.
    ``run_dir``: the run folder (default ``OUT.run`` beside the package): metrics.csv,
    TensorBoard events where installed, training_curves.png (also shown in the package's card).
    ``max_time``: a time budget (``timedelta``) for this session; the run stops when it is spent
    (and can be resumed).
    ``checkpoint_every``: steps between checkpoints in ``run_dir/checkpoints`` (default: every
    validation); one is also written when training ends.
    ``resume``: continue the run in this run folder (True: the default ``OUT.run``) from its
    latest checkpoint: same blueprint, data and settings, else a clear error
    (:mod:`zoo.trainers.checkpoints`).
    ``select``: ``metric`` keeps the weights that score best by the task's metric on the
    validation split (AP@0.5, macro-F1, PSNR: :mod:`zoo.trainers.selection`), ``loss`` those with
    the lowest validation loss; recorded in ``training.config.selection``.
    ``device``: ``cpu``, ``cuda`` (``cuda:N``) or ``mps``, the same for every architecture (sets
    ``accelerator`` and ``devices``).
    Under several processes (``strategy="ddp"``) only rank 0 writes the package, after the
    others have finished; the other ranks return None.
    """
    given = dict(locals())
    spec = blueprint if isinstance(blueprint, Spec) else specs.load(blueprint)
    trainer = dispatch.trainer_for(spec)
    accelerator, devices = device_options(device, accelerator, devices)
    lightning = {"accelerator": accelerator, "devices": devices, "precision": precision, "strategy": strategy}
    options = {k: v for k, v in given.items() if k not in ("blueprint", "data", "out", "device", *dispatch.LIGHTNING)}
    return dispatch.call(trainer.fit, trainer, spec.ref, options, dispatch.defaults_of(fit), spec, data, out,
                         **lightning)


def fit_dense(spec: Spec, data, out, *, target=None, train_files=None, val_files=None, val_fraction: float = 0.15,
              name=None, version: str = "0.1.0", description=None, patch=64, batch_size: int = 16,
              max_steps: int = 1000, steps_per_epoch: int = 200, lr=None, seed: int = 0, progress=True,
              module_options=None, data_description=None, data_source=None, data_license=None, sample=None,
              overwrite: bool = False, callbacks: Sequence = (), pixel_size=None, run_dir=None, max_time=None,
              resume=None, checkpoint_every: int | None = None, select: str = "metric", val_every: int | None = None,
              **lightning) -> Path | None:
    """Restoration and segmentation: patches of the images (and targets), by-image validation,
    one validation every ``steps_per_epoch`` (or ``val_every``) steps (see :func:`fit` for the options)."""
    import pytorch_lightning as pl

    from .selection import choose

    options = TrainingOptions(max_steps=max_steps, batch_size=batch_size, seed=seed,
                              val_every=val_every or steps_per_epoch, progress=progress, lightning=lightning)

    arch = architectures.get(spec.architecture_id)
    train_files, val_files = split_files(data, train_files, val_files, val_fraction, options.seed)
    pairs = pair_targets(arch, target, train_files, val_files)
    refuse_existing(out, overwrite)
    record = data_record(train_files, val_files, pairs, data, data_description, data_source, data_license)

    pl.seed_everything(options.seed, workers=True, verbose=False)
    module_kwargs = dict(module_options or {})
    if lr is not None:
        module_kwargs["lr"] = lr
    module = arch.training_module()(spec, **module_kwargs)
    datamodule = make_datamodule(module, train_files, val_files, pairs, patch, options.batch_size,
                                 options.validate_every, options.seed)
    selection, items = choose(spec, datamodule, select)
    run_dir, resume = run_and_resume(out, run_dir, resume)
    identity = run_identity(spec, "fit", record, options, patch=patch, module=module.hparams_for_record(),
                            select=selection.monitor)
    plan = open_run(run_dir, identity, checkpoint_every or options.validate_every, resume, overwrite)
    run = train(module, datamodule, options.max_steps, callbacks, progress=options.progress, run_dir=run_dir,
                max_time=max_time, val_every=options.validate_every, plan=plan, selection=selection,
                selection_items=items, seed=options.seed, **options.lightning)
    if not run.writes:
        return None
    training = Training(
        data=record,
        statistics=datamodule.statistics(),
        metrics=run.metrics(),
        config={"max_steps": options.max_steps, "patch": patch, "batch_size": options.batch_size,
                "seed": options.seed, "precision": options.lightning["precision"], **run.record(),
                **module.hparams_for_record(), "validation_files": [p.name for p in val_files]},
        parent=None,
    )
    path = build.build(spec, module.network, out, training, sample_image(spec, sample, val_files), name=name,
                       version=version, description=description, overwrite=overwrite)
    from zoo.opnames import makes_instances

    from .scale import record_scale

    record_scale(path, spec.inputs[0].spatial_axes, train_files, pixel_size, pairs.get("train_targets"),
                 makes_instances(spec))
    attach_curves(path, run_dir)
    return add_shift_check(path, train_files, val_files)


# ---------------------------------------------------------------------------- shared by fit and finetune
def device_options(device: str | None, accelerator: str = "auto", devices="auto") -> tuple[str, object]:
    """Lightning's (accelerator, devices) for ``device``: ``cpu``, ``cuda`` / ``cuda:N`` or ``mps``;
    None keeps ``accelerator`` and ``devices``. A device this machine lacks is a clear error."""
    if device is None:
        return accelerator, devices
    import torch

    kind, _, index = str(device).lower().partition(":")
    if kind == "cpu":
        return "cpu", devices
    if kind in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: this machine has no CUDA device that torch {torch.__version__} "
                             "can use; train with --device cpu (or install a CUDA build of torch)")
        return "gpu", [int(index)] if index else devices
    if kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError(f"--device mps: Apple's Metal (MPS) is not available here (torch {torch.__version__}); "
                             "train with --device cpu")
        return "mps", devices
    raise InputError(f"--device takes cpu, cuda (cuda:N) or mps, got {device!r}")


def refuse_existing(out, overwrite: bool) -> None:
    """A package already at ``out`` is refused before training, not after it (rank 0 only)."""
    from .checkpoints import local_rank

    out = Path(out)
    if local_rank() == 0 and not overwrite and (out / specs.SPEC_FILE).is_file():
        raise InputError(f"{out} already holds a package; choose another --out or pass --overwrite")


def run_and_resume(out, run_dir, resume) -> tuple[Path, bool]:
    """The run folder and whether to resume it: ``resume`` may name the folder (then ``run_dir``,
    if given, must be the same) or be True (the default ``OUT.run``, or ``run_dir``)."""
    if resume in (None, False):
        return run_folder(out, run_dir), False
    if resume is True:
        return run_folder(out, run_dir), True
    if run_dir is not None and Path(run_dir).resolve() != Path(resume).resolve():
        raise InputError(f"--resume {resume} and --run-dir {run_dir} name two run folders; a resumed run goes on "
                         "in its own folder: give --resume alone")
    return Path(resume), True


def run_identity(spec: Spec, trainer: str, record: dict, options: TrainingOptions, parent: str | None = None,
                 **more) -> dict:
    """What a resume must share with its run (see :func:`zoo.trainers.checkpoints.check_identity`)."""
    import json

    identity = {"architecture": spec.architecture_id, "architecture_params": dict(spec.architecture_params),
                "trainer": trainer, "parent": parent, "data": record["fingerprint"],
                "n_images": record.get("n_train", 0) + record.get("n_validation", 0),
                "max_steps": options.max_steps, "batch_size": options.batch_size, "seed": options.seed,
                "val_every": options.validate_every, "precision": str(options.lightning.get("precision", "32-true")),
                **more}
    return json.loads(json.dumps(identity, default=str))     # plain JSON, as the pointer stores it


def split_files(data, train_files, val_files, val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Training and validation images: explicit lists, or a by-image split of the folder ``data``."""
    if train_files is None:
        if data is None:
            raise InputError("give a data folder (--data) or explicit training files")
        if val_files is not None:   # explicit validation images: train on all the others
            held_out = {Path(v).resolve() for v in val_files}
            train_files = [p for p in list_images(data) if p.resolve() not in held_out]
        else:
            train_files, val_files = split_by_image(list_images(data), val_fraction, seed)
    if not val_files:
        raise InputError("need at least one validation image (split by image, never by patch)")
    train_files, val_files = [Path(p) for p in train_files], [Path(p) for p in val_files]
    if not train_files:
        raise InputError("no training images left after setting the validation images aside")
    return train_files, val_files


def pair_targets(arch, target, train_files: list[Path], val_files: list[Path]) -> dict:
    """``{train_targets, val_targets}`` for architectures that learn from pairs, else ``{}``."""
    if arch.needs_targets and target is None:
        raise InputError(f"'{arch.id}' learns from pairs: give the folder of targets (--target: "
                         f"{'label images' if arch.task == 'segmentation' else 'clean images'}), one file "
                         "of the same name per image")
    if target is not None and not arch.needs_targets:
        raise InputError(f"'{arch.id}' trains on the images alone; drop --target (or use care / n2n)")
    if target is None:
        return {}
    return {"train_targets": match_targets(train_files, target), "val_targets": match_targets(val_files, target)}


def make_datamodule(module, train_files, val_files, pairs: dict, patch, batch_size: int, steps_per_epoch: int,
                    seed: int, rehearsal: Rehearsal | None = None):
    """The architecture's data module (segmentation modules name their own) over these files."""
    inp = module.spec.inputs[0]
    n = len(inp.spatial_axes)
    patches = [patch] * n if isinstance(patch, int) else list(patch)
    extra = {"rehearsal": rehearsal} if rehearsal is not None else {}
    if getattr(module, "datamodule", None) is not None:     # segmentation: targets made from label images
        return module.datamodule(inp, train_files, val_files, patch=patches, targets=module.targets,
                                 roles=module.roles(), batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                                 seed=seed, **pairs, **extra)
    return RestorationDataModule(inp, train_files, val_files, patch=patches, batch_size=batch_size,
                                 steps_per_epoch=steps_per_epoch, seed=seed, **pairs, **extra)


def data_record(train_files, val_files, pairs: dict, data=None, description: str | None = None,
                source: str | None = None, license: str | None = None) -> dict:
    """The training record's ``data``: what, from where, and the fingerprint of every file."""
    return {"description": description or f"{len(train_files) + len(val_files)} images" + (f" from {data}" if data else ""),
            **({"source": source} if source else {}),
            **({"license": license} if license else {}),
            "fingerprint": fingerprint_files([*train_files, *val_files, *pairs.get("train_targets", []),
                                              *pairs.get("val_targets", [])]),
            "n_train": len(train_files), "n_validation": len(val_files)}


def sample_image(spec: Spec, sample, val_files):
    """The raw image (``b, c, *spatial``) whose crop becomes the test tensors and the cover."""
    return read_raw(Path(sample) if sample else val_files[0], spec.inputs[0])[None]
