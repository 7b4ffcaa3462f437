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
        pixel_size: float | dict | None = None, run_dir: str | Path | None = None, max_time=None) -> Path:
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
    ``max_time``: a time budget (``timedelta``); the run stops when it is spent.
    """
    given = dict(locals())
    spec = blueprint if isinstance(blueprint, Spec) else specs.load(blueprint)
    trainer = dispatch.trainer_for(spec)
    lightning = {"accelerator": accelerator, "devices": devices, "precision": precision, "strategy": strategy}
    options = {k: v for k, v in given.items() if k not in ("blueprint", "data", "out", *dispatch.LIGHTNING)}
    return dispatch.call(trainer.fit, trainer, spec.ref, options, dispatch.defaults_of(fit), spec, data, out,
                         **lightning)


def fit_dense(spec: Spec, data, out, *, target=None, train_files=None, val_files=None, val_fraction: float = 0.15,
              name=None, version: str = "0.1.0", description=None, patch=64, batch_size: int = 16,
              max_steps: int = 1000, steps_per_epoch: int = 200, lr=None, seed: int = 0, progress=True,
              module_options=None, data_description=None, data_source=None, data_license=None, sample=None,
              overwrite: bool = False, callbacks: Sequence = (), pixel_size=None, run_dir=None, max_time=None,
              **lightning) -> Path:
    """Restoration and segmentation: patches of the images (and targets), by-image validation,
    one validation every ``steps_per_epoch`` steps (see :func:`fit` for the options)."""
    import pytorch_lightning as pl

    options = TrainingOptions(max_steps=max_steps, batch_size=batch_size, seed=seed, val_every=steps_per_epoch,
                              progress=progress, lightning=lightning)

    arch = architectures.get(spec.architecture_id)
    train_files, val_files = split_files(data, train_files, val_files, val_fraction, options.seed)
    pairs = pair_targets(arch, target, train_files, val_files)

    pl.seed_everything(options.seed, workers=True, verbose=False)
    module_kwargs = dict(module_options or {})
    if lr is not None:
        module_kwargs["lr"] = lr
    module = arch.training_module()(spec, **module_kwargs)
    datamodule = make_datamodule(module, train_files, val_files, pairs, patch, options.batch_size,
                                 options.validate_every, options.seed)
    run_dir = run_folder(out, run_dir)
    run = train(module, datamodule, options.max_steps, callbacks, progress=options.progress, run_dir=run_dir,
                max_time=max_time, **options.lightning)
    training = Training(
        data=data_record(train_files, val_files, pairs, data, data_description, data_source, data_license),
        statistics=datamodule.statistics(),
        metrics={"val_loss": run.val_loss},
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
