"""``fit``: train a blueprint on a folder of images with Lightning and write a package."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

from zoo import architectures, spec as specs
from zoo.errors import InputError
from zoo.hashing import fingerprint_files
from zoo.package import build
from zoo.spec import Spec, Training

from .callbacks import BatchTimer, KeepBest
from .data import RestorationDataModule, list_images, match_targets, read_raw, split_by_image

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

    arch = architectures.get(spec.architecture_id)
    if arch.needs_targets and target is None:
        raise InputError(f"'{arch.id}' learns from pairs: give the folder of targets (--target: "
                         f"{'label images' if arch.task == 'segmentation' else 'clean images'}), one file "
                         "of the same name per image")
    if target is not None and not arch.needs_targets:
        raise InputError(f"'{arch.id}' trains on the images alone; drop --target (or use care / n2n)")
    pairs = {}
    if target is not None:
        pairs = {"train_targets": match_targets(train_files, target), "val_targets": match_targets(val_files, target)}

    pl.seed_everything(seed, workers=True, verbose=False)
    inp = spec.inputs[0]
    n = len(inp.spatial_axes)
    patches = [patch] * n if isinstance(patch, int) else list(patch)
    options = dict(module_options or {})
    if lr is not None:
        options["lr"] = lr
    module = arch.training_module()(spec, **options)
    if getattr(module, "datamodule", None) is not None:     # segmentation: targets made from label images
        datamodule = module.datamodule(inp, train_files, val_files, patch=patches, targets=module.targets,
                                       roles=module.roles(), batch_size=batch_size,
                                       steps_per_epoch=min(steps_per_epoch, max_steps), seed=seed, **pairs)
    else:
        datamodule = RestorationDataModule(inp, train_files, val_files, patch=patches, batch_size=batch_size,
                                           steps_per_epoch=min(steps_per_epoch, max_steps), seed=seed, **pairs)

    keep_best, timer = KeepBest("val_loss"), BatchTimer()
    trainer = pl.Trainer(max_steps=max_steps, callbacks=[keep_best, timer, *callbacks], accelerator=accelerator, devices=devices, precision=precision,
                         strategy=strategy, enable_progress_bar=progress, enable_checkpointing=False,
                         logger=False, enable_model_summary=False, num_sanity_val_steps=0,
                         log_every_n_steps=10, deterministic=False)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - started
    val_loss = keep_best.best

    training = Training(
        data={"description": data_description or f"{len(train_files) + len(val_files)} images" + (f" from {data}" if data else ""),
              **({"source": data_source} if data_source else {}),
              **({"license": data_license} if data_license else {}),
              "fingerprint": fingerprint_files([*train_files, *val_files, *pairs.get("train_targets", []),
                                                *pairs.get("val_targets", [])]),
              "n_train": len(train_files), "n_validation": len(val_files)},
        statistics=datamodule.statistics(),
        metrics={"val_loss": val_loss},
        config={"max_steps": max_steps, "patch": patch, "batch_size": batch_size, "seed": seed,
                "precision": precision, "training_seconds": round(seconds, 1),
                "patches_per_second": round(timer.samples_per_second, 1),
                "selected_step": keep_best.best_step,
                **{k: v for k, v in module.hparams_for_record().items()},
                "validation_files": [p.name for p in val_files]},
        parent=None,
    )
    sample_image = read_raw(Path(sample) if sample else val_files[0], inp)[None]  # b, c, *spatial
    return build.build(spec, module.network, out, training, sample_image, name=name, version=version,
                       description=description, overwrite=overwrite)
