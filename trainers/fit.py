"""``fit``: train a blueprint on a folder of images with Lightning and write a package."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from zoo import architectures, spec as specs
from zoo.errors import InputError
from zoo.hashing import fingerprint_files
from zoo.package import build
from zoo.spec import Spec, Training

from .callbacks import BatchTimer, KeepBest, StepProgress, ValidationLog
from .data import Rehearsal, RestorationDataModule, list_images, match_targets, read_raw, split_by_image

log = logging.getLogger("zoo.trainers")


def fit(blueprint: str | Path | Spec, data: str | Path | None, out: str | Path, *,
        target: str | Path | None = None,
        train_files: Sequence[Path] | None = None, val_files: Sequence[Path] | None = None,
        val_fraction: float = 0.15, name: str | None = None, version: str = "0.1.0",
        description: str | None = None, patch: int | Sequence[int] = 64, batch_size: int = 16, max_steps: int = 1000,
        steps_per_epoch: int = 200, lr: float | None = None, seed: int = 0,
        accelerator: str = "auto", devices: str | int = "auto", precision: str = "32-true",
        strategy: str = "auto", progress: bool = True, module_options: dict | None = None,
        data_description: str | None = None, data_source: str | None = None,
        data_license: str | None = None, sample: str | Path | None = None, overwrite: bool = False,
        callbacks: Sequence = ()) -> Path:
    """Train ``blueprint`` on the images in ``data`` (or explicit file lists); return the package path.

    Architectures trained on pairs (CARE, Noise2Noise) take their targets from the folder
    ``target``: the file of the same name as each image.
    The split is by image: ``val_files`` if given, else ``val_fraction`` of the folder's images.
    The weights kept are those with the lowest validation loss. Lightning options (accelerator, devices, precision, strategy) pass straight through.
    ``sample``: the image whose crop becomes the package's test tensors and cover (default: the
    first validation image; pass one whose licence allows redistribution when publishing).
    ``callbacks``: extra Lightning callbacks.
    """
    import pytorch_lightning as pl

    spec = blueprint if isinstance(blueprint, Spec) else specs.load(blueprint)
    arch = architectures.get(spec.architecture_id)
    train_files, val_files = split_files(data, train_files, val_files, val_fraction, seed)
    pairs = pair_targets(arch, target, train_files, val_files)

    pl.seed_everything(seed, workers=True, verbose=False)
    options = dict(module_options or {})
    if lr is not None:
        options["lr"] = lr
    module = arch.training_module()(spec, **options)
    datamodule = make_datamodule(module, train_files, val_files, pairs, patch, batch_size,
                                 min(steps_per_epoch, max_steps), seed)
    run = train(module, datamodule, max_steps, callbacks, progress=progress, accelerator=accelerator,
                devices=devices, precision=precision, strategy=strategy)
    training = Training(
        data=data_record(train_files, val_files, pairs, data, data_description, data_source, data_license),
        statistics=datamodule.statistics(),
        metrics={"val_loss": run.val_loss},
        config={"max_steps": max_steps, "patch": patch, "batch_size": batch_size, "seed": seed,
                "precision": precision, **run.record(), **module.hparams_for_record(),
                "validation_files": [p.name for p in val_files]},
        parent=None,
    )
    path = build.build(spec, module.network, out, training, sample_image(spec, sample, val_files), name=name,
                       version=version, description=description, overwrite=overwrite)
    return add_shift_check(path, train_files, val_files)


# ---------------------------------------------------------------------------- shared by fit and finetune
def add_shift_check(package: Path, train_files, val_files) -> Path:
    """Record the training inputs' statistics and calibrate the dataset-shift check (issue 11) on
    the validation images. A failure is logged, never fatal: the trained package stays."""
    from zoo.trust.calibrate import calibrate

    try:
        calibrate(package, list(train_files), list(val_files))
    except Exception as e:   # noqa: BLE001 - hours of training must not be lost to a statistics step
        log.warning("the package has no dataset-shift check: calibrating it failed (%s: %s)", type(e).__name__, e)
    return Path(package)


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


@dataclass
class Run:
    """What a training run measured."""

    val_loss: float
    selected_step: int
    steps: int
    seconds: float
    patches_per_second: float

    def record(self) -> dict:
        return {"training_seconds": round(self.seconds, 1), "patches_per_second": round(self.patches_per_second, 1),
                "selected_step": self.selected_step, "steps_run": self.steps}


LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")


@contextmanager
def quiet_lightning():
    """Lightning's info lines (hardware, tips) unsaid while inside: every Trainer prints them, and
    a run that needs a second Trainer (a parent's validation) should state them once."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def train(module, datamodule, max_steps: int, callbacks: Sequence = (), *, progress: bool | str = True,
          keep_best: KeepBest | None = None, **lightning) -> Run:
    """Fit ``module`` with Lightning; the weights with the lowest validation loss are kept
    (``keep_best`` may start with a candidate, e.g. a parent's weights).
    ``progress``: True a progress bar over the steps, ``"lines"`` a line on stderr every tenth of
    the steps and at each validation (for logs, where a bar cannot draw), False nothing."""
    import pytorch_lightning as pl

    keep_best, timer = keep_best or KeepBest("val_loss"), BatchTimer()
    shown = [ValidationLog(every=max(1, max_steps // 10)) if progress == "lines" else StepProgress()] if progress else []
    trainer = pl.Trainer(max_steps=max_steps, callbacks=[keep_best, timer, *callbacks, *shown],
                         enable_progress_bar=False,
                         enable_checkpointing=False, logger=False, enable_model_summary=False,
                         num_sanity_val_steps=0, log_every_n_steps=10, deterministic=False, **lightning)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return Run(keep_best.best, keep_best.best_step, trainer.global_step, time.perf_counter() - started,
               timer.samples_per_second)


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
